"""Conditioning images (`image=`): checks, preparation (the official image loader's, as `VideoCondition`) and how
they are spread over the batch.

An `image` argument is one image or a list; each item is anything `diffusers_ltx2.media.as_frames` takes: a path,
a PIL image, an `(H, W, 3)` array or `(3, H, W)` tensor, a frame of a pipeline's `output_type="pil" / "np" / "pt"`
output, or several images at once (`(B, H, W, 3)` array, `(B, 3, H, W)` tensor). uint8 (0-255) or floats in
[0, 1]; anything else is refused before any model runs (diffusers' `VideoProcessor` would silently feed e.g.
0-255 floats to the VAE at ~509).

Preparation (`prepare_images`, then `image_pixels`) is the official image loader's, the same path as
`VideoCondition`: H.264 re-compression at `image_crf` (`media.crf_compress`), resize to cover the clip, centre
crop, [-1, 1]. `image_crf=None` is diffusers' `LTX2ImageToVideoPipeline` default: the model's CRF
(`default_image_crf`: 18 for LTX-2.4+ checkpoints, 33 before, as official `resolve_crf`) for pictures - PIL images
and image files - while arrays and tensors are taken as the pixels you prepared (diffusers refuses them unless
`image_crf=0`); an explicit `image_crf` applies to every image, 0 turns it off.

Batch rule (as prompts): one image for every video, one per prompt (repeated `num_videos_per_prompt` times, per
prompt, in order: prompt 0's videos first), or one per generated video.
"""

from __future__ import annotations

import os

import numpy as np
import PIL.Image
import torch

from ..conditioning.base import VIDEO, ClipGeometry, Condition, ConditioningState, LatentEncoder
from ..conditioning.frames import to_vae_pixels
from ..latents import layout as L
from ..media.frames import as_frames


def _items(image) -> list:
    return list(image) if isinstance(image, (list, tuple)) else [image]


def image_list(image) -> list[tuple[np.ndarray | torch.Tensor, bool]]:
    """The `image` argument as single images `[(frames (1, H, W, 3), is_picture), ...]`: uint8 numpy or float
    tensor in [0, 1] (`as_frames`), and whether the image is a picture (PIL image or file: `image_crf=None` then
    re-compresses it). Raises ValueError / FileNotFoundError for what `as_frames` refuses."""
    images = _items(image)
    if not images:
        raise ValueError("image is an empty list")
    out = []
    for index, item in enumerate(images):
        where = "image" if not isinstance(image, (list, tuple)) else f"image[{index}]"
        frames = as_frames(item, where)
        picture = isinstance(item, (PIL.Image.Image, str, os.PathLike))
        out += [(frames[i:i + 1], picture) for i in range(frames.shape[0])]
    return out


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
        FileNotFoundError: a path that does not exist.
    """
    if image is None:
        return 0
    total = batch_size if total is None else total
    n = len(image_list(image))
    if n not in (1, batch_size, total):
        per_video = f" or {total} (one per video)" if total != batch_size else ""
        raise ValueError(
            f"got {n} images for a batch of {batch_size} prompts: pass 1, {batch_size} (one per prompt){per_video}"
        )
    return n


def check_image_crf(image_crf) -> None:
    """`image_crf` must be None (the default rule) or an integer in [0, 51] (0 = no re-compression)."""
    if image_crf is not None and (isinstance(image_crf, bool) or not isinstance(image_crf, (int, np.integer))
                                  or not 0 <= int(image_crf) <= 51):
        raise ValueError(f"image_crf must be None or an integer in [0, 51] (0 = no re-compression), got {image_crf!r}")


def prepare_images(image, image_crf: int | None, default_crf: int) -> list | None:
    """Checked `image` -> its images re-compressed as the official loader does: a list of `(1, H, W, 3)` frames
    (uint8 numpy / float tensor) that `image_pixels` resizes and that, passed again as `image=`, are not
    re-compressed again (arrays). `image_crf=None`: `default_crf` for pictures (PIL images, image files), none for
    arrays / tensors; else `image_crf` for every image."""
    from ..media.image import crf_compress

    check_image_crf(image_crf)
    if image is None:
        return None
    out = []
    for frames, picture in image_list(image):
        crf = int(image_crf) if image_crf is not None else (default_crf if picture else 0)
        out.append(crf_compress(frames, crf) if crf else frames)
    return out


def image_pixels(image, height: int, width: int) -> torch.Tensor:
    """`image` (prepared or not; nothing is re-compressed here) -> VAE pixels `(n, 3, 1, height, width)` in
    [-1, 1]: each image resized to cover the clip and centre-cropped (official `resize_and_center_crop`)."""
    return torch.cat([to_vae_pixels(frames, height, width, crf=0) for frames, _ in image_list(image)])


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


class FirstFrameImage(Condition):
    """The pipelines' `image=` argument as a condition: prepared images (`prepare_images`) replacing the first
    latent frame of every video with denoise mask `1 - strength` (official `VideoConditionByLatentIndex` at 0),
    spread over the batch by the batch rule above. Re-encoded at each stage's size."""

    order = 2
    modality = VIDEO
    label = "image="

    def __init__(self, images: list, strength: float = 1.0):
        self.images = images
        self.strength = float(strength)

    def replaces_first_frame(self, geometry: ClipGeometry) -> bool:
        return True

    def apply_to(self, state: ConditioningState, encoder: LatentEncoder, geometry: ClipGeometry) -> None:
        latents = first_frame_latents(self.images, geometry.height, geometry.width, geometry.batch_size, encoder)
        state.replace_first_frames(L.pack_video(latents.float()), self.strength, self.label)


def first_frame_latents(image, height: int, width: int, batch_size: int, encoder: LatentEncoder) -> torch.Tensor:
    """`image` resized to cover the clip, centre-cropped (`image_pixels`), encoded and spread over the batch:
    normalized first-frame latents `(batch_size, C, 1, h, w)`."""
    pixels = image_pixels(image, height, width)
    return spread_over_videos(encoder.encode_video(pixels, pixels.shape[0]), batch_size)
