"""Latent layout plumbing shared by the LTX-2 pipelines: token packing, normalization and sizes.

Video latents are `(B, C, F, H, W)` with per-channel normalization; the transformer sees them as tokens
`(B, F*H*W, C)` (patch size 1, frame-major then row-major, as the official patchifier). Audio latents are
`(B, C, T, M)` (8 channels x 16 mel bins); the transformer sees `(B, T, C*M)` and normalization is applied
in that packed space.
"""

from __future__ import annotations

import torch

AUDIO_LATENTS_PER_SECOND_DEFAULT = 25.0


def pack_video(latents: torch.Tensor, patch_size: int = 1, patch_size_t: int = 1) -> torch.Tensor:
    """`(B, C, F, H, W)` -> `(B, F'*H'*W', C*pt*p*p)` tokens."""
    b, c, f, h, w = latents.shape
    x = latents.reshape(b, c, f // patch_size_t, patch_size_t, h // patch_size, patch_size, w // patch_size, patch_size)
    return x.permute(0, 2, 4, 6, 1, 3, 5, 7).flatten(4, 7).flatten(1, 3)


def unpack_video(tokens: torch.Tensor, frames: int, height: int, width: int, patch_size: int = 1, patch_size_t: int = 1):
    """Inverse of `pack_video`; `frames/height/width` are the latent grid sizes after patching."""
    b = tokens.shape[0]
    x = tokens.reshape(b, frames, height, width, -1, patch_size_t, patch_size, patch_size)
    return x.permute(0, 4, 1, 5, 2, 6, 3, 7).flatten(6, 7).flatten(4, 5).flatten(2, 3)


def pack_audio(latents: torch.Tensor) -> torch.Tensor:
    """`(B, C, T, M)` -> `(B, T, C*M)`."""
    return latents.transpose(1, 2).flatten(2, 3)


def unpack_audio(tokens: torch.Tensor, mel_bins: int) -> torch.Tensor:
    """`(B, T, C*M)` -> `(B, C, T, M)`."""
    return tokens.unflatten(2, (-1, mel_bins)).transpose(1, 2)


def normalize_video(latents: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Per-channel normalization of `(B, C, F, H, W)` VAE latents into the diffusion space."""
    mean = mean.view(1, -1, 1, 1, 1).to(latents.device, latents.dtype)
    std = std.view(1, -1, 1, 1, 1).to(latents.device, latents.dtype)
    return (latents - mean) / std


def denormalize_video(latents: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Inverse of `normalize_video`."""
    mean = mean.view(1, -1, 1, 1, 1).to(latents.device, latents.dtype)
    std = std.view(1, -1, 1, 1, 1).to(latents.device, latents.dtype)
    return latents * std + mean


def denormalize_audio_tokens(tokens: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Undo the audio VAE latent normalization on packed `(B, T, C*M)` tokens."""
    return tokens * std.to(tokens.device, tokens.dtype) + mean.to(tokens.device, tokens.dtype)


def normalize_audio_tokens(tokens: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Apply the audio VAE latent normalization on packed `(B, T, C*M)` tokens."""
    return (tokens - mean.to(tokens.device, tokens.dtype)) / std.to(tokens.device, tokens.dtype)


def latent_video_size(num_frames: int, height: int, width: int, temporal_ratio: int = 8, spatial_ratio: int = 32):
    """Latent grid `(F, H, W)` of a `num_frames x height x width` clip."""
    return (num_frames - 1) // temporal_ratio + 1, height // spatial_ratio, width // spatial_ratio


def audio_latent_length(num_frames: int, frame_rate: float, latents_per_second: float) -> int:
    """Audio latent frames for a clip: `round(num_frames / frame_rate * latents_per_second)` (official rule)."""
    return max(1, round(num_frames / frame_rate * latents_per_second))


def audio_latents_per_second(audio_vae) -> float:
    """Audio latents per second of an audio VAE (16 kHz / hop 160 / 4x -> 25)."""
    cfg = audio_vae.config
    return cfg.sample_rate / cfg.mel_hop_length / float(audio_vae.temporal_compression_ratio)
