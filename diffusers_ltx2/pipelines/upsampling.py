"""Latent spatial upsampling as the official `upsample_video` does it (ltx-core `model/upsampler/model.py`):
un-normalise the diffusion-space video latent with the video VAE's per-channel statistics, run the latent upsampler,
re-normalise."""

from __future__ import annotations

import torch

from ..latents import layout as L


def upsample_latents(
    latents: torch.Tensor, upsampler, latents_mean: torch.Tensor, latents_std: torch.Tensor,
) -> torch.Tensor:
    """Upsample normalized video latents.

    Args:
        latents: `(B, C, F, h, w)` video latents in the diffusion space (normalized with the VAE statistics), any
            float dtype.
        upsampler: diffusers' `LTX2LatentUpsamplerModel` (x2, or a rational scale such as x1.5).
        latents_mean, latents_std: the video VAE's per-channel statistics `(C,)` (`vae.latents_mean` /
            `vae.latents_std`).

    Returns:
        `(B, C, F, h * s, w * s)` normalized latents in `latents.dtype`, s the upsampler's scale.

    Raises:
        ValueError: wrong rank or channel count.
    """
    if latents.ndim != 5:
        raise ValueError(f"upsample_latents takes (B, C, F, H, W) latents, got shape {tuple(latents.shape)}")
    channels = upsampler.config.in_channels
    if latents.shape[1] != channels:
        raise ValueError(f"latents have {latents.shape[1]} channels, the upsampler takes {channels}")
    param = next(upsampler.parameters())
    raw = L.denormalize_video(latents.to(param.device, torch.float32), latents_mean, latents_std)
    with torch.no_grad():
        up = upsampler(raw.to(param.dtype)).float()
    return L.normalize_video(up, latents_mean, latents_std).to(latents.dtype)


def upsampler_scale(upsampler) -> float:
    """Spatial factor of an `LTX2LatentUpsamplerModel` (2.0 for the plain pixel-shuffle x2 model)."""
    cfg = upsampler.config
    return float(cfg.rational_spatial_scale) if cfg.use_rational_resampler else 2.0
