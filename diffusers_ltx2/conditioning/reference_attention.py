"""Attention weights of IC-LoRA reference tokens (official `ConditioningItemAttentionStrengthWrapper` inputs).

How strongly generated and reference tokens attend to each other: a strength times an optional pixel-space mask
reduced to the reference's latent tokens (as ltx-pipelines does). `ConditioningState.append` turns the weights into
the state's self-attention bias (`latents.attention`).
"""

from __future__ import annotations

import torch

__all__ = ["latent_token_mask", "reference_cross_weights"]


def reference_cross_weights(strength: float, mask: torch.Tensor | None, batch_size: int, num_tokens: int):
    """Per-reference-token attention weights `(B, M)` in `[0, 1]`, or `None` when attention is unmodified.

    `mask` (optional, `(M,)` or `(B, M)` or `(1, M)` latent-token weights) is multiplied by `strength`.
    """
    if mask is None:
        if strength >= 1.0:
            return None
        return torch.full((batch_size, num_tokens), float(strength))
    mask = mask.to(torch.float32)
    if mask.ndim == 1:
        mask = mask.unsqueeze(0)
    if mask.ndim != 2 or mask.shape[-1] != num_tokens or mask.shape[0] not in (1, batch_size):
        raise ValueError(
            f"conditioning attention mask must cover the {num_tokens} reference tokens for a batch of {batch_size}, "
            f"got shape {tuple(mask.shape)}"
        )
    if float(mask.min()) < 0 or float(mask.max()) > 1:
        raise ValueError("conditioning attention mask values must be in [0, 1]")
    return (mask * float(strength)).expand(batch_size, -1).contiguous()


def latent_token_mask(mask: torch.Tensor, frames: int, height: int, width: int, temporal_ratio: int = 8):
    """Pixel-space `(B, 1, F, H, W)` (or `(B, F, H, W)`) mask in `[0, 1]` -> `(B, frames * height * width)` latent
    token weights: area-averaged per frame to the latent grid, then the causal temporal reduction (the first
    frame alone, each later latent frame the mean of its `temporal_ratio` pixel frames), as ltx-pipelines does."""
    if mask.ndim == 4:
        mask = mask.unsqueeze(1)
    if mask.ndim != 5 or mask.shape[1] != 1:
        raise ValueError(f"conditioning_attention_mask must be (B, 1, F, H, W) or (B, F, H, W), got {tuple(mask.shape)}")
    b, _, f, _, _ = mask.shape
    mask = mask.to(torch.float32)
    flat = mask.permute(0, 2, 1, 3, 4).reshape(b * f, 1, *mask.shape[-2:])
    small = torch.nn.functional.interpolate(flat, size=(height, width), mode="area").reshape(b, f, height, width)
    if frames == 1 or f == 1:
        grid = small[:, :1]
    else:
        if (f - 1) % (frames - 1):
            raise ValueError(f"a mask of {f} frames does not reduce to {frames} latent frames")
        t = (f - 1) // (frames - 1)
        rest = small[:, 1:].reshape(b, frames - 1, t, height, width).mean(dim=2)
        grid = torch.cat([small[:, :1], rest], dim=1)
    return grid.reshape(b, -1)
