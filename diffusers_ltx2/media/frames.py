"""Pixel frames from whatever a user holds: the one normalisation of every video / image input.

Every video input of the package (`VideoCondition`, `FrozenVideo`, `extend`, IC-LoRA `control_video`, the
pipelines' `image=`) goes through :func:`as_frames`. It takes what diffusers' `VideoProcessor.preprocess_video`
takes and what each of the pipelines' `output_type`s returns:

| input                                                   | layout                                                |
|---------------------------------------------------------|-------------------------------------------------------|
| image or video file path                                | decoded (PyAV for video suffixes, PIL for images)     |
| `PIL.Image` or a list of them (`output_type="pil"`)     | one frame each, converted to RGB                      |
| numpy array (`output_type="np"`)                        | channels-last `(F, H, W, C)` / `(H, W, C)`, as diffusers |
| torch tensor (`output_type="pt"`)                       | channels-first `(F, C, H, W)` / `(C, H, W)`, as diffusers |
| a list of per-frame arrays / tensors                    | stacked                                               |
| a batch of one video (`(1, F, ...)`, `[[PIL, ...]]`)    | the video (a whole `pipe(...).frames` of batch 1)     |

`C` is 3 (RGB) or 1 (grey, repeated to RGB). Arrays and tensors whose channel axis is only on the other side are
accepted too (a channels-last tensor, a channels-first array); where both sides could be the channel axis the
diffusers convention of the type decides. Values: uint8 (0-255) or floating point in [0, 1] (overshoot up to
`RANGE_TOLERANCE` from resampling is clamped); anything else is refused before any model runs.
"""

from __future__ import annotations

import os

import numpy as np
import PIL.Image
import torch

from .image import pil_to_rgb

__all__ = ["RANGE_TOLERANCE", "VIDEO_SUFFIXES", "as_frames"]

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".gif")
#: Floating frames may overshoot [0, 1] by this much (resampling ringing); they are clamped.
RANGE_TOLERANCE = 1e-3
_CHANNELS = (1, 3)
_LAYOUTS = "(F, H, W, 3) / (H, W, 3) channels-last arrays or (F, 3, H, W) / (3, H, W) tensors"


def _from_path(path, what: str):
    from .image import load_image
    from .video import load_video

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what}: file not found: {path}")
    if path.lower().endswith(VIDEO_SUFFIXES):
        return load_video(path)[0]
    return load_image(path)[None]


def _channels_last(x, what: str):
    """`x` (3-D or 4-D array / tensor) as `(F, H, W, C)`; the channel axis is diffusers' for the type (last for
    numpy, third from the end for torch) when that side has 1 or 3 entries, else the other side."""
    shape = tuple(x.shape)
    if x.ndim not in (3, 4) or 0 in shape:
        raise ValueError(f"{what}: frames must be {_LAYOUTS}, got shape {shape}")
    x = x[None] if x.ndim == 3 else x
    last, first = x.shape[-1] in _CHANNELS, x.shape[1] in _CHANNELS
    if isinstance(x, torch.Tensor) and first or not last and first:
        x = x.permute(0, 2, 3, 1) if isinstance(x, torch.Tensor) else x.transpose(0, 2, 3, 1)
    elif not last:
        raise ValueError(f"{what}: frames must be {_LAYOUTS} (3 or 1 channels), got shape {shape}")
    if x.shape[-1] == 1:
        x = x.repeat(1, 1, 1, 3) if isinstance(x, torch.Tensor) else np.repeat(x, 3, axis=-1)
    return x


def _values(x, what: str):
    """uint8 -> contiguous uint8 numpy; floats -> float32 CPU tensor in [0, 1]; other dtypes refused."""
    if isinstance(x, torch.Tensor):
        x = x.detach()
        if x.dtype == torch.uint8:
            return np.ascontiguousarray(x.cpu().numpy())
        if not x.is_floating_point():
            raise ValueError(f"{what} has dtype {x.dtype}: frames must be uint8 (0-255) or floating point in [0, 1]")
        x = x.to("cpu", torch.float32)
    else:
        if x.dtype == np.uint8:
            return np.ascontiguousarray(x)
        if not np.issubdtype(x.dtype, np.floating):
            raise ValueError(f"{what} has dtype {x.dtype}: frames must be uint8 (0-255) or floating point in [0, 1]")
        x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{what} contains NaN or infinite values")
    lo, hi = float(x.min()), float(x.max())
    if lo < -RANGE_TOLERANCE or hi > 1.0 + RANGE_TOLERANCE:
        hint = " (0-255 values: pass a uint8 array)" if 1.0 + RANGE_TOLERANCE < hi <= 255.0 else ""
        raise ValueError(f"{what} has values in [{lo:.4g}, {hi:.4g}]; floating frames must be in [0, 1]{hint}")
    return x.clamp(0.0, 1.0).contiguous()


def _stack(frames: list, what: str):
    sizes = {tuple(f.shape[1:3]) for f in frames}
    if len(sizes) > 1:
        raise ValueError(f"{what}: the frames have different sizes {sorted(sizes)}; pass frames of one size")
    if all(isinstance(f, np.ndarray) for f in frames):
        return np.concatenate(frames)
    return torch.cat([torch.from_numpy(f.astype(np.float32) / 255.0) if isinstance(f, np.ndarray) else f
                      for f in frames])


def as_frames(source, what: str = "frames"):
    """Normalise a video or image input to frames `(F, H, W, 3)`.

    Args:
        source: a path (video by suffix, else image), a PIL image or list of them, a numpy array (channels-last,
            diffusers' layout), a torch tensor (channels-first, diffusers' layout), a list of per-frame arrays /
            tensors, or a batch of one video of any of these (see the module table). uint8 or floats in [0, 1].
        what: the argument's name, used in error messages.

    Returns:
        uint8 numpy `(F, H, W, 3)` for uint8 sources (image files, PIL images, uint8 arrays / tensors), else a
        float32 CPU tensor `(F, H, W, 3)` in [0, 1] (video files, floating arrays / tensors). `F` is 1 for an image.

    Raises:
        FileNotFoundError: a path that does not exist. ValueError: an unreadable file (naming it), an unsupported
        type, shape or dtype, floats outside [0, 1] or not finite, frames of different sizes, or a batch of
        several videos.
    """
    if isinstance(source, (str, os.PathLike)):
        return _from_path(source, what)
    if isinstance(source, PIL.Image.Image):
        source = [source]
    if isinstance(source, (list, tuple)):
        if len(source) == 0:
            raise ValueError(f"{what} is an empty list")
        videos = [isinstance(s, (list, tuple)) or getattr(s, "ndim", 0) >= 4 for s in source]
        if len(source) == 1 and videos[0]:
            return as_frames(source[0], what)  # a batch of one video, e.g. `pipe(..., output_type="pil").frames`
        if any(videos):
            raise ValueError(f"{what}: got a batch of {len(source)} videos; pass one video")
        frames = [pil_to_rgb(s, what)[None] if isinstance(s, PIL.Image.Image) else _single(s, what)
                  for s in source]
        return _stack(frames, what)
    if isinstance(source, (np.ndarray, torch.Tensor)):
        if source.ndim == 5:
            if source.shape[0] != 1:
                raise ValueError(f"{what}: got a batch of {source.shape[0]} videos {tuple(source.shape)}; pass one")
            source = source[0]
        return _values(_channels_last(source, what), what)
    raise ValueError(f"{what} must be a path, PIL image(s) or frames: expected a path, PIL image(s), {_LAYOUTS}, "
                     f"got {type(source).__name__}")


def _single(frame, what: str):
    """One frame of a list (`(H, W, C)` / `(C, H, W)` array or tensor) as `(1, H, W, 3)`."""
    if not isinstance(frame, (np.ndarray, torch.Tensor)) or frame.ndim != 3:
        got = tuple(frame.shape) if hasattr(frame, "shape") else type(frame).__name__
        raise ValueError(f"{what}: a list must hold PIL images or single frames ({_LAYOUTS}), got {got}")
    return _values(_channels_last(frame, what), what)
