"""`LTX2ICLoRATwoStagePipeline`: IC-LoRA control in two stages, as ltx-pipelines 1.0.0 `ic_lora.py`
(`ICLoraPipeline`) does it.

- Stage 1 at `(H/2, W/2)`: the IC-LoRA pipeline's own call (reference video encoded at `(H/2/f, W/2/f)` and
  appended, the IC-LoRA and the user's LoRAs active). Official `ic_lora.py` runs a distilled checkpoint: with
  `distilled=True` (its recipe) stage 1 uses the 8 distilled sigmas without guidance.
- `skip_stage_2=True`: decode stage 1 at half resolution (official `--skip-stage-2`).
- Stage 2 at `(H, W)`: the shared `TwoStageMixin.refine` with image conditions only (no reference tokens) and
  *no* LoRA of the user's: official stage 2 builds its transformer with `loras=[]`. For a dev checkpoint
  (`distilled=False`) the distilled LoRA is the one adapter active in stage 2.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from ..guiders import Guider
from ..loaders.prompt_embeddings import PromptEmbeddings
from ..schedulers import DISTILLED_SIGMAS
from ..latents import layout as L
from .call_lock import unserialized
from .diffusers_compat import GUIDANCE_ARGUMENTS, sigmas_from_timesteps
from ..latents.state import ModalityLatents
from .pipeline_ltx2_ic_lora import LTX2ICLoRAPipeline
from .two_stage import TwoStageMixin, unguided


class LTX2ICLoRATwoStagePipeline(TwoStageMixin, LTX2ICLoRAPipeline):
    """IC-LoRA video-to-video control at half size, then the two-stage refinement (see the module docstring).

    Components: those of `LTX2ICLoRAPipeline` plus `latent_upsampler`.
    """

    _optional_components = LTX2ICLoRAPipeline._optional_components + ["latent_upsampler"]

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        negative_prompt: str | list[str] | None = None,
        *,
        control_video=None,
        height: int = 1024,
        width: int = 1536,
        num_frames: int = 121,
        frame_rate: float = 24.0,
        distilled: bool = True,
        distilled_lora_strength: float | None = None,
        skip_stage_2: bool = False,
        reference_downscale_factor: int | None = None,
        guider: Guider | None = None,
        sigmas: list[float] | None = None,
        image=None,
        image_strength: float = 1.0,
        image_crf: int | None = None,
        num_videos_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        prompt_embeds: PromptEmbeddings | str | None = None,
        negative_prompt_embeds: PromptEmbeddings | str | None = None,
        max_sequence_length: int | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        attention_kwargs: dict[str, Any] | None = None,
        callback_on_step_end: Callable | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ("latents",),
        **stage_1_kwargs,
    ):
        """Generate a clip at `(height, width)` following `control_video`.

        Args (others as `LTX2ICLoRAPipeline.__call__`, which runs stage 1; `**stage_1_kwargs` go to it, e.g.
        `control_strength`, `conditioning_attention_strength`, `control_preprocessor`, `num_inference_steps`):
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
            output_type: "pil" (default, as diffusers), "np", "pt" or "latent".

        Raises:
            ValueError: before any model runs, for a size that is not a multiple of 64, a missing upsampler (unless
                `skip_stage_2`) or distilled LoRA, and every check of the IC-LoRA pipeline.
        """
        from . import validation as V

        if skip_stage_2:
            V.check_resolution(height, width, 64)
        else:
            self.check_two_stage(height, width, distilled=distilled, distilled_lora_strength=distilled_lora_strength)
        half_h, half_w = height // 2, width // 2
        self.resolve_downscale_factor(reference_downscale_factor, half_h, half_w)
        V.check_output_type(output_type)
        # the call's guider and prompt inputs are resolved here, once for both stages
        guider = self.call_guider(guider, {k: stage_1_kwargs.pop(k) for k in GUIDANCE_ARGUMENTS
                                           if k in stage_1_kwargs})
        sigmas = sigmas_from_timesteps(stage_1_kwargs.pop("timesteps", None), sigmas)
        if distilled:
            guider, sigmas = unguided(), list(DISTILLED_SIGMAS)
        inputs = V.check_call_inputs(
            self, prompt=prompt, negative_prompt=negative_prompt, prompt_embeds=prompt_embeds,
            negative_prompt_embeds=negative_prompt_embeds,
            prompt_attention_mask=stage_1_kwargs.pop("prompt_attention_mask", None),
            negative_prompt_attention_mask=stage_1_kwargs.pop("negative_prompt_attention_mask", None),
            height=half_h, width=half_w, num_frames=num_frames, frame_rate=frame_rate, output_type=output_type,
            image=image, image_strength=image_strength, num_videos_per_prompt=num_videos_per_prompt,
            generator=generator, latents=None, audio_latents=None,
            callback_tensor_inputs=callback_on_step_end_tensor_inputs, guider=guider,
        )
        self.fit_control_video(control_video, num_frames, half_h, half_w)  # readable (raises before any model)
        image = self.prepare_image(image, image_crf)  # re-compressed once, for both stages

        # Prompts once for both stages (official: one encode_prompts call).
        contexts = self.encode_text_contexts(
            inputs.prompts, inputs.negative_prompts, prompt_embeds=inputs.prompt_embeds,
            negative_prompt_embeds=inputs.negative_prompt_embeds, need_negative=guider.uses_negative_prompt,
            num_videos_per_prompt=num_videos_per_prompt, max_sequence_length=max_sequence_length,
            device=self._execution_device,
        )
        loop_options = dict(callback=callback_on_step_end, callback_tensor_inputs=callback_on_step_end_tensor_inputs,
                            use_cross_timestep=stage_1_kwargs.get("use_cross_timestep", True))

        # Stage 1: the IC-LoRA call at half size, with the IC-LoRA (distilled LoRA kept off).
        with self._stage(f"stage 1/2 ({half_h}x{half_w}, IC-LoRA)"):
            out = unserialized(LTX2ICLoRAPipeline.__call__)(
                self, prompt_embeds=contexts.positive, negative_prompt_embeds=contexts.negative,
                control_video=control_video, height=half_h, width=half_w, num_frames=num_frames,
                frame_rate=frame_rate, guider=guider, sigmas=sigmas, image=image, image_strength=image_strength,
                num_videos_per_prompt=1, generator=generator,  # the embeddings are already repeated
                reference_downscale_factor=reference_downscale_factor, attention_kwargs=attention_kwargs,
                output_type="latent" if not skip_stage_2 else output_type, return_dict=True,
                callback_on_step_end=callback_on_step_end,
                callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs, **stage_1_kwargs,
            )
        if skip_stage_2:
            return out if return_dict else (out.frames, out.audio)

        # Stage 2: images only, no user LoRA (official loras=[]), the distilled LoRA for dev checkpoints.
        video, audio = self._states_from_output(out)
        video, audio, state = self.refine(
            video, audio, contexts, total=inputs.total, num_frames=num_frames, height=height, width=width,
            frame_rate=frame_rate, image=image, image_strength=image_strength, generator=generator,
            add_adapters=self.stage_2_adapters(distilled, distilled_lora_strength), keep_adapters=set(),
            attention_kwargs=attention_kwargs, loop_options=loop_options,
        )
        return self.finish(video, audio, num_frames, height, width, output_type=output_type, generator=generator,
                           return_dict=return_dict, conditioned=state)

    def _states_from_output(self, out) -> tuple[ModalityLatents, ModalityLatents]:
        """Stage-1 `output_type="latent"` output (denormalized VAE latents) -> normalized target-token states."""
        video = L.pack_video(L.normalize_video(out.frames.float(), self.vae.latents_mean, self.vae.latents_std))
        audio = L.normalize_audio_tokens(L.pack_audio(out.audio.float()), self.audio_vae.latents_mean,
                                         self.audio_vae.latents_std)

        def state(tokens):
            mask = torch.ones(tokens.shape[:2], device=tokens.device)
            return ModalityLatents(latent=tokens, clean=tokens, denoise_mask=mask, coords=None,
                                   num_target_tokens=tokens.shape[1])

        return state(video), state(audio)
