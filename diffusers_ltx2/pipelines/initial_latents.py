"""`InitialLatentsMixin`: the initial (noised, optionally conditioned) latent states of an LTX-2 pipeline.

Part of `LTX2PipelineBase` (which inherits it): RoPE coordinates of the latent grid, the packed/unpacked latent
shapes of a clip, and the official noiser (`noise * m + clean * (1 - m)`, ltx-core `GaussianNoiser` /
ltx-pipelines `create_noised_state`) applied to the video and audio states. It needs the pipeline's
`transformer`, `vae`, `audio_vae` and `encode_image`.
"""

from __future__ import annotations

import torch
from diffusers.utils.torch_utils import randn_tensor

from . import latents as L
from .denoising import ModalityLatents


def video_coords(transformer, batch_size: int, frames: int, height: int, width: int, frame_rate: float, device,
                 spatial_scale: int = 1) -> torch.Tensor:
    """`(B, 3, F*H*W, 2)` RoPE positions of a latent grid from the transformer's own rule; `spatial_scale`
    multiplies h / w (IC-LoRA references on a downscaled grid). Shared by the pipelines and training."""
    coords = transformer.rope.prepare_video_coords(batch_size, frames, height, width, device, fps=frame_rate)
    if spatial_scale != 1:
        coords = coords.clone()
        coords[:, 1:] *= spatial_scale
    return coords


class InitialLatentsMixin:
    """Initial-latent preparation shared by every LTX-2 pipeline of this package (mixed into
    `LTX2PipelineBase`)."""

    def video_coords(self, batch_size: int, frames: int, height: int, width: int, frame_rate: float, device,
                     spatial_scale: int = 1) -> torch.Tensor:
        """RoPE positions of a latent grid (see the module-level `video_coords`)."""
        return video_coords(self.transformer, batch_size, frames, height, width, frame_rate, device, spatial_scale)

    def prepare_video_latents(
        self, batch_size: int, num_frames: int, height: int, width: int, frame_rate: float, *,
        generator=None, noise: torch.Tensor | None = None, device=None,
        first_frame: torch.Tensor | None = None, first_frame_strength: float = 1.0,
        clean_latents: torch.Tensor | None = None, noise_scale: float = 1.0,
    ) -> ModalityLatents:
        """Initial noisy video state; `first_frame` (normalized latents `(B, C, 1, h, w)`) conditions frame 0.

        `noise`: the noise to use instead of drawing it. `clean_latents` (diffusers' `latents` with a
        `noise_scale`): latents to start from, unpacked `(B, C, F, H, W)` in the VAE's space (what
        `output_type="latent"` returns) or packed normalized tokens `(B, N, C)`, noised by `noise_scale`.
        """
        f, h, w = L.latent_video_size(num_frames, height, width, self.vae_temporal_ratio, self.vae_spatial_ratio)
        channels = self.transformer.config.in_channels
        shape = (batch_size, f * h * w, channels)
        clean = torch.zeros(shape, device=device, dtype=torch.float32)
        if clean_latents is not None:
            clean_latents = clean_latents.to(device, torch.float32)
            if clean_latents.ndim == 5:
                clean_latents = L.pack_video(L.normalize_video(clean_latents, self.vae.latents_mean,
                                                               self.vae.latents_std))
            clean = clean_latents.clone()
        mask = torch.ones(shape[:2], device=device, dtype=torch.float32)
        if first_frame is not None:
            tokens = L.pack_video(first_frame.to(device, torch.float32))
            clean[:, : tokens.shape[1]] = tokens
            mask[:, : tokens.shape[1]] = 1.0 - first_frame_strength
        coords = self.video_coords(batch_size, f, h, w, frame_rate, device)
        return self._noised(clean, mask, coords, shape[1], generator, noise, noise_scale)

    def prepare_audio_latents(
        self, batch_size: int, num_frames: int, frame_rate: float, *, generator=None,
        noise: torch.Tensor | None = None, device=None, clean_latents: torch.Tensor | None = None,
        noise_scale: float = 1.0,
    ) -> ModalityLatents:
        """Initial noisy audio state covering the clip's duration (`clean_latents`: unpacked `(B, C, T, M)` in
        the audio VAE's space, or packed normalized tokens `(B, T, C*M)`; see `prepare_video_latents`)."""
        length = L.audio_latent_length(num_frames, frame_rate, L.audio_latents_per_second(self.audio_vae))
        channels = self.transformer.config.audio_in_channels
        shape = (batch_size, length, channels)
        clean = torch.zeros(shape, device=device, dtype=torch.float32)
        if clean_latents is not None:
            clean_latents = clean_latents.to(device, torch.float32)
            if clean_latents.ndim == 4:
                clean_latents = L.normalize_audio_tokens(L.pack_audio(clean_latents), self.audio_vae.latents_mean,
                                                         self.audio_vae.latents_std)
            clean = clean_latents.clone()
        mask = torch.ones(shape[:2], device=device, dtype=torch.float32)
        coords = self.transformer.audio_rope.prepare_audio_coords(batch_size, length, device)
        return self._noised(clean, mask, coords, length, generator, noise, noise_scale)

    def prepare_initial_latents(
        self, total: int, num_frames: int, height: int, width: int, frame_rate: float, *, generator=None,
        latents=None, audio_latents=None, image=None, image_strength: float = 1.0, device=None,
        noise_scale: float = 0.0,
    ) -> tuple[ModalityLatents, ModalityLatents]:
        """Noised video and audio states (video noise drawn first, as the official pipelines do); an `image`
        conditions the first frame (one image, one per prompt or one per video; see `images`).

        `noise_scale == 0`: `latents` / `audio_latents` are the initial noise. `noise_scale > 0` (diffusers'
        meaning, e.g. 0.909375 for a second stage): they are clean latents, noised as the official noiser does,
        `noise * s * mask + clean * (1 - s * mask)` with fresh noise from `generator`; without them it is ignored.
        """
        first_frame = self.encode_image(image, height, width, total, device) if image is not None else None
        renoise = noise_scale > 0
        video = self.prepare_video_latents(
            total, num_frames, height, width, frame_rate, generator=generator, device=device,
            first_frame=first_frame, first_frame_strength=image_strength,
            noise=None if renoise else latents, clean_latents=latents if renoise else None,
            noise_scale=noise_scale if renoise and latents is not None else 1.0,
        )
        audio = self.prepare_audio_latents(
            total, num_frames, frame_rate, generator=generator, device=device,
            noise=None if renoise else audio_latents, clean_latents=audio_latents if renoise else None,
            noise_scale=noise_scale if renoise and audio_latents is not None else 1.0,
        )
        return video, audio

    def prepare_conditions(
        self, conditions, total: int, num_frames: int, height: int, width: int, frame_rate: float, *,
        image=None, output_modalities=("video", "audio"), latents=None,
    ):
        """Check `conditions=` / `output_modalities=` against the clip (before any model runs); returns the
        ordered conditions and whether the call is audio-only (see `diffusers_ltx2.conditioning`). diffusers'
        `LTX2VideoCondition` objects become `VideoCondition`s with diffusers' meaning
        (`conditioning.diffusers_condition`)."""
        from .. import conditioning as C
        from ..conditioning.diffusers_condition import from_diffusers_conditions

        geometry = C.geometry_for(self, total, num_frames, height, width, frame_rate)
        conditions = from_diffusers_conditions(conditions, geometry, geometry.image_crf)
        ordered = C.check_conditions(conditions, geometry, image=image, output_modalities=output_modalities)
        audio_only = C.check_output_modalities(output_modalities) == ("audio",)
        if audio_only and latents is not None:
            raise ValueError("audio-only generation draws no video noise: pass audio_latents, not latents")
        return ordered, audio_only

    def prepare_conditioned_latents(
        self, conditions, total: int, num_frames: int, height: int, width: int, frame_rate: float, *,
        generator=None, latents=None, audio_latents=None, image=None, image_strength: float = 1.0,
        audio_only: bool = False, device=None, initial_video=None, initial_audio=None, noise_scale: float = 1.0,
    ):
        """Initial states with `conditions` applied, then noised (video first, then audio); returns
        `conditioning.ConditionedLatents`. `initial_video` / `initial_audio` (clean packed tokens) and
        `noise_scale`: start from a given clean latent re-noised to `noise_scale` (two-stage refinement)."""
        from .. import conditioning as C

        geometry = C.geometry_for(self, total, num_frames, height, width, frame_rate)
        first_frame = self.encode_image(image, height, width, total, device) if image is not None else None
        return C.prepare_conditioned_latents(
            self, conditions, geometry, generator=generator, latents=latents, audio_latents=audio_latents,
            first_frame=first_frame, first_frame_strength=image_strength, audio_only=audio_only, device=device,
            initial_video=initial_video, initial_audio=initial_audio, noise_scale=noise_scale,
        )

    def audio_latent_shape(self, batch_size: int, num_frames: int, frame_rate: float):
        """`(packed, unpacked)` shapes of the audio latents of a clip."""
        length = L.audio_latent_length(num_frames, frame_rate, L.audio_latents_per_second(self.audio_vae))
        channels = self.transformer.config.audio_in_channels
        mel = self.audio_vae.config.mel_bins // self.audio_vae.mel_compression_ratio
        return (batch_size, length, channels), (batch_size, channels // mel, length, mel)

    def video_latent_shape(self, batch_size: int, num_frames: int, height: int, width: int):
        """`(packed, unpacked)` shapes of the video latents of a clip."""
        f, h, w = L.latent_video_size(num_frames, height, width, self.vae_temporal_ratio, self.vae_spatial_ratio)
        c = self.transformer.config.in_channels
        return (batch_size, f * h * w, c), (batch_size, c, f, h, w)

    @staticmethod
    def _noised(clean, mask, coords, num_target, generator, noise, noise_scale: float = 1.0) -> ModalityLatents:
        """Official noiser: `latent = noise * m + clean * (1 - m)` with `m = mask * noise_scale`, noise drawn in
        token layout (or given, packed or unpacked)."""
        if noise is None:
            noise = randn_tensor(clean.shape, generator=generator, device=clean.device, dtype=torch.float32)
        elif noise.ndim == 5:
            noise = L.pack_video(noise)
        elif noise.ndim == 4:
            noise = L.pack_audio(noise)
        noise = noise.to(clean.device, torch.float32)
        m = mask.unsqueeze(-1) * noise_scale
        latent = noise * m + clean * (1 - m)
        return ModalityLatents(latent=latent, clean=clean, denoise_mask=mask, coords=coords,
                               num_target_tokens=num_target)
