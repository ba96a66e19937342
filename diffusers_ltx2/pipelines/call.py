"""The one call-argument resolver: a pipeline call's arguments, checked and resolved once, before any model runs,
into a typed `PipelineCall` that each `__call__` hands on to its stages.

Resolved here for every pipeline of this package: diffusers' compatibility arguments (unsupported features,
`timesteps`, raw prompt-embedding tensors, `LTX2VideoCondition`s), the guidance (`guider=` or diffusers' guidance
arguments, or the pipeline's component), the first stage's sigmas, the callback's tensor names, the prompts and
their batch, the clip geometry, `image=` (re-compressed once, as a `FirstFrameImage` condition), the conditions
(checked at every stage size), how the latents start (given noise, or clean `latents` re-noised by
`noise_scale`), the samplers, prompt enhancement (`pipelines.enhancement`: checked here, run by `generate` before
encoding), a clip length left to the duration head (`pipelines.duration`: checked here, predicted by `generate`
after encoding, `PipelineCall.predict_length`), the run and output options.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable

import torch

from ..conditioning import Condition, check_conditions, check_output_modalities
from ..conditioning.diffusers_condition import from_diffusers_conditions
from ..guiders import Guider
from ..latents.geometry import ClipGeometry
from ..latents.noiser import StartLatents
from ..quantization import check_transformer_runtime
from ..schedulers.samplers import EULER, Sampler, make_sampler
from . import validation as V
from .diffusers_compat import DIFFUSERS_DEFAULT, check_unsupported_features, sigmas_from_timesteps
from .duration import (DEFAULT_NUM_FRAMES, AutoDuration, check_auto_duration, placeholder_num_frames,
                       predict_num_frames)
from .enhancement import PromptEnhancement
from .images import FirstFrameImage
from .stage import Stage

__all__ = ["OutputOptions", "PipelineCall", "RunOptions", "resolve_call"]


@dataclass(frozen=True, eq=False)
class RunOptions:
    """How the stages run: transformer keywords (`attention_kwargs`, e.g. LoRA `scale`), guidance passes per
    transformer call, the cross-modal timestep switch, the user's step callback and the tensors it asks for."""

    attention_kwargs: dict | None = None
    max_batch_passes: int | str | None = None
    use_cross_timestep: bool = True
    callback: Callable | None = None
    callback_tensor_inputs: tuple[str, ...] = ("latents",)


@dataclass(frozen=True, eq=False)
class OutputOptions:
    """What `finish` makes of the final latents (`output_type`, `return_dict`, VAE decode timestep / noise)."""

    output_type: str = "pil"
    return_dict: bool = True
    decode_timestep: float | list[float] = 0.0
    decode_noise_scale: float | list[float] | None = None


@dataclass(frozen=True, eq=False)
class PipelineCall:
    """One pipeline call, resolved (see the module docstring).

    Attributes:
        inputs: prompts / prompt embeddings and their batch (`validation.CallInputs`).
        num_videos_per_prompt, max_sequence_length: prompt encoding.
        geometry: the output clip (`batch_size` = every generated video).
        guider: the first stage's guidance.
        sigmas: the first stage's schedule, `(steps + 1,)` float32 on `device`.
        conditions: checked conditions in application order (`image=` included as `FirstFrameImage`).
        audio_only: audio-only generation.
        video, audio: how the first stage's latents start (`latents.noiser.StartLatents`).
        generator: torch generator(s).
        device: where the call runs.
        run, output: `RunOptions`, `OutputOptions`.
        sampler, stage_2_sampler: the first stage's sampler, and a second stage's (two-stage pipelines).
        enhancement: the prompt enhancement `generate` runs before encoding (`None`: the prompts as given).
        duration: set while the clip length is still to be predicted by the duration head (`predict_length`);
            `geometry` and `sigmas` are then those of a placeholder length.
    """

    inputs: V.CallInputs
    num_videos_per_prompt: int
    max_sequence_length: int | None
    geometry: ClipGeometry
    guider: Guider
    sigmas: torch.Tensor
    conditions: tuple
    audio_only: bool
    video: StartLatents
    audio: StartLatents
    generator: Any
    device: torch.device
    run: RunOptions
    output: OutputOptions
    sampler: Sampler = EULER
    stage_2_sampler: Sampler = EULER
    enhancement: PromptEnhancement | None = None
    duration: AutoDuration | None = None

    def stage(self, **changes) -> Stage:
        """The call's first stage (`Stage` at the output geometry unless changed): its sigmas, guider, conditions,
        starting latents, audio-only flag and sampler; `changes` replace `Stage` fields."""
        fields = dict(geometry=self.geometry, sigmas=self.sigmas, guider=self.guider, conditions=self.conditions,
                      video=self.video, audio=self.audio, audio_only=self.audio_only, sampler=self.sampler)
        return Stage(**{**fields, **changes})

    def predict_length(self, pipe, contexts) -> "PipelineCall":
        """This call at the clip length `pipe.duration_head` predicts from the positive prompt's connector outputs
        (`contexts`: the call's `TextContexts`), with the geometry, schedule and condition checks of that length
        (diffusers' `LTX2Pipeline` and official ltx-pipelines 1.2 predict it after encoding, before the noise);
        itself when the call fixes its length (`duration` is `None`)."""
        d = self.duration
        if d is None:
            return self
        g = self.geometry
        num_frames = predict_num_frames(pipe.duration_head, contexts.positive, frame_rate=g.frame_rate,
                                        temporal_ratio=g.temporal_ratio, min_seconds=d.min_seconds,
                                        max_seconds=d.max_seconds)
        geometry = pipe.clip_geometry(g.batch_size, num_frames, g.height, g.width, g.frame_rate)
        return replace(self, geometry=geometry, duration=None,
                       sigmas=_schedule(pipe, geometry, d.num_inference_steps, d.sigmas, self.device),
                       conditions=tuple(check_conditions(list(self.conditions), geometry,
                                                         output_modalities=d.output_modalities)))


def _start(pipe, latents, noise_scale: float, device, audio: bool) -> StartLatents:
    """diffusers' `latents` / `audio_latents`: the initial noise, or (`noise_scale > 0`) clean latents to re-noise
    (diffusers' meaning, e.g. 0.909375 with `DISTILLED_REFINE_SIGMAS` for a second stage)."""
    if latents is None or noise_scale == 0:
        return StartLatents(noise=latents)
    return StartLatents(clean=pipe.as_clean_tokens(latents.to(device, torch.float32), audio=audio),
                        noise_scale=noise_scale)


def resolve_call(
    pipe, *, prompt=None, negative_prompt=None, height=512, width=768, num_frames=121, frame_rate=24.0,
    num_inference_steps=40, sigmas=None, timesteps=None, guider=None, guidance_scale=DIFFUSERS_DEFAULT, stg_scale=DIFFUSERS_DEFAULT, modality_scale=DIFFUSERS_DEFAULT,
    guidance_rescale=DIFFUSERS_DEFAULT, audio_guidance_scale=DIFFUSERS_DEFAULT, audio_stg_scale=DIFFUSERS_DEFAULT,
    audio_modality_scale=DIFFUSERS_DEFAULT, audio_guidance_rescale=DIFFUSERS_DEFAULT,
    spatio_temporal_guidance_blocks=DIFFUSERS_DEFAULT, use_cross_timestep=True, image=None, image_strength=1.0,
    image_crf=None, noise_scale=0.0, conditions=None, output_modalities=("video", "audio"), num_videos_per_prompt=1,
    generator=None, latents=None, audio_latents=None, prompt_embeds=None, prompt_attention_mask=None,
    negative_prompt_embeds=None, negative_prompt_attention_mask=None, max_batch_passes=None, max_sequence_length=None,
    decode_timestep=0.0, decode_noise_scale=None, output_type="pil", return_dict=True, attention_kwargs=None,
    callback_on_step_end=None, callback_on_step_end_tensor_inputs=("latents",), min_seconds=1.0, max_seconds=20.0,
    motion_speed=1.0, enable_prompt_enhancement=False, system_prompt=None, prompt_max_new_tokens=None,
    prompt_enhancement_kwargs=None, prompt_enhancement_seed=10, sampler="euler", stage_2_sampler="euler",
    stage_size: tuple[int, int] | None = None, fixed_guider: Guider | None = None, fixed_sigmas=None,
    default_negative_prompt: str | None = None, enhances_prompts: bool = True, predicts_length: bool = True,
) -> PipelineCall:
    """Check and resolve a call's arguments (`LTX2AudioVideoPipeline.__call__`'s, same names, meanings and
    defaults; a pipeline passes its own explicitly; `stage_2_sampler` is the two-stage pipelines').

    Pipeline-specific keywords: `stage_size` `(h, w)` of the first stage when it differs from the output's (two
    stages: noise shapes are checked there, conditions at both sizes); `fixed_guider` / `fixed_sigmas` replace the
    resolved guidance / schedule (distilled recipes; the user's guidance arguments are still checked);
    `default_negative_prompt` is used when the guider needs a negative pass and none is given;
    `enhances_prompts=False`: the pipeline refuses `enable_prompt_enhancement=True`; `predicts_length=False`: it
    never leaves the clip length to a duration head (`num_frames=None` is 121).

    Raises:
        ValueError: any invalid input, before any model runs.
        UnsupportedFeatureError: a diffusers argument asks for a feature this package does not have.
    """
    has_head = predicts_length and getattr(pipe, "duration_head", None) is not None
    check_unsupported_features(num_frames=num_frames, min_seconds=min_seconds, max_seconds=max_seconds,
                               motion_speed=motion_speed, has_duration_head=has_head,
                               enable_prompt_enhancement=enable_prompt_enhancement and not enhances_prompts)
    auto_duration = num_frames is None and has_head  # predicted after encoding (`PipelineCall.predict_length`)
    if auto_duration:
        check_auto_duration(conditions=conditions, latents=latents, audio_latents=audio_latents)
    if num_frames is None:
        num_frames = placeholder_num_frames(pipe) if auto_duration else DEFAULT_NUM_FRAMES
    V.check_strength("noise_scale", noise_scale)
    sampler, stage_2_sampler = make_sampler(sampler), make_sampler(stage_2_sampler)
    sigmas = sigmas_from_timesteps(timesteps, sigmas)
    guider = pipe.call_guider(guider, dict(
        guidance_scale=guidance_scale, stg_scale=stg_scale, modality_scale=modality_scale,
        guidance_rescale=guidance_rescale, audio_guidance_scale=audio_guidance_scale, audio_stg_scale=audio_stg_scale,
        audio_modality_scale=audio_modality_scale, audio_guidance_rescale=audio_guidance_rescale,
        spatio_temporal_guidance_blocks=spatio_temporal_guidance_blocks))
    guider = fixed_guider if fixed_guider is not None else guider
    sigmas = fixed_sigmas if fixed_sigmas is not None else sigmas
    tensor_inputs = tuple(pipe.callback_tensor_names(callback_on_step_end, callback_on_step_end_tensor_inputs))
    if negative_prompt is None and negative_prompt_embeds is None and guider.uses_negative_prompt:
        negative_prompt = default_negative_prompt
    stage_h, stage_w = stage_size or (height, width)
    inputs = V.check_call_inputs(
        pipe, prompt=prompt, negative_prompt=negative_prompt, prompt_embeds=prompt_embeds,
        negative_prompt_embeds=negative_prompt_embeds, prompt_attention_mask=prompt_attention_mask,
        negative_prompt_attention_mask=negative_prompt_attention_mask, height=stage_h, width=stage_w,
        num_frames=num_frames, frame_rate=frame_rate, output_type=output_type, image=image,
        image_strength=image_strength, num_videos_per_prompt=num_videos_per_prompt, generator=generator,
        latents=latents, audio_latents=audio_latents, callback_tensor_inputs=tensor_inputs, guider=guider,
    )
    if auto_duration:
        check_auto_duration(batch_size=inputs.batch_size)
    given_image = image  # the enhancer sees the image before any re-compression (official)
    image = pipe.prepare_image(image, image_crf)
    explicit = conditions is not None or tuple(output_modalities) != ("video", "audio")
    if explicit and noise_scale > 0:
        raise ValueError("noise_scale (re-noising given clean latents) cannot be combined with conditions= / "
                         "output_modalities=: the conditions define the clean latents")
    geometry = pipe.clip_geometry(inputs.total, num_frames, height, width, frame_rate)
    stage_geometry = pipe.clip_geometry(inputs.total, num_frames, stage_h, stage_w, frame_rate)
    ordered, audio_only = _conditions(pipe, conditions, image, image_strength, output_modalities, latents,
                                      [stage_geometry, geometry] if stage_size else [geometry])
    enhancement = pipe.prompt_enhancement(
        enable_prompt_enhancement, inputs.prompts, image=given_image, conditions=ordered, system_prompt=system_prompt,
        max_new_tokens=prompt_max_new_tokens, generation_kwargs=prompt_enhancement_kwargs,
        seed=prompt_enhancement_seed, generator=generator)
    device = pipe._execution_device
    check_transformer_runtime(pipe.transformer, device)  # before a kernel that would crash the process
    pipe._record_call(guider, attention_kwargs)
    return PipelineCall(
        inputs=inputs, num_videos_per_prompt=num_videos_per_prompt, max_sequence_length=max_sequence_length,
        geometry=geometry, guider=guider, sigmas=_schedule(pipe, stage_geometry, num_inference_steps, sigmas, device),
        conditions=tuple(ordered), audio_only=audio_only,
        video=_start(pipe, latents, noise_scale, device, False),
        audio=_start(pipe, audio_latents, noise_scale, device, True),
        generator=generator, device=device,
        run=RunOptions(attention_kwargs=attention_kwargs, max_batch_passes=max_batch_passes,
                       use_cross_timestep=use_cross_timestep, callback=callback_on_step_end,
                       callback_tensor_inputs=tensor_inputs),
        output=OutputOptions(output_type=output_type, return_dict=return_dict, decode_timestep=decode_timestep,
                             decode_noise_scale=decode_noise_scale),
        sampler=sampler, stage_2_sampler=stage_2_sampler, enhancement=enhancement,
        duration=AutoDuration(min_seconds=min_seconds, max_seconds=max_seconds,
                              num_inference_steps=num_inference_steps, sigmas=sigmas,
                              output_modalities=tuple(output_modalities)) if auto_duration else None,
    )


def _schedule(pipe, geometry: ClipGeometry, num_inference_steps, sigmas, device) -> torch.Tensor:
    """A stage's sigmas on `geometry` (the official schedule's shift depends on its token count; custom `sigmas`
    get a final 0)."""
    tokens = geometry.latent_frames * geometry.tokens_per_latent_frame
    return pipe.scheduler.sigmas_for(None if sigmas is not None else num_inference_steps, sigmas=sigmas,
                                     num_tokens=tokens).to(device)


def _conditions(pipe, conditions, image, image_strength, output_modalities, latents, geometries):
    """`conditions=` (diffusers' `LTX2VideoCondition`s with diffusers' meaning) plus `image=`, checked against every
    stage's geometry; returns the ordered conditions and whether the call is audio-only."""
    if conditions is not None:  # diffusers' `crf=None`: the model's CRF (`pipe.default_image_crf`)
        conditions = from_diffusers_conditions(conditions, geometries[-1], geometries[-1].image_crf)
    items = [conditions] if isinstance(conditions, Condition) else conditions
    if image is not None and (items is None or isinstance(items, (list, tuple))):
        items = [*(items or []), FirstFrameImage(image, image_strength)]
    ordered = None
    for geometry in geometries:
        ordered = check_conditions(items, geometry, output_modalities=output_modalities)
    audio_only = check_output_modalities(output_modalities) == ("audio",)
    if audio_only and latents is not None:
        raise ValueError("audio-only generation draws no video noise: pass audio_latents, not latents")
    return ordered, audio_only
