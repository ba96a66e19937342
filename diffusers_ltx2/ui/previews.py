"""Previews of the page: the retake window on the uploaded clip, and the control video an IC-LoRA job will follow
(after its preprocessor). Media read with the package's own readers (`media.probe_video` / `load_video`)."""

from __future__ import annotations

import os
import uuid

PREVIEW_FRAMES = 49  # frames of a control preview (2 s at 24 fps)


def retake_window(model: str, path: str, start: float, end: float, output_dir: str) -> tuple[list, str]:
    """The frames at the window's start and end (`(H, W, 3)` uint8 arrays) and a line saying which frames of the
    clip the window covers. The window is checked by `ltx2 retake`'s own layer (`cli.resolve("retake", ...)`,
    `media_args.resolve_source_clip`, `retake.check_window_in_clip`: the clip's usable `8k + 1` frames), so the
    preview refuses exactly what the job would, with the same `ValueError` naming `--start` / `--end`."""
    from .. import cli
    from ..cli.media_args import resolve_source_clip
    from ..cli.retake import check_window_in_clip
    from ..media import load_video

    args = cli.resolve("retake", dict(model=model, input=path, start=start, end=end, prompt="preview",
                                      output=os.path.join(output_dir, "preview.mp4"))).args
    source = resolve_source_clip(args)
    check_window_in_clip(args, source)
    fps = source.frame_rate
    first = min(int(start * fps), source.num_frames - 1)
    last = min(max(first, int(round(end * fps)) - 1), source.num_frames - 1)
    frames, _ = load_video(path, num_frames=last + 1)
    pictures = [(frames[i].numpy() * 255).round().astype("uint8") for i in (first, last)]
    text = (f"window {start:g}-{end:g} s of {source.duration_s:.3g} s: frames {first}-{last} of the "
            f"{source.num_frames} used ({source.describe()}); the rest is kept")
    return pictures, text


def control_preview(path: str, preprocess: str, folder: str, preprocess_model: str | None = None) -> str:
    """An MP4 (in `folder`) of the first frames of the control video as the IC-LoRA will see them (edges / depth
    / pose drawn by the preprocessor; the video itself for "none"). Returns its path."""
    import torch

    from ..control import get_preprocessor
    from ..export import export_to_video_with_audio
    from ..media import load_video, probe_video

    info = probe_video(path)
    frames, fps = load_video(path, num_frames=min(info.num_frames, PREVIEW_FRAMES))
    if preprocess != "none":
        processor = get_preprocessor(preprocess, preprocess_model or None)
        with torch.no_grad():
            frames = processor(frames.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    frames = frames[:, : frames.shape[1] // 2 * 2, : frames.shape[2] // 2 * 2]  # H.264 wants even sizes
    os.makedirs(folder, exist_ok=True)
    out = os.path.join(folder, f"control-{preprocess}-{uuid.uuid4().hex[:8]}.mp4")
    return export_to_video_with_audio(frames, None, out, fps=fps)
