"""The one denoising loop of this package (every stage of every pipeline runs through it).

Per step: the sampler asks for x0 (guider plan -> the step's passes, `transformer.TransformerPasses` -> guider
combine -> clamp conditioned tokens) and moves the latents to the next sigma (`schedulers.samplers`; the official
Euler on x0 by default). The sigmas are an argument (a stage's), nothing is read from or written to a scheduler.
The token states are `latents.ModalityLatents`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

import torch

from ..guiders.base import Guider, Prediction
from ..latents.state import ModalityLatents, is_frozen
from ..schedulers.samplers import EULER, Sampler
from ..transformer.passes import TextContexts, TransformerPasses


#: `on_step_end(step, sigma, video, audio)` may return new `(video, audio)` states, or `(video, audio, contexts)`
#: to change the prompt contexts of the following steps; `None` keeps everything.
StepCallback = Callable[[int, torch.Tensor, ModalityLatents, ModalityLatents], "tuple | None"]


def denoise(
    *,
    passes: TransformerPasses,
    guider: Guider,
    sigmas: torch.Tensor,
    video: ModalityLatents,
    audio: ModalityLatents,
    contexts: TextContexts,
    sampler: Sampler = EULER,
    progress_bar=None,
    on_step_end: StepCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[ModalityLatents, ModalityLatents]:
    """Denoise `video` / `audio` over `sigmas` (`(steps + 1,)`, decreasing to 0) with `guider` deciding the passes
    and `sampler` taking the steps (default: the official Euler on x0). Returns the final states.

    Each model evaluation: the guider plans the step's passes; `passes` runs them (batched); the guider combines
    their x0; a modality the plan does not recompute reuses its previous x0 (skip_step); conditioned tokens are
    clamped to their clean values. A modality whose denoise mask is 0 everywhere (frozen: A2V audio, V2A video, the
    audio-only placeholder video) is never stepped: its x0 is its clean value, its latent stays bit-identical, and
    a guider (see `Guider.for_frozen`) need not recompute it.
    """
    num_steps = len(sigmas) - 1
    frozen = {"video": is_frozen(video), "audio": is_frozen(audio)}
    last = Prediction(video=None, audio=None)
    for i in range(num_steps):
        if should_stop is not None and should_stop():
            break

        def predict(latents: dict[str, torch.Tensor], sigma: torch.Tensor) -> dict[str, torch.Tensor]:
            nonlocal last
            states = {name: replace(state, latent=latents.get(name, state.latent))
                      for name, state in (("video", video), ("audio", audio))}
            sigma = sigma.to(video.latent.device)
            plan = guider.plan(i, num_steps, float(sigma))
            guided = Prediction(None, None)
            if plan.runs_model:
                guided = guider.combine(i, plan, passes(plan, states["video"], states["audio"], contexts, sigma))
            x0 = {"video": guided.video if plan.video and plan.runs_model else last.video,
                  "audio": guided.audio if plan.audio and plan.runs_model else last.audio}
            x0 = {name: states[name].clean if frozen[name] else value for name, value in x0.items()}
            if x0["video"] is None or x0["audio"] is None:
                raise RuntimeError(
                    f"{type(guider).__name__} skipped a modality at step {i} before any x0 was computed for it"
                )
            last = Prediction(x0["video"], x0["audio"])
            return {name: states[name].clamp(x0[name]) for name in latents}

        stepping = {name: state.latent for name, state in (("video", video), ("audio", audio)) if not frozen[name]}
        stepped = sampler.step(predict, stepping, sigmas, i)
        video = replace(video, latent=stepped.get("video", video.latent))
        audio = replace(audio, latent=stepped.get("audio", audio.latent))
        if on_step_end is not None:
            updated = on_step_end(i, sigmas[i].to(video.latent.device), video, audio)
            if updated is not None:
                video, audio, *rest = updated
                contexts = rest[0] if rest else contexts
        if progress_bar is not None:
            progress_bar.update()
    return video, audio
