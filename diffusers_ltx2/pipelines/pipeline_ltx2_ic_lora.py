"""`LTX2ICLoRAPipeline`: IC-LoRA video-to-video control (canny, depth, pose, union) with audio.

The control (reference) video is encoded at `(H / f, W / f)` where `f` is the LoRA's
`reference_downscale_factor` (read from the file when it is loaded), and its tokens are appended clean after
the generated tokens with positions scaled by `f` (`pipelines.reference`). Noise is drawn as ltx-pipelines'
`ic_lora.py` does (`create_noised_state` + `GaussianNoiser`): one draw over the generated *and* reference video
tokens, then the audio tokens, so a `generator` seeded like the official run gives the same noise. Everything
else - prompt encoding, latents, guidance, the denoising core and decoding - is the shared `LTX2PipelineBase`
machinery, so a pipeline converts to and from `LTX2AudioVideoPipeline` with `from_pipe`. diffusers'
`LTX2InContextPipeline` arguments (`reference_conditions=`, `conditions=`) are accepted
(`pipelines.diffusers_conditions`); without a control video the call is a plain generation.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable

import torch
from diffusers.utils.torch_utils import randn_tensor

from ..guiders import Guider
from ..loaders.prompt_embeddings import PromptEmbeddings
from ..quantization import check_transformer_runtime
from . import latents as L
from . import validation as V
from .base import LTX2PipelineBase
from .denoising import ModalityLatents
from .diffusers_compat import DIFFUSERS_DEFAULT, check_unsupported_features, sigmas_from_timesteps
from .diffusers_conditions import image_from_conditions, references_from
from .reference import append_reference, latent_token_mask, reference_cross_weights


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
        self,
        prompt: str | list[str] | None = None,
        negative_prompt: str | list[str] | None = None,
        *,
        control_video=None,
        control_strength: float = 1.0,
        conditioning_attention_strength: float = 1.0,
        conditioning_attention_mask: torch.Tensor | None = None,
        control_preprocessor: Callable[[torch.Tensor], torch.Tensor] | None = None,
        reference_downscale_factor: int | None = None,
        reference_conditions=None,
        conditions=None,
        height: int = 512,
        width: int = 768,
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
        image=None,
        image_strength: float = 1.0,
        image_crf: int | None = None,
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
        decode_timestep: float = 0.0,
        decode_noise_scale: float | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        attention_kwargs: dict[str, Any] | None = None,
        callback_on_step_end: Callable | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ("latents",),
        motion_speed: float = 1.0,
        system_prompt: str | None = None,
        enable_prompt_enhancement: bool = False,
        prompt_max_new_tokens: int | None = None,
        prompt_enhancement_kwargs: dict[str, Any] | None = None,
        prompt_enhancement_seed: int = 10,
    ):
        """Generate a clip with audio that follows `control_video`.

        Args:
            control_video: the reference, in any form `diffusers_ltx2.media.as_frames` takes: a video file path,
                PIL images, a `(F, H, W, 3)` array or a `(F, 3, H, W)` tensor (a pipeline's `output_type` frames
                included), uint8 or floats in `[0, 1]`. It is trimmed to `num_frames` (a shorter video conditions the
                first `8k + 1` frames it covers) and resized / center-cropped to `(height / f, width / f)`.
            control_strength: 1 keeps the reference tokens clean (official); lower values let them be denoised.
            conditioning_attention_strength: how strongly generated and reference tokens attend to each other
                (official log bias; 0 = the reference is ignored, 1 = unmodified attention).
            conditioning_attention_mask: optional per-region weights in `[0, 1]`, pixel-space `(B, 1, F, H, W)`
                (or `(B, F, H, W)`) over the fitted reference video, multiplied by `conditioning_attention_strength`.
            control_preprocessor: optional callable `(F, 3, H, W) -> (F, 3, H, W)` in `[0, 1]` applied to the
                fitted control video (e.g. `diffusers_ltx2.control.CannyPreprocessor()`).
            reference_downscale_factor: overrides the factor recorded from the loaded LoRAs.
            reference_conditions: diffusers' form of `control_video` / `control_strength`: one or more
                `LTX2ReferenceCondition(frames, strength)`; several references are appended one after the other
                (as ltx-pipelines does with several `video_conditioning` entries), each fitted, preprocessed and
                masked like `control_video`.
            conditions: diffusers' form of `image` / `image_strength`: one `LTX2VideoCondition(frames, index=0,
                strength, crf)` (re-compressed at `crf` as diffusers does); other indices or several frames raise
                `NotImplementedError`.
            guider, guidance_scale, stg_scale, modality_scale, guidance_rescale, audio_guidance_scale,
                audio_stg_scale, audio_modality_scale, audio_guidance_rescale, spatio_temporal_guidance_blocks: the
                call's guidance, as `LTX2AudioVideoPipeline.__call__` (`guider=` or diffusers' arguments, not both;
                neither: the pipeline's `guider`, and none when that is `None`).
            output_type: "pil" (default, as diffusers), "np", "pt" or "latent".
            The other arguments are those of `LTX2AudioVideoPipeline.__call__` (diffusers' `motion_speed` and
            prompt-enhancement arguments only at their defaults: `UnsupportedFeatureError` otherwise; diffusers'
            `noise_scale` is not accepted). Without `control_video` (and `reference_conditions`) the call is a
            plain generation, as diffusers' in-context pipeline's.

        Returns:
            `LTX2AudioVideoPipelineOutput(frames, audio, sample_rate)`.
        """
        # 1. Check every input before any model runs.
        check_unsupported_features(num_frames=num_frames, min_seconds=1.0, max_seconds=20.0,
                                   motion_speed=motion_speed, enable_prompt_enhancement=enable_prompt_enhancement)
        sigmas = sigmas_from_timesteps(timesteps, sigmas)
        guider = self.call_guider(guider, locals())
        callback_on_step_end_tensor_inputs = self.callback_tensor_names(callback_on_step_end,
                                                                        callback_on_step_end_tensor_inputs)
        references = references_from(reference_conditions, control_video, control_strength)
        image, image_strength = image_from_conditions(conditions, image, image_strength, self.default_image_crf)
        inputs = V.check_call_inputs(
            self, prompt=prompt, negative_prompt=negative_prompt, prompt_embeds=prompt_embeds,
            negative_prompt_embeds=negative_prompt_embeds, prompt_attention_mask=prompt_attention_mask,
            negative_prompt_attention_mask=negative_prompt_attention_mask, height=height, width=width,
            num_frames=num_frames, frame_rate=frame_rate, output_type=output_type, image=image,
            image_strength=image_strength, num_videos_per_prompt=num_videos_per_prompt, generator=generator,
            latents=latents, audio_latents=audio_latents, callback_tensor_inputs=callback_on_step_end_tensor_inputs,
            guider=guider,
        )
        image = self.prepare_image(image, image_crf)
        for _, strength in references:
            V.check_strength("control_strength", strength)
        V.check_strength("conditioning_attention_strength", conditioning_attention_strength)
        factor = None
        if references:
            factor = self.resolve_downscale_factor(reference_downscale_factor, height, width)
            references = [(self.fit_control_video(frames, num_frames, height // factor, width // factor), strength)
                          for frames, strength in references]
        elif control_preprocessor is not None or conditioning_attention_mask is not None:
            raise ValueError("control_preprocessor / conditioning_attention_mask need a control_video")
        device = self._execution_device
        check_transformer_runtime(self.transformer, device)  # before a kernel that would crash the process
        self._record_call(guider, attention_kwargs)
        self.set_schedule(num_inference_steps, sigmas, num_frames, height, width, device)

        # 2. Prompt conditioning.
        contexts = self.encode_text_contexts(
            inputs.prompts, inputs.negative_prompts, prompt_embeds=inputs.prompt_embeds,
            negative_prompt_embeds=inputs.negative_prompt_embeds, need_negative=guider.uses_negative_prompt,
            num_videos_per_prompt=num_videos_per_prompt, max_sequence_length=max_sequence_length, device=device,
        )

        # 3. Initial latents: generated + reference video tokens, then noise in the official order.
        if control_preprocessor is not None:
            references = [(self.run_preprocessor(control_preprocessor, c), s) for c, s in references]
        video, audio = self.prepare_ic_latents(
            inputs.total, num_frames, height, width, frame_rate, references=references, factor=factor,
            attention_strength=conditioning_attention_strength, attention_mask=conditioning_attention_mask,
            generator=generator, latents=latents, audio_latents=audio_latents, image=image,
            image_strength=image_strength, device=device,
        )

        # 4. Denoise (the shared core; the reference tokens ride along and are dropped at the end).
        video, audio = self.run_denoising(
            guider, video, audio, contexts, attention_kwargs=attention_kwargs, max_batch_passes=max_batch_passes,
            callback=callback_on_step_end, callback_tensor_inputs=callback_on_step_end_tensor_inputs,
            use_cross_timestep=use_cross_timestep,
        )

        # 5. Decode the generated tokens only.
        return self.finish(
            video, audio, num_frames, height, width, output_type=output_type, generator=generator,
            decode_timestep=decode_timestep, decode_noise_scale=decode_noise_scale, return_dict=return_dict,
        )

    # -- reference steps ------------------------------------------------------------------------------------
    def prepare_ic_latents(
        self, total: int, num_frames: int, height: int, width: int, frame_rate: float, *,
        references: list[tuple[torch.Tensor, float]] = (), factor: int | None = None, attention_strength: float = 1.0,
        attention_mask: torch.Tensor | None = None, generator=None, latents=None, audio_latents=None, image=None,
        image_strength: float = 1.0, device=None,
    ) -> tuple[ModalityLatents, ModalityLatents]:
        """Initial video (generated + reference tokens) and audio states, noised in the official order.

        `references` are fitted control videos `(F, 3, H / factor, W / factor)` in `[0, 1]` with their strengths,
        appended in order. ltx-pipelines `ic_lora.py` builds the video state with every conditioning applied
        (first-frame image, then each reference appended) and only then noises it (`create_noised_state` ->
        `GaussianNoiser`): one `randn` over all `N + M` video tokens, then one over the audio tokens. Tokens are
        noised as `noise * mask + clean * (1 - mask)`, so a partially held reference (strength < 1) is noised too.
        `latents` (user noise for the `N` generated tokens) replaces the first part of the video draw.
        """
        first_frame = self.encode_image(image, height, width, total, device) if image is not None else None
        packed, _ = self.video_latent_shape(total, num_frames, height, width)
        video = self.prepare_video_latents(
            total, num_frames, height, width, frame_rate, noise=torch.zeros(packed, device=device), device=device,
            first_frame=first_frame, first_frame_strength=image_strength,
        )
        for control, strength in references:
            video = self.prepare_reference(
                video, control, factor, frame_rate, strength=strength, attention_strength=attention_strength,
                attention_mask=attention_mask,
            )
        video = noise_tokens(video, generator, target_noise=latents)
        audio = self.prepare_audio_latents(total, num_frames, frame_rate, generator=generator, noise=audio_latents,
                                           device=device)
        return video, audio

    def resolve_downscale_factor(self, factor: int | None, height: int, width: int) -> int:
        """The reference downscale factor for a call (explicit, else the loaded LoRAs'), checked against the size:
        the reference `(height / f, width / f)` must itself be a multiple of the VAE's 32 pixels."""
        if factor is None:
            factor = self.reference_downscale_factor
        if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
            raise ValueError(f"reference_downscale_factor must be a positive integer, got {factor!r}")
        unit = self.vae_spatial_ratio * factor
        if height % unit or width % unit:
            raise ValueError(
                f"with reference_downscale_factor {factor} height and width must be multiples of {unit} (the "
                f"reference is encoded at height/{factor} x width/{factor}), got {height}x{width}; nearest valid: "
                f"height {V.nearest_multiples(height, unit)}, width {V.nearest_multiples(width, unit)}"
            )
        return factor

    def fit_control_video(self, control_video, num_frames: int, height: int, width: int) -> torch.Tensor:
        """Read / convert the control video and fit it to the clip: `(F, 3, height, width)` in `[0, 1]`,
        `F = 8k + 1 <= num_frames` (frames taken every `reference_temporal_scale_factor`)."""
        from ..control.video import fit_frames, to_frames

        if control_video is None:
            raise ValueError("control_video is required: a video file, PIL frames, an array or a tensor")
        frames = to_frames(control_video)
        return fit_frames(frames, num_frames, height, width, self.vae_temporal_ratio,
                          frame_step=self.reference_temporal_scale_factor)

    @staticmethod
    def run_preprocessor(preprocessor, frames: torch.Tensor) -> torch.Tensor:
        """Apply a control preprocessor and check it returned frames of the same size in `[0, 1]`."""
        out = preprocessor(frames)
        if not isinstance(out, torch.Tensor) or out.shape != frames.shape:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"control_preprocessor must return a tensor of shape {tuple(frames.shape)}, got {got}")
        return out.float().clamp(0, 1)

    def encode_video(self, frames: torch.Tensor, batch_size: int, device) -> torch.Tensor:
        """`(F, 3, H, W)` frames in `[0, 1]` -> normalized VAE latents `(B, C, f, h, w)`."""
        return self.encode_pixels((frames * 2 - 1).permute(1, 0, 2, 3).unsqueeze(0), batch_size, device)

    def prepare_reference(
        self, video: ModalityLatents, control: torch.Tensor, factor: int, frame_rate: float, *,
        strength: float = 1.0, attention_strength: float = 1.0, attention_mask: torch.Tensor | None = None,
    ) -> ModalityLatents:
        """Encode the fitted control video and append its tokens to `video` (see `pipelines.reference`).

        Positions: the reference's own latent grid, h / w multiplied by `factor`; time at the frame rate divided
        by the temporal scale factor, so a temporally subsampled reference spans the same seconds."""
        device = video.latent.device
        ref = self.encode_video(control, video.batch_size, device)
        _, _, f, h, w = ref.shape
        step = self.reference_temporal_scale_factor
        coords = self.video_coords(video.batch_size, f, h, w, frame_rate / step, device, spatial_scale=factor)
        token_mask = None
        if attention_mask is not None:
            if not isinstance(attention_mask, torch.Tensor):
                raise ValueError("conditioning_attention_mask must be a torch.Tensor")
            if attention_mask.ndim >= 4:  # pixel frames beyond the fitted reference are not used
                attention_mask = attention_mask[..., : control.shape[0], :, :]
            token_mask = latent_token_mask(attention_mask, f, h, w, self.vae_temporal_ratio)
        weights = reference_cross_weights(attention_strength, token_mask, video.batch_size, f * h * w)
        return append_reference(video, ref, coords, strength=strength, attention_weights=weights)


def noise_tokens(state: ModalityLatents, generator=None, target_noise: torch.Tensor | None = None) -> ModalityLatents:
    """Official `GaussianNoiser` on a token state: `latent = noise * mask + clean * (1 - mask)` with one standard
    normal draw of the state's full `(B, N + M, C)` shape (float32). `target_noise` (`(B, N, C)` or unpacked
    `(B, C, F, H, W)`) stands for the first `N` tokens' noise; the rest is drawn."""
    b, n, c = state.latent.shape
    device = state.latent.device
    if target_noise is None:
        noise = randn_tensor((b, n, c), generator=generator, device=device, dtype=torch.float32)
    else:
        noise = (L.pack_video(target_noise) if target_noise.ndim == 5 else target_noise).to(device, torch.float32)
        if noise.shape[1] < n:
            extra = randn_tensor((b, n - noise.shape[1], c), generator=generator, device=device, dtype=torch.float32)
            noise = torch.cat([noise, extra], dim=1)
    mask = state.denoise_mask.unsqueeze(-1)
    return replace(state, latent=noise * mask + state.clean * (1 - mask))
