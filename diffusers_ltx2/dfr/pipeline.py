"""`LTX2DFRPipeline`: ltx-pipelines 1.2 `DFRPipeline` (LTX-2.5) as a diffusers pipeline: its arguments resolved by
the one resolver (`pipelines.call.resolve_call`), then the `Stage`s of `dfr.stages` run by `run_stage` on the call's
`StageRuntime`, then the pipeline's `finish` (decode)."""

from __future__ import annotations

from dataclasses import replace

import torch
from diffusers import AutoencoderKLLTX2Audio, AutoencoderKLLTX2Video, LTX2VideoTransformer3DModel
from diffusers.models.autoencoders.ltx2_diffusion_decoder import LTX2VideoDiffusionDecoderModel
from diffusers.pipelines.ltx2 import LTX2TextConnectors, LTX2Vocoder, LTX2VocoderWithBWE
from diffusers.pipelines.ltx2.duration_head import LTX2DurationHead
from diffusers.pipelines.ltx2.latent_upsampler import LTX2LatentUpsamplerModel

from ..conditioning import ConditionedLatents
from ..latents import layout as L
from ..latents.state import ModalityLatents
from ..pipelines.call import resolve_call
from ..pipelines.refine import DISTILLED_ADAPTER, unguided
from ..pipelines.runtime import stage_runtime
from ..pipelines.stage import AdapterSet
from ..pipelines.stage import StageResult as FinishedStage
from ..pipelines.two_stage import LTX2TwoStagePipeline
from ..schedulers.sigmas import DISTILLED_REFINE_SIGMAS, DISTILLED_SIGMAS
from . import stages as S
from .arguments import dfr_images, refuse_arguments
from .images import stage_images
from .layout import resolve_canvas
from .temporal import check_temporal_upsampler

#: adapter name `load_detailing_lora` gives the detailing IC-LoRA (active in the detailing stage only)
DETAILING_ADAPTER = "ltx2_dfr_detailing"


class LTX2DFRPipeline(LTX2TwoStagePipeline):
    """DFR for LTX-2.5 (official `DFRPipeline`; diffusers' name): keyframe slots generated with a half-resolution
    base, a x2 spatial detailing stage (optionally with the detailing IC-LoRA, its reference being the base video)
    and 0-2 temporal x2 rounds in keyframe-seam tiles.

    Components: those of `LTX2TwoStagePipeline` (`latent_upsampler`: the spatial x2 upscaler) plus
    `temporal_latent_upsampler` (the temporal x2 upscaler; needed for `temporal_upsample_rounds > 0`; `ltx2
    convert` of a 2.5 set writes it as `temporal_latent_upsampler/`). Load the distilled LoRA with
    `load_distilled_lora` (1.2 fuses it in every stage) and optionally the detailing LoRA with
    `load_detailing_lora`.

    Images (`conditions=` / `image=`) are applied as 1.2 applies its `images=` in the base and detailing stages; in
    the temporal rounds this pipeline deliberately deviates from 1.2: an image at frame `f` is placed at
    `f * 2**round` of the round's clip (the time it was given for), where 1.2 re-bases the unscaled `f` and so
    pins it at `f / 2**round` of the original time (`dfr.images`). An image at frame 0 lands identically.

    Example (tiny random model, see README "DFR"):
        >>> pipe = LTX2DFRPipeline.from_pipe(two_stage, temporal_latent_upsampler=temporal)
        >>> out = pipe("a fox in the snow", height=128, width=192, num_frames=49, temporal_upsample_rounds=1)
    """

    _optional_components = LTX2TwoStagePipeline._optional_components + ["temporal_latent_upsampler"]

    def __init__(
        self,
        scheduler,
        vae: AutoencoderKLLTX2Video,
        audio_vae: AutoencoderKLLTX2Audio,
        text_encoder,
        tokenizer,
        connectors: LTX2TextConnectors,
        transformer: LTX2VideoTransformer3DModel,
        vocoder: LTX2Vocoder | LTX2VocoderWithBWE,
        guider="default",
        latent_upsampler: LTX2LatentUpsamplerModel | None = None,
        prompt_encoder=None,
        model_identity: str | None = None,
        model_version: str | None = None,
        gemma_version: str | None = None,
        processor=None,
        prompt_enhancer=None,
        duration_head: LTX2DurationHead | None = None,
        audio_scheduler=None,
        diffusion_decoder: LTX2VideoDiffusionDecoderModel | None = None,
        temporal_latent_upsampler: LTX2LatentUpsamplerModel | None = None,
    ):
        """`LTX2TwoStagePipeline`'s components plus `temporal_latent_upsampler` (ValueError if it is not a
        temporal-only `LTX2LatentUpsamplerModel`). Model components are annotated with their classes: diffusers'
        `from_pipe` moves a model component only when its type matches the annotation."""
        super().__init__(scheduler=scheduler, vae=vae, audio_vae=audio_vae, text_encoder=text_encoder,
                         tokenizer=tokenizer, connectors=connectors, transformer=transformer, vocoder=vocoder,
                         guider=guider, latent_upsampler=latent_upsampler, prompt_encoder=prompt_encoder,
                         model_identity=model_identity, model_version=model_version, gemma_version=gemma_version,
                         processor=processor, prompt_enhancer=prompt_enhancer, duration_head=duration_head,
                         audio_scheduler=audio_scheduler, diffusion_decoder=diffusion_decoder)
        if temporal_latent_upsampler is not None:
            check_temporal_upsampler(temporal_latent_upsampler)
        self.register_modules(temporal_latent_upsampler=temporal_latent_upsampler)

    def load_detailing_lora(self, path_or_state_dict, strength: float = 1.0, **kwargs) -> str:
        """Load the x2 spatial detailing IC-LoRA as adapter `"ltx2_dfr_detailing"`, inactive except in the detailing
        stage (official `--detailing-lora PATH STRENGTH`); its reference downscale factor comes from the file's
        metadata (2 when it has none, as 1.2's `_detailing_downscale_factor`)."""
        before = {id(m): list(m.active_adapters) for m in _lora_layers(self)}
        self.load_lora_weights(path_or_state_dict, adapter_name=DETAILING_ADAPTER, strength=strength, **kwargs)
        info = self.ic_lora_adapters[DETAILING_ADAPTER]
        if not info.from_metadata and info.reference_downscale_factor == 1:  # `ICLoraInfo` is frozen
            self.ic_lora_adapters[DETAILING_ADAPTER] = replace(info, reference_downscale_factor=2)
        for m in _lora_layers(self):
            m._active_adapter = [n for n in before.get(id(m), m.active_adapters) if n != DETAILING_ADAPTER]
        return DETAILING_ADAPTER

    def check_dfr_inputs(self, height: int, width: int, num_frames: int, temporal_upsample_rounds: int) -> None:
        """Raise ValueError before anything runs: rounds not 0-2, a missing upsampler, a size or frame count DFR
        cannot use (`num_frames=None` without a duration head), a checkpoint without the keyframe embedding (not
        LTX-2.5)."""
        if temporal_upsample_rounds not in (0, 1, 2) or isinstance(temporal_upsample_rounds, bool):
            raise ValueError(f"temporal_upsample_rounds must be 0, 1 or 2, got {temporal_upsample_rounds!r}")
        if temporal_upsample_rounds and self.temporal_latent_upsampler is None:
            raise ValueError("temporal_upsample_rounds > 0 needs temporal_latent_upsampler (the official "
                             "ltx-2.5-latent-temporal-upscaler-x2 file: load_official_upsampler)")
        if self.latent_upsampler is None:
            raise ValueError("DFR needs latent_upsampler (the spatial x2 upscaler)")
        if not getattr(self.transformer.config, "use_keyframes_abs_pos_embedding", False):
            raise ValueError("DFR generates keyframe slots: it needs an LTX-2.5 checkpoint")
        self.check_two_stage(height, width, distilled=True, distilled_lora_strength=None)
        if num_frames is None:
            if getattr(self, "duration_head", None) is None:
                raise ValueError("num_frames=None leaves the clip length to the duration head, but this pipeline "
                                 "has no duration_head: pass num_frames (8k + 1)")
        else:
            resolve_canvas(num_frames, self.vae_temporal_compression_ratio)

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        *,
        conditions=None,
        image=None,
        image_strength: float = 1.0,
        image_crf: int | None = None,
        height: int = 1024,
        width: int = 1536,
        num_frames: int | None = 121,
        frame_rate: float = 24.0,
        temporal_upsample_rounds: int = 0,
        reference_downscale_factor: int | None = None,
        stage_1_sigmas=DISTILLED_SIGMAS,
        stage_2_sigmas=DISTILLED_REFINE_SIGMAS,
        min_seconds: float = 1.0,
        max_seconds: float = 20.0,
        num_videos_per_prompt: int = 1,
        generator: torch.Generator | None = None,
        prompt_embeds=None,
        prompt_attention_mask: torch.Tensor | None = None,
        decode_timestep: float = 0.0,
        decode_noise_scale: float | None = None,
        use_cross_timestep: bool = True,
        system_prompt: str | None = None,
        enable_prompt_enhancement: bool = False,
        prompt_max_new_tokens: int | None = None,
        prompt_enhancement_kwargs: dict | None = None,
        prompt_enhancement_seed: int = 10,
        output_type: str = "pil",
        return_dict: bool = True,
        attention_kwargs: dict | None = None,
        callback_on_step_end=None,
        callback_on_step_end_tensor_inputs: list[str] = ("latents",),
        max_sequence_length: int | None = None,
        **refused,
    ):
        """Generate a DFR clip.

        The keyword arguments of diffusers' `LTX2DFRPipeline` / `LTX2DFRTemporalRefinePipeline` that mean the same
        here are accepted under their names; those that only make sense for diffusers' one-pass-per-call design
        (`latents`, `keyframes_latents`, `reference_latents`, `sigmas`, `noise_scale`, `round_index`, ...) or for a
        guided pipeline (`negative_prompt`, `guidance_scale`) are refused with the reason
        (`dfr.arguments.REFUSED_ARGUMENTS`).

        Args:
            prompt: one prompt (or `prompt_embeds`: `PromptEmbeddings`, a conditioning file path (`ltx2 encode`),
                or diffusers' tensor with `prompt_attention_mask`).
            conditions: images to condition on (1.2's `images=`): `VideoCondition(image, frame_index, strength,
                crf=None)` (pixel frame of the requested clip, negative from its end) and / or diffusers'
                `LTX2VideoCondition` of one image (`index`: latent index, pixel frame `(index - 1) * 8 + 1`); CRF
                `None`: the model's (18 for LTX-2.5, 1.2's `resolve_crf`). Applied as 1.2 applies them in every
                stage (`dfr.images`): frame 0 sets the first latent frame, other frames append single-frame
                keyframe tokens, encoded at half size in the base stage and full size after. In temporal round
                `r` an image at frame `f` is placed at `f * 2**r` (tile-local), as diffusers does; 1.2 places it at
                `f` unscaled, an upstream defect this pipeline deliberately does not follow (frame 0 agrees).
            image, image_strength, image_crf: one first-frame image (as the other pipelines' `image=`).
            height, width: output pixels (multiples of 64; stage 1 runs at half).
            num_frames: requested pixel frames at `frame_rate` (`8k + 1`); the canvas pads to whole 24 / 32-frame
                keyframe segments and is cut back at the end. `None`: predicted from the prompt by the duration head
                within `[min_seconds, max_seconds]` (1.2's auto duration; needs `duration_head`).
            temporal_upsample_rounds: 0-2 temporal x2 rounds: the output has `(num_frames - 1) * 2**rounds + 1`
                frames for playback at `frame_rate * 2**rounds` fps.
            reference_downscale_factor: detailing reference factor; default the detailing LoRA's (none loaded: no
                reference).
            stage_1_sigmas, stage_2_sigmas: official `DISTILLED_SIGMAS` / `STAGE_2_DISTILLED_SIGMAS` (with the
                terminal 0).
            num_videos_per_prompt: 1 (1.2's DFR makes one clip per call; other values raise ValueError).
            generator: one generator noises every stage in order (official seed: `torch.Generator().manual_seed(
                seed)`; the temporal rounds' ancestral noise is seeded `seed + 1000 * round + tile`).
            use_cross_timestep: as `LTX2Pipeline` (LTX-2.5 is trained with it: `True`).
            enable_prompt_enhancement, system_prompt, prompt_max_new_tokens, prompt_enhancement_kwargs,
                prompt_enhancement_seed: 1.2's `enhance_prompt`, as `LTX2Pipeline` (needs `prompt_enhancer`).
            callback_on_step_end: `fn(pipe, step, sigma, tensors) -> dict` (or a diffusers `PipelineCallback`),
                called after every step of every stage (base, detailing, each temporal tile; `step` restarts at 0
                in each, `pipe.num_timesteps` is the running stage's); `tensors` holds the names in
                `callback_on_step_end_tensor_inputs` (`latents`: the stage's packed float32 video tokens `(1, N,
                C)` with its appended slot / reference tokens, `audio_latents`, `prompt_embeds`); returned tensors
                replace them. Setting `pipe._interrupt = True` stops denoising: the stages done so far are
                decoded (an interrupted base stage gives the half-size clip, an interrupted round the frames of
                the rounds finished).
            output_type, return_dict, decode_timestep, decode_noise_scale, attention_kwargs, max_sequence_length:
                as `LTX2TwoStagePipeline`.

        Returns:
            `LTX2AudioVideoPipelineOutput`; the audio is stage 1's (1.2 ships stage 1's audio), cut to the video's
            duration on the audio latent grid.

        Raises:
            ValueError: bad inputs (`check_dfr_inputs`; `dfr.arguments.dfr_images`: a condition other than an
                image, a strength outside [0, 1], an image outside the clip), or a refused diffusers argument,
                before any model runs (with `num_frames=None`, what needs the length after the duration head).
        """
        from ..schedulers.samplers import sampler_seed

        refuse_arguments(refused)
        self.check_dfr_inputs(height, width, num_frames, temporal_upsample_rounds)
        images = dfr_images(self, conditions, image, image_strength, image_crf, num_frames)
        if isinstance(prompt, list) and len(prompt) != 1:
            raise ValueError("LTX2DFRPipeline generates one clip per call: give one prompt")
        if num_videos_per_prompt != 1:
            raise ValueError(f"num_videos_per_prompt={num_videos_per_prompt!r}: LTX2DFRPipeline generates one clip "
                             "per call (ltx-pipelines 1.2 DFRPipeline: one prompt, one seed); call it again")
        seed = sampler_seed("euler_ancestral", generator)
        if generator is None:
            generator = torch.Generator(device=self._execution_device).manual_seed(seed)
        canvas = None if num_frames is None else resolve_canvas(num_frames, self.vae_temporal_compression_ratio)[0]
        call = resolve_call(
            self, prompt=prompt, height=height, width=width, num_frames=canvas, frame_rate=frame_rate,
            min_seconds=min_seconds, max_seconds=max_seconds, num_videos_per_prompt=num_videos_per_prompt,
            generator=generator, prompt_embeds=prompt_embeds, prompt_attention_mask=prompt_attention_mask,
            max_sequence_length=max_sequence_length, decode_timestep=decode_timestep,
            decode_noise_scale=decode_noise_scale, use_cross_timestep=use_cross_timestep, output_type=output_type,
            return_dict=return_dict, attention_kwargs=attention_kwargs, callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
            stage_size=(height // 2, width // 2), fixed_guider=unguided(),
            fixed_sigmas=[float(s) for s in stage_1_sigmas], predicts_length=True)
        if call.inputs.total != 1:
            raise ValueError("LTX2DFRPipeline generates one clip per call: give one prompt")
        # 1.2 DFRPipeline: the enhancer sees the first image as given (`enhance_prompt_image=images[0][0]`)
        enhancement = self.prompt_enhancement(
            enable_prompt_enhancement, call.inputs.prompts, image=image, conditions=conditions,
            system_prompt=system_prompt, max_new_tokens=prompt_max_new_tokens,
            generation_kwargs=prompt_enhancement_kwargs, seed=prompt_enhancement_seed, generator=generator)
        self._interrupt = False
        enhanced = self.enhance_call_prompts(enhancement, call.inputs.prompts)
        contexts = self.encode_text_contexts(enhanced or call.inputs.prompts, None,
                                             prompt_embeds=call.inputs.prompt_embeds, need_negative=False,
                                             max_sequence_length=call.max_sequence_length, device=call.device)
        if num_frames is None:  # 1.2 `resolve_num_frames`: predicted from the encoded prompt, then the canvas
            num_frames = call.predict_length(self, contexts).geometry.num_frames
            images = dfr_images(self, conditions, image, image_strength, image_crf, num_frames)
        canvas, _, positions = resolve_canvas(num_frames, self.vae_temporal_compression_ratio)
        runtime = stage_runtime(self, call, contexts)
        result, size, rounds, audio = self._run_stages(runtime, canvas, positions, height, width, frame_rate,
                                                       temporal_upsample_rounds, reference_downscale_factor,
                                                       stage_1_sigmas, stage_2_sigmas, seed, images)
        frames = (num_frames - 1) * 2 ** rounds + 1
        geometry = self.clip_geometry(1, frames, *size, frame_rate * 2 ** rounds)
        video = L.pack_video(result.video[:, :, : geometry.latent_frames])
        return self.finish(_finished(video, audio[:, : geometry.audio_latent_length], geometry), call,
                           enhanced_prompts=enhanced)

    def _run_stages(self, runtime, canvas, positions, height, width, frame_rate, temporal_upsample_rounds,
                    reference_downscale_factor, stage_1_sigmas, stage_2_sigmas, seed, images=()):
        """The base stage, the detailing stage and the temporal rounds on `runtime`, stopping after the stage in
        which `pipe.interrupt` was set. Returns `(last dfr StageResult, its (height, width), temporal rounds
        finished, stage 1's audio tokens)`."""
        detailing = DETAILING_ADAPTER in self.ic_lora_adapters
        if reference_downscale_factor is None and detailing:
            reference_downscale_factor = self.ic_lora_adapters[DETAILING_ADAPTER].reference_downscale_factor
        distilled = ((DISTILLED_ADAPTER, self.ic_lora_adapters[DISTILLED_ADAPTER].strength),) \
            if self.distilled_lora_loaded else ()
        drop = frozenset({DISTILLED_ADAPTER, DETAILING_ADAPTER})
        result = S.base_stage(self, runtime, num_frames=canvas, height=height // 2, width=width // 2,
                              frame_rate=frame_rate, positions=positions, conditions=stage_images(images),
                              sigmas=stage_1_sigmas,
                              adapters=AdapterSet(drop=drop, add=distilled),
                              name=f"DFR base ({height // 2}x{width // 2}, keyframe slots)")
        audio = result.audio
        if self.interrupt:
            return result, (height // 2, width // 2), 0, audio
        details = distilled + (((DETAILING_ADAPTER, self.ic_lora_adapters[DETAILING_ADAPTER].strength),)
                               if detailing else ())
        result = S.detail_stage(self, runtime, result, num_frames=canvas, height=height, width=width,
                                frame_rate=frame_rate, upsampler=self.latent_upsampler, sigmas=stage_2_sigmas,
                                conditions=stage_images(images),
                                reference_downscale_factor=reference_downscale_factor,
                                adapters=AdapterSet(drop=drop, add=details), name=f"DFR detailing ({height}x{width})")
        rate, rounds = frame_rate, 0
        for r in range(1, temporal_upsample_rounds + 1):
            if self.interrupt:
                break
            result, canvas, rate = S.temporal_round(
                self, runtime, result, round_index=r, num_frames=canvas, height=height, width=width, frame_rate=rate,
                temporal_upsampler=self.temporal_latent_upsampler, seed=seed, images=images,
                adapters=AdapterSet(drop=drop, add=distilled), name=f"DFR temporal round {r}/{temporal_upsample_rounds}")
            rounds = r
        return result, (height, width), rounds, audio


def _finished(video: torch.Tensor, audio: torch.Tensor, geometry) -> FinishedStage:
    """Finished video / audio tokens as the stage result `finish` decodes (nothing frozen, nothing appended)."""
    def state(tokens):
        mask = torch.zeros(tokens.shape[:2], device=tokens.device)
        return ModalityLatents(latent=tokens, clean=tokens, denoise_mask=mask, coords=None,
                               num_target_tokens=tokens.shape[1])

    v, a = state(video), state(audio)
    return FinishedStage(video=v, audio=a, conditioned=ConditionedLatents(video=v, audio=a), geometry=geometry)


def _lora_layers(pipe):
    from ..loaders.adapter_state import lora_layers

    return [layer for m in (pipe.transformer, pipe.connectors) if m is not None for layer in lora_layers(m)]
