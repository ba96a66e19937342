"""Control videos: reading (PyAV), converting and fitting them to a generation's size and length."""

from __future__ import annotations

import contextlib
import itertools
import logging
import os

import numpy as np
import torch

logger = logging.getLogger(__name__)

__all__ = ["read_video", "to_frames", "fit_frames", "frames_to_uint8", "run_preprocessor"]


def read_video(path: str | os.PathLike, max_frames: int | None = None) -> torch.Tensor:
    """Decode a video file to `(F, 3, H, W)` float32 RGB in `[0, 1]` (at most `max_frames` frames).

    Decoding is `diffusers_ltx2.media.video`'s (FileNotFoundError / ValueError naming the file)."""
    from ..media.video import iter_video_frames

    _, decoded = iter_video_frames(path)
    with contextlib.closing(decoded):
        frames = [torch.from_numpy(f) for f in itertools.islice(decoded, max_frames)]
    if not frames:
        raise ValueError(f"{os.fspath(path)} contains no decodable video frames")
    return torch.stack(frames).permute(0, 3, 1, 2).float() / 255.0


def to_frames(video, *, keep_uint8: bool = False) -> torch.Tensor:
    """Any supported control-video form -> `(F, 3, H, W)` float32 in `[0, 1]` (with `keep_uint8`, 8-bit sources
    stay uint8 in `[0, 255]`, a quarter of the memory: `fit_frames` converts the frames it keeps).

    Accepted: whatever `diffusers_ltx2.media.frames.as_frames` takes (every video input's normalisation): a file
    path; PIL image(s); numpy `(F, H, W, 3)`; torch `(F, 3, H, W)`; uint8 or floats in `[0, 1]`; a pipeline's
    `output_type="pil" / "np" / "pt"` frames. A single image is one frame.
    """
    from ..media.frames import as_frames

    frames = as_frames(video, "control_video")
    if isinstance(frames, np.ndarray):
        frames = torch.from_numpy(frames)
        if not (keep_uint8 and frames.dtype == torch.uint8):
            frames = frames.float() / 255.0
    return frames.permute(0, 3, 1, 2).contiguous()


def fit_frames(frames: torch.Tensor, num_frames: int, height: int, width: int, temporal_ratio: int = 8,
               frame_step: int = 1) -> torch.Tensor:
    """Trim a control video to the clip and resize / center-crop it to `(height, width)`: `(F, 3, H, W)` float32 in
    `[0, 1]` (from float frames in `[0, 1]` or uint8 ones, converted after trimming).

    Every `frame_step`-th frame is kept (temporal reference scale). The result has `min(available, wanted)` frames
    rounded down to `temporal_ratio * k + 1` (the VAE's causal layout); a video too short even for one frame is
    an error. Spatially the video is scaled to cover `(height, width)` (aspect kept) and center-cropped.
    """
    if frame_step < 1:
        raise ValueError(f"frame_step must be >= 1, got {frame_step}")
    frames = frames[::frame_step]
    wanted = (num_frames - 1) // frame_step + 1
    available = min(frames.shape[0], wanted)
    usable = (available - 1) // temporal_ratio * temporal_ratio + 1
    if available < 1:
        raise ValueError("the control video has no frames")
    if usable < wanted:
        logger.warning(
            "control video has %d usable frames for a %d-frame clip: the reference covers the first %d frames",
            frames.shape[0], num_frames, usable,
        )
    frames = frames[:usable]
    if frames.dtype == torch.uint8:
        frames = frames.float() / 255.0
    _, _, h, w = frames.shape
    scale = max(height / h, width / w)
    new_h, new_w = max(height, round(h * scale)), max(width, round(w * scale))
    if (new_h, new_w) != (h, w):
        mode = "area" if scale < 1 else "bilinear"
        kwargs = {} if mode == "area" else {"align_corners": False}
        frames = torch.nn.functional.interpolate(frames, size=(new_h, new_w), mode=mode, **kwargs)
    top, left = (new_h - height) // 2, (new_w - width) // 2
    return frames[:, :, top : top + height, left : left + width].clamp(0, 1).contiguous()


def frames_to_uint8(frames: torch.Tensor) -> np.ndarray:
    """`(F, 3, H, W)` in `[0, 1]` -> `(F, H, W, 3)` uint8."""
    return (frames.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def run_preprocessor(preprocessor, frames: torch.Tensor) -> torch.Tensor:
    """Apply a control preprocessor to `(F, 3, H, W)` frames in [0, 1]; it must return frames of that shape."""
    out = preprocessor(frames)
    if not isinstance(out, torch.Tensor) or out.shape != frames.shape:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"control_preprocessor must return a tensor of shape {tuple(frames.shape)}, got {got}")
    return out.float().clamp(0, 1)
