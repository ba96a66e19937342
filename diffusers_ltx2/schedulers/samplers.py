"""Samplers: how a denoising step moves the latents from `sigmas[i]` to `sigmas[i + 1]` given x0 predictions.

A sampler gets `predict(latents, sigma) -> x0` (one model evaluation: the step's guidance passes, combined and
clamped to the conditioned tokens) and may call it more than once per step (multi-stage samplers); `EulerSampler`
(official ltx-core `EulerDiffusionStep`, what every LTX-2 pipeline of ltx-pipelines 1.0.0 uses) calls it once.
The loop (`pipelines.denoising.denoise`) takes a sampler per stage; `euler_step` is the one Euler step of the
package (`LTX2Scheduler.step` is the same function for diffusers-style loops).
"""

from __future__ import annotations

from typing import Callable, Protocol

import torch

__all__ = ["EULER", "EulerSampler", "Sampler", "euler_step"]

#: `predict(latents, sigma)`: x0 predictions (float32, same shapes) of the modalities in `latents` at `sigma`
Predict = Callable[[dict[str, torch.Tensor], torch.Tensor], dict[str, torch.Tensor]]


def euler_step(x0: torch.Tensor, sample: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
    """Euler on x0 (official `EulerDiffusionStep`): `velocity = (sample - x0) / sigma` computed in float32 and
    rounded to `sample.dtype` like the reference, then `sample + velocity * (sigma_next - sigma)` in float32, cast
    back to `sample.dtype`. `sigma`, `sigma_next`: 0-d tensors (elements of a stage's sigmas)."""
    velocity = ((sample.float() - x0.float()) / float(sigma)).to(sample.dtype)
    delta = (sigma_next - sigma).to(sample.device)
    return (sample.float() + velocity.float() * delta).to(sample.dtype)


class Sampler(Protocol):
    """One denoising step of the modalities being denoised (frozen ones are never passed in)."""

    name: str

    def step(self, predict: Predict, latents: dict[str, torch.Tensor], sigmas: torch.Tensor,
             index: int) -> dict[str, torch.Tensor]:
        """The latents at `sigmas[index + 1]` from those at `sigmas[index]`."""


class EulerSampler:
    """The official sampler: one x0 prediction per step, then `euler_step` on every modality."""

    name = "euler"

    def step(self, predict: Predict, latents: dict[str, torch.Tensor], sigmas: torch.Tensor,
             index: int) -> dict[str, torch.Tensor]:
        x0 = predict(latents, sigmas[index])
        return {name: euler_step(x0[name], latent, sigmas[index], sigmas[index + 1])
                for name, latent in latents.items()}

    def __repr__(self) -> str:
        return "EulerSampler()"


EULER = EulerSampler()
