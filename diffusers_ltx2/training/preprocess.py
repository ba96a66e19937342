"""`ltx2 preprocess`: videos + captions -> the precomputed dataset `ltx2 train` reads (see `training.data`).

Per clip: the video is decoded, trimmed to `num_frames` and resized / centre-cropped to `height x width`
(`control.video.fit_frames`), encoded with the pipeline's VAE into normalized latents (`encode_pixels`, the
same step the pipelines use for images and control videos); the caption goes through any `PromptEncoder`
(local Gemma, the LTX API, a cache) and is stored at the connector stage, so training needs neither Gemma nor
the connectors. For IC-LoRA the reference is made exactly as `LTX2ICLoRAPipeline` makes it at inference: the clip
fitted to `(height / f, width / f)`, the control preprocessor (canny built in, depth / pose from local models)
applied, then VAE-encoded. Union datasets: each clip's control type comes from the caption file's
`control_type` column, else the listed types are assigned in turn.

With `with_audio`, each clip's audio track (the window of the frames used) is encoded into `audio_latents/` as the
pipelines encode a given sound (`training.clip_audio`); a clip without a usable track is skipped
(`missing_audio="skip"`) or kept video-only (`"video_only"`, listed in the report's `no_audio`).

Resumable: clips whose outputs all exist are skipped (a dataset made without audio gains only its
`audio_latents/` when run again with audio); every file is written atomically. Running again into the same output
with other settings (size, frame count, frame rate, reference factor) is refused before anything is encoded: the
dataset would mix clips made two ways. Bad clips (unreadable, too short, no caption, a caption file that is not
UTF-8) are reported and skipped, never abort the run; a rejected LTX API key or embeddings made for another model
(`ModelIdentityMismatchError`) do stop it, since every clip would fail alike. Images (`.png`, `.jpg`, ...) among
the clips become 1-frame samples with `num_frames=1` and are reported as skipped otherwise. Sources sharing a stem
(`a.mp4`, `a.mkv`) get distinct names (`a_mp4`, `a_mkv`). An LTX API key found in a caption is replaced by `***` in
the caption stored with the conditions.

`check_preprocess_arguments` holds every check of the arguments that needs no model; `ltx2 preprocess` calls it
before loading one.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ..json_files import parse_json
from ..loaders.api import LTXAPIAuthError
from ..loaders.api_keys import redact
from ..loaders.identity import ModelIdentityMismatchError
from .clip_audio import NoUsableAudio, encode_clip_audio
from .data import write_entry

logger = logging.getLogger(__name__)

__all__ = ["Clip", "PreprocessReport", "check_preprocess_arguments", "find_clips", "preprocess_dataset"]

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
MISSING_AUDIO = ("skip", "video_only")


@dataclass(frozen=True)
class Clip:
    """One source clip: `name` (output file stem), `video` path (a video, or an image: a 1-frame sample),
    `caption`, optional `control_type`; `error`: why the clip cannot be used (reported as skipped)."""

    name: str
    video: Path
    caption: str
    control_type: str | None = None
    error: str | None = None


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_preprocess_arguments(*, height, width, num_frames, frame_rate=None, reference_downscale_factor=None,
                               control_types=None, missing_audio: str = "skip",
                               output: str | os.PathLike | None = None) -> None:
    """Every check of `preprocess_dataset`'s arguments that needs no model, in one place (the CLI calls it before
    loading one). Raises `ValueError` naming the argument:

    - `height`, `width`: positive integers, multiples of 32 (of `32 * reference_downscale_factor` with references);
    - `num_frames`: a positive integer 8k + 1; `frame_rate`: a finite number > 0 (`None`: 24);
    - `reference_downscale_factor`: `None` or an integer >= 1; `control_types` need it;
    - `missing_audio`: `"skip"` or `"video_only"`;
    - `output`: not a file; clips already in it must have been made with these settings (size, frame count,
      frame rate, reference factor), read from their files' metadata - else use another folder.
    """
    factor = reference_downscale_factor
    if factor is not None and (not isinstance(factor, int) or isinstance(factor, bool) or factor < 1):
        raise ValueError(f"reference_downscale_factor must be an integer >= 1, got {factor!r}")
    unit = 32 * (factor or 1)
    for key, value in (("height", height), ("width", width)):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0 or value % unit:
            raise ValueError(f"{key} must be a positive multiple of {unit}"
                             f"{' (32 x the reference downscale factor)' if factor else ''}, got {value!r}")
    if not isinstance(num_frames, int) or isinstance(num_frames, bool) or num_frames < 1 or (num_frames - 1) % 8:
        raise ValueError(f"num_frames must be 8k + 1 (1, 9, 17, ...), got {num_frames!r}")
    if frame_rate is not None and not (_is_number(frame_rate) and math.isfinite(frame_rate) and frame_rate > 0):
        raise ValueError(f"frame_rate must be a finite number > 0, got {frame_rate!r}")
    if control_types and factor is None:
        raise ValueError("control types need a reference_downscale_factor")
    if control_types and len(set(control_types)) != len(control_types):
        raise ValueError(f"control types given twice: {list(control_types)}")
    if missing_audio not in MISSING_AUDIO:
        raise ValueError(f"missing_audio must be one of {MISSING_AUDIO}, got {missing_audio!r}")
    if output is not None:
        _check_output(Path(output), height, width, num_frames, float(frame_rate or 24.0), factor)


def _check_output(root: Path, height: int, width: int, num_frames: int, fps: float, factor: int | None) -> None:
    """Refuse an output folder holding clips made with other settings (their files' metadata)."""
    from ..conversion.errors import ConversionError
    from ..conversion.streaming import read_header

    if root.exists() and not root.is_dir():
        raise ValueError(f"output {root} is a file, not a folder")
    wanted = {"latents": {"height": height, "width": width, "num_frames": num_frames, "fps": fps},
              "audio_latents": {"num_frames": num_frames, "fps": fps},
              "reference_latents": {"reference_downscale_factor": factor} if factor is not None else {}}
    differing = []
    for folder, settings in wanted.items():
        for path in sorted((root / folder).glob("*.safetensors")) if settings else ():
            try:
                meta = read_header(path)[1]
            except ConversionError:
                continue  # unreadable: `ltx2 train` names it; not a setting
            for key, value in settings.items():
                if key in meta and _differs(meta[key], value):
                    differing.append(f"{path.name} in {folder}/ has {key} {meta[key]}, this run {value}")
                    break
    if differing:
        raise ValueError(f"{root} already holds {len(differing)} file(s) made with other settings ({differing[0]}"
                         f"{'; ...' if len(differing) > 1 else ''}): a dataset must be made one way. Use another "
                         "output folder, or remove those clips to encode them again")


def _differs(stored: str, value) -> bool:
    try:
        return float(stored) != float(value)
    except ValueError:
        return True


def _unique(name: str, used: set[str]) -> str:
    out, n = name, 2
    while out in used:
        out, n = f"{name}_{n}", n + 1
    used.add(out)
    return out


def _read_caption(txt: Path) -> tuple[str, str | None]:
    """`(caption, error)` of a caption file (UTF-8, a BOM allowed); a missing file gives an empty caption."""
    if not txt.is_file():
        return "", None
    try:
        return txt.read_text(encoding="utf-8-sig").strip(), None
    except UnicodeDecodeError as err:
        return "", (f"caption file {txt.name} is not UTF-8 text ({err.reason} at byte {err.start}); save it as "
                    "UTF-8")


@dataclass
class PreprocessReport:
    """`written`: clips encoded now; `existing`: clips already complete (resume); `skipped`: `(name, reason)`;
    `no_audio`: `(name, reason)` of clips kept without audio latents (`missing_audio="video_only"`)."""

    written: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    no_audio: list[tuple[str, str]] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"written": self.written, "existing": self.existing,
                "skipped": [{"clip": n, "reason": r} for n, r in self.skipped],
                "no_audio": [{"clip": n, "reason": r} for n, r in self.no_audio]}


def find_clips(source: str | os.PathLike) -> list[Clip]:
    """Clips from a folder (`<clip>.mp4` + `<clip>.txt` caption) or a CSV / JSONL file with `video` and `caption`
    (optional `control_type`) columns, video paths relative to the file. A video without a caption is kept with
    an empty caption and reported by `preprocess_dataset`. Raises `FileNotFoundError` / `ValueError`."""
    source = Path(source)
    if source.is_dir():
        media = sorted(p for p in source.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES + IMAGE_SUFFIXES)
        if not media:
            raise ValueError(f"no videos ({', '.join(VIDEO_SUFFIXES)}) or images in {source}")
        stems: dict[str, int] = {}
        for p in media:
            stems[p.stem] = stems.get(p.stem, 0) + 1
        clips, used = [], set()
        for p in media:
            caption, error = _read_caption(p.with_suffix(".txt"))
            base = p.stem if stems[p.stem] == 1 else f"{p.stem}_{p.suffix.lower()[1:]}"  # a.mp4 + a.mkv
            clips.append(Clip(_unique(base, used), p, caption, error=error))
        return clips
    if not source.is_file():
        raise FileNotFoundError(f"dataset source not found: {source}")
    try:
        if source.suffix.lower() == ".csv":
            with source.open(newline="", encoding="utf-8-sig") as f:
                rows = list(csv.DictReader(f))
        elif source.suffix.lower() in (".jsonl", ".json"):
            rows = [parse_json(line, f"{source}:{n + 1}")
                    for n, line in enumerate(source.read_text(encoding="utf-8-sig").splitlines()) if line.strip()]
        else:
            raise ValueError(f"{source}: captions come as a folder of .txt files, a .csv or a .jsonl")
    except UnicodeDecodeError as err:
        raise ValueError(f"{source} is not UTF-8 text ({err.reason} at byte {err.start}); save it as UTF-8") from None
    clips, used = [], set()
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or "video" not in row or "caption" not in row:
            raise ValueError(f"{source} row {i + 1} lacks a 'video' or 'caption' field")
        video = (source.parent / str(row["video"])).resolve()
        clips.append(Clip(_unique(video.stem, used), video, str(row["caption"]).strip(),
                          row.get("control_type") or None))
    return clips


def _outputs(root: Path, name: str, with_reference: bool) -> list[Path]:
    folders = ["latents", "conditions"] + (["reference_latents"] if with_reference else [])
    return [root / d / f"{name}.safetensors" for d in folders]


def _encode_video(pipe, clip: Clip, encoder, num_frames: int, height: int, width: int, factor: int | None,
                  preprocessor: Callable | None):
    """`(latents (C, F, H, W), connector-stage embeddings, reference latents or None)` of one clip."""
    from ..control.video import fit_frames, read_video

    device = pipe._execution_device
    if clip.video.suffix.lower() in IMAGE_SUFFIXES:
        if num_frames != 1:
            raise ValueError(f"an image makes a 1-frame sample, this dataset has {num_frames}-frame clips "
                             "(preprocess images separately with num_frames 1)")
        from ..media.image import load_image

        frames = torch.tensor(load_image(clip.video)).permute(2, 0, 1)[None].float() / 255.0  # a copy: may be read-only
    else:
        frames = read_video(clip.video, max_frames=num_frames)
    if frames.shape[0] < num_frames:
        raise ValueError(f"too short: {frames.shape[0]} frames, {num_frames} needed")
    target = fit_frames(frames, num_frames, height, width)
    with torch.no_grad():
        latents = pipe.encode_pixels((target * 2 - 1).permute(1, 0, 2, 3)[None], 1, device)[0]
        # the pipelines' own step: identity / width checks, connectors for feature-stage embeddings
        embeds = pipe._to_connector_stage(encoder.encode([clip.caption], device=device), device)
        reference = None
        if factor is not None:
            small = fit_frames(frames, num_frames, height // factor, width // factor)
            control = preprocessor(small).float().clamp(0, 1)
            reference = pipe.encode_pixels((control * 2 - 1).permute(1, 0, 2, 3)[None], 1, device)[0]
    return latents, embeds, reference


def preprocess_dataset(
    pipe, clips: list[Clip], output: str | os.PathLike, *, height: int, width: int, num_frames: int,
    frame_rate: float | None = None, prompt_encoder=None, reference_downscale_factor: int | None = None,
    control_types: list[str] | None = None, preprocessors: dict[str, Callable] | None = None,
    with_audio: bool = False, missing_audio: str = "skip", progress: bool = True,
) -> PreprocessReport:
    """Encode `clips` into `output/{latents,conditions,audio_latents,reference_latents}/`.

    Args:
        pipe: an LTX-2 pipeline of this package (its `vae`, `connectors` and prompt encoder are used).
        clips: from `find_clips`.
        height, width: target size in pixels (multiples of 32; of `32 * factor` for IC-LoRA references).
        num_frames: frames per clip (8k + 1); shorter clips are skipped.
        frame_rate: stored as the clip's fps (default: 24).
        prompt_encoder: any `PromptEncoder`; default: the pipeline's (local Gemma or its `prompt_encoder`).
        reference_downscale_factor: make IC-LoRA references at `(height / f, width / f)`; `None`: no references.
        control_types: the reference control types (union when more than one); needs `reference_downscale_factor`.
        preprocessors: control type -> callable `(F, 3, h, w) -> (F, 3, h, w)` in `[0, 1]`; default canny built in.
        with_audio: also encode each clip's audio track into `audio_latents/` (`training.clip_audio`; the clip's
            file must run at `frame_rate`).
        missing_audio: for a clip without a usable audio track: `"skip"` the clip (reported in `skipped`) or
            `"video_only"` (latents and conditions written, reported in `no_audio`).

    Raises `ValueError` for bad arguments (`check_preprocess_arguments`, including an output made with other
    settings), before anything is encoded or written.
    Returns a `PreprocessReport` (also written to `output/preprocess_report.json`).
    """
    from tqdm.auto import tqdm

    from ..control import get_preprocessor

    check_preprocess_arguments(height=height, width=width, num_frames=num_frames, frame_rate=frame_rate,
                               reference_downscale_factor=reference_downscale_factor, control_types=control_types,
                               missing_audio=missing_audio, output=output)
    factor = reference_downscale_factor
    if with_audio and getattr(pipe, "audio_vae", None) is None:
        raise ValueError("with_audio needs a pipeline with an audio_vae")
    types = list(control_types or (["canny"] if factor else []))
    preprocessors = dict(preprocessors or {})
    for t in types:
        if t not in preprocessors:
            preprocessors[t] = get_preprocessor(t)  # canny; depth / pose without a model path fail here, early
    encoder = prompt_encoder or pipe._active_prompt_encoder()
    root = Path(output)
    report = PreprocessReport()
    fps = float(frame_rate or 24.0)
    for i, clip in enumerate(tqdm(clips, desc="preprocessing", disable=not progress)):
        audio_file = root / "audio_latents" / f"{clip.name}.safetensors"
        video_done = all(p.is_file() for p in _outputs(root, clip.name, factor is not None))
        audio_wanted = with_audio and not audio_file.is_file()
        if video_done and not audio_wanted:
            report.existing.append(clip.name)
            continue
        ctype = clip.control_type or (types[i % len(types)] if types else None)
        audio = no_audio = None
        try:
            if clip.error:
                raise ValueError(clip.error)
            if not clip.caption:
                raise ValueError("no caption")
            if ctype is not None and ctype not in preprocessors:
                raise ValueError(f"control type {ctype!r} has no preprocessor (given: {sorted(preprocessors)})")
            if audio_wanted:
                try:
                    audio = encode_clip_audio(pipe, clip.video, num_frames, fps)
                except NoUsableAudio as err:
                    if missing_audio == "skip":
                        raise ValueError(f"audio: {err}") from None
                    no_audio = str(err)
            if not video_done:
                latents, embeds, reference = _encode_video(pipe, clip, encoder, num_frames, height, width, factor,
                                                           preprocessors.get(ctype))
        except (ValueError, FileNotFoundError, RuntimeError) as err:
            if isinstance(err, (LTXAPIAuthError, ModelIdentityMismatchError)):
                raise  # not the clip's fault: every caption would fail the same way
            logger.warning("skipping %s: %s", clip.name, err)
            report.skipped.append((clip.name, str(err)))
            continue
        if no_audio is not None:
            logger.warning("%s: kept without audio latents: %s", clip.name, no_audio)
            report.no_audio.append((clip.name, no_audio))
        if audio is not None:
            write_entry(audio_file, {"latents": audio}, {"fps": fps, "num_frames": num_frames})
        if video_done:  # only the audio was missing
            (report.written if audio is not None else report.existing).append(clip.name)
            continue
        write_entry(root / "conditions" / f"{clip.name}.safetensors", {
            "video_context": embeds.video_context[0].float(), "audio_context": embeds.audio_context[0].float(),
            "attention_mask": embeds.attention_mask[0]},
            {"caption": redact(clip.caption), "model_identity": embeds.model_identity or ""})  # no API key stored
        if reference is not None:
            write_entry(root / "reference_latents" / f"{clip.name}.safetensors", {"latents": reference.float()},
                        {"control_type": ctype, "reference_downscale_factor": factor})
        write_entry(root / "latents" / f"{clip.name}.safetensors", {"latents": latents.float()},
                    {"fps": fps, "num_frames": num_frames, "height": height, "width": width})
        report.written.append(clip.name)
    root.mkdir(parents=True, exist_ok=True)
    (root / "preprocess_report.json").write_text(json.dumps(report.to_json(), indent=1))
    return report
