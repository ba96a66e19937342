"""`ReferenceVideo`: IC-LoRA video-to-video control as a condition (official ltx-core 1.0.0
`VideoConditionByReferenceLatent`, wrapped in `ConditioningItemAttentionStrengthWrapper` below full attention).

The reference is fitted to the clip at `(H / f, W / f)` (`f` the LoRA's reference downscale factor; every `n`-th
frame for a temporal scale factor `n`), VAE-encoded, and its tokens are appended after the target tokens: clean
value itself, denoise mask `1 - strength`, positions from its own small grid with h / w times `f` (so it spans the
target's pixel box) and time at `fps / n`. Below full attention strength (or with a mask) generated<->reference
attention gets the official log bias (`conditioning.reference_attention`, `latents.attention`).
"""

from __future__ import annotations

import torch

from ..control.video import fit_frames, run_preprocessor, to_frames
from ..latents import layout as L
from ..rules import nearest_multiples
from .base import VIDEO, ClipGeometry, Condition, ConditioningState, LatentEncoder
from .frames import vae_pixels
from .reference_attention import latent_token_mask, reference_cross_weights

__all__ = ["ReferenceVideo"]


class ReferenceVideo(Condition):
    """Condition the clip on a reference (control) video through a loaded IC-LoRA.

    Args:
        video: the reference, in any form `media.as_frames` takes (a video path, PIL images, `(F, H, W, 3)` array,
            `(F, 3, H, W)` tensor; uint8 or floats in [0, 1]); trimmed to the clip (a shorter one conditions the
            first `8k + 1` frames it covers), resized / centre-cropped to `(H / f, W / f)`. Or pass `latents`.
        strength: in [0, 1]; 1 keeps the reference tokens clean (official).
        downscale_factor: `f`, the IC-LoRA's `reference_downscale_factor` (`pipe.reference_downscale_factor`).
        attention_strength: in [0, 1], how strongly generated and reference tokens attend to each other (1:
            unmodified, 0: the reference is ignored).
        attention_mask: optional `(B, 1, F, H, W)` / `(B, F, H, W)` pixel-space weights in [0, 1] over the fitted
            reference, multiplied by `attention_strength`.
        temporal_scale_factor: `n`, the LoRA's `reference_temporal_scale_factor` (every `n`-th frame is kept).
        preprocessor: optional `(F, 3, H, W) -> (F, 3, H, W)` callable in [0, 1] run on the fitted frames when the
            condition is applied (e.g. `control.CannyPreprocessor()`).
        latents: instead of `video`, normalized reference latents `(1 or B, C, f, h, w)` (as training stores them).

    Raises:
        ValueError / FileNotFoundError (before any model runs): bad numbers, an unreadable video, a clip size that
        is not a multiple of `32 f`, a mask that is not a 4-D / 5-D tensor.
    """

    order = 3
    modality = VIDEO

    def __init__(self, video=None, strength: float = 1.0, downscale_factor: int = 1, attention_strength: float = 1.0,
                 attention_mask: torch.Tensor | None = None, *, temporal_scale_factor: int = 1, preprocessor=None,
                 latents: torch.Tensor | None = None):
        for name, value in (("strength", strength), ("attention_strength", attention_strength)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise ValueError(f"ReferenceVideo: {name} must be a number in [0, 1], got {value!r}")
        for name, value in (("downscale_factor", downscale_factor), ("temporal_scale_factor", temporal_scale_factor)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"reference_{name} must be a positive integer, got {value!r}")
        if attention_mask is not None and not isinstance(attention_mask, torch.Tensor):
            raise ValueError("conditioning_attention_mask must be a torch.Tensor")
        if attention_mask is not None and attention_mask.ndim not in (4, 5):
            raise ValueError("conditioning_attention_mask must be (B, 1, F, H, W) or (B, F, H, W), got "
                             f"{tuple(attention_mask.shape)}")
        if (video is None) == (latents is None):
            raise ValueError("ReferenceVideo takes a video (a file, PIL frames, an array or a tensor) or its latents")
        self.frames = None if video is None else to_frames(video, keep_uint8=True)  # 1/4 of float32
        self.latents = latents
        self.strength, self.attention_strength = float(strength), float(attention_strength)
        self.downscale_factor, self.temporal_scale_factor = downscale_factor, temporal_scale_factor
        self.attention_mask, self.preprocessor = attention_mask, preprocessor

    def fit(self, geometry: ClipGeometry) -> torch.Tensor:
        """The reference frames fitted to the clip: `(F, 3, H / f, W / f)` in [0, 1], `F = 8k + 1` frames."""
        g, f = geometry, self.downscale_factor
        return fit_frames(self.frames, g.num_frames, g.height // f, g.width // f, g.temporal_ratio,
                          frame_step=self.temporal_scale_factor)

    def check(self, geometry: ClipGeometry) -> None:
        g, f = geometry, self.downscale_factor
        unit = g.spatial_ratio * f
        if g.height % unit or g.width % unit:
            raise ValueError(
                f"with reference_downscale_factor {f} height and width must be multiples of {unit} (the reference is "
                f"encoded at height/{f} x width/{f}), got {g.height}x{g.width}; nearest valid: height "
                f"{nearest_multiples(g.height, unit)}, width {nearest_multiples(g.width, unit)}")

    def apply_to(self, state: ConditioningState, encoder: LatentEncoder, geometry: ClipGeometry) -> None:
        g, mask = geometry, self.attention_mask
        if self.latents is not None:
            ref = self.latents.to(encoder.device, torch.float32).expand(g.batch_size, -1, -1, -1, -1)
        else:
            frames = self.fit(g)
            if self.preprocessor is not None:
                frames = run_preprocessor(self.preprocessor, frames)
            ref = encoder.encode_video(vae_pixels(frames), g.batch_size)
            if mask is not None and mask.ndim >= 4:  # pixel frames beyond the fitted reference are not used
                mask = mask[..., : frames.shape[0], :, :]
        _, _, f, h, w = ref.shape
        positions = encoder.video_positions(g.batch_size, f, h, w, g.frame_rate / self.temporal_scale_factor,
                                            spatial_scale=self.downscale_factor)
        token_mask = None if mask is None else latent_token_mask(mask, f, h, w, g.temporal_ratio)
        weights = reference_cross_weights(self.attention_strength, token_mask, g.batch_size, f * h * w)
        state.append(VIDEO, L.pack_video(ref.float()), positions, 1.0 - self.strength, attention_weights=weights)
