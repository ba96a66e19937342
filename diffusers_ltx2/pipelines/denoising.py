"""The denoising loop shared by every LTX-2 pipeline of this package: the official Euler sampler on x0.

guider plan -> the step's passes (`transformer.TransformerPasses`) -> guider combine -> clamp conditioned tokens ->
Euler step. The token states are `latents.ModalityLatents`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

import torch

from ..guiders.base import Guider, Prediction
from ..latents.state import ModalityLatents, is_frozen
from ..transformer.passes import TextContexts, TransformerPasses


#: `on_step_end(step, sigma, video, audio)` may return new `(video, audio)` states, or `(video, audio, contexts)`
#: to change the prompt contexts of the following steps; `None` keeps everything.
StepCallback = Callable[[int, torch.Tensor, ModalityLatents, ModalityLatents], "tuple | None"]


def denoise(
    *,
    passes: TransformerPasses,
    guider: Guider,
    scheduler,
    video: ModalityLatents,
    audio: ModalityLatents,
    contexts: TextContexts,
    progress_bar=None,
    on_step_end: StepCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[ModalityLatents, ModalityLatents]:
    """Run the official Euler-on-x0 sampler over `scheduler.sigmas` with `guider` deciding the passes.

    At each step: the guider plans the passes; they run batched; the guider combines their x0; a modality
    the plan does not recompute reuses its previous x0 (skip_step); conditioned tokens are clamped to their
    clean values; the scheduler takes the Euler step. Returns the final states.

    A modality whose denoise mask is 0 everywhere (frozen: A2V audio, V2A video, the audio-only placeholder video)
    is never stepped: its x0 is its clean value, its latent stays bit-identical, and a guider (see
    `Guider.for_frozen`) need not recompute it.
    """
    sigmas = scheduler.sigmas
    num_steps = len(sigmas) - 1
    frozen_video, frozen_audio = is_frozen(video), is_frozen(audio)
    last = Prediction(video=None, audio=None)
    for i in range(num_steps):
        if should_stop is not None and should_stop():
            break
        sigma = sigmas[i].to(video.latent.device)
        plan = guider.plan(i, num_steps, float(sigma))
        guided = Prediction(None, None)
        if plan.runs_model:
            guided = guider.combine(i, plan, passes(plan, video, audio, contexts, sigma))
        x0_video = guided.video if plan.video and plan.runs_model else last.video
        x0_audio = guided.audio if plan.audio and plan.runs_model else last.audio
        if frozen_video:
            x0_video = video.clean
        if frozen_audio:
            x0_audio = audio.clean
        if x0_video is None or x0_audio is None:
            raise RuntimeError(
                f"{type(guider).__name__} skipped a modality at step {i} before any x0 was computed for it"
            )
        last = Prediction(x0_video, x0_audio)
        if not frozen_video:
            video = replace(video, latent=scheduler.step(video.clamp(x0_video), video.latent, i, return_dict=False)[0])
        if not frozen_audio:
            audio = replace(audio, latent=scheduler.step(audio.clamp(x0_audio), audio.latent, i, return_dict=False)[0])
        if on_step_end is not None:
            updated = on_step_end(i, sigma, video, audio)
            if updated is not None:
                video, audio, *rest = updated
                contexts = rest[0] if rest else contexts
        if progress_bar is not None:
            progress_bar.update()
    return video, audio

