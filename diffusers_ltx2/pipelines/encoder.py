"""`ModelLatentEncoder`: the `conditioning.LatentEncoder` of a pipeline call, over its video / audio VAEs and its
transformer's positions (model plumbing; conditions get this, never the pipeline)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..conditioning.audio import encode_audio_tokens
from ..latents import layout as L
from ..memory.vae_tiling import auto_tile_vae

__all__ = ["ModelLatentEncoder", "video_coords"]


def video_coords(transformer, batch_size: int, frames: int, height: int, width: int, frame_rate: float, device,
                 spatial_scale: int = 1) -> torch.Tensor:
    """`(B, 3, F*H*W, 2)` RoPE positions of a latent grid from the transformer's own rule (pixel boxes, causal fix,
    seconds); `spatial_scale` multiplies h / w (IC-LoRA references on a downscaled grid). Shared by the pipelines
    and training."""
    coords = transformer.rope.prepare_video_coords(batch_size, frames, height, width, device, fps=frame_rate)
    if spatial_scale != 1:
        coords = coords.clone()
        coords[:, 1:] *= spatial_scale
    return coords


@dataclass(frozen=True, eq=False)
class ModelLatentEncoder:
    """Encodes conditioning media and gives token positions for one call.

    Attributes:
        transformer: `LTX2VideoTransformer3DModel` (positions, token widths).
        vae, audio_vae: `AutoencoderKLLTX2Video` / `AutoencoderKLLTX2Audio` (`None` where not needed, e.g.
            training from precomputed latents).
        device: where the states live.
        output_sample_rate: the vocoder's rate, Hz (a frozen source's returned waveform is resampled to it).
        vae_memory_budget: bytes for one VAE encode; drives automatic tiling (`memory.vae_tiling`).
    """

    transformer: torch.nn.Module
    vae: torch.nn.Module | None = None
    audio_vae: torch.nn.Module | None = None
    device: torch.device | str = "cpu"
    output_sample_rate: int = 24000
    vae_memory_budget: int | None = None

    @property
    def video_channels(self) -> int:
        return self.transformer.config.in_channels

    @property
    def audio_channels(self) -> int:
        return self.transformer.config.audio_in_channels

    def encode_video(self, pixels: torch.Tensor, batch_size: int) -> torch.Tensor:
        """VAE-encode `(B, 3, F, H, W)` pixels in `[-1, 1]` into normalized diffusion-space latents (the posterior
        mean), float32; a batch of one is broadcast to `batch_size`."""
        pixels = pixels.to(device=self.device, dtype=self.vae.dtype)
        auto_tile_vae(self.vae, *pixels.shape[2:], budget_bytes=self.vae_memory_budget)
        with torch.no_grad():
            latents = self.vae.encode(pixels).latent_dist.mode()
        latents = L.normalize_video(latents.float(), self.vae.latents_mean, self.vae.latents_std)
        return latents.expand(batch_size, -1, -1, -1, -1) if latents.shape[0] == 1 else latents

    def encode_audio(self, waveform: torch.Tensor, sample_rate: int, length: int) -> torch.Tensor:
        """`(C, N)` waveform -> normalized packed audio tokens `(1, length, C_a)` (`conditioning.encode_audio_tokens`:
        the official mel front end and the audio VAE's encoder)."""
        return encode_audio_tokens(self, waveform, sample_rate, length)

    def normalize_video_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Denormalized `(B, C, F, h, w)` video latents -> normalized float32 (the video VAE's statistics)."""
        mean, std = self.vae.latents_mean, self.vae.latents_std
        return L.normalize_video(latents.to(mean.device, torch.float32), mean, std)

    def normalize_audio_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Denormalized `(B, C, T, M)` audio latents -> normalized packed tokens `(B, T, C*M)` float32."""
        mean, std = self.audio_vae.latents_mean, self.audio_vae.latents_std
        return L.normalize_audio_tokens(L.pack_audio(latents.to(mean.device, torch.float32)), mean, std)

    def video_positions(self, batch_size: int, frames: int, height: int, width: int, frame_rate: float,
                        spatial_scale: int = 1) -> torch.Tensor:
        return video_coords(self.transformer, batch_size, frames, height, width, frame_rate, self.device,
                            spatial_scale)

    def audio_positions(self, batch_size: int, length: int) -> torch.Tensor:
        return self.transformer.audio_rope.prepare_audio_coords(batch_size, length, self.device)
