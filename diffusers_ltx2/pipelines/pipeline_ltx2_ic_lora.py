"""`LTX2ICLoRAPipeline`: IC-LoRA video-to-video control (canny, depth, pose, union) with audio.

The control (reference) video becomes a `conditioning.ReferenceVideo` (official `VideoConditionByReferenceLatent`):
encoded at `(H / f, W / f)`, `f` the LoRA's `reference_downscale_factor` (read from the file when it is loaded),
its tokens appended clean after the generated ones, noised with them in the official order (one draw over the
generated and reference tokens, then the audio). Everything else is a one-stage call of the shared machinery, so a
pipeline converts to and from `LTX2AudioVideoPipeline` with `from_pipe`, and a reference composes with keyframes,
`AudioCondition` and the other conditions. diffusers' `LTX2InContextPipeline` arguments (`reference_conditions=`,
`conditions=`) are accepted (`pipelines.diffusers_conditions`); without a control video the call is a plain
generation.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from ..conditioning import ReferenceVideo
from ..conditioning.frames import vae_pixels
from ..control.video import run_preprocessor
from ..guiders import Guider
from ..loaders.prompt_embeddings import PromptEmbeddings
from .base import LTX2PipelineBase
from .call import resolve_call
from .diffusers_compat import DIFFUSERS_DEFAULT
from .diffusers_conditions import ic_lora_conditions, pop_ic_lora_arguments


class LTX2ICLoRAPipeline(LTX2PipelineBase):
    """LTX-2 video(+audio) generation controlled by a reference video through an IC-LoRA.

    Example:
        >>> import diffusers_ltx2, torch
        >>> pipe = diffusers_ltx2.LTX2ICLoRAPipeline.from_pretrained("path/to/ltx2", dtype=torch.bfloat16)
        >>> pipe.load_lora_weights("ltx-2-19b-ic-lora-union-control.safetensors", adapter_name="union")
        >>> pipe.reference_downscale_factor  # read from the LoRA's metadata
        2
        >>> edges = diffusers_ltx2.control.CannyPreprocessor()
        >>> out = pipe("a dancer on a beach", control_video="dance.mp4", control_preprocessor=edges)
    """

    uses_reference_factor = True  # a LoRA without the factor in its metadata gets a notice here

    @torch.no_grad()
    def __call__(
        self, prompt: str | list[str] | None = None, negative_prompt: str | list[str] | None = None, *,
        control_video=None, control_strength: float = 1.0, conditioning_attention_strength: float = 1.0,
        conditioning_attention_mask: torch.Tensor | None = None,
        control_preprocessor: Callable[[torch.Tensor], torch.Tensor] | None = None,
        reference_downscale_factor: int | None = None, reference_conditions=None, conditions=None, height: int = 512,
        width: int = 768, num_frames: int = 121, frame_rate: float = 24.0, num_inference_steps: int = 40,
        sigmas: list[float] | None = None, timesteps: list[float] | None = None, guider: Guider | None = None,
        guidance_scale: float = DIFFUSERS_DEFAULT, stg_scale: float = DIFFUSERS_DEFAULT,
        modality_scale: float = DIFFUSERS_DEFAULT, guidance_rescale: float = DIFFUSERS_DEFAULT,
        audio_guidance_scale: float | None = DIFFUSERS_DEFAULT, audio_stg_scale: float | None = DIFFUSERS_DEFAULT,
        audio_modality_scale: float | None = DIFFUSERS_DEFAULT,
        audio_guidance_rescale: float | None = DIFFUSERS_DEFAULT,
        spatio_temporal_guidance_blocks: list[int] | None = DIFFUSERS_DEFAULT, use_cross_timestep: bool = True,
        image=None, image_strength: float = 1.0, image_crf: int | None = None, num_videos_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None, latents: torch.Tensor | None = None,
        audio_latents: torch.Tensor | None = None, prompt_embeds: PromptEmbeddings | str | torch.Tensor | None = None,
        prompt_attention_mask: torch.Tensor | None = None,
        negative_prompt_embeds: PromptEmbeddings | str | torch.Tensor | None = None,
        negative_prompt_attention_mask: torch.Tensor | None = None, max_batch_passes: int | None = None,
        max_sequence_length: int | None = None, decode_timestep: float = 0.0, decode_noise_scale: float | None = None,
        output_type: str = "pil", return_dict: bool = True, attention_kwargs: dict[str, Any] | None = None,
        callback_on_step_end: Callable | None = None, callback_on_step_end_tensor_inputs: list[str] = ("latents",),
        motion_speed: float = 1.0, system_prompt: str | None = None, enable_prompt_enhancement: bool = False,
        prompt_max_new_tokens: int | None = None, prompt_enhancement_kwargs: dict[str, Any] | None = None,
        prompt_enhancement_seed: int = 10,
    ):
        """Generate a clip with audio that follows `control_video`.

        Args:
            control_video: the reference (a `conditioning.ReferenceVideo`): a video file path, PIL images, a
                `(F, H, W, 3)` array or a `(F, 3, H, W)` tensor (a pipeline's output frames included), uint8 or
                floats in `[0, 1]`; trimmed to `num_frames` (a shorter video conditions the first `8k + 1` frames it
                covers) and resized / center-cropped to `(height / f, width / f)`.
            control_strength: 1 keeps the reference tokens clean (official); lower values let them be denoised.
            conditioning_attention_strength: how strongly generated and reference tokens attend to each other
                (official log bias; 0 = the reference is ignored, 1 = unmodified attention).
            conditioning_attention_mask: optional per-region weights in `[0, 1]`, pixel-space `(B, 1, F, H, W)`
                (or `(B, F, H, W)`) over the fitted reference video, multiplied by `conditioning_attention_strength`.
            control_preprocessor: optional callable `(F, 3, H, W) -> (F, 3, H, W)` in `[0, 1]` applied to the
                fitted control video (e.g. `diffusers_ltx2.control.CannyPreprocessor()`).
            reference_downscale_factor: overrides the factor recorded from the loaded LoRAs.
            reference_conditions: diffusers' form of `control_video` / `control_strength`: one or more
                `LTX2ReferenceCondition(frames, strength)`, appended one after the other (as ltx-pipelines does with
                several `video_conditioning` entries), each fitted, preprocessed and masked like `control_video`.
            conditions: diffusers' form of `image` / `image_strength`: one `LTX2VideoCondition(frames, index=0,
                strength, crf)` (re-compressed at `crf` as diffusers does; other indices or several frames raise
                `NotImplementedError`); and/or this package's conditions (`VideoCondition` keyframes,
                `AudioCondition`, ...), composed with the references.
            The other arguments are those of `LTX2AudioVideoPipeline.__call__` (guidance: `guider=` or diffusers'
            arguments, not both; diffusers' `motion_speed` and prompt-enhancement arguments only at their defaults;
            `noise_scale` is not accepted). Without `control_video` (and `reference_conditions`) the call is a plain
            generation, as diffusers' in-context pipeline's.

        Returns:
            `LTX2AudioVideoPipelineOutput(frames, audio, sample_rate)`.
        """
        conditions, image, image_strength = ic_lora_conditions(
            self, control_video=control_video, control_strength=control_strength,
            attention_strength=conditioning_attention_strength, attention_mask=conditioning_attention_mask,
            preprocessor=control_preprocessor, downscale_factor=reference_downscale_factor,
            reference_conditions=reference_conditions, conditions=conditions, image=image,
            image_strength=image_strength,
        )
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
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs, motion_speed=motion_speed,
            enable_prompt_enhancement=enable_prompt_enhancement, enhances_prompts=False, predicts_length=False,
        )
        return self.generate(call, [call.stage()])

    def generate_long_video(self, prompt=None, *, num_frames: int, window: int = 121, overlap: int = 24, **kwargs):
        """`sliding.generate_long_video` with `__call__`'s reference arguments given for the whole clip (see there)."""
        from .sliding import generate_long_video
        kwargs.update(pop_ic_lora_arguments(self, kwargs))
        return generate_long_video(self, prompt, num_frames=num_frames, window=window, overlap=overlap, **kwargs)

    # -- the reference's steps, for inspection and preprocessing (training, tests) -------------------------------
    def fit_control_video(self, control_video, num_frames: int, height: int, width: int) -> torch.Tensor:
        """Read / convert the control video and fit it to the clip as `ReferenceVideo` does: `(F, 3, height, width)`
        in `[0, 1]`, `F = 8k + 1 <= num_frames` (frames taken every `reference_temporal_scale_factor`)."""
        if control_video is None:
            raise ValueError("control_video is required: a video file, PIL frames, an array or a tensor")
        reference = ReferenceVideo(control_video, temporal_scale_factor=self.reference_temporal_scale_factor)
        return reference.fit(self.clip_geometry(1, num_frames, height, width, 24.0))

    run_preprocessor = staticmethod(run_preprocessor)

    def encode_video(self, frames: torch.Tensor, batch_size: int, device) -> torch.Tensor:
        """`(F, 3, H, W)` frames in `[0, 1]` -> normalized VAE latents `(B, C, f, h, w)` (as `ReferenceVideo`)."""
        return self.encode_pixels(vae_pixels(frames), batch_size, device)
