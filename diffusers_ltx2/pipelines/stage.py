"""A stage as a value, and the one function that runs it.

Every pipeline of this package is a composition: resolve the call's arguments (`pipelines.call`) -> a list of
`Stage`s -> `run_stages` -> finish (decode). A stage is everything one pass of the denoising loop over a clip needs:
its geometry, sigmas, guider, conditions, LoRA adapters, how its latents start (noise, or a previous stage's latents
re-noised), its sampler. `run_stage` builds its initial state with the one builder (`conditioning.initial_state`:
conditions encoded and applied, then the one noiser), adapts the guider and prompt contexts to frozen modalities,
switches the adapters, and runs the one loop (`denoising.denoise`). What a stage needs from the models comes in a
`StageRuntime` built once per call by the pipeline; the per-step transformer work is its `make_passes`
(`transformer.TransformerPasses`), the one object to replace to run passes elsewhere.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from typing import Callable, ContextManager

import torch

from ..conditioning import ConditionedLatents, LatentEncoder, initial_state
from ..guiders import Guider
from ..latents.geometry import ClipGeometry
from ..latents.noiser import StartLatents
from ..latents.state import ModalityLatents
from ..loaders.adapter_state import adapters_active
from ..schedulers.samplers import EULER, Sampler, sampler_seed
from ..transformer import TextContexts, TransformerPasses
from .denoising import StepCallback, denoise

__all__ = ["AdapterSet", "Stage", "StageResult", "StageRuntime", "run_stage", "run_stages"]


@dataclass(frozen=True)
class AdapterSet:
    """The LoRA adapters active during a stage (`loaders.adapter_state.adapters_active`): those active on the
    pipeline, minus `drop`, only those in `keep` when given, plus `add` at the given strengths. The pipeline's
    adapters are exactly as before once the stage ends."""

    drop: frozenset = frozenset()
    keep: frozenset | None = None
    add: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True, eq=False)
class Stage:
    """One pass of the denoising loop over a clip (a frozen value; `dataclasses.replace` makes variants).

    Attributes:
        geometry: the clip (batch = videos of the call, frames, size, frame rate).
        sigmas: `(steps + 1,)` float32 schedule ending in 0.
        guider: the stage's guidance (adapted to frozen modalities when the stage runs).
        conditions: checked conditions (`conditioning.check_conditions` order), encoded at this geometry.
        adapters: LoRA adapters of the stage (`None`: leave the pipeline's as they are).
        video, audio: how each modality's tokens start (`latents.noiser.StartLatents`: given noise, or clean
            tokens re-noised by a noise scale).
        audio_only: the video stream is a one-token placeholder (audio-only generation).
        video_only: the audio is held (no noise drawn) and cross-modal attention is off (DFR's temporal rounds).
        sampler: the stepper of the loop (`schedulers.samplers`: the official Euler by default, euler-ancestral,
            res_2s); a stochastic one seeds its noise from the call's generator (`sampler_seed`).
        name: progress-bar description (`None`: the pipeline's).
        from_previous: for a stage after another, `(stage, previous result) -> stage` fills in what depends on the
            previous stage (e.g. the upsampled latents a refinement starts from), right before it runs.
        keep_previous: modalities (`"video"` / `"audio"`) whose final tokens are the previous stage's: the stage
            still denoises them (same noise draws), its own are discarded (official HQ two-stage: stage 2 refines
            the video only, the stage-1 audio is decoded).
    """

    geometry: ClipGeometry
    sigmas: torch.Tensor
    guider: Guider
    conditions: tuple = ()
    adapters: AdapterSet | None = None
    video: StartLatents = field(default_factory=StartLatents)
    audio: StartLatents = field(default_factory=StartLatents)
    audio_only: bool = False
    video_only: bool = False
    sampler: Sampler = EULER
    name: str | None = None
    from_previous: Callable[["Stage", "StageResult"], "Stage"] | None = None
    keep_previous: tuple[str, ...] = ()

    @property
    def num_steps(self) -> int:
        return len(self.sigmas) - 1


@dataclass(frozen=True, eq=False)
class StageResult:
    """A stage's final states (target tokens first) and its conditioned initial state (frozen sources to return
    as given, audio-only), with the geometry they are on."""

    video: ModalityLatents
    audio: ModalityLatents
    conditioned: ConditionedLatents
    geometry: ClipGeometry


def _no_progress(total: int, name: str | None) -> ContextManager:
    return nullcontext(None)


@dataclass(frozen=True, eq=False)
class StageRuntime:
    """What running a call's stages needs besides the stages (built once per call by the pipeline).

    Attributes:
        encoder: conditions encode their media with it (and it gives the states' positions).
        contexts: the call's prompt embeddings.
        make_passes: `(stage guider, cross_modal) -> TransformerPasses`, the step's transformer work.
        generator: torch generator(s) of the noise.
        adapter_models: the models whose LoRA layers a stage's `AdapterSet` switches.
        progress_bar: `(total steps, stage name) -> context manager` yielding a bar with `update()` (or None).
        step_callback: `(stage contexts) -> StepCallback | None`, the user's per-step callback.
        should_stop: polled before every step and between stages (interrupt).
        on_stage_start: called with each stage right before it runs.
    """

    encoder: LatentEncoder
    contexts: TextContexts
    make_passes: Callable[[Guider, bool], TransformerPasses]
    generator: object = None
    adapter_models: tuple = ()
    progress_bar: Callable[[int, str | None], ContextManager] = _no_progress
    step_callback: Callable[[TextContexts], StepCallback | None] = lambda contexts: None
    should_stop: Callable[[], bool] = lambda: False
    on_stage_start: Callable[[Stage], None] = lambda stage: None


def run_stage(stage: Stage, runtime: StageRuntime) -> StageResult:
    """Run one stage: initial state (conditions, noise), frozen-modality rules, adapters, the denoising loop."""
    state = initial_state(stage.conditions, stage.geometry, runtime.encoder, generator=runtime.generator,
                          audio_only=stage.audio_only, video_only=stage.video_only, video=stage.video,
                          audio=stage.audio)
    cross_modal = not (state.audio_only or stage.video_only)
    guider = stage.guider.for_frozen(video=state.frozen_video, audio=state.frozen_audio, cross_modal=cross_modal,
                                     guided=state.guided_frozen)
    contexts = replace(runtime.contexts, frozen_video=state.frozen_video, frozen_audio=state.frozen_audio,
                       guided_frozen=state.guided_frozen)
    adapters = nullcontext() if stage.adapters is None else adapters_active(
        runtime.adapter_models, drop=stage.adapters.drop, keep=stage.adapters.keep, add=dict(stage.adapters.add))
    seed = sampler_seed(stage.sampler, runtime.generator)  # (no generator: drawn after the initial noise)
    with adapters, runtime.progress_bar(stage.num_steps, stage.name) as bar:
        video, audio = denoise(
            passes=runtime.make_passes(guider, cross_modal), guider=guider, sigmas=stage.sigmas, video=state.video,
            audio=state.audio, contexts=contexts, sampler=stage.sampler, seed=seed, progress_bar=bar,
            on_step_end=runtime.step_callback(contexts), should_stop=runtime.should_stop,
        )
    return StageResult(video=video, audio=audio, conditioned=state, geometry=stage.geometry)


def run_stages(stages: list[Stage], runtime: StageRuntime) -> StageResult:
    """Run `stages` in order, each after the previous one (`Stage.from_previous`); an interrupt between stages
    returns the last finished stage's result."""
    result = None
    for stage in stages:
        if result is not None:
            if runtime.should_stop():
                break
            if stage.from_previous is not None:
                stage = stage.from_previous(stage, result)
        runtime.on_stage_start(stage)
        previous, result = result, run_stage(stage, runtime)
        if previous is not None and stage.keep_previous:
            result = replace(result, **{name: getattr(previous, name) for name in stage.keep_previous})
    return result
