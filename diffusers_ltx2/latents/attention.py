"""A video state's self-attention bias (official IC-LoRA / conditioning attention masks, ltx-core `mask_utils`).

ltx-core describes how strongly appended conditioning tokens and generated tokens see each other with a `[0, 1]`
matrix `M` `(B, N, N)` and adds `log(M)` to the self-attention scores; `ModalityLatents.self_attention_bias` holds
that additive bias (`transformer.attention_bias` installs it on the transformer). Each append grows it
(`update_attention_mask`): generated<->new tokens get the new group's weights, new<->new 1, earlier appended
groups<->new 0.
"""

from __future__ import annotations

import torch

__all__ = ["appended_bias", "mask_to_bias", "reference_attention_mask"]


def mask_to_bias(mask: torch.Tensor) -> torch.Tensor:
    """`[0, 1]` attention weights -> additive float32 bias: `log(mask)`, and float32's minimum where `mask <= 0`
    (ltx-core's conversion; values are clamped to the model dtype's range when used)."""
    mask = mask.to(torch.float32)
    finfo = torch.finfo(torch.float32)
    bias = torch.full_like(mask, finfo.min)
    positive = mask > 0
    bias[positive] = torch.log(mask[positive].clamp_min(finfo.tiny))
    return bias


def reference_attention_mask(
    existing: torch.Tensor | None, num_target: int, num_existing: int, cross: torch.Tensor
) -> torch.Tensor:
    """The `(B, N + M, N + M)` `[0, 1]` self-attention weights after appending M conditioning tokens (ltx-core
    `build_attention_mask`).

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


def appended_bias(bias: torch.Tensor | None, num_target: int, num_existing: int, weights: torch.Tensor) -> torch.Tensor:
    """The `(B, N + M, N + M)` bias after appending `M` tokens with generated<->new attention `weights` `(B, M)` in
    [0, 1] to a state of `num_existing` tokens (`num_target` generated) whose bias is `bias` (`None`: unmodified
    attention)."""
    existing = None if bias is None else torch.exp(bias)
    return mask_to_bias(reference_attention_mask(existing, num_target, num_existing, weights.to(torch.float32)))
