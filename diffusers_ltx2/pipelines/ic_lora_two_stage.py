"""`LTX2ICLoRATwoStagePipeline`: IC-LoRA control in two stages, as ltx-pipelines 1.0.0 `ic_lora.py`
(`ICLoraPipeline`) does it.

Two `Stage`s, composed like `LTX2TwoStagePipeline`'s (`pipelines.refine`):
- Stage 1 at `(H/2, W/2)`: the IC-LoRA stage (a `ReferenceVideo` encoded at `(H/2/f, W/2/f)` and appended, the
  IC-LoRA and the user's LoRAs active). Official `ic_lora.py` runs a distilled checkpoint: with `distilled=True` (its
  recipe) stage 1 uses the 8 distilled sigmas without guidance.
- `skip_stage_2=True`: decode stage 1 at half resolution (official `--skip-stage-2`).
- Stage 2 at `(H, W)`: the shared refinement (`TwoStageMixin.refine_stage`) with the other conditions only (no
  reference tokens) and *no* LoRA of the user's: official stage 2 builds its transformer with `loras=[]`. For a dev
  checkpoint (`distilled=False`) the distilled LoRA is the one adapter active in stage 2.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from ..conditioning import ReferenceVideo
from ..guiders import Guider
from ..loaders.prompt_embeddings import PromptEmbeddings
from ..schedulers import DISTILLED_SIGMAS
from . import validation as V
from .call import resolve_call
from .diffusers_conditions import ic_lora_conditions
from .pipeline_ltx2_ic_lora import LTX2ICLoRAPipeline
from .refine import TWO_STAGE_MULTIPLE, TwoStageMixin, unguided


class LTX2ICLoRATwoStagePipeline(TwoStageMixin, LTX2ICLoRAPipeline):
    """IC-LoRA video-to-video control at half size, then the two-stage refinement (see the module docstring).

    Components: those of `LTX2ICLoRAPipeline` plus `latent_upsampler`.
    """

    _optional_components = LTX2ICLoRAPipeline._optional_components + ["latent_upsampler"]

    @torch.no_grad()
    def __call__(
        self, prompt: str | list[str] | None = None, negative_prompt: str | list[str] | None = None, *,
        control_video=None, height: int = 1024, width: int = 1536, num_frames: int = 121, frame_rate: float = 24.0,
        distilled: bool = True, distilled_lora_strength: float | None = None, skip_stage_2: bool = False,
        reference_downscale_factor: int | None = None, guider: Guider | None = None,
        sigmas: list[float] | None = None, image=None, image_strength: float = 1.0, image_crf: int | None = None,
        num_videos_per_prompt: int = 1, generator: torch.Generator | list[torch.Generator] | None = None,
        prompt_embeds: PromptEmbeddings | str | None = None,
        negative_prompt_embeds: PromptEmbeddings | str | None = None, max_sequence_length: int | None = None,
        output_type: str = "pil", return_dict: bool = True, attention_kwargs: dict[str, Any] | None = None,
        callback_on_step_end: Callable | None = None, callback_on_step_end_tensor_inputs: list[str] = ("latents",),
        **stage_1_kwargs,
    ):
        """Generate a clip at `(height, width)` following `control_video`.

        Args (others as `LTX2ICLoRAPipeline.__call__`, whose reference conditions stage 1 uses; `**stage_1_kwargs`
        are its other arguments, e.g. `control_strength`, `conditioning_attention_strength`, `control_preprocessor`,
        `num_inference_steps`, `conditions`):
            height, width: output size, multiples of 64 (and of `64 * reference_downscale_factor`).
            distilled: official `ic_lora.py` recipe for distilled checkpoints (default): stage 1 on the 8 distilled
                sigmas without guidance, stage 2 without any LoRA. `False`: stage 1 with `guider` / `sigmas`,
                stage 2 with the distilled LoRA only (`load_distilled_lora` first).
            skip_stage_2: return the stage-1 clip at `(height / 2, width / 2)`.
            image, image_strength, image_crf: the first-frame image of both stages, re-compressed once (see
                `LTX2AudioVideoPipeline.__call__`).
            guider: stage 1's guidance; or diffusers' guidance arguments (`guidance_scale`, ..., in
                `**stage_1_kwargs`), resolved as `LTX2ICLoRAPipeline.__call__` does (neither: the pipeline's
                `guider`, none when that is `None`). Ignored with `distilled=True`; stage 2 is unguided.
            sampler, stage_2_sampler (in `**stage_1_kwargs`): each stage's sampler, as
                `LTX2TwoStagePipeline.__call__` takes them (a name such as "euler", "euler_ancestral", "res_2s" or
                a `Sampler`); both default to "euler", the official `ic_lora.py`'s.
            output_type: "pil" (default, as diffusers), "np", "pt" or "latent".

        Raises:
            ValueError: before any model runs, for a size that is not a multiple of 64, a missing upsampler (unless
                `skip_stage_2`) or distilled LoRA, and every check of the IC-LoRA pipeline.
        """
        if skip_stage_2:
            V.check_resolution(height, width, TWO_STAGE_MULTIPLE)
        else:
            self.check_two_stage(height, width, distilled=distilled, distilled_lora_strength=distilled_lora_strength)
        if control_video is None:
            raise ValueError("control_video is required: a video file, PIL frames, an array or a tensor")
        for unused in ("system_prompt", "prompt_max_new_tokens", "prompt_enhancement_kwargs",
                       "prompt_enhancement_seed"):  # diffusers' prompt-enhancement options: accepted, unused
            stage_1_kwargs.pop(unused, None)
        conditions, image, image_strength = ic_lora_conditions(
            self, control_video=control_video, control_strength=stage_1_kwargs.pop("control_strength", 1.0),
            attention_strength=stage_1_kwargs.pop("conditioning_attention_strength", 1.0),
            attention_mask=stage_1_kwargs.pop("conditioning_attention_mask", None),
            preprocessor=stage_1_kwargs.pop("control_preprocessor", None),
            downscale_factor=reference_downscale_factor,
            reference_conditions=stage_1_kwargs.pop("reference_conditions", None),
            conditions=stage_1_kwargs.pop("conditions", None), image=image, image_strength=image_strength,
        )
        call = resolve_call(
            self, prompt=prompt, negative_prompt=negative_prompt, height=height, width=width, num_frames=num_frames,
            frame_rate=frame_rate, num_inference_steps=stage_1_kwargs.pop("num_inference_steps", 40), sigmas=sigmas,
            timesteps=stage_1_kwargs.pop("timesteps", None), guider=guider, image=image,
            image_strength=image_strength, image_crf=image_crf, conditions=conditions,
            num_videos_per_prompt=num_videos_per_prompt, generator=generator, prompt_embeds=prompt_embeds,
            negative_prompt_embeds=negative_prompt_embeds, max_sequence_length=max_sequence_length,
            output_type=output_type, return_dict=return_dict, attention_kwargs=attention_kwargs,
            callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
            stage_size=(height // 2, width // 2), fixed_guider=unguided() if distilled else None,
            fixed_sigmas=list(DISTILLED_SIGMAS) if distilled else None, enhances_prompts=False,
            predicts_length=False, **stage_1_kwargs,
        )
        # official ic_lora.py: stage 2 keeps the image conditions only (no reference) and no LoRA of the user's
        stage_2_conditions = [c for c in call.conditions if not isinstance(c, ReferenceVideo)]
        stages = self.two_stages(call, distilled=distilled, distilled_lora_strength=distilled_lora_strength,
                                 stage_2_conditions=stage_2_conditions, stage_2_keep=frozenset(),
                                 stage_1_name=f"stage 1/2 ({height // 2}x{width // 2}, IC-LoRA)",
                                 skip_stage_2=skip_stage_2)
        return self.generate(call, stages)
