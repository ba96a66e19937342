"""IC-LoRA reference conditioning: appending clean reference-video tokens after the generated tokens.

What the official `VideoConditionByReferenceLatent` (+ `ConditioningItemAttentionStrengthWrapper`) does,
expressed on this package's `ModalityLatents`:

- the reference latent is patchified and appended after the current tokens; its clean value is itself and its
  denoise mask `1 - strength` (strength 1: held clean, timestep 0);
- its positions come from its own (smaller) latent grid with the h / w coordinates multiplied by the
  downscale factor, so a half-resolution reference spans the same pixel box as the target;
- an attention strength below 1 (or a per-token mask) adds the official log bias between generated and
  reference tokens: a `[0, 1]` matrix with generated<->reference entries = the per-reference-token weight,
  generated<->generated and reference<->reference = 1, earlier appended groups<->this group = 0.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from ..latents import layout as L
from ..transformer.attention_bias import mask_to_bias
from ..latents.state import ModalityLatents

__all__ = ["append_reference", "reference_cross_weights", "reference_attention_mask", "latent_token_mask"]


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


def reference_attention_mask(
    existing: torch.Tensor | None, num_target: int, num_existing: int, cross: torch.Tensor
) -> torch.Tensor:
    """The `(B, N + M, N + M)` `[0, 1]` self-attention weights after appending M reference tokens.

    `existing` is the current `(B, N, N)` weight matrix (`None`: all ones); `cross` the `(B, M)` weights
    between the first `num_target` (generated) tokens and the new ones.
    """
    b, m = cross.shape
    total = num_existing + m
    out = torch.zeros(b, total, total, dtype=torch.float32, device=cross.device)
    out[:, :num_existing, :num_existing] = 1.0 if existing is None else existing
    out[:, num_existing:, num_existing:] = 1.0
    out[:, :num_target, num_existing:] = cross.unsqueeze(1)
    out[:, num_existing:, :num_target] = cross.unsqueeze(2)
    return out


def append_reference(
    video: ModalityLatents,
    reference: torch.Tensor,
    coords: torch.Tensor,
    *,
    strength: float = 1.0,
    attention_weights: torch.Tensor | None = None,
) -> ModalityLatents:
    """Append reference tokens (clean, denoise mask `1 - strength`) to a video state.

    Args:
        video: the current video state (generated tokens first).
        reference: normalized reference latents `(B, C, f, h, w)` (or packed `(B, M, C)`).
        coords: the reference tokens' positions `(B, 3, M, 2)`, already scaled to the target grid.
        strength: conditioning strength; 1 keeps the reference clean.
        attention_weights: `(B, M)` generated<->reference attention weights in `[0, 1]`
            (`reference_cross_weights`); `None` leaves attention unmodified.
    """
    tokens = L.pack_video(reference) if reference.ndim == 5 else reference
    tokens = tokens.to(device=video.latent.device, dtype=torch.float32)
    b, m, _ = tokens.shape
    if b != video.batch_size:
        tokens = tokens.expand(video.batch_size, -1, -1)
        b = video.batch_size
    if coords.shape[2] != m:
        raise ValueError(f"reference positions cover {coords.shape[2]} tokens, the reference has {m}")
    coords = coords.to(video.coords.device, video.coords.dtype).expand(b, -1, -1, -1)
    mask = torch.full((b, m), 1.0 - float(strength), device=tokens.device, dtype=torch.float32)

    bias = video.self_attention_bias
    n = video.latent.shape[1]
    if attention_weights is not None or bias is not None:
        cross = (
            torch.ones(b, m) if attention_weights is None else attention_weights
        ).to(tokens.device, torch.float32)
        existing = None if bias is None else torch.exp(bias)
        bias = mask_to_bias(reference_attention_mask(existing, video.num_target_tokens, n, cross))
    return replace(
        video,
        latent=torch.cat([video.latent, tokens], dim=1),
        clean=torch.cat([video.clean, tokens], dim=1),
        denoise_mask=torch.cat([video.denoise_mask, mask], dim=1),
        coords=torch.cat([video.coords, coords], dim=2),
        self_attention_bias=bias,
    )


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
