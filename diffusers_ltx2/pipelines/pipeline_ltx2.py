"""`LTX2AudioVideoPipeline`: text (and optionally a first-frame image) to video with synchronized audio."""

from __future__ import annotations

from typing import Any, Callable

import torch

from ..guiders import Guider
from ..loaders.prompt_embeddings import PromptEmbeddings
from ..schedulers.samplers import Sampler
from .base import LTX2PipelineBase
from .call import resolve_call
from .diffusers_compat import DIFFUSERS_DEFAULT
from .extend import extend


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
        self, prompt: str | list[str] | None = None, negative_prompt: str | list[str] | None = None, *,
        height: int = 512, width: int = 768, num_frames: int | None = None, frame_rate: float = 24.0,
        num_inference_steps: int = 40, sigmas: list[float] | None = None, timesteps: list[float] | None = None,
        guider: Guider | None = None, guidance_scale: float = DIFFUSERS_DEFAULT, stg_scale: float = DIFFUSERS_DEFAULT,
        modality_scale: float = DIFFUSERS_DEFAULT, guidance_rescale: float = DIFFUSERS_DEFAULT,
        audio_guidance_scale: float | None = DIFFUSERS_DEFAULT, audio_stg_scale: float | None = DIFFUSERS_DEFAULT,
        audio_modality_scale: float | None = DIFFUSERS_DEFAULT,
        audio_guidance_rescale: float | None = DIFFUSERS_DEFAULT,
        spatio_temporal_guidance_blocks: list[int] | None = DIFFUSERS_DEFAULT, use_cross_timestep: bool = True,
        image=None, image_strength: float = 1.0, image_crf: int | None = None, noise_scale: float = 0.0,
        conditions: list | None = None, output_modalities: tuple[str, ...] = ("video", "audio"),
        num_videos_per_prompt: int = 1, generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None, audio_latents: torch.Tensor | None = None,
        prompt_embeds: PromptEmbeddings | str | torch.Tensor | None = None,
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
        sampler: str | Sampler = "euler",
    ):
        """Generate a clip with audio.

        Every argument of diffusers' `LTX2Pipeline.__call__` is accepted (README: "diffusers arguments").

        Args:
            prompt: text prompt(s); or pass `prompt_embeds`.
            negative_prompt: used by guiders that need a negative pass (CFG); defaults to "".
            height, width: pixels, multiples of 32.
            num_frames: `8k + 1` frames. Left out (`None`): predicted from the prompt by the `duration_head`
                (LTX-2.5) within `[min_seconds, max_seconds]`, then snapped to the `8k + 1` grid; without a
                head 121, as in diffusers. A predicted length serves one prompt (any `num_videos_per_prompt`)
                and cannot be combined with `conditions`, `latents` or `audio_latents` (`ValueError`).
            frame_rate: frames per second (positions and audio length depend on it).
            num_inference_steps: denoising steps of the official LTX-2 schedule (ignored with `sigmas`).
            sigmas: custom decreasing sigmas (e.g. `diffusers_ltx2.DISTILLED_SIGMAS`); a final 0 is appended.
            timesteps: diffusers' alternative to `sigmas`, on the 0..1000 scale (`sigmas = timesteps / 1000`).
            guider: guidance for this call (default: the pipeline's `guider` component; `None` there: none).
            guidance_scale, stg_scale, modality_scale, guidance_rescale, audio_guidance_scale, audio_stg_scale,
                audio_modality_scale, audio_guidance_rescale, spatio_temporal_guidance_blocks: diffusers'
                guidance arguments; passing any builds the call's `MultimodalGuider` from them and diffusers'
                defaults for the others (`diffusers_compat.guider_from_diffusers_args`). Not with `guider=`.
            use_cross_timestep: cross-modal attention modulation uses the other modality's sigma (official).
            image: optional first-frame image(s): a path, PIL image, `(H, W, 3)` array or `(3, H, W)` tensor (a
                frame of any `output_type`'s output), floats in [0, 1] or uint8 0-255. Prepared as the official
                image loader, the same path as `VideoCondition`: re-compressed (`image_crf`), resized to cover
                the clip and centre-cropped. One for all videos, one per prompt (repeated for its
                `num_videos_per_prompt` videos) or one per video.
            image_strength: 1.0 keeps the first frame exactly; lower values let it change.
            image_crf: H.264 CRF the image is re-compressed at (diffusers' `LTX2ImageToVideoPipeline` name);
                `None`: the model's (33 for LTX-2.0 / 2.3) for PIL images and image files, none for arrays /
                tensors (taken as prepared pixels); 0: off.
            noise_scale: in [0, 1]; with `latents` / `audio_latents`, they are clean latents noised by this much
                (diffusers' meaning; e.g. 0.909375 with `DISTILLED_REFINE_SIGMAS` for a second stage). 0: they
                are the initial noise.
            conditions: condition objects from `diffusers_ltx2.conditioning`, composable in one call:
                `VideoCondition` (image / clip at any frame), `AudioCondition` (audio-to-video: audio frozen, the
                output returns the input waveform), `FrozenVideo` (video-to-audio), `TemporalRegion` (retake a
                window of a `FrozenVideo` / `AudioCondition` source). diffusers' `LTX2VideoCondition(frames,
                index, strength, crf)` objects are taken with diffusers' meaning (`conditioning.diffusers_condition`:
                `index` a latent frame, negative from the end; frames on the 0-255 scale). Checked before any
                model runs.
            output_modalities: `("video", "audio")` or `("audio",)` for audio-only generation (`frames` is
                `None`). Audio-only runs the audio stream with both cross-modal attentions off and no modality
                pass; the video stream (diffusers' transformer always has one) is a single frozen placeholder
                token per row (no noise drawn, no VAE work), which with cross-modal attention off cannot reach
                the audio.
            num_videos_per_prompt: clips per prompt.
            generator: torch generator(s), one or one per video; video noise is drawn first, then audio.
            latents, audio_latents: initial noise instead of drawing it (or clean latents, see `noise_scale`),
                packed `(B, N, C)` tokens or unpacked `(B, C, F, H, W)` / `(B, C, T, M)`.
            prompt_embeds, negative_prompt_embeds: `PromptEmbeddings`, a path to a saved conditioning file, or
                diffusers' raw tensors (Gemma features from `encode_prompt`) with `prompt_attention_mask` /
                `negative_prompt_attention_mask`. Prompt and negative may have different lengths.
            max_batch_passes: guidance passes per transformer call (`1` = sequential, lowest memory).
            max_sequence_length: padded prompt length for the local Gemma (default 1024, or the tokenizer's
                maximum if smaller).
            decode_timestep, decode_noise_scale: VAE decoder timestep conditioning (timestep-conditioned VAEs
                only); one value or one per video.
            output_type: "pil" (default, as diffusers), "np", "pt" or "latent".
            return_dict: return `LTX2AudioVideoPipelineOutput` (else a tuple `(frames, audio)`).
            sampler: `"euler"` (official default), `"euler_ancestral"` (official 2.5 distilled stage 1) or
                `"res_2s"` (second order, two model evaluations per step; official HQ pipeline), or a configured
                `diffusers_ltx2.schedulers.samplers` instance (e.g. `Res2sSampler(eta=0.3, noise_seed=7)`). The
                stochastic samplers seed their noise from `generator` (official seeds; see that module).
            attention_kwargs: forwarded to the transformer (e.g. `{"scale": 0.8}` for LoRA strength).
            callback_on_step_end: `fn(pipe, step, sigma, tensors) -> dict` (or a diffusers `PipelineCallback`),
                tensors named in `callback_on_step_end_tensor_inputs` (`_callback_tensor_inputs`); returned
                tensors replace them.
            min_seconds, max_seconds: bounds (seconds, defaults 1 and 20 as diffusers and official) of the clip
                length the duration head predicts when `num_frames` is left out; ignored with `num_frames`.
            enable_prompt_enhancement: rewrite each prompt with the enhancer before encoding (official
                `enhance_prompt`; see `pipelines.enhancement`): the `prompt_enhancer` component (LTX-2.5) or the
                Gemma-3 `text_encoder` (2.0 / 2.3); image-to-video enhancement (with `image` or an image
                condition) needs the `processor` component. The prompts used are returned as
                `output.enhanced_prompts`.
            system_prompt, prompt_max_new_tokens, prompt_enhancement_kwargs: the enhancer's system prompt,
                new-token limit and `generate` keyword arguments (defaults: the official ones of its family).
            prompt_enhancement_seed: generation seed (default 10); the generator's seed wins when one is given.
            motion_speed: diffusers' slow-motion argument, accepted at 1.0 only (else `UnsupportedFeatureError`).

        Returns:
            `LTX2AudioVideoPipelineOutput(frames, audio, sample_rate, enhanced_prompts)`; `audio` is a float32
            `torch.Tensor` `(B, 2, samples)` (denormalized latents for "latent").

        Raises:
            ValueError: any invalid input, before any model runs.
            UnsupportedFeatureError: a diffusers argument asks for a feature this package does not have.
        """
        call = resolve_call(
            self, prompt=prompt, negative_prompt=negative_prompt, height=height, width=width, num_frames=num_frames,
            frame_rate=frame_rate, num_inference_steps=num_inference_steps, sigmas=sigmas, timesteps=timesteps,
            guider=guider, guidance_scale=guidance_scale, stg_scale=stg_scale, modality_scale=modality_scale,
            guidance_rescale=guidance_rescale, audio_guidance_scale=audio_guidance_scale,
            audio_stg_scale=audio_stg_scale, audio_modality_scale=audio_modality_scale,
            audio_guidance_rescale=audio_guidance_rescale,
            spatio_temporal_guidance_blocks=spatio_temporal_guidance_blocks, use_cross_timestep=use_cross_timestep,
            image=image, image_strength=image_strength, image_crf=image_crf, noise_scale=noise_scale,
            conditions=conditions, output_modalities=output_modalities, num_videos_per_prompt=num_videos_per_prompt,
            generator=generator, latents=latents, audio_latents=audio_latents, prompt_embeds=prompt_embeds,
            prompt_attention_mask=prompt_attention_mask, negative_prompt_embeds=negative_prompt_embeds,
            negative_prompt_attention_mask=negative_prompt_attention_mask, max_batch_passes=max_batch_passes,
            max_sequence_length=max_sequence_length, decode_timestep=decode_timestep,
            decode_noise_scale=decode_noise_scale, output_type=output_type, return_dict=return_dict,
            attention_kwargs=attention_kwargs, callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs, min_seconds=min_seconds,
            max_seconds=max_seconds, motion_speed=motion_speed, enable_prompt_enhancement=enable_prompt_enhancement,
            system_prompt=system_prompt, prompt_max_new_tokens=prompt_max_new_tokens,
            prompt_enhancement_kwargs=prompt_enhancement_kwargs, prompt_enhancement_seed=prompt_enhancement_seed,
            sampler=sampler,
        )
        return self.generate(call, lambda call: [call.stage()])

    def extend(self, clip, num_new_frames: int, *, overlap_frames: int = 16, overlap_strength: float = 0.5,
               audio=None, sample_rate: int | None = None, **kwargs):
        """Continue `clip` (and its `audio`) by `num_new_frames` frames, joined without a seam; see
        `diffusers_ltx2.pipelines.extend.extend` (ComfyUI `LTXVExtendSampler` semantics)."""
        return extend(self, clip, num_new_frames, overlap_frames=overlap_frames, overlap_strength=overlap_strength,
                      audio=audio, sample_rate=sample_rate, **kwargs)

    def generate_long_video(self, prompt=None, *, num_frames: int, window: int = 121, overlap: int = 24, **kwargs):
        """Generate a clip of any length in sliding windows of `window` frames overlapping by `overlap` (a prompt
        per segment, AdaIN, whole-clip keyframes, audio-to-video and IC-LoRA references); see
        `diffusers_ltx2.pipelines.sliding.generate_long_video` (ComfyUI `LTXVLoopingSampler` semantics)."""
        from .sliding import generate_long_video

        return generate_long_video(self, prompt, num_frames=num_frames, window=window, overlap=overlap, **kwargs)
