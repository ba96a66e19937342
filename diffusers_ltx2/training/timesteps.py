"""Timestep (sigma) sampling for flow-matching training, as the official trainer samples it.

Source followed: `ltx_trainer/timestep_samplers.py` (LTX-2 repository, `packages/ltx-trainer`):
- `uniform`: sigma ~ U(min_value, max_value).
- `shifted_logit_normal` (default): mu = the shift for the number N of *target* video tokens (reference tokens
  of IC-LoRA not counted, as the official strategies call `sample_for(target_latents)`), on the line through
  (1024 tokens, 0.95) and (4096, 2.05) - mu = 0.95 + (2.05 - 0.95) (N - 1024) / 3072 - extrapolated on both sides
  without a clamp, exactly as the official `_get_shift_for_sequence_length` (so N = 8 gives 0.59 and N = 6144
  gives 2.78); z ~ N(mu, std^2); s = sigmoid(z) stretched so that the 0.5th and 99.9th percentiles of the
  distribution map to 0 and 1; values below `eps` are reflected around `eps` (2 eps - s) and clamped to [0, 1];
  with probability `uniform_prob` a sample is replaced by U(eps, 1). The random draws happen in the official
  order (normal, uniform, selector).

This is the training rule, and it differs on purpose from inference: `LTX2Scheduler` uses the same line but, by
default and as the official text-to-video pipelines (which call it without a latent), at 4096 tokens, i.e. with
shift 2.05 at every size; training follows the official trainer, whose mu depends on the clip's token count.

All functions take an explicit `torch.Generator` so a training step's sigmas are reproducible per sample.
"""

from __future__ import annotations

import torch

__all__ = ["sequence_shift", "shifted_logit_normal", "uniform", "sample_sigmas"]

_Z_999 = 3.0902  # 99.9th percentile of N(0, 1), as the official sampler
_Z_005 = -2.5758  # 0.5th percentile


def sequence_shift(seq_length: int, min_tokens: int = 1024, max_tokens: int = 4096, min_shift: float = 0.95,
                   max_shift: float = 2.05) -> float:
    """The logit-normal mean for `seq_length` target video tokens: the line through (`min_tokens`, `min_shift`)
    and (`max_tokens`, `max_shift`), extrapolated without a clamp (official `ShiftedLogitNormalTimestepSampler.
    _get_shift_for_sequence_length`, the same float operations)."""
    m = (max_shift - min_shift) / (max_tokens - min_tokens)
    b = min_shift - m * min_tokens
    return m * seq_length + b


def shifted_logit_normal(n: int, seq_length: int, *, std: float = 1.0, eps: float = 1e-3, uniform_prob: float = 0.1,
                         generator: torch.Generator | None = None) -> torch.Tensor:
    """`(n,)` float32 sigmas in [0, 1] from the stretched shifted logit-normal (see the module docstring)."""
    mu = sequence_shift(seq_length)
    z = torch.randn((n,), generator=generator) * std + mu
    s = torch.sigmoid(z)
    hi = torch.sigmoid(torch.tensor(mu + _Z_999 * std))  # float32, as the official sampler computes the bounds
    lo = torch.sigmoid(torch.tensor(mu + _Z_005 * std))
    raw = (s - lo) / (hi - lo)
    stretched = torch.where(raw >= eps, raw, 2 * eps - raw).clamp(0, 1)
    fallback = (1 - eps) * torch.rand((n,), generator=generator) + eps
    select = torch.rand((n,), generator=generator)
    return torch.where(select > uniform_prob, stretched, fallback)


def uniform(n: int, seq_length: int | None = None, *, min_value: float = 0.0, max_value: float = 1.0,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """`(n,)` float32 sigmas ~ U(min_value, max_value)."""
    return torch.rand((n,), generator=generator) * (max_value - min_value) + min_value


def sample_sigmas(mode: str, n: int, seq_length: int, params: dict | None = None,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Dispatch on the config's `timestep_sampling_mode` (`uniform` / `shifted_logit_normal`)."""
    params = dict(params or {})
    if mode == "uniform":
        return uniform(n, seq_length, generator=generator, **params)
    if mode == "shifted_logit_normal":
        return shifted_logit_normal(n, seq_length, generator=generator, **params)
    raise ValueError(f"unknown timestep sampling mode {mode!r}")
