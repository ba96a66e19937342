"""`LTX2TwoStagePipeline`: the official recommended recipe - generate at half resolution, upsample the latent 2x,
refine at full resolution in 3 steps with the distilled LoRA (`pipelines.refine`: ltx-pipelines 1.0.0
`ti2vid_two_stages.py`, and `distilled.py` with `distilled=True`). A call is two `Stage`s: resolve -> stage 1 at
half size + the refinement -> run -> decode.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from ..guiders import Guider
from ..loaders.prompt_embeddings import PromptEmbeddings
from ..recommended import DEFAULT_NEGATIVE_PROMPT
from ..schedulers import DISTILLED_SIGMAS
from ..schedulers.samplers import Sampler
from .call import resolve_call
from .diffusers_compat import DIFFUSERS_DEFAULT
from .pipeline_ltx2 import LTX2AudioVideoPipeline
from .refine import TwoStageMixin, unguided

__all__ = ["DEFAULT_NEGATIVE_PROMPT", "LTX2TwoStagePipeline"]


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
        replace its guidance, `sigmas=` its schedule). Needs `load_distilled_lora` first. Returns `__call__`'s
        output."""
        from ..presets import HQ_TWO_STAGE
        from .presets import preset_call_kwargs

        return self(**preset_call_kwargs(self, HQ_TWO_STAGE, dict(kwargs, prompt=prompt)))

    @torch.no_grad()
    def __call__(
        self, prompt: str | list[str] | None = None, negative_prompt: str | list[str] | None = None, *,
        height: int = 1024, width: int = 1536, num_frames: int = 121, frame_rate: float = 24.0,
        num_inference_steps: int = 40, sigmas: list[float] | None = None, timesteps: list[float] | None = None,
        guider: Guider | None = None, guidance_scale: float = DIFFUSERS_DEFAULT, stg_scale: float = DIFFUSERS_DEFAULT,
        modality_scale: float = DIFFUSERS_DEFAULT, guidance_rescale: float = DIFFUSERS_DEFAULT,
        audio_guidance_scale: float | None = DIFFUSERS_DEFAULT, audio_stg_scale: float | None = DIFFUSERS_DEFAULT,
        audio_modality_scale: float | None = DIFFUSERS_DEFAULT,
        audio_guidance_rescale: float | None = DIFFUSERS_DEFAULT,
        spatio_temporal_guidance_blocks: list[int] | None = DIFFUSERS_DEFAULT, use_cross_timestep: bool = True,
        distilled: bool = False, distilled_lora_strength: float | None = None, image=None,
        image_strength: float = 1.0, image_crf: int | None = None, conditions: list | None = None,
        output_modalities: tuple[str, ...] = ("video", "audio"), num_videos_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None, latents: torch.Tensor | None = None,
        audio_latents: torch.Tensor | None = None, prompt_embeds: PromptEmbeddings | str | torch.Tensor | None = None,
        prompt_attention_mask: torch.Tensor | None = None,
        negative_prompt_embeds: PromptEmbeddings | str | torch.Tensor | None = None,
        negative_prompt_attention_mask: torch.Tensor | None = None, max_batch_passes: int | None = None,
        max_sequence_length: int | None = None, decode_timestep: float | list[float] = 0.0,
        decode_noise_scale: float | list[float] | None = None, output_type: str = "pil", return_dict: bool = True,
        attention_kwargs: dict[str, Any] | None = None, callback_on_step_end: Callable | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ("latents",), min_seconds: float = 1.0,
        max_seconds: float = 20.0, motion_speed: float = 1.0, system_prompt: str | None = None,
        enable_prompt_enhancement: bool = False, prompt_max_new_tokens: int | None = None,
        prompt_enhancement_kwargs: dict[str, Any] | None = None, prompt_enhancement_seed: int = 10,
        sampler: str | Sampler | None = None, stage_2_sampler: str | Sampler = "euler",
        stage_1_distilled_lora_strength: float | None = None, refine_audio: bool = True,
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
            num_frames: `8k + 1` frames (`None`: 121; the clip length is not predicted here).
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
            `LTX2AudioVideoPipelineOutput` at full resolution (`output_type="latent"`: denormalized VAE latents), with
            `enhanced_prompts` as the one-stage pipeline's.

        Raises:
            ValueError: before any model runs, for sizes that are not multiples of 64 (nearest valid values in the
                message), a missing upsampler or distilled LoRA, and every check of the one-stage pipeline.
        """
        self.check_two_stage(height, width, distilled=distilled, distilled_lora_strength=distilled_lora_strength,
                             stage_1_distilled_lora_strength=stage_1_distilled_lora_strength)
        if tuple(output_modalities) != ("video", "audio"):
            raise ValueError("two-stage generation upsamples the video: output_modalities must be ('video', 'audio') "
                             "(use LTX2AudioVideoPipeline for audio-only)")
        call = resolve_call(
            self, prompt=prompt, negative_prompt=negative_prompt, height=height, width=width, num_frames=num_frames,
            frame_rate=frame_rate, num_inference_steps=num_inference_steps, sigmas=sigmas, timesteps=timesteps,
            guider=guider, guidance_scale=guidance_scale, stg_scale=stg_scale, modality_scale=modality_scale,
            guidance_rescale=guidance_rescale, audio_guidance_scale=audio_guidance_scale,
            audio_stg_scale=audio_stg_scale, audio_modality_scale=audio_modality_scale,
            audio_guidance_rescale=audio_guidance_rescale,
            spatio_temporal_guidance_blocks=spatio_temporal_guidance_blocks, use_cross_timestep=use_cross_timestep,
            image=image, image_strength=image_strength, image_crf=image_crf, conditions=conditions,
            num_videos_per_prompt=num_videos_per_prompt, generator=generator, latents=latents,
            audio_latents=audio_latents, prompt_embeds=prompt_embeds, prompt_attention_mask=prompt_attention_mask,
            negative_prompt_embeds=negative_prompt_embeds,
            negative_prompt_attention_mask=negative_prompt_attention_mask, max_batch_passes=max_batch_passes,
            max_sequence_length=max_sequence_length, decode_timestep=decode_timestep,
            decode_noise_scale=decode_noise_scale, output_type=output_type, return_dict=return_dict,
            attention_kwargs=attention_kwargs, callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs, min_seconds=min_seconds,
            max_seconds=max_seconds, motion_speed=motion_speed, enable_prompt_enhancement=enable_prompt_enhancement,
            system_prompt=system_prompt, prompt_max_new_tokens=prompt_max_new_tokens,
            prompt_enhancement_kwargs=prompt_enhancement_kwargs, prompt_enhancement_seed=prompt_enhancement_seed,
            sampler=self.default_stage_1_sampler(distilled) if sampler is None else sampler,
            stage_2_sampler=stage_2_sampler, predicts_length=False, stage_size=(height // 2, width // 2), fixed_guider=unguided() if distilled else None,
            fixed_sigmas=list(DISTILLED_SIGMAS) if distilled else None,
            default_negative_prompt=DEFAULT_NEGATIVE_PROMPT,
        )
        return self.generate(call, self.two_stages(
            call, distilled=distilled, distilled_lora_strength=distilled_lora_strength,
            stage_1_distilled_lora_strength=stage_1_distilled_lora_strength, refine_audio=refine_audio))
