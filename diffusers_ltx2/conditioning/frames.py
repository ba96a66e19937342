"""Pixel frames for video conditions: accepted inputs, official preprocessing, and the VAE's pixel layout.

Official loaders (`ltx_pipelines.utils.media_io`): an image is H.264-recompressed (`preprocess`, CRF 33) on its
uint8 pixels, then resized to cover the clip and centre-cropped (`resize_and_center_crop`), then mapped to
[-1, 1] (`/ 127.5 - 1`); a video clip is resized and cropped per frame without recompression.
"""

from __future__ import annotations

import os

import numpy as np
import PIL.Image
import torch

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".gif")


def as_frames(source, what: str):
    """Normalize a frame source to `(F, H, W, 3)`: uint8 numpy (from files, PIL or uint8 arrays) or float32
    tensor in [0, 1].

    Args:
        source: image path, video path (by suffix, decoded with PyAV), PIL image, list of PIL images,
            `(H, W, 3)` / `(F, H, W, 3)` uint8 or float-in-[0, 1] numpy array or tensor.
        what: name used in error messages.

    Raises:
        FileNotFoundError: a path that does not exist.
        ValueError: an unsupported type or shape, or floats outside [0, 1].
    """
    from ..media.image import load_image, pil_to_rgb
    from ..media.video import load_video

    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{what}: file not found: {path}")
        if path.lower().endswith(VIDEO_SUFFIXES):
            frames, _ = load_video(path)
            return frames
        return load_image(path)[None]
    if isinstance(source, PIL.Image.Image):
        source = [source]
    if isinstance(source, (list, tuple)) and source and all(isinstance(s, PIL.Image.Image) for s in source):
        return np.stack([pil_to_rgb(s, what) for s in source])
    if isinstance(source, (np.ndarray, torch.Tensor)):
        if source.ndim == 3:
            source = source[None]
        if source.ndim != 4 or source.shape[-1] != 3 or 0 in tuple(source.shape):
            raise ValueError(f"{what}: frames must be (H, W, 3) or (F, H, W, 3) channels-last, got "
                             f"{tuple(source.shape)}")
        if isinstance(source, np.ndarray):
            if source.dtype == np.uint8:
                return source
            source = torch.from_numpy(np.ascontiguousarray(source))
        if source.dtype == torch.uint8:
            return source.cpu().numpy()
        if not source.is_floating_point():
            raise ValueError(f"{what}: frames must be uint8 or floats in [0, 1], got {source.dtype}")
        source = source.detach().to("cpu", torch.float32)
        if not bool(torch.isfinite(source).all()) or source.min() < 0 or source.max() > 1:
            raise ValueError(f"{what}: floating-point frames must be finite and in [0, 1]")
        return source
    raise ValueError(
        f"{what}: expected a path, PIL image(s), or an (F, H, W, 3) array / tensor, got {type(source).__name__}"
    )


def num_frames_of(frames) -> int:
    return int(frames.shape[0])


def to_vae_pixels(frames, height: int, width: int, crf: int) -> torch.Tensor:
    """Official preprocessing to `(1, 3, F, height, width)` float32 pixels in [-1, 1].

    Images (one frame) are recompressed at `crf` (0 = off) before resizing, as the official image loader;
    clips are only resized and centre-cropped, as the official video loader.
    """
    from ..media.image import crf_compress, resize_center_crop

    single = frames.shape[0] == 1
    if single and crf:
        frames = crf_compress(frames, crf=crf)
    scale = 255.0 if (isinstance(frames, np.ndarray) and frames.dtype == np.uint8) else 1.0
    pixels = resize_center_crop(frames, height, width)  # (F, H, W, 3) float32 on the input's scale
    pixels = pixels / (scale / 2.0) - 1.0
    return pixels.permute(3, 0, 1, 2).unsqueeze(0).contiguous()
