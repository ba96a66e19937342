"""Samplers of the LTX-2 denoising loop: Euler (official default), euler-ancestral and res_2s (second order).

The one denoising loop (`pipelines.denoising.denoise`) takes a sampler per stage (`pipelines.stage.Stage.sampler`)
and asks it to advance the latents by one step of the stage's sigmas. The sampler gets the loop's *guided, clamped
x0 predictor* (a `Denoiser`: guidance passes, skip-step reuse, frozen modalities and conditioned tokens all handled
there) and calls it as often as its method needs: once per step for Euler and euler-ancestral, twice for res_2s
(plus one final call when the schedule ends at 0). So every guider, condition and callback works with every
sampler. A modality held whole (A2V audio, V2A video) is never handed to a sampler. `euler_step` is the one Euler
step of the package (`LTX2Scheduler.step` is the same function for diffusers-style loops).

Source followed: ltx-core / ltx-pipelines 1.2.0 (`ltx_core/components/diffusion_steps.py`:
`EulerAncestralDiffusionStep`, `Res2sDiffusionStep`; `ltx_pipelines/utils/samplers.py`:
`euler_ancestral_denoising_loop`, `res2s_audio_video_denoising_loop`; `ltx_pipelines/utils/res2s.py`). Choices,
each tested against that code with the same noise:

* Latents stay float32 between steps (the official loops round them to the model dtype, bfloat16 in the official
  pipelines; pass `model_dtype=torch.float32` there to compare). res_2s computes in float64 as officially.
* Noise: euler-ancestral draws plain `randn` in the latent dtype from one generator seeded with `noise_seed`,
  video then audio, every non-final step; res_2s draws float64 noise, standardised over the whole tensor and then
  per sample over (tokens, channels), from a step generator (`noise_seed`) and a substep generator
  (`noise_seed + 10000`). A modality held whole (A2V audio, V2A video) is not stepped and draws no noise (the
  official loops draw it and then discard it with the denoise mask). The generators belong to one run of the loop
  (`Sampler.start` returns a started copy): a sampler instance is a configuration, shareable between stages.
* Default seeds follow the official pipelines: euler-ancestral `seed + 10000` (`distilled.py`,
  `ANCESTRAL_NOISE_SEED_OFFSET`; `seed` is the call generator's seed), res_2s the loop's default `-1` (the HQ
  pipeline `ti2vid_two_stages_hq.py` passes none, so its SDE noise does not depend on the call's seed).
* res_2s evaluates its midpoint as step 0 of the guider's cycle (official: the substep calls the denoiser with
  `step_index=0`), so `skip_step` never skips a midpoint evaluation; its x0 becomes the one a skipped step reuses.
"""

from __future__ import annotations

import copy
import math
from typing import Protocol

import torch

__all__ = [
    "EULER",
    "SAMPLERS",
    "Denoiser",
    "EulerAncestralSampler",
    "EulerSampler",
    "Res2sSampler",
    "Sampler",
    "euler_ancestral_step",
    "euler_step",
    "make_sampler",
    "normalized_noise",
    "res2s_coefficients",
    "res2s_sde_step",
    "sampler_seed",
]


class Denoiser(Protocol):
    """The loop's guided x0 predictor, as a sampler sees it."""

    def __call__(self, latents: dict[str, torch.Tensor], sigma: torch.Tensor,
                 step: int | None = None) -> dict[str, torch.Tensor]:
        """x0 predictions (float32, conditioned tokens clamped to their clean values) of the modalities in
        `latents` (`"video"` / `"audio"`: `(B, N, C)` tokens) at `sigma` (0-d tensor): one guided model evaluation.
        `step`: the step of the guider's cycle it is planned as (default: the loop's current step)."""

    def hold(self, name: str, latent: torch.Tensor) -> torch.Tensor:
        """`latent` of modality `name` with its conditioned tokens put back at their clean values,
        `latent * mask + clean * (1 - mask)` in `latent`'s dtype (official `post_process_latent`): what a sampler
        that injects noise applies to its result."""

#: Substep-seed offset of official res_2s (and the seed offset of official euler-ancestral in `distilled.py`).
SEED_OFFSET = 10000
#: res_2s replaces a final sigma 0 by this value (then one more x0 evaluation lands on 0), as officially.
RES2S_LAST_SIGMA = 0.0011


# -- pure math -------------------------------------------------------------------------------------------------
def euler_step(x0: torch.Tensor, sample: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
    """Euler on x0 (official `EulerDiffusionStep`): `velocity = (sample - x0) / sigma` computed in float32 and
    rounded to `sample.dtype` like the reference, then `sample + velocity * (sigma_next - sigma)` in float32, cast
    back to `sample.dtype`. `sigma`, `sigma_next`: 0-d tensors (elements of a stage's sigmas)."""
    velocity = ((sample.float() - x0.float()) / float(sigma)).to(sample.dtype)
    delta = (sigma_next - sigma).to(sample.device)
    return (sample.float() + velocity.float() * delta).to(sample.dtype)


def euler_ancestral_step(sample: torch.Tensor, x0: torch.Tensor, sigma: float | torch.Tensor,
                         sigma_next: float | torch.Tensor, noise: torch.Tensor | None, *, eta: float = 1.0,
                         s_noise: float = 1.0) -> torch.Tensor:
    """One ancestral Euler step of a rectified flow (`alpha = 1 - sigma`), float32.

    Deterministic Euler step to `sigma_down = sigma_next * (1 + (sigma_next / sigma - 1) * eta)`, then re-noised
    back to `sigma_next` keeping the variance: `x = (alpha_next / alpha_down) x + s_noise * c * noise` with
    `c = sqrt(max(0, sigma_next^2 - sigma_down^2 alpha_next^2 / alpha_down^2))`. `eta = 0` is the plain Euler
    step; `sigma_next = 0` returns `x0`. Official `EulerAncestralDiffusionStep.step`.

    Raises:
        ValueError: `eta > 0` without `noise`.
    """
    sigma = torch.as_tensor(sigma, dtype=torch.float32)
    sigma_next = torch.as_tensor(sigma_next, dtype=torch.float32)
    if float(sigma_next) == 0.0:
        return x0.to(sample.dtype)
    if eta > 0 and noise is None:
        raise ValueError("an ancestral step with eta > 0 needs a noise tensor")
    x, x0 = sample.float(), x0.float()
    sigma_down = sigma_next * (1.0 + (sigma_next / sigma - 1.0) * eta)
    ratio = sigma_down / sigma
    out = ratio * x + (1.0 - ratio) * x0
    if eta > 0:
        alpha_next, alpha_down = 1.0 - sigma_next, 1.0 - sigma_down
        renoise = (sigma_next**2 - sigma_down**2 * alpha_next**2 / alpha_down**2).clamp(min=0) ** 0.5
        out = (alpha_next / alpha_down) * out + noise.float() * s_noise * renoise
    return out.to(sample.dtype)


def res2s_coefficients(h: float, c2: float = 0.5) -> tuple[float, float, float]:
    """Runge-Kutta coefficients `(a21, b1, b2)` of res_2s for a log-sigma step `h = log(sigma / sigma_next)`.

    With `phi_1(z) = (e^z - 1) / z` and `phi_2(z) = (e^z - 1 - z) / z^2` (their limits 1 and 1/2 at 0):
    `a21 = c2 phi_1(-h c2)`, `b2 = phi_2(-h) / c2`, `b1 = phi_1(-h) - b2`. Official `get_res2s_coefficients`.
    """
    def phi(j: int, z: float) -> float:
        if abs(z) < 1e-10:
            return 1.0 / math.factorial(j)
        return (math.exp(z) - sum(z**k / math.factorial(k) for k in range(j))) / z**j

    a21 = c2 * phi(1, -h * c2)
    b2 = phi(2, -h) / c2
    return a21, phi(1, -h) - b2, b2


def res2s_sde_step(sample: torch.Tensor, target: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor,
                   noise: torch.Tensor, eta: float) -> torch.Tensor:
    """Move `sample` (at `sigma`) to the deterministic `target` (at `sigma_next`) with SDE noise of strength `eta`.

    `sigma_up = min(eta sigma_next, 0.9999 sigma_next)`, `alpha = 1 - sigma_next + sqrt(sigma_next^2 -
    sigma_up^2)`, `sigma_down = sqrt(sigma_next^2 - sigma_up^2) / alpha`; with `eps = (sample - target) /
    (sigma - sigma_next)`: `alpha (sample - sigma eps + sigma_down eps) + sigma_up noise`. `target` itself when
    `sigma_up` or `sigma_next` is 0. Official `Res2sDiffusionStep.step` (`get_sde_coeff` with `sigma_up`);
    the sigma tensors' dtype sets the coefficients' precision, as there.
    """
    sigma_up = (sigma_next * eta).clamp(max=sigma_next * 0.9999)
    residual = (sigma_next**2 - sigma_up**2).clamp(min=0) ** 0.5
    alpha = (1.0 - sigma_next) + residual
    sigma_down = residual / alpha
    sigma_up, alpha = torch.nan_to_num(sigma_up, 0.0), torch.nan_to_num(alpha, 1.0)
    sigma_down = torch.where(torch.isnan(sigma_down), sigma_next.to(sigma_down.dtype), sigma_down)
    if bool(sigma_up == 0) or bool(sigma_next == 0):
        return target
    eps = (sample - target) / (sigma - sigma_next)
    return (alpha * (sample - sigma * eps + sigma_down * eps) + sigma_up * noise).to(target.dtype)


def highest_precision(device: torch.device) -> torch.dtype:
    """float64, except on MPS (no float64 there): float32."""
    return torch.float32 if torch.device(device).type == "mps" else torch.float64


def normalized_noise(like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Gaussian noise shaped like `like` (`(B, N, C)` tokens) in the highest precision of the generator's device,
    standardised over the whole tensor, then per sample over its last two dims (official res_2s `_get_new_noise`)."""
    noise = torch.randn(like.shape, generator=generator, dtype=highest_precision(generator.device),
                        device=generator.device)
    noise = (noise - noise.mean()) / noise.std()
    return (noise - noise.mean(dim=(-2, -1), keepdim=True)) / noise.std(dim=(-2, -1), keepdim=True)


# -- samplers --------------------------------------------------------------------------------------------------
class Sampler:
    """A sampling method of the denoising loop (a configuration; `start` makes the object one run steps with).

    `start(device, seed)` is called once per run of the loop and returns the sampler that run uses (a copy with its
    noise generators seeded; itself for a sampler without noise). `step(denoiser, latents, sigmas, index)` returns
    the latents at `sigmas[index + 1]` from those at `sigmas[index]` (`latents`: the modalities being denoised,
    `"video"` / `"audio"` -> `(B, N, C)` tokens; `sigmas`: the stage's float32 schedule, ending at 0).
    `model_calls(num_steps)` is the number of x0 evaluations of a run; `stochastic` samplers draw noise (their seed
    comes from the call's generator, `sampler_seed`).

    The loop needs only `step`: any object with that method is a sampler (`start` and `stochastic` are then taken
    as "no noise": the object itself steps the run).
    """

    name = "sampler"
    stochastic = False

    def start(self, device: torch.device, seed: int | None) -> "Sampler":
        return self

    def model_calls(self, num_steps: int) -> int:
        return num_steps

    def step(self, denoiser: Denoiser, latents: dict[str, torch.Tensor], sigmas: torch.Tensor,
             index: int) -> dict[str, torch.Tensor]:
        raise NotImplementedError


class EulerSampler(Sampler):
    """The official sampler (`EulerDiffusionStep`, what every LTX-2 pipeline of ltx-pipelines 1.0.0 uses): one x0
    prediction per step, then `euler_step` on every modality; no noise."""

    name = "euler"

    def step(self, denoiser, latents, sigmas, index):
        x0 = denoiser(latents, sigmas[index])
        return {name: euler_step(x0[name], latent, sigmas[index], sigmas[index + 1])
                for name, latent in latents.items()}

    def __repr__(self):
        return "EulerSampler()"


class EulerAncestralSampler(Sampler):
    """Ancestral (SDE) Euler (official `euler_ancestral_denoising_loop`, stage 1 of the 2.5 distilled pipeline).

    Args:
        eta: 0 = plain Euler, 1 = fully ancestral (official default and distilled value).
        s_noise: scale of the injected noise (official 1).
        noise_seed: seed of the noise generator; `None`: the call's seed + 10000 (official `distilled.py`).
    """

    name = "euler_ancestral"
    stochastic = True

    def __init__(self, eta: float = 1.0, s_noise: float = 1.0, noise_seed: int | None = None):
        for label, value in (("eta", eta), ("s_noise", s_noise)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
                raise ValueError(f"{label} must be a finite number >= 0, got {value!r}")
        if eta > 1:
            raise ValueError(f"eta must be in [0, 1], got {eta}")
        _check_seed(noise_seed)
        self.eta, self.s_noise, self.noise_seed = float(eta), float(s_noise), noise_seed
        self.generator = None

    def start(self, device, seed):
        run = copy.copy(self)
        seed = self.noise_seed if self.noise_seed is not None else (seed or 0) + SEED_OFFSET
        run.generator = torch.Generator(device=device).manual_seed(seed)
        return run

    def step(self, denoiser, latents, sigmas, index):
        sigma, sigma_next = sigmas[index], sigmas[index + 1]
        x0s = denoiser(latents, sigma)
        out = {}
        for name, latent in latents.items():  # video, then audio: the official noise order
            if float(sigma_next) == 0.0:
                out[name] = x0s[name].to(latent.dtype)
                continue
            noise = None
            if self.eta > 0:
                noise = torch.randn(latent.shape, generator=self.generator, dtype=latent.dtype,
                                    device=self.generator.device).to(latent.device)
            x = euler_ancestral_step(latent, x0s[name], sigma, sigma_next, noise, eta=self.eta, s_noise=self.s_noise)
            out[name] = denoiser.hold(name, x) if noise is not None else x
        return out

    def __repr__(self):
        return f"EulerAncestralSampler(eta={self.eta}, s_noise={self.s_noise}, noise_seed={self.noise_seed})"


class Res2sSampler(Sampler):
    """res_2s: a two-stage exponential Runge-Kutta step with SDE noise (official `res2s_audio_video_denoising_loop`,
    used by the official HQ pipeline `ti2vid_two_stages_hq.py`). Two x0 evaluations per step (at `sigma` and at
    the midpoint `sqrt(sigma * sigma_next)`), and one more at the end when the schedule ends at 0 (the last
    sigma is first replaced by 0.0011).

    Args:
        eta: SDE noise strength of the full steps (0 = deterministic, official 0.5); midpoints always use 0.5.
        noise_seed: seed of the step noise; the midpoint noise uses `noise_seed + 10000`. `None`: -1, the
            official loop's default (the HQ pipeline passes no seed).
        bongmath: anchor refinement (100 fixed-point iterations) when `h < 0.5` and `sigma > 0.03` (official on).
    """

    name = "res_2s"
    stochastic = True

    def __init__(self, eta: float = 0.5, noise_seed: int | None = None, bongmath: bool = True,
                 bongmath_iterations: int = 100):
        if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not 0 <= eta <= 1:
            raise ValueError(f"eta must be in [0, 1], got {eta!r}")
        if isinstance(bongmath_iterations, bool) or not isinstance(bongmath_iterations, int) or \
                bongmath_iterations < 0:
            raise ValueError(f"bongmath_iterations must be an integer >= 0, got {bongmath_iterations!r}")
        _check_seed(noise_seed)
        self.eta, self.noise_seed, self.bongmath, self.bongmath_iterations = (
            float(eta), noise_seed, bool(bongmath), bongmath_iterations)
        self.step_generator = self.substep_generator = None

    def model_calls(self, num_steps):
        return 2 * num_steps + 1

    def start(self, device, seed):
        run = copy.copy(self)
        seed = -1 if self.noise_seed is None else self.noise_seed
        run.step_generator = torch.Generator(device=device).manual_seed(seed)
        run.substep_generator = torch.Generator(device=device).manual_seed(seed + SEED_OFFSET)
        return run

    def _sde(self, denoiser, name, like, anchor, target, sigma, sigma_next, generator, eta):
        noise = normalized_noise(like, generator).to(target.device)
        return denoiser.hold(name, res2s_sde_step(anchor, target, sigma, sigma_next, noise, eta))

    def step(self, denoiser, latents, sigmas, index):
        i = index
        last = i == len(sigmas) - 2
        hp = highest_precision(sigmas.device)
        sigma = sigmas[i].to(hp)
        ends_at_zero = float(sigmas[-1]) == 0.0
        sigma_next = sigmas[i + 1]
        if last and ends_at_zero:
            sigma_next = sigma_next.new_tensor(RES2S_LAST_SIGMA)
        sigma_next_hp = sigma_next.to(hp)
        h = float(-torch.log(sigma_next_hp.cpu() / sigma.cpu()))
        a21, b1, b2 = res2s_coefficients(h)
        sub_sigma = torch.sqrt(sigma * sigma_next_hp)
        names = list(latents)

        # stage 1: x0 at the current point, then the midpoint (with substep noise, eta 0.5)
        x0_1 = denoiser(latents, sigmas[i])
        anchors = {n: latents[n].to(hp) for n in names}
        eps_1 = {n: x0_1[n].to(hp) - anchors[n] for n in names}
        mids = {n: self._sde(denoiser, n, latents[n], anchors[n], anchors[n] + h * a21 * eps_1[n], sigma, sub_sigma,
                             self.substep_generator, 0.5) for n in names}
        if self.bongmath and h < 0.5 and float(sigma) > 0.03:
            for _ in range(self.bongmath_iterations):
                anchors = {n: mids[n] - h * a21 * eps_1[n] for n in names}
                eps_1 = {n: x0_1[n].to(hp) - anchors[n] for n in names}

        # stage 2: x0 at the midpoint (planned as step 0 of the guider's cycle, as officially)
        x0_2 = denoiser({n: mids[n].to(latents[n].dtype) for n in names}, sub_sigma.float(), step=0)
        out = {}
        for n in names:
            x = anchors[n] + h * (b1 * eps_1[n] + b2 * (x0_2[n].to(hp) - anchors[n]))
            x = self._sde(denoiser, n, latents[n], anchors[n], x, sigmas[i], sigma_next, self.step_generator,
                          self.eta)
            out[n] = x.to(latents[n].dtype)
        if last and ends_at_zero:  # land on 0: one more x0 evaluation at 0.0011
            final = denoiser(out, sigma_next.float(), step=i + 1)
            out = {n: final[n].to(latents[n].dtype) for n in names}
        return out

    def __repr__(self):
        return (f"Res2sSampler(eta={self.eta}, noise_seed={self.noise_seed}, bongmath={self.bongmath}, "
                f"bongmath_iterations={self.bongmath_iterations})")


def _check_seed(seed) -> None:
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ValueError(f"noise_seed must be an integer or None, got {seed!r}")


_BY_NAME = {"euler": EulerSampler, "euler_ancestral": EulerAncestralSampler, "res_2s": Res2sSampler}
#: Names accepted by `make_sampler` (and the pipelines' / CLI's `sampler`).
SAMPLERS = tuple(_BY_NAME)


#: The official Euler sampler (the default of every stage).
EULER = EulerSampler()


def sampler_seed(sampler, generator) -> int | None:
    """The seed a stochastic sampler derives its noise seed from: the call generator's seed (the first one's for a
    list), as the official pipelines use their `seed`; a random one (from torch's default generator) without a
    generator; `None` for a sampler that draws no noise (Euler), which then leaves every generator alone."""
    if not getattr(make_sampler(sampler), "stochastic", False):
        return None
    if isinstance(generator, (list, tuple)):
        generator = generator[0] if generator else None
    if generator is not None:
        return int(generator.initial_seed())
    return int(torch.randint(0, 2**62, (1,)).item())


def make_sampler(sampler: str | Sampler | None = None) -> Sampler:
    """A `Sampler` from a name (`"euler"`, `"euler_ancestral"`, `"res_2s"`; `None`: Euler) or an instance (a
    `Sampler`, or any object with the `step` method of one; returned as is).

    Raises:
        ValueError: an unknown name or type.
    """
    if sampler is None or sampler == "euler":
        return EULER
    if isinstance(sampler, Sampler) or (not isinstance(sampler, type) and callable(getattr(sampler, "step", None))):
        return sampler
    if isinstance(sampler, str) and sampler.replace("-", "_") in _BY_NAME:
        return _BY_NAME[sampler.replace("-", "_")]()
    raise ValueError(f"sampler must be one of {list(SAMPLERS)} or a Sampler instance, got {sampler!r}")
