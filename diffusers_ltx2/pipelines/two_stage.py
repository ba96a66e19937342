"""`LTX2TwoStagePipeline`: the official recommended recipe - generate at half resolution, upsample the latent 2x,
refine at full resolution in 3 steps with the distilled LoRA.

Followed: ltx-pipelines 1.0.0 `ti2vid_two_stages.py` (`TI2VidTwoStagesPipeline`), `distilled.py`
(`DistilledPipeline`) and the shared stage 2 of `keyframe_interpolation.py` / `a2vid_two_stage.py`:

1. Stage 1 at `(H/2, W/2)`: the full schedule with the guider (multimodal guidance by default); `distilled=True`:
   the 8 distilled sigmas, no guidance. Conditions are encoded at the half size.
2. `upsample_latents`: un-normalise the video latent with the VAE's per-channel statistics, run the latent
   upsampler, re-normalise (`ltx_core.model.upsampler.upsample_video`).
3. Stage 2 at `(H, W)`: the upsampled video and the stage-1 audio are the clean starting latents, re-noised with
   `noise_scale = sigmas[0] = 0.909375` on the tokens whose denoise mask is > 0 (same generator, video noise then
   audio), conditions re-applied at full size (images re-encoded, audio of A2V frozen again), sigmas
   `[0.909375, 0.725, 0.421875, 0]`, one unguided pass per step, the distilled LoRA active on top of the user's
   LoRAs (not for distilled checkpoints).
4. Decode. As ltx-pipelines 1.0.0 does in every two-stage pipeline, the *stage-2* audio latent is decoded (the
   refined one; with A2V the audio is frozen in both stages and the input waveform is returned).

Both stages go through the one shared denoising loop (`LTX2PipelineBase.run_denoising`); the LoRA switch is a PEFT
adapter activation (`loaders.adapter_state.adapters_active`): nothing is reloaded or copied, and the pipeline's
adapters are exactly as before after the call.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import replace
from typing import Any, Callable

import torch
from diffusers import AutoencoderKLLTX2Audio, AutoencoderKLLTX2Video, LTX2VideoTransformer3DModel
from diffusers.pipelines.ltx2 import LTX2TextConnectors, LTX2Vocoder, LTX2VocoderWithBWE
from diffusers.pipelines.ltx2.latent_upsampler import LTX2LatentUpsamplerModel

from ..guiders import ClassifierFreeGuidance, Guider
from ..loaders.adapter_state import adapters_active
from ..loaders.prompt_embeddings import PromptEmbeddings
from ..quantization import check_transformer_runtime
from ..schedulers import DISTILLED_REFINE_SIGMAS, DISTILLED_SIGMAS
from ..schedulers.samplers import Sampler, make_sampler
from . import latents as L
from . import validation as V
from .diffusers_compat import DIFFUSERS_DEFAULT, check_unsupported_features, sigmas_from_timesteps
from .pipeline_ltx2 import LTX2AudioVideoPipeline
from .upsampling import upsample_latents, upsampler_scale

#: ltx-pipelines 1.0.0 `utils/constants.py` DEFAULT_NEGATIVE_PROMPT: this pipeline's negative prompt when the
#: stage-1 guider needs a negative pass and none is given. Pass `negative_prompt=""` for the empty prompt.
DEFAULT_NEGATIVE_PROMPT = (
    "blurry, out of focus, overexposed, underexposed, low contrast, washed out colors, excessive noise, "
    "grainy texture, poor lighting, flickering, motion blur, distorted proportions, unnatural skin tones, "
    "deformed facial features, asymmetrical face, missing facial features, extra limbs, disfigured hands, "
    "wrong hand count, artifacts around text, inconsistent perspective, camera shake, incorrect depth of "
    "field, background too sharp, background clutter, distracting reflections, harsh shadows, inconsistent "
    "lighting direction, color banding, cartoonish rendering, 3D CGI look, unrealistic materials, uncanny "
    "valley effect, incorrect ethnicity, wrong gender, exaggerated expressions, wrong gaze direction, "
    "mismatched lip sync, silent or muted audio, distorted voice, robotic voice, echo, background noise, "
    "off-sync audio, incorrect dialogue, added dialogue, repetitive speech, jittery movement, awkward "
    "pauses, incorrect timing, unnatural transitions, inconsistent framing, tilted camera, flat lighting, "
    "inconsistent tone, cinematic oversaturation, stylized filters, or AI artifacts."
)

#: adapter name `load_distilled_lora` gives the distilled LoRA.
DISTILLED_ADAPTER = "ltx2_distilled"
#: resolution unit of two-stage generation: the half-size stage must still be a multiple of the VAE's 32.
TWO_STAGE_MULTIPLE = 64


def unguided() -> Guider:
    """The guider of stage 2 and of distilled stage 1: one conditional pass per step (official
    `simple_denoising_func`)."""
    return ClassifierFreeGuidance(1.0, 1.0)


class TwoStageMixin:
    """The parts of the two-stage recipe a pipeline class gains by mixing this in before its base class: the
    `latent_upsampler` component, `upsample_latents`, the distilled LoRA adapter, the two-stage checks and
    `refine` (the upsample + stage-2 step). It needs the `LTX2PipelineBase` machinery."""

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
        guider: Guider | None | str = "default",
        latent_upsampler: LTX2LatentUpsamplerModel | None = None,
        prompt_encoder=None,
        model_identity: str | None = None,
        model_version: str | None = None,
        gemma_version: str | None = None,
        processor=None,
        prompt_enhancer=None,
        duration_head=None,
        audio_scheduler=None,
        diffusion_decoder=None,
    ):
        """The base pipeline's components (`LTX2PipelineBase`: `guider` left out = the recommended
        `MultimodalGuider`, `None` = no guidance; diffusers' optional components only as `None`; LTX-2.5's
        `diffusion_decoder`) plus `latent_upsampler`.

        Raises:
            ValueError: a `latent_upsampler` that is another model, made for other latents, or has NaN / inf
                weights (`conversion.upsampler.check_latent_upsampler`), before anything runs.
        """
        super().__init__(scheduler=scheduler, vae=vae, audio_vae=audio_vae, text_encoder=text_encoder,
                         tokenizer=tokenizer, connectors=connectors, transformer=transformer, vocoder=vocoder,
                         guider=guider, prompt_encoder=prompt_encoder, model_identity=model_identity,
                         model_version=model_version, gemma_version=gemma_version, processor=processor,
                         prompt_enhancer=prompt_enhancer, duration_head=duration_head,
                         audio_scheduler=audio_scheduler, diffusion_decoder=diffusion_decoder)
        from ..conversion.upsampler import check_latent_upsampler

        check_latent_upsampler(latent_upsampler, getattr(getattr(vae, "config", None), "latent_channels", None))
        self.register_modules(latent_upsampler=latent_upsampler)

    # -- latent-only entry point -----------------------------------------------------------------------------
    def upsample_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Upsample normalized `(B, C, F, h, w)` video latents with `latent_upsampler` (official `upsample_video`:
        un-normalise with the VAE statistics, upsample, re-normalise); returns `(B, C, F, h*s, w*s)` float32.
        For latents returned by `output_type="latent"` (denormalized VAE latents), normalize first with
        `diffusers_ltx2.pipelines.latents.normalize_video(x, pipe.vae.latents_mean, pipe.vae.latents_std)`.
        Raises `ValueError` without a `latent_upsampler` or for a wrong rank / channel count."""
        if self.latent_upsampler is None:
            raise ValueError("this pipeline has no latent_upsampler: pass latent_upsampler= (an "
                             "LTX2LatentUpsamplerModel, see `ltx2 convert --upsampler`)")
        return upsample_latents(latents.float(), self.latent_upsampler, self.vae.latents_mean, self.vae.latents_std)

    # -- the distilled LoRA ----------------------------------------------------------------------------------
    def load_distilled_lora(self, path_or_state_dict, strength: float = 1.0, **kwargs) -> str:
        """Load the distilled LoRA (official `ltx-2-19b-distilled-lora-*.safetensors` or diffusers format) as the
        PEFT adapter `"ltx2_distilled"`; it stays inactive except during stage 2, where it is added on top of the
        user's active LoRAs at `strength` (official `--distilled-lora PATH STRENGTH`)."""
        if DISTILLED_ADAPTER in self.ic_lora_adapters:
            raise ValueError("a distilled LoRA is already loaded; delete_adapters('ltx2_distilled') first")
        before = {id(m): list(m.active_adapters) for m in _layers(self)}
        self.load_lora_weights(path_or_state_dict, adapter_name=DISTILLED_ADAPTER, strength=strength,
                               reference_downscale_factor=1, **kwargs)
        for m in _layers(self):  # inactive outside stage 2; other layers keep what they had
            m._active_adapter = [n for n in before.get(id(m), m.active_adapters) if n != DISTILLED_ADAPTER]
        return DISTILLED_ADAPTER

    @property
    def distilled_lora_loaded(self) -> bool:
        return DISTILLED_ADAPTER in self.ic_lora_adapters

    @contextmanager
    def _stage(self, name: str, add: dict[str, float] | None = None, keep: set[str] | None = None):
        """Named progress bar and the adapters of one stage: the active ones (only those in `keep` if given), the
        distilled LoRA dropped unless in `add`."""
        old = dict(getattr(self, "_progress_bar_config", {}))
        self.set_progress_bar_config(**{**old, "desc": name})
        try:
            with adapters_active([self.transformer, self.connectors], drop={DISTILLED_ADAPTER}, add=add, keep=keep):
                yield
        finally:
            self._progress_bar_config = old

    # -- checks ------------------------------------------------------------------------------------------------
    def check_two_stage(self, height, width, *, distilled: bool, distilled_lora_strength) -> None:
        """Two-stage rules, checked before any model runs: sizes multiples of 64 (the half-size stage must be a
        multiple of 32), a latent upsampler, and the distilled LoRA unless the checkpoint is distilled."""
        V.check_resolution(height, width, TWO_STAGE_MULTIPLE)
        if self.latent_upsampler is None:
            raise ValueError("two-stage generation needs a latent_upsampler (convert the official "
                             "ltx-2-spatial-upscaler-x2 file with `ltx2 convert --upsampler`)")
        if upsampler_scale(self.latent_upsampler) != 2.0:
            raise ValueError(f"the two-stage recipe generates at half size: it needs an x2 upsampler, this one is "
                             f"x{upsampler_scale(self.latent_upsampler)} (use upsample_latents for other stages)")
        if not distilled and not self.distilled_lora_loaded:
            raise ValueError("stage 2 runs with the distilled LoRA: call pipe.load_distilled_lora(path) first, or "
                             "pass distilled=True for a distilled checkpoint")
        if distilled_lora_strength is not None:
            V.check_positive("distilled_lora_strength", distilled_lora_strength)

    def stage_2_adapters(self, distilled: bool, strength: float | None) -> dict[str, float] | None:
        """`add=` of stage 2: the distilled LoRA at `strength` (default: the one given to `load_distilled_lora`),
        or nothing for a distilled checkpoint."""
        if distilled:
            return None
        if strength is None:  # recorded on the transformer, so it survives from_pipe
            strength = self.ic_lora_adapters[DISTILLED_ADAPTER].strength
        return {DISTILLED_ADAPTER: float(strength)}

    def stage_1_adapters(self, distilled: bool, strength: float | None) -> dict[str, float] | None:
        """`add=` of stage 1: the distilled LoRA at `strength` (official HQ pipeline), or nothing (`None`).

        Raises:
            ValueError: a strength with `distilled=True`, or one that is not a positive number."""
        if strength is None:
            return None
        if distilled:
            raise ValueError("stage_1_distilled_lora_strength needs the distilled LoRA: not with distilled=True")
        V.check_positive("stage_1_distilled_lora_strength", strength)
        return {DISTILLED_ADAPTER: float(strength)}

    def refine(self, video, audio, contexts, *, total: int, num_frames: int, height: int, width: int,
               frame_rate: float, conditions=None, image=None, image_strength: float = 1.0, generator=None,
               add_adapters=None, keep_adapters=None, attention_kwargs=None, max_batch_passes=None,
               loop_options=None):
        """Upsample the stage-1 states and run stage 2 at `(height, width)` (official: `upsample_video`, then
        `denoise_audio_video(..., noise_scale=sigmas[0], initial_video_latent=, initial_audio_latent=)` with
        `simple_denoising_func`).

        Args:
            video, audio: stage-1 `ModalityLatents` at `(height / 2, width / 2)` (appended tokens are dropped).
            contexts: the `TextContexts` of stage 1 (only the positive prompt is used).
            conditions, image, image_strength, image_crf: re-applied at full size (images re-compressed once,
                re-encoded at each size).
            add_adapters, keep_adapters: LoRA adapters of stage 2 (see `_stage`).
            loop_options: `run_denoising` keywords of both stages (`callback`, `callback_tensor_inputs`,
                `use_cross_timestep`).

        Returns:
            `(video, audio, state)`: final stage-2 states and the `ConditionedLatents` (for `finish`).
        """
        f, h, w = L.latent_video_size(num_frames, height // 2, width // 2, self.vae_temporal_ratio,
                                      self.vae_spatial_ratio)
        upsampled = self.upsample_latents(L.unpack_video(video.target(), f, h, w))
        device = video.latent.device
        self.set_schedule(None, list(DISTILLED_REFINE_SIGMAS), num_frames, height, width, device)
        state = self.prepare_conditioned_latents(
            list(conditions or []), total, num_frames, height, width, frame_rate, generator=generator, image=image,
            image_strength=image_strength, device=device, initial_video=L.pack_video(upsampled),
            initial_audio=audio.target(), noise_scale=float(self.scheduler.sigmas[0]),
        )
        with self._stage(f"stage 2/2 ({height}x{width}, refine)", add=add_adapters, keep=keep_adapters):
            video, audio = self._denoise(unguided(), state, contexts, attention_kwargs, max_batch_passes,
                                         loop_options or {})
        return video, audio, state

    def _denoise(self, guider, state, contexts, attention_kwargs, max_batch_passes, loop_options):
        """One stage through the shared loop, with the frozen-modality rules of the conditioned pipeline."""
        guider = guider.for_frozen(video=state.frozen_video, audio=state.frozen_audio, guided=state.guided_frozen)
        contexts = replace(contexts, frozen_video=state.frozen_video, frozen_audio=state.frozen_audio,
                           negative_frozen=state.guided_frozen)
        return self.run_denoising(guider, state.video, state.audio, contexts, attention_kwargs=attention_kwargs,
                                  max_batch_passes=max_batch_passes, **loop_options)


class LTX2TwoStagePipeline(TwoStageMixin, LTX2AudioVideoPipeline):
    """Two-stage (and distilled two-stage) LTX-2 audio+video generation.

    Components: those of `LTX2AudioVideoPipeline` plus `latent_upsampler` (diffusers' `LTX2LatentUpsamplerModel`;
    `ltx2 convert --upsampler` writes it as `latent_upsampler/`, `diffusers_ltx2.conversion.upsampler` converts
    official files). Load the distilled LoRA with `load_distilled_lora` (not needed for distilled checkpoints).

    Example (tiny random model, see README):
        >>> pipe = LTX2TwoStagePipeline.from_pipe(one_stage_pipe, latent_upsampler=upsampler)
        >>> pipe.load_distilled_lora("ltx-2-19b-distilled-lora-384.safetensors", strength=0.8)
        >>> out = pipe("a fox in the snow", height=1024, width=1536, num_frames=121)
    """

    _optional_components = LTX2AudioVideoPipeline._optional_components + ["latent_upsampler"]

    def generate_hq(self, prompt=None, **kwargs):
        """The official HQ two-stage recipe (ltx-pipelines 1.2.0 `ti2vid_two_stages_hq.py`, `presets.HQ_TWO_STAGE`):
        res_2s in both stages, 15 stage-1 steps on the token-count-shifted schedule, STG-off multimodal guidance,
        the distilled LoRA at 0.25 / 0.5, the stage-1 audio returned; 1088 x 1920, 121 frames, seed 10 by default.
        Every `__call__` keyword is accepted and wins over the preset (`guider=` or diffusers' guidance arguments
        replace its guidance, `sigmas=` its schedule). Needs `load_distilled_lora` first. Returns `__call__`'s output.
        """
        from .presets import preset_call_kwargs
        from ..presets import HQ_TWO_STAGE

        return self(**preset_call_kwargs(self, HQ_TWO_STAGE, dict(kwargs, prompt=prompt)))

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        negative_prompt: str | list[str] | None = None,
        *,
        height: int = 1024,
        width: int = 1536,
        num_frames: int = 121,
        frame_rate: float = 24.0,
        num_inference_steps: int = 40,
        sigmas: list[float] | None = None,
        timesteps: list[float] | None = None,
        guider: Guider | None = None,
        guidance_scale: float = DIFFUSERS_DEFAULT,
        stg_scale: float = DIFFUSERS_DEFAULT,
        modality_scale: float = DIFFUSERS_DEFAULT,
        guidance_rescale: float = DIFFUSERS_DEFAULT,
        audio_guidance_scale: float | None = DIFFUSERS_DEFAULT,
        audio_stg_scale: float | None = DIFFUSERS_DEFAULT,
        audio_modality_scale: float | None = DIFFUSERS_DEFAULT,
        audio_guidance_rescale: float | None = DIFFUSERS_DEFAULT,
        spatio_temporal_guidance_blocks: list[int] | None = DIFFUSERS_DEFAULT,
        use_cross_timestep: bool = True,
        distilled: bool = False,
        distilled_lora_strength: float | None = None,
        image=None,
        image_strength: float = 1.0,
        image_crf: int | None = None,
        conditions: list | None = None,
        output_modalities: tuple[str, ...] = ("video", "audio"),
        num_videos_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        audio_latents: torch.Tensor | None = None,
        prompt_embeds: PromptEmbeddings | str | torch.Tensor | None = None,
        prompt_attention_mask: torch.Tensor | None = None,
        negative_prompt_embeds: PromptEmbeddings | str | torch.Tensor | None = None,
        negative_prompt_attention_mask: torch.Tensor | None = None,
        max_batch_passes: int | None = None,
        max_sequence_length: int | None = None,
        decode_timestep: float | list[float] = 0.0,
        decode_noise_scale: float | list[float] | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        attention_kwargs: dict[str, Any] | None = None,
        callback_on_step_end: Callable | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ("latents",),
        min_seconds: float = 1.0,
        max_seconds: float = 20.0,
        motion_speed: float = 1.0,
        system_prompt: str | None = None,
        enable_prompt_enhancement: bool = False,
        prompt_max_new_tokens: int | None = None,
        prompt_enhancement_kwargs: dict[str, Any] | None = None,
        prompt_enhancement_seed: int = 10,
        sampler: str | Sampler | None = None,
        stage_2_sampler: str | Sampler = "euler",
        stage_1_distilled_lora_strength: float | None = None,
        refine_audio: bool = True,
    ):
        """Generate a clip at `(height, width)` in two stages.

        Args (those not listed as in `LTX2AudioVideoPipeline.__call__`):
            height, width: output pixels, multiples of 64 (stage 1 runs at half of each).
            negative_prompt: default `DEFAULT_NEGATIVE_PROMPT` (the official one) when the stage-1 guider needs a
                negative pass; `""` for the empty prompt.
            num_inference_steps, sigmas, timesteps: stage 1's schedule (ignored with `distilled=True`).
            guider, guidance_scale, ..., spatio_temporal_guidance_blocks: stage 1's guidance, resolved as in
                `LTX2AudioVideoPipeline.__call__` (`guider=` or diffusers' arguments, not both; neither: the
                pipeline's `guider`, none when that is `None`); ignored with `distilled=True`. Stage 2 is unguided.
            distilled: distilled checkpoint recipe (official `DistilledPipeline`): stage 1 on the 8 distilled sigmas
                without guidance, stage 2 without any extra LoRA.
            distilled_lora_strength: strength of the distilled LoRA in stage 2 (default: the one given to
                `load_distilled_lora`).
            latents, audio_latents: stage-1 noise (half-resolution shapes).
            output_modalities: only `("video", "audio")` (accepted for call compatibility).
            callback_on_step_end: called in both stages (step indices restart at 0 in stage 2).
            output_type: "pil" (default, as diffusers), "np", "pt" or "latent".
            diffusers' `noise_scale` is not accepted (stage 1 starts from noise; stage 2's re-noising is the recipe's).
            enable_prompt_enhancement, system_prompt, prompt_max_new_tokens, prompt_enhancement_kwargs,
                prompt_enhancement_seed: as in `LTX2AudioVideoPipeline.__call__` (the prompts are enhanced once,
                for both stages).
            sampler, stage_2_sampler: each stage's sampler (see `LTX2AudioVideoPipeline.__call__`); the official HQ
                pipeline uses `"res_2s"` in both (`generate_hq`), the 2.5 distilled pipeline `"euler_ancestral"` then
                `"euler"`. `sampler=None`: `"euler_ancestral"` with `distilled=True` on LTX-2.5 (official
                `DistilledPipeline`: the ancestral stage 1 from model version 2.5 on), else `"euler"`.
            stage_1_distilled_lora_strength: the distilled LoRA also active in stage 1 at this strength (official HQ
                pipeline: 0.25); `None` (default): stage 1 without it (`ti2vid_two_stages`).
            refine_audio: `False` returns the stage-1 audio (official HQ pipeline: stage 2 refines the video only,
                its audio is discarded); default `True`, the stage-2 audio (`ti2vid_two_stages`, `distilled`).

        Returns:
            `LTX2AudioVideoPipelineOutput` at full resolution (`output_type="latent"`: denormalized VAE latents).

        Raises:
            ValueError: before any model runs, for sizes that are not multiples of 64 (nearest valid values in the
                message), a missing upsampler or distilled LoRA, and every check of the one-stage pipeline.
        """
        # 1. Checks, before any model runs (both geometries: conditions must fit the half- and full-size clip).
        check_unsupported_features(num_frames=num_frames, min_seconds=min_seconds, max_seconds=max_seconds,
                                   motion_speed=motion_speed, enable_prompt_enhancement=False)
        sigmas = sigmas_from_timesteps(timesteps, sigmas)
        if sampler is None:
            from ..versions import is_at_least

            sampler = "euler_ancestral" if distilled and is_at_least(self.model_version, (2, 5)) else "euler"
        sampler, stage_2_sampler = make_sampler(sampler), make_sampler(stage_2_sampler)
        self.check_two_stage(height, width, distilled=distilled, distilled_lora_strength=distilled_lora_strength)
        stage_1_adapters = self.stage_1_adapters(distilled, stage_1_distilled_lora_strength)
        if tuple(output_modalities) != ("video", "audio"):
            raise ValueError("two-stage generation upsamples the video: output_modalities must be ('video', 'audio') "
                             "(use LTX2AudioVideoPipeline for audio-only)")
        guider = self.call_guider(guider, locals())
        if distilled:
            guider = unguided()
        callback_on_step_end_tensor_inputs = self.callback_tensor_names(callback_on_step_end,
                                                                        callback_on_step_end_tensor_inputs)
        if negative_prompt is None and negative_prompt_embeds is None and guider.uses_negative_prompt:
            negative_prompt = DEFAULT_NEGATIVE_PROMPT
        half_h, half_w = height // 2, width // 2
        inputs = V.check_call_inputs(
            self, prompt=prompt, negative_prompt=negative_prompt, prompt_embeds=prompt_embeds,
            negative_prompt_embeds=negative_prompt_embeds, prompt_attention_mask=prompt_attention_mask,
            negative_prompt_attention_mask=negative_prompt_attention_mask, height=half_h, width=half_w,
            num_frames=num_frames, frame_rate=frame_rate, output_type=output_type, image=image,
            image_strength=image_strength, num_videos_per_prompt=num_videos_per_prompt, generator=generator,
            latents=latents, audio_latents=audio_latents, callback_tensor_inputs=callback_on_step_end_tensor_inputs,
            guider=guider,
        )
        total = inputs.total
        enhancement_image = image  # as given: the enhancer sees the image before any re-compression (official)
        self.check_prompt_enhancement(enable_prompt_enhancement, inputs.prompts, image=image, conditions=conditions)
        image = self.prepare_image(image, image_crf)  # re-compressed once, encoded at both sizes
        conditions, _ = self.prepare_conditions(conditions, total, num_frames, half_h, half_w, frame_rate,
                                                image=image, latents=latents)
        self.prepare_conditions(conditions, total, num_frames, height, width, frame_rate, image=image)
        device = self._execution_device
        check_transformer_runtime(self.transformer, device)  # before a kernel that would crash the process
        self._record_call(guider, attention_kwargs)
        loop_options = dict(callback=callback_on_step_end, callback_tensor_inputs=callback_on_step_end_tensor_inputs,
                            use_cross_timestep=use_cross_timestep, generator=generator)

        # 2. Prompts (optionally enhanced), encoded once for both stages (official: one encode_prompts call).
        enhanced = self.enhance_call_prompts(
            enable_prompt_enhancement, inputs.prompts, system_prompt=system_prompt,
            max_new_tokens=prompt_max_new_tokens, generation_kwargs=prompt_enhancement_kwargs,
            seed=prompt_enhancement_seed, generator=generator, image=enhancement_image, conditions=conditions,
        )
        contexts = self.encode_text_contexts(
            enhanced or inputs.prompts, inputs.negative_prompts, prompt_embeds=inputs.prompt_embeds,
            negative_prompt_embeds=inputs.negative_prompt_embeds, need_negative=guider.uses_negative_prompt,
            num_videos_per_prompt=num_videos_per_prompt, max_sequence_length=max_sequence_length, device=device,
        )

        # 3. Stage 1 at half resolution.
        stage_1_sigmas = list(DISTILLED_SIGMAS) if distilled else sigmas
        self.set_schedule(num_inference_steps, stage_1_sigmas, num_frames, half_h, half_w, device)
        state = self.prepare_conditioned_latents(
            conditions, total, num_frames, half_h, half_w, frame_rate, generator=generator, latents=latents,
            audio_latents=audio_latents, image=image, image_strength=image_strength, device=device,
        )
        with self._stage(f"stage 1/2 ({half_h}x{half_w}{', distilled' if distilled else ''})", add=stage_1_adapters):
            video, audio = self._denoise(guider, state, contexts, attention_kwargs, max_batch_passes,
                                         dict(loop_options, sampler=sampler))
        stage_1_audio = audio
        if self.interrupt:
            return self.finish(video, audio, num_frames, half_h, half_w, output_type=output_type,
                               generator=generator, return_dict=return_dict, conditioned=state)

        # 4-5. Upsample, then stage 2 at full resolution: re-noised to sigmas[0], conditions re-applied, unguided,
        # the distilled LoRA on top of the user's LoRAs.
        video, audio, state = self.refine(
            video, audio, contexts, total=total, num_frames=num_frames, height=height, width=width,
            frame_rate=frame_rate, conditions=conditions, image=image, image_strength=image_strength,
            generator=generator, add_adapters=self.stage_2_adapters(distilled, distilled_lora_strength),
            attention_kwargs=attention_kwargs, max_batch_passes=max_batch_passes,
            loop_options=dict(loop_options, sampler=stage_2_sampler),
        )
        if not refine_audio:  # official HQ: stage 2 refines the video only
            audio = stage_1_audio

        # 6. Decode at full resolution.
        return self.finish(
            video, audio, num_frames, height, width, output_type=output_type, generator=generator,
            decode_timestep=decode_timestep, decode_noise_scale=decode_noise_scale, return_dict=return_dict,
            conditioned=state, enhanced_prompts=enhanced,
        )


def _layers(pipe):
    from ..loaders.adapter_state import lora_layers

    return [m for model in (pipe.transformer, pipe.connectors) if model is not None for m in lora_layers(model)]
