"""`LTX2AudioVideoPipeline`: text (and optionally a first-frame image) to video with synchronized audio."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable

import torch

from ..guiders import Guider
from ..loaders.prompt_embeddings import PromptEmbeddings
from . import validation as V
from .base import LTX2PipelineBase


class LTX2AudioVideoPipeline(LTX2PipelineBase):
    """LTX-2 text/image-to-video+audio generation with the official sampler and pluggable guidance.

    Example:
        >>> import diffusers_ltx2, torch
        >>> pipe = diffusers_ltx2.LTX2AudioVideoPipeline.from_pretrained("path/to/ltx2", dtype=torch.bfloat16)
        >>> out = pipe("a cat playing piano", num_frames=121, height=512, width=768)
        >>> diffusers_ltx2.export_to_video_with_audio(out.frames[0], out.audio[0], "cat.mp4", 24, out.sample_rate)
    """

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        negative_prompt: str | list[str] | None = None,
        *,
        height: int = 512,
        width: int = 768,
        num_frames: int = 121,
        frame_rate: float = 24.0,
        num_inference_steps: int = 40,
        sigmas: list[float] | None = None,
        guider: Guider | None = None,
        image=None,
        image_strength: float = 1.0,
        conditions: list | None = None,
        output_modalities: tuple[str, ...] = ("video", "audio"),
        num_videos_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        audio_latents: torch.Tensor | None = None,
        prompt_embeds: PromptEmbeddings | str | None = None,
        negative_prompt_embeds: PromptEmbeddings | str | None = None,
        max_batch_passes: int | None = None,
        max_sequence_length: int | None = None,
        decode_timestep: float = 0.0,
        decode_noise_scale: float | None = None,
        output_type: str = "np",
        return_dict: bool = True,
        attention_kwargs: dict[str, Any] | None = None,
        callback_on_step_end: Callable | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ("latents",),
    ):
        """Generate a clip with audio.

        Args:
            prompt: text prompt(s); or pass `prompt_embeds`.
            negative_prompt: used by guiders that need a negative pass (CFG); defaults to "".
            height, width: pixels, multiples of 32.
            num_frames: `8k + 1` frames.
            frame_rate: frames per second (positions and audio length depend on it).
            num_inference_steps: denoising steps of the official LTX-2 schedule (ignored with `sigmas`).
            sigmas: custom decreasing sigmas (e.g. `diffusers_ltx2.DISTILLED_SIGMAS`); a final 0 is appended.
            guider: guidance for this call (default: the pipeline's `guider` component).
            image: optional first-frame image (PIL, `(H, W, 3)` array or `(3, H, W)` tensor in [0, 1]); resized to
                the clip size.
            image_strength: 1.0 keeps the first frame exactly; lower values let it change.
            conditions: condition objects from `diffusers_ltx2.conditioning`, composable in one call:
                `VideoCondition` (image / clip at any frame), `AudioCondition` (audio-to-video: audio frozen, the
                output returns the input waveform), `FrozenVideo` (video-to-audio), `TemporalRegion` (retake a
                window of a `FrozenVideo` / `AudioCondition` source). Checked before any model runs.
            output_modalities: `("video", "audio")` or `("audio",)` for audio-only generation (`frames` is
                `None`). Audio-only runs the audio stream with both cross-modal attentions off and no modality
                pass; the video stream (diffusers' transformer always has one) is a single frozen placeholder
                token per row (no noise drawn, no VAE work), which with cross-modal attention off cannot reach
                the audio.
            num_videos_per_prompt: clips per prompt.
            generator: torch generator(s); video noise is drawn first, then audio (official order).
            latents, audio_latents: initial noise instead of drawing it, packed `(B, N, C)` or unpacked.
            prompt_embeds, negative_prompt_embeds: `PromptEmbeddings`, or a path to a saved conditioning file.
            max_batch_passes: guidance passes per transformer call (`1` = sequential, lowest memory).
            max_sequence_length: padded prompt length for the local Gemma (default 1024, or the tokenizer's
                maximum if smaller).
            decode_timestep, decode_noise_scale: VAE decoder timestep conditioning (timestep-conditioned VAEs only).
            output_type: "np", "pt", "pil" or "latent".
            return_dict: return `LTX2AudioVideoPipelineOutput` (else a tuple `(frames, audio)`).
            attention_kwargs: forwarded to the transformer (e.g. `{"scale": 0.8}` for LoRA strength).
            callback_on_step_end: `fn(pipe, step, sigma, tensors) -> dict`, tensors named in
                `callback_on_step_end_tensor_inputs` ("latents", "audio_latents"); returned tensors replace them.

        Returns:
            `LTX2AudioVideoPipelineOutput(frames, audio, sample_rate)`.
        """
        # 1. Check every input before any model runs.
        guider = guider if guider is not None else self.guider
        inputs = V.check_call_inputs(
            self, prompt=prompt, negative_prompt=negative_prompt, prompt_embeds=prompt_embeds,
            negative_prompt_embeds=negative_prompt_embeds, height=height, width=width, num_frames=num_frames,
            frame_rate=frame_rate, output_type=output_type, image=image, image_strength=image_strength,
            num_videos_per_prompt=num_videos_per_prompt, generator=generator, latents=latents,
            audio_latents=audio_latents, callback_tensor_inputs=callback_on_step_end_tensor_inputs, guider=guider,
        )
        conditioned = conditions is not None or tuple(output_modalities) != ("video", "audio")
        if conditioned:
            conditions, audio_only = self.prepare_conditions(
                conditions, inputs.total, num_frames, height, width, frame_rate, image=image,
                output_modalities=output_modalities, latents=latents,
            )
        device = self._execution_device
        self.set_schedule(num_inference_steps, sigmas, num_frames, height, width, device)

        # 2. Prompt conditioning (local Gemma, a prompt encoder, or given embeddings).
        contexts = self.encode_prompt(
            inputs.prompts, inputs.negative_prompts, prompt_embeds=inputs.prompt_embeds,
            negative_prompt_embeds=inputs.negative_prompt_embeds, need_negative=guider.uses_negative_prompt,
            num_videos_per_prompt=num_videos_per_prompt, max_sequence_length=max_sequence_length, device=device,
        )

        # 3. Initial latents: video noise first, then audio (official order); the image conditions frame 0.
        state = None
        if conditioned:
            # conditions edit the unnoised states, then they are noised; frozen modalities cost no passes
            state = self.prepare_conditioned_latents(
                conditions, inputs.total, num_frames, height, width, frame_rate, generator=generator,
                latents=latents, audio_latents=audio_latents, image=image, image_strength=image_strength,
                audio_only=audio_only, device=device,
            )
            video, audio = state.video, state.audio
            guider = guider.for_frozen(video=state.frozen_video, audio=state.frozen_audio, cross_modal=not audio_only)
            contexts = replace(contexts, frozen_video=state.frozen_video, frozen_audio=state.frozen_audio)
        else:
            video, audio = self.prepare_initial_latents(
                inputs.total, num_frames, height, width, frame_rate, generator=generator, latents=latents,
                audio_latents=audio_latents, image=image, image_strength=image_strength, device=device,
            )

        # 4. Denoise.
        video, audio = self.run_denoising(
            guider, video, audio, contexts, attention_kwargs=attention_kwargs, max_batch_passes=max_batch_passes,
            callback=callback_on_step_end, callback_tensor_inputs=callback_on_step_end_tensor_inputs,
            cross_modal=not (state is not None and state.audio_only),
        )

        # 5. Decode.
        return self.finish(
            video, audio, num_frames, height, width, output_type=output_type, generator=generator,
            decode_timestep=decode_timestep, decode_noise_scale=decode_noise_scale, return_dict=return_dict,
            conditioned=state,
        )

    def extend(self, clip, num_new_frames: int, *, overlap_frames: int = 16, overlap_strength: float = 0.5,
               audio=None, sample_rate: int | None = None, **kwargs):
        """Continue `clip` (and its `audio`) by `num_new_frames` frames, joined without a seam; see
        `diffusers_ltx2.conditioning.extend.extend` (ComfyUI `LTXVExtendSampler` semantics)."""
        from ..conditioning.extend import extend

        return extend(self, clip, num_new_frames, overlap_frames=overlap_frames, overlap_strength=overlap_strength,
                      audio=audio, sample_rate=sample_rate, **kwargs)
