"""`LTX2PipelineBase`: the components and the steps every LTX-2 pipeline of this package shares.

The concrete pipelines (`LTX2AudioVideoPipeline`, `LTX2ICLoRAPipeline`) only orchestrate these steps in
their `__call__`; nothing here is duplicated between them.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace

import numpy as np
import PIL.Image
import torch
from diffusers import AutoencoderKLLTX2Audio, AutoencoderKLLTX2Video, LTX2VideoTransformer3DModel
from diffusers.pipelines.pipeline_utils import DiffusionPipeline
from diffusers.utils.torch_utils import randn_tensor
from diffusers.video_processor import VideoProcessor
from diffusers.pipelines.ltx2 import LTX2TextConnectors, LTX2Vocoder, LTX2VocoderWithBWE

from ..guiders import GuidanceAttentionControl, Guider, MultimodalGuider
from ..loaders.lora import LTX2OfficialLoraLoaderMixin
from ..loaders.gemma import DEFAULT_MAX_SEQUENCE_LENGTH, GemmaPromptEncoder, run_connectors
from ..loaders.prompt_embeddings import PromptEmbeddings
from ..schedulers import LTX2Scheduler
from . import latents as L
from .denoising import ModalityLatents, TextContexts, TransformerPasses, denoise
from .pipeline_output import LTX2AudioVideoPipelineOutput

logger = logging.getLogger(__name__)


def default_guider() -> Guider:
    """The guider a pipeline gets when none is saved with it: `MultimodalGuider` with the recommended values
    (video cfg 3, stg 1, modality 3, rescale 0.7; audio cfg 7, stg 1, modality 3, rescale 0.7) and the
    model's own STG block (29 for LTX-2.0, 28 for 2.3, chosen by `attention_control_for`)."""
    return MultimodalGuider()


class LTX2PipelineBase(DiffusionPipeline, LTX2OfficialLoraLoaderMixin):
    """Components and shared steps of the LTX-2 audio+video pipelines.

    Args:
        scheduler: `LTX2Scheduler` (a diffusers `FlowMatchEulerDiscreteScheduler` from a diffusers-format repo
            is converted, keeping its shift settings).
        vae: `AutoencoderKLLTX2Video`.
        audio_vae: `AutoencoderKLLTX2Audio`.
        text_encoder: `Gemma3ForConditionalGeneration`, or `None` when prompts come from a `prompt_encoder`.
        tokenizer: the Gemma tokenizer, or `None`.
        connectors: `LTX2TextConnectors`.
        transformer: `LTX2VideoTransformer3DModel`.
        vocoder: `LTX2Vocoder` or `LTX2VocoderWithBWE`.
        guider: a `Guider`; defaults to `MultimodalGuider` with the recommended values.
        prompt_encoder: optional `PromptEncoder` used instead of the local Gemma (e.g. `LTXAPIPromptEncoder`);
            not saved with the pipeline.
        model_identity: the official checkpoint's model id (its `encrypted_wandb_properties` metadata), recorded
            by `from_single_file` / `ltx2 convert` and saved in `model_index.json`; saved conditioning and API
            embeddings are checked against it.

    LoRAs: `load_lora_weights` takes diffusers-format and official-format LTX-2 LoRAs (see
    `diffusers_ltx2.loaders.lora`); model components are type-annotated so `from_pipe` can move them between
    the pipelines of this package.
    """

    model_cpu_offload_seq = "text_encoder->connectors->transformer->vae->audio_vae->vocoder"
    _optional_components = ["text_encoder", "tokenizer", "guider"]
    _callback_tensor_inputs = ["latents", "audio_latents"]

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
        guider: Guider | None = None,
        prompt_encoder=None,
        model_identity: str | None = None,
    ):
        super().__init__()
        if not isinstance(scheduler, LTX2Scheduler):
            logger.info("replacing %s with LTX2Scheduler (the official sampler)", type(scheduler).__name__)
            scheduler = LTX2Scheduler.from_flow_match_config(scheduler.config)
        self.register_modules(
            scheduler=scheduler,
            vae=vae,
            audio_vae=audio_vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            connectors=connectors,
            transformer=transformer,
            vocoder=vocoder,
            guider=guider if guider is not None else default_guider(),
        )
        self.register_to_config(model_identity=model_identity)
        self.prompt_encoder = prompt_encoder
        self.video_processor = VideoProcessor(vae_scale_factor=self.vae_spatial_ratio)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """diffusers' `from_pretrained`; in addition a `transformer/` converted with `ltx2 convert --fp8 keep`
        (float8 weights + scales, `ltx2_fp8.json`) is loaded with float8 weights that are dequantized per call,
        so it takes the memory of the FP8 file."""
        from ..conversion.fp8 import FP8_MANIFEST, load_fp8_transformer

        folder = os.path.join(str(pretrained_model_name_or_path), "transformer")
        if "transformer" not in kwargs and os.path.isfile(os.path.join(folder, FP8_MANIFEST)):
            dtype = kwargs.get("dtype", kwargs.get("torch_dtype"))
            if isinstance(dtype, dict):
                dtype = dtype.get("transformer", dtype.get("default"))
            kwargs["transformer"] = load_fp8_transformer(folder, dtype=dtype or torch.bfloat16)
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    @classmethod
    def from_single_file(
        cls,
        path: str | os.PathLike,
        *,
        text_encoder=None,
        tokenizer=None,
        torch_dtype: torch.dtype | None = None,
        fp8: str | None = "dequantize",
        guider: Guider | None = None,
        prompt_encoder=None,
        progress: bool = True,
    ):
        """Build the pipeline straight from an official LTX-2 single-file checkpoint (2.0 or 2.3).

        Tensors are streamed into the diffusers modules one at a time (the same key mapping as `ltx2 convert`),
        so the file is never held in memory as a whole. Gemma ships separately: pass `text_encoder` and
        `tokenizer`, or a `prompt_encoder` (e.g. `LTXAPIPromptEncoder`), or call the pipeline with `prompt_embeds`.

        Args:
            path: the official `.safetensors` file.
            torch_dtype: dtype of the floating weights (`None` keeps the file's).
            fp8: for FP8 files, `"dequantize"` (weight * weight_scale -> bf16) or `"keep"` (float8 weights).
        """
        from ..conversion import load_components_from_single_file

        from ..loaders.identity import MODEL_ID_METADATA_KEY, read_safetensors_metadata

        if not os.path.isfile(path):
            raise FileNotFoundError(f"checkpoint not found: {path}")
        components = load_components_from_single_file(path, dtype=torch_dtype, fp8=fp8, progress=progress)
        return cls(
            scheduler=LTX2Scheduler(), text_encoder=text_encoder, tokenizer=tokenizer, guider=guider,
            prompt_encoder=prompt_encoder, model_identity=read_safetensors_metadata(path).get(MODEL_ID_METADATA_KEY),
            **components,
        )

    # -- geometry --------------------------------------------------------------------------------------------
    @property
    def vae_spatial_ratio(self) -> int:
        return getattr(self.vae, "spatial_compression_ratio", 32) if self.vae is not None else 32

    @property
    def vae_temporal_ratio(self) -> int:
        return getattr(self.vae, "temporal_compression_ratio", 8) if self.vae is not None else 8

    @property
    def audio_sample_rate(self) -> int:
        """Sample rate of the generated waveform (the vocoder's output rate)."""
        cfg = self.vocoder.config
        return int(getattr(cfg, "output_sampling_rate", None) or getattr(cfg, "output_sample_rate", 24000))

    # -- prompts ---------------------------------------------------------------------------------------------
    def _active_prompt_encoder(self, max_sequence_length: int | None = None):
        if self.prompt_encoder is not None:
            return self.prompt_encoder
        if self.text_encoder is None or self.tokenizer is None:
            raise ValueError(
                "this pipeline has no text encoder: pass prompt_embeds, or load it with a prompt_encoder "
                "(e.g. LTXAPIPromptEncoder) or with Gemma"
            )
        if max_sequence_length is None:
            max_sequence_length = min(DEFAULT_MAX_SEQUENCE_LENGTH, int(self.tokenizer.model_max_length))
        return GemmaPromptEncoder(self.tokenizer, self.text_encoder, max_sequence_length=max_sequence_length)

    def encode_prompt(
        self,
        prompts: list[str] | None,
        negative_prompts: list[str] | None,
        *,
        prompt_embeds: PromptEmbeddings | None = None,
        negative_prompt_embeds: PromptEmbeddings | None = None,
        need_negative: bool,
        num_videos_per_prompt: int = 1,
        max_sequence_length: int | None = None,
        device: torch.device | None = None,
    ) -> TextContexts:
        """Encode (or take) the prompt embeddings and bring them to the connector stage.

        Prompts go through `prompt_encoder` (or the local Gemma); feature-stage embeddings go through the
        pipeline's connectors; connector-stage embeddings are used as they are. `max_sequence_length` is the
        padded prompt length for the local Gemma (default: 1024, or the tokenizer's maximum if smaller).
        """
        device = device or self._execution_device
        encoder = None
        if prompt_embeds is None or (need_negative and negative_prompt_embeds is None):
            encoder = self._active_prompt_encoder(max_sequence_length)
        positive = prompt_embeds if prompt_embeds is not None else encoder.encode(prompts, device=device)
        negative = None
        if need_negative:
            negative = negative_prompt_embeds
            if negative is None:
                negative = encoder.encode(negative_prompts or [""] * positive.batch_size, device=device)
            if negative.batch_size == 1 and positive.batch_size > 1:
                negative = negative.repeat(positive.batch_size)
        positive = self._to_connector_stage(positive, device).repeat(num_videos_per_prompt)
        if negative is not None:
            negative = self._to_connector_stage(negative, device).repeat(num_videos_per_prompt)
        return TextContexts(positive=positive, negative=negative)

    def _to_connector_stage(self, embeddings: PromptEmbeddings, device) -> PromptEmbeddings:
        from ..loaders.identity import check_model_identity

        # an API model_id or a cached entry of another checkpoint fails here, naming both models
        check_model_identity(embeddings.model_identity, self.model_identities(), source="prompt embeddings",
                             warn_if_unknown=False)
        embeddings = embeddings.to(device=device)
        if embeddings.stage == "features":
            embeddings = run_connectors(self.connectors, embeddings)
        self._check_context_width(embeddings)
        return embeddings

    def _check_context_width(self, embeddings: PromptEmbeddings) -> None:
        from ..loaders.identity import context_dims

        expected = context_dims(self.transformer)  # 2.0: caption_channels twice; 2.3: the stream widths
        got = (embeddings.video_context.shape[-1], embeddings.audio_context.shape[-1])
        if got != expected:
            raise ValueError(
                f"prompt embeddings are (video {got[0]}, audio {got[1]}) wide but this transformer expects "
                f"(video {expected[0]}, audio {expected[1]}): they were made for a different model"
            )

    def _load_embeddings(self, embeddings):
        """Checked `PromptEmbeddings` for `prompt_embeds=`: a conditioning file or a ComfyUI conditioning list
        is loaded and refused when made for another model (identity or widths); `PromptEmbeddings` pass
        through here and are checked with every other source in `_to_connector_stage`."""
        if embeddings is None or isinstance(embeddings, PromptEmbeddings):
            return embeddings
        if not isinstance(embeddings, (str, os.PathLike, list, tuple)):
            raise ValueError(
                "prompt embeddings must be PromptEmbeddings or a conditioning file path, "
                f"got {type(embeddings).__name__}"
            )
        from ..loaders.conditioning_file import as_prompt_embeddings
        from ..loaders.identity import context_dims

        video_dim, audio_dim = context_dims(self.transformer)
        return as_prompt_embeddings(embeddings, model_identities=self.model_identities(),
                                    video_dim=video_dim, audio_dim=audio_dim)

    @property
    def model_identity(self) -> str | None:
        """The official checkpoint's model id (`encrypted_wandb_properties`) when known, else `None`."""
        return getattr(self.config, "model_identity", None)

    def model_identities(self) -> list[str]:
        """Identities prompt embeddings may carry to be accepted by this pipeline: the checkpoint's model id
        and the fingerprint of its text connectors (what locally encoded embeddings record)."""
        from ..loaders.identity import connector_fingerprint

        return [i for i in (self.model_identity, connector_fingerprint(self.connectors)) if i]

    # -- denoising -------------------------------------------------------------------------------------------
    @property
    def interrupt(self) -> bool:
        """Set `pipe._interrupt = True` from a callback to stop denoising early."""
        return getattr(self, "_interrupt", False)

    def attention_control_for(self, guider: Guider):
        """Attention control able to run any guider's perturbed / isolated / frozen passes on this transformer.

        Its default STG blocks (for plans that name none, e.g. `MultimodalGuider(skip_blocks=None)`) are the
        official ones for this checkpoint: [29] for LTX-2.0, [28] for 2.3 (`gated_attn` / `cross_attn_mod`
        transformers), clipped to the model's depth. It only touches the transformer while a pass needs it.
        """
        return GuidanceAttentionControl(self.transformer)

    def _step_callback(self, callback, tensor_inputs):
        """Adapt a diffusers-style `callback_on_step_end` to the denoising loop."""
        if callback is None:
            return None

        def on_step_end(step, sigma, video, audio):
            names = {"latents": video.latent, "audio_latents": audio.latent}
            out = callback(self, step, sigma, {k: names[k] for k in tensor_inputs}) or {}
            if "latents" in out:
                video = replace(video, latent=out["latents"].to(torch.float32))
            if "audio_latents" in out:
                audio = replace(audio, latent=out["audio_latents"].to(torch.float32))
            return video, audio

        return on_step_end

    def set_schedule(self, num_inference_steps: int, sigmas, num_frames: int, height: int, width: int, device):
        """Set the scheduler's sigmas for a clip (custom `sigmas` win over `num_inference_steps`)."""
        num_tokens = self.video_latent_shape(1, num_frames, height, width)[0][1]
        self.scheduler.set_timesteps(
            None if sigmas is not None else num_inference_steps, device=device, sigmas=sigmas, num_tokens=num_tokens
        )
        self._interrupt = False

    def run_denoising(
        self, guider: Guider, video: ModalityLatents, audio: ModalityLatents, contexts: TextContexts, *,
        attention_kwargs=None, max_batch_passes: int | None = None, callback=None, callback_tensor_inputs=("latents",),
        cross_modal: bool = True,
    ) -> tuple[ModalityLatents, ModalityLatents]:
        """The shared denoising loop with a progress bar, the guider's passes and the user's step callback
        (`cross_modal=False`: audio<->video attention off in every pass, for audio-only generation)."""
        passes = TransformerPasses(
            self.transformer, attention_control=self.attention_control_for(guider),
            attention_kwargs=attention_kwargs, max_batch_passes=max_batch_passes, cross_modal=cross_modal,
        )
        with self.progress_bar(total=len(self.scheduler.sigmas) - 1) as bar:
            return denoise(
                passes=passes, guider=guider, scheduler=self.scheduler, video=video, audio=audio, contexts=contexts,
                progress_bar=bar, on_step_end=self._step_callback(callback, callback_tensor_inputs),
                should_stop=lambda: self._interrupt,
            )

    def finish(
        self, video: ModalityLatents, audio: ModalityLatents, num_frames: int, height: int, width: int, *,
        output_type: str, generator=None, decode_timestep: float = 0.0, decode_noise_scale: float | None = None,
        return_dict: bool = True, conditioned=None,
    ):
        """Decode the generated tokens (appended conditioning dropped) into the pipeline output.

        `conditioned` (`conditioning.ConditionedLatents`): a frozen source is returned as given (original pixels /
        the original waveform at the vocoder rate) instead of a VAE round trip; audio-only has no frames (`None`).
        """
        audio_only = conditioned is not None and conditioned.audio_only
        video_latents = None if audio_only else self.unpack_video_latents(video, num_frames, height, width)
        audio_out = self.unpack_audio_latents(audio)
        frames, sample_rate = video_latents, None
        if output_type != "latent":
            pixels = conditioned.video_pixels if conditioned is not None else None
            waveform = conditioned.waveform if conditioned is not None else None
            if audio_only:
                frames = None
            elif pixels is not None:
                frames = self.video_processor.postprocess_video(pixels, output_type=output_type)
            else:
                frames = self.decode_video(video_latents, output_type, generator=generator,
                                           decode_timestep=decode_timestep, decode_noise_scale=decode_noise_scale)
            if waveform is not None:
                audio_out = waveform.cpu() if output_type == "pt" else waveform.cpu().numpy()
            else:
                audio_out = self.decode_audio(audio_out, output_type)
            sample_rate = self.audio_sample_rate
        self.maybe_free_model_hooks()
        if not return_dict:
            return frames, audio_out
        return LTX2AudioVideoPipelineOutput(frames=frames, audio=audio_out, sample_rate=sample_rate)

    # -- latents ---------------------------------------------------------------------------------------------
    def video_coords(self, batch_size: int, frames: int, height: int, width: int, frame_rate: float, device,
                     spatial_scale: int = 1) -> torch.Tensor:
        """RoPE positions of a latent grid; `spatial_scale` multiplies h/w (IC-LoRA downscaled references)."""
        coords = self.transformer.rope.prepare_video_coords(batch_size, frames, height, width, device, fps=frame_rate)
        if spatial_scale != 1:
            coords = coords.clone()
            coords[:, 1:] *= spatial_scale
        return coords

    def prepare_video_latents(
        self, batch_size: int, num_frames: int, height: int, width: int, frame_rate: float, *,
        generator=None, noise: torch.Tensor | None = None, device=None,
        first_frame: torch.Tensor | None = None, first_frame_strength: float = 1.0,
    ) -> ModalityLatents:
        """Initial noisy video state; `first_frame` (normalized latents `(B, C, 1, h, w)`) conditions frame 0."""
        f, h, w = L.latent_video_size(num_frames, height, width, self.vae_temporal_ratio, self.vae_spatial_ratio)
        channels = self.transformer.config.in_channels
        shape = (batch_size, f * h * w, channels)
        clean = torch.zeros(shape, device=device, dtype=torch.float32)
        mask = torch.ones(shape[:2], device=device, dtype=torch.float32)
        if first_frame is not None:
            tokens = L.pack_video(first_frame.to(device, torch.float32))
            clean[:, : tokens.shape[1]] = tokens
            mask[:, : tokens.shape[1]] = 1.0 - first_frame_strength
        coords = self.video_coords(batch_size, f, h, w, frame_rate, device)
        return self._noised(clean, mask, coords, shape[1], generator, noise, unpack=(f, h, w))

    def prepare_audio_latents(
        self, batch_size: int, num_frames: int, frame_rate: float, *, generator=None,
        noise: torch.Tensor | None = None, device=None,
    ) -> ModalityLatents:
        """Initial noisy audio state covering the clip's duration."""
        length = L.audio_latent_length(num_frames, frame_rate, L.audio_latents_per_second(self.audio_vae))
        channels = self.transformer.config.audio_in_channels
        shape = (batch_size, length, channels)
        clean = torch.zeros(shape, device=device, dtype=torch.float32)
        mask = torch.ones(shape[:2], device=device, dtype=torch.float32)
        coords = self.transformer.audio_rope.prepare_audio_coords(batch_size, length, device)
        return self._noised(clean, mask, coords, length, generator, noise, unpack=None)

    def prepare_initial_latents(
        self, total: int, num_frames: int, height: int, width: int, frame_rate: float, *, generator=None,
        latents=None, audio_latents=None, image=None, image_strength: float = 1.0, device=None,
    ) -> tuple[ModalityLatents, ModalityLatents]:
        """Noised video and audio states (video noise drawn first, as the official pipelines do); an `image`
        conditions the first frame."""
        first_frame = self.encode_image(image, height, width, total, device) if image is not None else None
        video = self.prepare_video_latents(
            total, num_frames, height, width, frame_rate, generator=generator, noise=latents, device=device,
            first_frame=first_frame, first_frame_strength=image_strength,
        )
        audio = self.prepare_audio_latents(total, num_frames, frame_rate, generator=generator, noise=audio_latents,
                                           device=device)
        return video, audio

    def prepare_conditions(
        self, conditions, total: int, num_frames: int, height: int, width: int, frame_rate: float, *,
        image=None, output_modalities=("video", "audio"), latents=None,
    ):
        """Check `conditions=` / `output_modalities=` against the clip (before any model runs); returns the
        ordered conditions and whether the call is audio-only (see `diffusers_ltx2.conditioning`)."""
        from .. import conditioning as C

        geometry = C.geometry_for(self, total, num_frames, height, width, frame_rate)
        ordered = C.check_conditions(conditions, geometry, image=image, output_modalities=output_modalities)
        audio_only = C.check_output_modalities(output_modalities) == ("audio",)
        if audio_only and latents is not None:
            raise ValueError("audio-only generation draws no video noise: pass audio_latents, not latents")
        return ordered, audio_only

    def prepare_conditioned_latents(
        self, conditions, total: int, num_frames: int, height: int, width: int, frame_rate: float, *,
        generator=None, latents=None, audio_latents=None, image=None, image_strength: float = 1.0,
        audio_only: bool = False, device=None, initial_video=None, initial_audio=None, noise_scale: float = 1.0,
    ):
        """Initial states with `conditions` applied, then noised (video first, then audio); returns
        `conditioning.ConditionedLatents`. `initial_video` / `initial_audio` (clean packed tokens) and
        `noise_scale`: start from a given clean latent re-noised to `noise_scale` (two-stage refinement)."""
        from .. import conditioning as C

        geometry = C.geometry_for(self, total, num_frames, height, width, frame_rate)
        first_frame = self.encode_image(image, height, width, total, device) if image is not None else None
        return C.prepare_conditioned_latents(
            self, conditions, geometry, generator=generator, latents=latents, audio_latents=audio_latents,
            first_frame=first_frame, first_frame_strength=image_strength, audio_only=audio_only, device=device,
            initial_video=initial_video, initial_audio=initial_audio, noise_scale=noise_scale,
        )

    def audio_latent_shape(self, batch_size: int, num_frames: int, frame_rate: float):
        """`(packed, unpacked)` shapes of the audio latents of a clip."""
        length = L.audio_latent_length(num_frames, frame_rate, L.audio_latents_per_second(self.audio_vae))
        channels = self.transformer.config.audio_in_channels
        mel = self.audio_vae.config.mel_bins // self.audio_vae.mel_compression_ratio
        return (batch_size, length, channels), (batch_size, channels // mel, length, mel)

    def video_latent_shape(self, batch_size: int, num_frames: int, height: int, width: int):
        """`(packed, unpacked)` shapes of the video latents of a clip."""
        f, h, w = L.latent_video_size(num_frames, height, width, self.vae_temporal_ratio, self.vae_spatial_ratio)
        c = self.transformer.config.in_channels
        return (batch_size, f * h * w, c), (batch_size, c, f, h, w)

    @staticmethod
    def _noised(clean, mask, coords, num_target, generator, noise, unpack, noise_scale: float = 1.0) -> ModalityLatents:
        """Official noiser: `latent = noise * mask * s + clean * (1 - mask * s)` (`s = noise_scale`, 1 except when
        re-noising a clean latent for refinement), noise drawn in token layout."""
        if noise is None:
            noise = randn_tensor(clean.shape, generator=generator, device=clean.device, dtype=torch.float32)
        elif noise.ndim == 5:
            noise = L.pack_video(noise)
        elif noise.ndim == 4:
            noise = L.pack_audio(noise)
        noise = noise.to(clean.device, torch.float32)
        m = mask.unsqueeze(-1) * noise_scale
        latent = noise * m + clean * (1 - m)
        return ModalityLatents(latent=latent, clean=clean, denoise_mask=mask, coords=coords,
                               num_target_tokens=num_target)

    # -- images ----------------------------------------------------------------------------------------------
    @staticmethod
    def check_image(image, batch_size: int) -> None:
        """Validate an `image` argument's type and shape (before any model runs)."""
        if image is None:
            return
        images = image if isinstance(image, list) else [image]
        if not images:
            raise ValueError("image is an empty list")
        n = 0
        for im in images:
            if isinstance(im, PIL.Image.Image):
                n += 1
                continue
            if isinstance(im, np.ndarray):
                arr = im if im.ndim == 4 else im[None] if im.ndim == 3 else None
                if arr is None or arr.shape[-1] not in (1, 3):
                    raise ValueError(f"image arrays must be (H, W, 3) or (B, H, W, 3), got {im.shape}")
                n += arr.shape[0]
            elif isinstance(im, torch.Tensor):
                t = im if im.ndim == 4 else im[None] if im.ndim == 3 else None
                if t is None or t.shape[1] != 3:
                    raise ValueError(f"image tensors must be (3, H, W) or (B, 3, H, W), got {tuple(im.shape)}")
                n += t.shape[0]
            else:
                raise ValueError(f"image must be a PIL image, numpy array or torch tensor, got {type(im).__name__}")
        if n not in (1, batch_size):
            raise ValueError(f"got {n} images for a batch of {batch_size} prompts")

    def encode_pixels(self, pixels: torch.Tensor, batch_size: int, device) -> torch.Tensor:
        """VAE-encode `(B, 3, F, H, W)` pixels in `[-1, 1]` into normalized diffusion-space latents (the
        posterior mean); a batch of one is broadcast to `batch_size`."""
        pixels = pixels.to(device=device, dtype=self.vae.dtype)
        with torch.no_grad():
            latents = self.vae.encode(pixels).latent_dist.mode()
        latents = L.normalize_video(latents.float(), self.vae.latents_mean, self.vae.latents_std)
        return latents.expand(batch_size, -1, -1, -1, -1) if latents.shape[0] == 1 else latents

    def encode_image(self, image, height: int, width: int, batch_size: int, device) -> torch.Tensor:
        """Resize an image to the clip size and encode it as normalized first-frame latents `(B, C, 1, h, w)`."""
        pixels = self.video_processor.preprocess(image, height=height, width=width).unsqueeze(2)
        return self.encode_pixels(pixels, batch_size, device)

    # -- decoding --------------------------------------------------------------------------------------------
    def unpack_video_latents(self, video: ModalityLatents, num_frames: int, height: int, width: int):
        """Target tokens -> denormalized `(B, C, F, H, W)` VAE latents."""
        f, h, w = L.latent_video_size(num_frames, height, width, self.vae_temporal_ratio, self.vae_spatial_ratio)
        grid = L.unpack_video(video.target(), f, h, w)
        return L.denormalize_video(grid, self.vae.latents_mean, self.vae.latents_std)

    def unpack_audio_latents(self, audio: ModalityLatents):
        """Audio tokens -> denormalized `(B, C, T, M)` audio VAE latents."""
        tokens = L.denormalize_audio_tokens(audio.target(), self.audio_vae.latents_mean, self.audio_vae.latents_std)
        mel = self.audio_vae.config.mel_bins // self.audio_vae.mel_compression_ratio
        return L.unpack_audio(tokens, mel)

    def decode_video(self, latents: torch.Tensor, output_type: str, *, generator=None,
                     decode_timestep: float = 0.0, decode_noise_scale: float | None = None):
        """VAE-decode denormalized latents and post-process to `output_type`."""
        latents = latents.to(self.vae.dtype)
        timestep = None
        if self.vae.config.timestep_conditioning:
            noise_scale = decode_timestep if decode_noise_scale is None else decode_noise_scale
            mean, std = self.vae.latents_mean, self.vae.latents_std
            normalized = L.normalize_video(latents.float(), mean, std)
            noise = randn_tensor(normalized.shape, generator=generator, device=latents.device, dtype=torch.float32)
            normalized = (1 - noise_scale) * normalized + noise_scale * noise
            latents = L.denormalize_video(normalized, mean, std).to(self.vae.dtype)
            timestep = torch.full((latents.shape[0],), decode_timestep, device=latents.device, dtype=latents.dtype)
        with torch.no_grad():
            video = self.vae.decode(latents, timestep, return_dict=False)[0]
        return self.video_processor.postprocess_video(video, output_type=output_type)

    def decode_audio(self, latents: torch.Tensor, output_type: str):
        """Audio VAE -> mel -> vocoder; float32 stereo waveforms `(B, 2, samples)`."""
        with torch.no_grad():
            mel = self.audio_vae.decode(latents.to(self.audio_vae.dtype), return_dict=False)[0]
            wave = self.vocoder(mel.to(self.vocoder.dtype)).float()
        return wave.cpu() if output_type == "pt" else wave.cpu().numpy()
