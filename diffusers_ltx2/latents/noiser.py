"""The one noiser of this package and the per-token noise level of a token state.

Official ltx-core `GaussianNoiser` (used by ltx-pipelines' `create_noised_state` for every stage, and by the
official trainer's strategies), one standard normal draw over every token of a state (target and appended),
float32, in two versions keyed by the model (`versions.conditioning_rule`, carried by `ClipGeometry`):

- ltx-core 1.0.0 (LTX-2.0 / 2.3): `latent = noise * m + clean * (1 - m)` with `m = denoise_mask * noise_scale`.
- ltx-core 1.2.0 (LTX-2.4+): `latent = lerp(clean, lerp(start, noise, noise_scale), denoise_mask)`, where `start`
  is the token's value before noising (the stage's start latent for target tokens, 0 for appended conditioning
  tokens; the state's `latent` before the noiser runs).

Both: tokens with mask 0 stay at their clean value, tokens with mask 1 become `noise_scale * noise +
(1 - noise_scale) * start`: pure noise at scale 1 (a first stage), a re-noised start latent below 1 (a refinement
stage, diffusers' `noise_scale`; training's sigma). They differ only for `0 < mask < 1` below scale 1 where `start`
is not `clean` (a first-frame image or keyframe below strength 1 in a refinement stage).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from diffusers.utils.torch_utils import randn_tensor

from . import layout as L

__all__ = ["StartLatents", "noise_tokens", "noised_state", "per_token_timesteps"]


@dataclass(frozen=True, eq=False)
class StartLatents:
    """How one modality's target tokens start, before conditions edit them and the noiser runs.

    Attributes:
        clean: `(B, N, C)` packed normalized target tokens to start from (a previous stage's, or diffusers' clean
            `latents` with a `noise_scale`); `None`: zeros (pure noise at `noise_scale` 1).
        noise: the target tokens' noise instead of drawing it (`(B, N, C)` packed, or unpacked `(B, C, F, H, W)` /
            `(B, C, T, M)`); appended tokens still draw theirs. `None`: drawn from the call's generator.
        noise_scale: in [0, 1], how far the clean tokens are re-noised (1: pure noise where the mask is 1).
    """

    clean: torch.Tensor | None = None
    noise: torch.Tensor | None = None
    noise_scale: float = 1.0


def noise_tokens(clean: torch.Tensor, denoise_mask: torch.Tensor, noise: torch.Tensor,
                 noise_scale: float | torch.Tensor = 1.0, start: torch.Tensor | None = None) -> torch.Tensor:
    """Noised tokens, float32 `(B, N, C)`: `noise * m + clean * (1 - m)`, `m = denoise_mask * noise_scale`
    (ltx-core 1.0.0); with `start`, `lerp(clean, lerp(start, noise, noise_scale), denoise_mask)` (ltx-core 1.2.0).

    Args:
        clean: `(B, N, C)` clean tokens (what mask-0 tokens are held at).
        denoise_mask: `(B, N)` in [0, 1].
        noise: `(B, N, C)` standard normal noise.
        noise_scale: a number, or a `(B,)` tensor (one level per sample: training's sigma).
        start: `(B, N, C)` the tokens before noising (ltx-core 1.2's `LatentState.latent`); `None`: 1.0's rule.
    """
    if isinstance(noise_scale, torch.Tensor):
        noise_scale = noise_scale.view(-1, 1, 1)
    if start is not None:
        mask = denoise_mask.unsqueeze(-1).float()
        return torch.lerp(clean.float(), torch.lerp(start.float(), noise.float(), noise_scale), mask)
    m = denoise_mask.unsqueeze(-1) * noise_scale
    return noise * m + clean * (1 - m)


def noised_state(state, generator=None, noise: torch.Tensor | None = None, noise_scale: float = 1.0,
                 rule: str = "ltx_core_1_0"):
    """A `ModalityLatents` with every token noised (`noise_tokens` of its clean values and denoise mask; under
    ``rule="ltx_core_1_2"`` from its `latent` as the start, `versions.CONDITIONING_RULES`).

    `noise` covers the leading (target) tokens, packed `(B, N, C)` or unpacked (video `(B, C, F, H, W)`, audio
    `(B, C, T, M)`); the remaining (appended) tokens draw theirs from `generator`. Without `noise` one draw of the
    state's whole `(B, N + M, C)` shape is made (the official order: one draw per modality, video first).

    Raises:
        ValueError: an unknown `rule`.
    """
    if rule not in ("ltx_core_1_0", "ltx_core_1_2"):
        raise ValueError(f"unknown conditioning rule {rule!r}; expected 'ltx_core_1_0' or 'ltx_core_1_2'")
    clean = state.clean
    if noise is None:
        noise = randn_tensor(clean.shape, generator=generator, device=clean.device, dtype=torch.float32)
    else:
        noise = L.pack_video(noise) if noise.ndim == 5 else L.pack_audio(noise) if noise.ndim == 4 else noise
        noise = noise.to(clean.device, torch.float32)
        extra = clean.shape[1] - noise.shape[1]
        if extra > 0:
            more = randn_tensor((noise.shape[0], extra, noise.shape[2]), generator=generator, device=clean.device,
                                dtype=torch.float32)
            noise = torch.cat([noise, more], dim=1)
    start = state.latent if rule == "ltx_core_1_2" else None
    return replace(state, latent=noise_tokens(clean, state.denoise_mask, noise, noise_scale, start))


def per_token_timesteps(denoise_mask: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-token noise level `mask * sigma`, `(B, N)`; `(B, 1)` when every token of a row shares it (cheaper
    AdaLN). `sigma` is a scalar or `(B, 1)` (one level per sample)."""
    if bool((denoise_mask == denoise_mask[:, :1]).all()):
        denoise_mask = denoise_mask[:, :1]
    return denoise_mask * sigma
