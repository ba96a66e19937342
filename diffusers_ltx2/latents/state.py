"""The token state of one modality: what every stage, condition, the denoising loop and training share.

Conditioning (a first-frame image, keyframes, IC-LoRA reference tokens appended after the target tokens) is
expressed only through `clean`, `denoise_mask`, `coords` and an optional self-attention bias, exactly like the
official ltx-core `LatentState`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .noiser import per_token_timesteps


@dataclass
class ModalityLatents:
    """Token state of one modality during denoising.

    Attributes:
        latent: `(B, N, C)` float32 current noisy tokens (target tokens first, appended conditioning after).
        clean: `(B, N, C)` clean values: what a conditioned token is held at, what a stage's starting latents are
            re-noised from (zeros where there is neither).
        denoise_mask: `(B, N)` float32; 1 = generated freely, 0 = held at `clean`, in between = partial.
        coords: `(B, D, N, 2)` positions ([start, end) per axis, as diffusers' RoPE expects them).
        num_target_tokens: how many leading tokens form the output; the rest are appended conditioning.
        self_attention_bias: optional `(B, N, N)` float32 additive bias on the self-attention scores of these
            tokens (video only; official IC-LoRA attention strength, see `transformer.attention_bias`).
        keyframe_marker: optional `(B, K)` float32 marker of the first `K` tokens (tokens after them unmarked),
            added to the LTX-2.5 keyframe embedding's own first-frame marker (`transformer.inputs.keyframes_mask`):
            tokens appended with `ConditioningState.append(..., marked=True)` (DFR's generated keyframe slots,
            ltx-core 1.2 `extend_keyframes_mask(marked=True)`).
    """

    latent: torch.Tensor
    clean: torch.Tensor
    denoise_mask: torch.Tensor
    coords: torch.Tensor
    num_target_tokens: int
    self_attention_bias: torch.Tensor | None = None
    keyframe_marker: torch.Tensor | None = None

    @property
    def batch_size(self) -> int:
        return self.latent.shape[0]

    def timesteps(self, sigma: torch.Tensor) -> torch.Tensor:
        """Per-token noise level `mask * sigma` (`latents.noiser.per_token_timesteps`)."""
        return per_token_timesteps(self.denoise_mask, sigma)

    def clamp(self, x0: torch.Tensor) -> torch.Tensor:
        """Hold conditioned tokens at their clean values: `x0 * mask + clean * (1 - mask)` (float32)."""
        mask = self.denoise_mask.unsqueeze(-1)
        return x0 * mask + self.clean.float() * (1 - mask)

    def target(self) -> torch.Tensor:
        """The output tokens, without appended conditioning."""
        return self.latent[:, : self.num_target_tokens]


def is_frozen(state: ModalityLatents) -> bool:
    """Every token held at its clean value (denoise mask 0 everywhere)."""
    return bool((state.denoise_mask == 0).all())
