"""The one denoising loop of this package (every stage of every pipeline runs through it).

Per step the stage's sampler (`schedulers.samplers`: the official Euler on x0 by default, euler-ancestral, res_2s)
asks the loop's denoiser for x0 as often as its method needs: guider plan -> the step's passes (the pass executor,
`transformer.TransformerPasses` unless replaced) -> guider combine -> clamp conditioned tokens; then it moves the
latents to the next sigma. The sigmas are an argument (a stage's), nothing is read from or written to a scheduler.
The token states are `latents.ModalityLatents`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

import torch

from ..guiders.base import Guider, Prediction
from ..latents.state import ModalityLatents, is_frozen
from ..schedulers.samplers import EULER, Sampler, make_sampler
from ..transformer.passes import TextContexts, TransformerPasses


#: `on_step_end(step, sigma, video, audio)` may return new `(video, audio)` states, or `(video, audio, contexts)`
#: to change the prompt contexts of the following steps; `None` keeps everything.
StepCallback = Callable[[int, torch.Tensor, ModalityLatents, ModalityLatents], "tuple | None"]


class _Denoiser:
    """The guided, clamped x0 predictor the loop hands its sampler (`schedulers.samplers.Denoiser`): one guidance
    step per call (plan -> passes -> combine -> skip-step reuse -> frozen modalities -> clamp)."""

    def __init__(self, passes, guider: Guider, num_steps: int, video: ModalityLatents, audio: ModalityLatents,
                 contexts: TextContexts):
        self.passes, self.guider, self.num_steps = passes, guider, num_steps
        self.states = {"video": video, "audio": audio}
        self.frozen = {name: is_frozen(state) for name, state in self.states.items()}
        self.contexts = contexts
        self.step = 0  # the loop's current step
        self.last = Prediction(video=None, audio=None)

    def __call__(self, latents: dict[str, torch.Tensor], sigma: torch.Tensor,
                 step: int | None = None) -> dict[str, torch.Tensor]:
        step = self.step if step is None else step
        states = {name: state if name not in latents or latents[name] is state.latent
                  else replace(state, latent=latents[name]) for name, state in self.states.items()}
        sigma = sigma.to(device=states["video"].latent.device, dtype=torch.float32)
        plan = self.guider.plan(step, self.num_steps, float(sigma))
        guided = Prediction(None, None)
        if plan.runs_model:
            guided = self.guider.combine(step, plan, self.passes(plan, states["video"], states["audio"],
                                                                 self.contexts, sigma))
        x0 = {"video": guided.video if plan.video and plan.runs_model else self.last.video,
              "audio": guided.audio if plan.audio and plan.runs_model else self.last.audio}
        x0 = {name: states[name].clean if self.frozen[name] else value for name, value in x0.items()}
        if x0["video"] is None or x0["audio"] is None:
            raise RuntimeError(
                f"{type(self.guider).__name__} skipped a modality at step {step} before any x0 was computed for it"
            )
        self.last = Prediction(x0["video"], x0["audio"])
        return {name: states[name].clamp(x0[name]) for name in latents}

    def hold(self, name: str, latent: torch.Tensor) -> torch.Tensor:
        return self.states[name].clamp(latent).to(latent.dtype)


def denoise(
    *,
    passes: TransformerPasses,
    guider: Guider,
    sigmas: torch.Tensor,
    video: ModalityLatents,
    audio: ModalityLatents,
    contexts: TextContexts,
    sampler: str | Sampler = EULER,
    seed: int | None = None,
    progress_bar=None,
    on_step_end: StepCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[ModalityLatents, ModalityLatents]:
    """Denoise `video` / `audio` over `sigmas` (`(steps + 1,)` float32, decreasing to 0) with `guider` deciding the
    passes, `passes` running them (the pass executor: `TransformerPasses` or anything with its call signature) and
    `sampler` taking the steps. Returns the final states.

    Each model evaluation: the guider plans the step's passes; `passes` runs them (batched); the guider combines
    their x0; a modality the plan does not recompute reuses its previous x0 (skip_step); conditioned tokens are
    clamped to their clean values. A modality whose denoise mask is 0 everywhere (frozen: A2V audio, V2A video, the
    audio-only placeholder video) is never stepped: its x0 is its clean value, its latent stays bit-identical, and
    a guider (see `Guider.for_frozen`) need not recompute it.

    `sampler`: a `schedulers.samplers.Sampler` or its name (`"euler"`, `"euler_ancestral"`, `"res_2s"`); `seed`
    seeds the noise of the stochastic ones (`schedulers.samplers.sampler_seed`: the call generator's seed).
    """
    num_steps = len(sigmas) - 1
    sampler = make_sampler(sampler)
    if callable(getattr(sampler, "start", None)):  # a run's copy with its noise generators seeded
        sampler = sampler.start(video.latent.device, seed)
    denoiser = _Denoiser(passes, guider, num_steps, video, audio, contexts)
    for i in range(num_steps):
        if should_stop is not None and should_stop():
            break
        denoiser.step = i
        stepping = {name: state.latent for name, state in denoiser.states.items() if not denoiser.frozen[name]}
        stepped = sampler.step(denoiser, stepping, sigmas, i)
        video, audio = (replace(state, latent=stepped[name]) if name in stepped else state
                        for name, state in denoiser.states.items())
        if on_step_end is not None:
            updated = on_step_end(i, sigmas[i].to(video.latent.device), video, audio)
            if updated is not None:
                video, audio, *rest = updated
                denoiser.contexts = rest[0] if rest else denoiser.contexts
        denoiser.states = {"video": video, "audio": audio}
        if progress_bar is not None:
            progress_bar.update()
    return denoiser.states["video"], denoiser.states["audio"]
