"""Conditioning images: checks, value range and how they are spread over the batch.

An `image` argument is one image or a list; each item is an image file path (decoded as `VideoCondition` and
the CLI's `--image` decode it: `media.load_image`), a PIL image, an `(H, W, 3)` / `(B, H, W, 3)` array or a
`(3, H, W)` / `(B, 3, H, W)` tensor. Floating values must lie in [0, 1]; `uint8` values (0-255) are scaled by
1/255; any other dtype or range is refused (before any model runs), since diffusers' `VideoProcessor` would
silently feed e.g. 0-255 floats to the VAE at ~509.

Batch rule (as prompts): one image for every video, one per prompt (repeated `num_videos_per_prompt` times, per
prompt, in order: prompt 0's videos first), or one per generated video.
"""

from __future__ import annotations

import os

import numpy as np
import PIL.Image
import torch

from ..media.image import load_image

#: Floating images may overshoot [0, 1] by this much (resampling ringing); they are clamped.
RANGE_TOLERANCE = 1e-3


def _items(image) -> list:
    return list(image) if isinstance(image, (list, tuple)) else [image]


def _check_values(im, where: str) -> None:
    dtype = im.dtype
    if isinstance(im, np.ndarray):
        is_uint8, is_float = dtype == np.uint8, np.issubdtype(dtype, np.floating)
    else:
        is_uint8, is_float = dtype == torch.uint8, im.is_floating_point()
    if is_uint8:
        return
    if not is_float:
        raise ValueError(f"{where} has dtype {dtype}: images must be uint8 (0-255) or floating point in [0, 1]")
    values = torch.as_tensor(im) if isinstance(im, np.ndarray) else im.detach()
    if values.numel() == 0:
        raise ValueError(f"{where} is empty")
    if not bool(torch.isfinite(values).all()):
        raise ValueError(f"{where} contains NaN or infinite values")
    lo, hi = float(values.min()), float(values.max())
    if lo < -RANGE_TOLERANCE or hi > 1.0 + RANGE_TOLERANCE:
        hint = " (0-255 values: pass a uint8 array)" if hi > 1.0 + RANGE_TOLERANCE and hi <= 255.0 else ""
        raise ValueError(f"{where} has values in [{lo:.4g}, {hi:.4g}]; floating images must be in [0, 1]{hint}")


def check_image(image, batch_size: int, total: int | None = None) -> int:
    """Validate an `image` argument (types, shapes, dtypes, value range, count) before any model runs.

    Args:
        image: the `image` argument (or `None`).
        batch_size: number of prompts.
        total: number of generated videos (`batch_size * num_videos_per_prompt`; default `batch_size`).

    Returns:
        The number of images (0 for `None`).

    Raises:
        ValueError: on a bad type, shape, dtype or value range, or a count other than 1, `batch_size` or `total`.
    """
    if image is None:
        return 0
    total = batch_size if total is None else total
    images = _items(image)
    if not images:
        raise ValueError("image is an empty list")
    n = 0
    for index, im in enumerate(images):
        where = "image" if not isinstance(image, (list, tuple)) else f"image[{index}]"
        if isinstance(im, (PIL.Image.Image, str, os.PathLike)):
            if not isinstance(im, PIL.Image.Image):
                load_image(im)  # a file path, as `VideoCondition` and `--image` take: it must decode
            n += 1
            continue
        if isinstance(im, np.ndarray):
            arr = im if im.ndim == 4 else im[None] if im.ndim == 3 else None
            if arr is None or arr.shape[-1] not in (1, 3):
                raise ValueError(f"image arrays must be (H, W, 3) or (B, H, W, 3), got {im.shape}")
            n += arr.shape[0]
        elif isinstance(im, torch.Tensor):
            t = im if im.ndim == 4 else im[None] if im.ndim == 3 else None
            if t is None or t.shape[1] != 3:
                raise ValueError(f"image tensors must be (3, H, W) or (B, 3, H, W), got {tuple(im.shape)}")
            n += t.shape[0]
        else:
            raise ValueError(f"image must be a file path, PIL image, numpy array or torch tensor, got "
                             f"{type(im).__name__}")
        _check_values(im, where)
    if n not in (1, batch_size, total):
        per_video = f" or {total} (one per video)" if total != batch_size else ""
        raise ValueError(
            f"got {n} images for a batch of {batch_size} prompts: pass 1, {batch_size} (one per prompt){per_video}"
        )
    return n


def to_unit_range(image):
    """The `image` argument with every path / array / tensor as float32 in [0, 1] (uint8 scaled by 1/255, floats
    clamped to [0, 1]); PIL images converted to RGB (grayscale "L", "RGBA", "P", ... as `PIL.Image.convert`
    does, like the CLI and `VideoCondition`). Call after `check_image`."""

    def one(im):
        if isinstance(im, (str, os.PathLike)):
            return load_image(im).astype(np.float32) / 255.0
        if isinstance(im, PIL.Image.Image):
            return im if im.mode == "RGB" else im.convert("RGB")
        if isinstance(im, np.ndarray):
            if im.dtype == np.uint8:
                return im.astype(np.float32) / 255.0
            return np.clip(im.astype(np.float32), 0.0, 1.0)
        if isinstance(im, torch.Tensor):
            if im.dtype == torch.uint8:
                return im.float() / 255.0
            return im.float().clamp(0.0, 1.0)
        return im

    if isinstance(image, (list, tuple)):
        return [one(im) for im in image]
    return one(image)


def spread_over_videos(latents: torch.Tensor, total: int) -> torch.Tensor:
    """Per-image latents `(n, ...)` -> per-video latents `(total, ...)`.

    `n == total`: one per video; `n == 1`: the same image for every video; otherwise (`n` prompts, checked by
    `check_image`): each image repeated for its prompt's `total // n` videos, in prompt order (as
    `PromptEmbeddings.repeat` repeats the prompt embeddings).
    """
    n = latents.shape[0]
    if n == total:
        return latents
    if n == 1:
        return latents.expand(total, *latents.shape[1:])
    if total % n:
        raise ValueError(f"{n} images cannot be spread over {total} videos: pass 1, one per prompt or one per video")
    return latents.repeat_interleave(total // n, dim=0)
