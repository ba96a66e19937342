"""Pixel frames for video conditions: official preprocessing and the VAE's pixel layout. Inputs are normalised
by `diffusers_ltx2.media.frames.as_frames` (every video input's one normalisation; re-exported here).

Official loaders (`ltx_pipelines.utils.media_io`): an image is H.264-recompressed (`preprocess`, CRF 33) on its
uint8 pixels, then resized to cover the clip and centre-cropped (`resize_and_center_crop`), then mapped to
[-1, 1] (`/ 127.5 - 1`); a video clip is resized and cropped per frame without recompression.
"""

from __future__ import annotations

import numpy as np
import torch

from ..media.frames import as_frames
from ..rules import resolve_frame_index  # plain Python: the CLI resolves @FRAME before importing torch

__all__ = ["as_frames", "num_frames_of", "resolve_frame_index", "to_vae_pixels", "vae_pixels"]


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


def vae_pixels(frames: torch.Tensor) -> torch.Tensor:
    """`(F, 3, H, W)` frames in [0, 1] -> the VAE's `(1, 3, F, H, W)` pixels in [-1, 1]."""
    return (frames * 2 - 1).permute(1, 0, 2, 3).unsqueeze(0)
