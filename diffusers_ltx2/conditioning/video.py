"""`VideoCondition`: an image or a clip at any pixel frame (first frame, keyframes, first-last frame).

Official semantics (ltx-core 1.0.0 `conditioning/types`, used by `ltx_pipelines.utils.helpers.
combined_image_conditionings`):
- frame 0 (`VideoConditionByLatentIndex`): the encoded latent overwrites the clean tokens of the first latent
  frame(s); their denoise mask is `1 - strength`;
- any other pixel frame (`VideoConditionByKeyframeIndex`): the encoded tokens are appended after the target tokens
  (clean = the tokens, mask `1 - strength`), with positions = their own pixel boxes, time shifted by
  `frame_index` pixel frames, *without* the causal first-frame fix, divided by fps. They are dropped before
  decoding. On LTX-2.4+ (`ClipGeometry.conditioning_rule`, ltx-core 1.2) a keyframe *image* spans one pixel frame.
"""

from __future__ import annotations

import torch

from ..latents import layout as L
from .base import VIDEO, ClipGeometry, Condition, ConditioningState, LatentEncoder
from .frames import as_frames, num_frames_of, resolve_frame_index, to_vae_pixels

#: the CRF of image conditions on LTX-2.0 / 2.3 (official `DEFAULT_IMAGE_CRF`; 2.4+: 18, see `versions`)
DEFAULT_IMAGE_CRF = 33


def keyframe_positions(
    batch_size: int, latent_frames: int, latent_height: int, latent_width: int, *, frame_index: int,
    frame_rate: float, temporal_ratio: int = 8, spatial_ratio: int = 32, device=None,
) -> torch.Tensor:
    """Positions `(B, 3, F*H*W, 2)` (`[start, end)` per axis, float32) of keyframe tokens appended at
    `frame_index` (official `VideoConditionByKeyframeIndex`: pixel boxes, causal fix only at frame 0, time
    `+ frame_index`, then divided by `frame_rate`)."""
    f = torch.arange(latent_frames, dtype=torch.float32, device=device)
    h = torch.arange(latent_height, dtype=torch.float32, device=device)
    w = torch.arange(latent_width, dtype=torch.float32, device=device)
    grid = torch.stack(torch.meshgrid(f, h, w, indexing="ij"))  # (3, F, H, W)
    bounds = torch.stack([grid, grid + 1], dim=-1).flatten(1, 3)  # (3, N, 2) latent [start, end)
    scale = torch.tensor([temporal_ratio, spatial_ratio, spatial_ratio], dtype=torch.float32, device=device)
    pixels = bounds * scale.view(3, 1, 1)
    if frame_index == 0:
        pixels[0] = (pixels[0] + 1 - temporal_ratio).clamp(min=0)
    pixels[0] = (pixels[0] + frame_index) / frame_rate
    return pixels.unsqueeze(0).repeat(batch_size, 1, 1, 1)


class VideoCondition(Condition):
    """Condition the clip on an image or a short clip placed at pixel frame `frame_index`.

    Args:
        frames: an image or a clip, in any form `diffusers_ltx2.media.as_frames` takes: image / video path, PIL
            image(s), numpy `(H, W, 3)` / `(F, H, W, 3)`, torch `(3, H, W)` / `(F, 3, H, W)` (a pipeline's
            `output_type="pil" / "np" / "pt"` frames included), uint8 or floats in [0, 1]. A clip needs `8k + 1`
            frames (the VAE's unit); an image is one frame. Resized to cover the clip and centre-cropped
            (official loader).
        frame_index: pixel frame the media starts on; negative counts from the end of the clip as the CLI's
            `@FRAME` (-1: an image on the last frame, a clip ending on it). 0 replaces the first latent
            frame(s); any other frame appends keyframe tokens. The media must fit in the clip's frames.
        strength: in [0, 1]; 1 holds the frames exactly (denoise mask `1 - strength`).
        crf: H.264 CRF applied to *images* before encoding, as the official image loader (0 = off); `None`
            (default): the model's, 18 for LTX-2.4+ checkpoints and 33 before (official `resolve_crf`).

    Raises:
        ValueError: at construction for a bad index / strength / crf or frames (see `as_frames`); from `check`,
            before any model runs, for a clip whose frame count is not 1 or `8k + 1` or media outside the clip.
        FileNotFoundError: a missing file.
    """

    order = 2
    modality = VIDEO

    def __init__(self, frames, frame_index: int = 0, strength: float = 1.0, *, crf: int | None = None):
        if isinstance(frame_index, bool) or not isinstance(frame_index, int):
            raise ValueError(f"frame_index must be an integer (negative: from the end), got {frame_index!r}")
        if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0.0 <= strength <= 1.0:
            raise ValueError(f"strength must be a number in [0, 1], got {strength!r}")
        if crf is not None and (isinstance(crf, bool) or not isinstance(crf, int) or not 0 <= crf <= 51):
            raise ValueError(f"crf must be an integer in [0, 51] (0 = no recompression) or None (the model's), "
                             f"got {crf!r}")
        self.frames = as_frames(frames, "VideoCondition")
        self.frame_index = frame_index
        self.strength = float(strength)
        self.crf = crf

    def start_frame(self, geometry: ClipGeometry) -> int:
        """The pixel frame the media starts on in this clip (a negative `frame_index` resolved)."""
        return resolve_frame_index(self.frame_index, geometry.num_frames, self.num_frames)

    @property
    def num_frames(self) -> int:
        return num_frames_of(self.frames)

    def check(self, geometry: ClipGeometry) -> None:
        geometry.check_clip_frames(self.num_frames, "VideoCondition")
        start = self.start_frame(geometry)
        last = start + self.num_frames - 1
        if start < 0 or last > geometry.num_frames - 1:
            where = f"starts at frame {start}" if start < 0 else f"ends at frame {last}"
            raise ValueError(
                f"VideoCondition at frame {self.frame_index} with {self.num_frames} frame(s) {where}, outside the "
                f"clip's frames 0..{geometry.num_frames - 1}"
            )

    def replaces_first_frame(self, geometry: ClipGeometry) -> bool:
        return self.start_frame(geometry) == 0

    def apply_to(self, state: ConditioningState, encoder: LatentEncoder, geometry: ClipGeometry) -> None:
        g = geometry
        start = self.start_frame(g)
        pixels = to_vae_pixels(self.frames, g.height, g.width, g.image_crf if self.crf is None else self.crf)
        latents = encoder.encode_video(pixels, g.batch_size)
        tokens = L.pack_video(latents.float())  # (B, f*h*w, C) of the (B, C, f, h, w) latents
        if start == 0:
            state.replace_first_frames(tokens, self.strength, "a VideoCondition")
            return
        positions = keyframe_positions(g.batch_size, *latents.shape[2:], frame_index=start, frame_rate=g.frame_rate,
                                       temporal_ratio=g.temporal_ratio, spatial_ratio=g.spatial_ratio,
                                       device=tokens.device)
        if g.conditioning_rule == "ltx_core_1_2" and self.num_frames == 1:
            positions[:, 0, :, 1] = positions[:, 0, :, 0] + 1.0 / g.frame_rate
        state.append(VIDEO, tokens, positions, 1.0 - self.strength)
