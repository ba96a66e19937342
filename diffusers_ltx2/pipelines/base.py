"""`LTX2PipelineBase`: the components and the steps every LTX-2 pipeline of this package shares.

The concrete pipelines (`LTX2AudioVideoPipeline`, `LTX2ICLoRAPipeline`) only orchestrate these steps in
their `__call__`; nothing here is duplicated between them.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace

import torch
from diffusers import (
    AutoencoderKLLTX2Audio,
    AutoencoderKLLTX2Video,
    LTX2VideoDiffusionDecoderModel,
    LTX2VideoTransformer3DModel,
)
from diffusers.pipelines.pipeline_utils import DiffusionPipeline
from diffusers.utils.torch_utils import randn_tensor
from diffusers.video_processor import VideoProcessor
from diffusers.pipelines.ltx2 import LTX2DurationHead, LTX2TextConnectors, LTX2Vocoder, LTX2VocoderWithBWE

from ..acceleration.pipeline_mixin import AccelerationMixin
from ..guiders import GuidanceAttentionControl, Guider, MultimodalGuider
from ..loaders.lora import LTX2OfficialLoraLoaderMixin
from ..loaders.gemma import DEFAULT_MAX_SEQUENCE_LENGTH, GemmaPromptEncoder, run_connectors
from ..loaders.gemma_version import check_gemma_version
from ..loaders.prompt_embeddings import PromptEmbeddings
from ..memory.offload import OffloadMixin
from ..memory.tiled_decode import streamed_decode
from ..memory.vae_tiling import auto_tile_vae
from ..schedulers import LTX2Scheduler
from ..schedulers.samplers import sampler_seed
from . import latents as L
from .call_lock import serialized_call
from .denoising import ModalityLatents, TextContexts, TransformerPasses, denoise
from .diffusers_compat import (
    DIFFUSERS_ONLY_COMPONENTS, absent_components, as_ltx2_scheduler, check_diffusers_components, read_model_index,
    saved_by_this_package,
)
from .diffusers_surface import DiffusersLTX2Surface
from .duration import check_duration_head
from .enhancement import PromptEnhancementMixin, skip_unloadable_processor
from .images import check_image, image_pixels, prepare_images, spread_over_videos
from .initial_latents import InitialLatentsMixin
from .pipeline_output import LTX2AudioVideoPipelineOutput

logger = logging.getLogger(__name__)


def default_guider() -> Guider:
    """The guider a pipeline gets when none is saved with it: `MultimodalGuider` with the recommended values
    (video cfg 3, stg 1, modality 3, rescale 0.7; audio cfg 7, stg 1, modality 3, rescale 0.7) and the
    model's own STG block (29 for LTX-2.0, 28 for 2.3, chosen by `attention_control_for`)."""
    return MultimodalGuider()


class LTX2PipelineBase(InitialLatentsMixin, PromptEnhancementMixin, DiffusersLTX2Surface, OffloadMixin,
                       DiffusionPipeline, LTX2OfficialLoraLoaderMixin, AccelerationMixin):
    """Components and shared steps of the LTX-2 audio+video pipelines.

    Args:
        scheduler: `LTX2Scheduler` (a diffusers `FlowMatchEulerDiscreteScheduler`, e.g. from a diffusers-format
            repo or assigned later as `pipe.scheduler = ...`, is converted keeping its shift settings; any other
            scheduler is refused).
        vae: `AutoencoderKLLTX2Video`.
        audio_vae: `AutoencoderKLLTX2Audio`.
        text_encoder: `Gemma3ForConditionalGeneration` (LTX-2.0 / 2.3) or `Gemma4UnifiedForConditionalGeneration`
            (LTX-2.5), or `None` when prompts come from a `prompt_encoder`.
        tokenizer: the Gemma tokenizer, or `None`.
        connectors: `LTX2TextConnectors`.
        transformer: `LTX2VideoTransformer3DModel`.
        vocoder: `LTX2Vocoder` or `LTX2VocoderWithBWE`.
        guider: a `Guider`; left out: `MultimodalGuider` with the recommended values; `None`: no guidance
            (the conditional pass only) unless a call passes `guider=` or diffusers' guidance arguments.
        prompt_encoder: optional `PromptEncoder` used instead of the local Gemma (e.g. `LTXAPIPromptEncoder`);
            not saved with the pipeline.
        model_identity: the official checkpoint's model id (its `encrypted_wandb_properties` metadata), recorded
            by `from_single_file` / `ltx2 convert` and saved in `model_index.json`; saved conditioning and API
            embeddings are checked against it.
        model_version: the checkpoint's `model_version` metadata (e.g. "2.3.0"), when known (recorded by
            `from_single_file` / `ltx2 convert`); without it the transformer config tells 2.0 / 2.3 / 2.5 apart
            (`diffusers_ltx2.versions.model_version_of`).
        gemma_version: the text encoder the checkpoint's connectors were trained on (its `gemma_source_checkpoint`
            metadata, e.g. "gemma4-12b-ltx-v1" for LTX-2.5), when declared. The local text encoder is checked
            against these two before it encodes (`loaders.gemma_version.check_gemma_version`).
        duration_head: diffusers' `LTX2DurationHead` (LTX-2.5): a call that leaves `num_frames` out predicts the
            clip length from the prompt (see `pipelines.duration`).
        processor, prompt_enhancer: diffusers' optional prompt-enhancement components.
        audio_scheduler: diffusers' optional separate audio scheduler, accepted as `None` only (LTX-2 samples
            both modalities on one schedule); anything else raises `UnsupportedFeatureError`.
        diffusion_decoder: LTX-2.5's diffusion video decoder (`LTX2VideoDiffusionDecoderModel`), optional; when
            present it decodes the video (official semantics, `pipelines.diffusion_decode`) unless
            `pipe.video_decoder = "conv"`; `pipe.diffusion_tiling` (a `DiffusionTiling`) tiles it.

    Only `text_encoder` and `tokenizer` are needed to build a pipeline that encodes prompts (`encode_prompt`),
    as in diffusers; generating needs every model component.

    LoRAs: `load_lora_weights` takes diffusers-format and official-format LTX-2 LoRAs (see
    `diffusers_ltx2.loaders.lora`); model components are type-annotated so `from_pipe` can move them between
    the pipelines of this package.

    Calls are serialized per shared component (`call_lock`): two threads calling pipelines that share a
    transformer or scheduler run one after the other, each with its own guider.
    """

    model_cpu_offload_seq = ("prompt_enhancer->text_encoder->connectors->duration_head->transformer->vae"
                             "->diffusion_decoder->audio_vae->vocoder")
    vae_memory_budget: int | None = None  # bytes for one VAE decode / encode; drives automatic tiling
    #: which decoder turns video latents into pixels: "auto" (the diffusion decoder when loaded, as the official
    #: 2.5 pipelines with the default VAE file), "diffusion" or "conv"
    video_decoder: str = "auto"
    #: tiles of the diffusion decoder (`pipelines.diffusion_tiling.DiffusionTiling`, official semantics); None: one
    diffusion_tiling = None
    # text_encoder / tokenizer may be None too (API-encoder or embeddings-only folders), without being listed here:
    # `from_pretrained` passes None for those a folder lacks (`diffusers_compat.ABSENT_AS_NONE`)
    _optional_components = ["guider", "processor", "prompt_enhancer", "duration_head", "diffusion_decoder",
                            *DIFFUSERS_ONLY_COMPONENTS]
    #: `None`, or a callable turning the per-step pass executor (`TransformerPasses`) into the one the loop uses
    #: (e.g. `diffusers_ltx2.distributed.ParallelPasses` spreading the passes over ranks).
    pass_executor = None
    _callback_tensor_inputs = ["latents", "audio_latents", "prompt_embeds", "negative_prompt_embeds"]

    def __init_subclass__(cls, **kwargs):
        # This package's pipelines run their calls under `serialized_call`; a user's subclass whose `__call__`
        # delegates to `super().__call__` is then serialized there (wrapping it too would make that a nested call).
        super().__init_subclass__(**kwargs)
        call = cls.__dict__.get("__call__")
        if call is not None and cls.__module__.startswith("diffusers_ltx2.") and not getattr(call, "__serialized__", False):
            cls.__call__ = serialized_call(call)

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
        prompt_encoder=None,
        model_identity: str | None = None,
        model_version: str | None = None,
        gemma_version: str | None = None,
        processor=None,
        prompt_enhancer=None,
        duration_head: LTX2DurationHead | None = None,
        audio_scheduler=None,
        diffusion_decoder: LTX2VideoDiffusionDecoderModel | None = None,
    ):
        super().__init__()
        check_diffusers_components(dict(audio_scheduler=audio_scheduler))
        check_duration_head(duration_head)
        default = isinstance(guider, str)
        if default:
            if guider != "default":
                raise ValueError(f"guider must be a Guider, None (no guidance) or 'default', got {guider!r}")
            guider = default_guider()
        self.register_modules(
            scheduler=scheduler,
            vae=vae,
            audio_vae=audio_vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            connectors=connectors,
            transformer=transformer,
            vocoder=vocoder,
            guider=guider,
            processor=processor,
            prompt_enhancer=prompt_enhancer,
            duration_head=duration_head,
            audio_scheduler=None,
            diffusion_decoder=diffusion_decoder,
        )
        self.register_to_config(model_identity=model_identity, model_version=model_version,
                                gemma_version=gemma_version)
        self._guider_is_default = default  # `components` leaves a default guider out (see DiffusersLTX2Surface)
        self.prompt_encoder = prompt_encoder
        self.video_processor = VideoProcessor(vae_scale_factor=self.vae_spatial_compression_ratio)
        self._interrupt = False
        self._num_timesteps = None

    def __setattr__(self, name, value):
        if name == "scheduler" and value is not None and not isinstance(value, LTX2Scheduler):
            value = as_ltx2_scheduler(value)
        if name == "guider":
            self.__dict__["_guider_is_default"] = False
        super().__setattr__(name, value)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *, quantization: str | None = None,
                        text_encoder_quantization: str | None = None, **kwargs):
        """diffusers' `from_pretrained`; in addition a `transformer/` converted with `ltx2 convert --fp8 keep`
        (float8 weights + scales, `ltx2_fp8.json`) is loaded with float8 weights that are dequantized per call,
        so it takes the memory of the FP8 file.

        Args:
            quantization: quantize the transformer at load: "fp8-cast" / "fp8-scaled-mm" (official), "fp8",
                "int8", "int4" (optimum-quanto), "torchao-..." (torchao); see `diffusers_ltx2.quantization`.
                Saved quantized folders reload as they are.
            text_encoder_quantization: "fp8", "int8" or "int4" (optimum-quanto) for the Gemma text encoder.
            gguf_file: a city96-style GGUF transformer file to load instead of the folder's transformer
                (`diffusers_ltx2.quantization.gguf`).

        Raises:
            ValueError: naming the file, a JSON file of a local folder (`model_index.json`, a component's config)
                that is not readable JSON or is nested too deeply (checked before anything loads).
        """
        from ..conversion.fp8 import FP8_MANIFEST, check_fp8_manifest
        from ..json_files import check_json_files
        from ..quantization.loading import load_fp8_folder, prepare_from_pretrained, quantize_text_encoder_of

        check_json_files(pretrained_model_name_or_path)
        kwargs = prepare_from_pretrained(pretrained_model_name_or_path, kwargs, quantization,
                                         text_encoder_quantization)
        folder = os.path.join(str(pretrained_model_name_or_path), "transformer")
        if "transformer" not in kwargs and os.path.isfile(os.path.join(folder, FP8_MANIFEST)):
            dtype = kwargs.get("dtype", kwargs.get("torch_dtype"))
            if isinstance(dtype, dict):
                dtype = dtype.get("transformer", dtype.get("default"))
            kwargs["transformer"] = load_fp8_folder(folder, dtype=dtype or torch.bfloat16)
        elif "transformer" not in kwargs:
            check_fp8_manifest(folder)
        # diffusers' prompt-enhancement / duration-head components of a diffusers folder are not loaded
        for name in DIFFUSERS_ONLY_COMPONENTS:
            kwargs.setdefault(name, None)
        skip_unloadable_processor(pretrained_model_name_or_path, kwargs)
        hub = {k: kwargs[k] for k in ("cache_dir", "revision", "token", "local_files_only", "proxies") if k in kwargs}
        index = read_model_index(pretrained_model_name_or_path, **hub)
        if "guider" not in kwargs and not saved_by_this_package(index):
            kwargs["guider"] = default_guider()  # a diffusers-layout folder has no guider: add the recommended one
        for name in absent_components(index):
            kwargs.setdefault(name, None)
        pipe = super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        quantize_text_encoder_of(pipe, text_encoder_quantization)
        return pipe

    def save_pretrained(self, save_directory, **kwargs):
        """diffusers' `save_pretrained`; quantized transformers save with their quantization (see
        `diffusers_ltx2.quantization`). Raises `NotImplementedError` before writing anything when the text
        encoder was quantized in memory (`text_encoder_quantization=`), which cannot be serialized."""
        from ..quantization.loading import after_save, before_save

        from .._plain_diffusers import mark

        before_save(self)
        super().save_pretrained(save_directory, **kwargs)
        after_save(self, save_directory)
        mark(save_directory, type(self).__name__)  # plain diffusers then says how to load it

    @classmethod
    def from_single_file(
        cls,
        path: str | os.PathLike,
        *,
        text_encoder=None,
        tokenizer=None,
        dtype: torch.dtype | None = None,
        torch_dtype: torch.dtype | None = None,
        fp8: str | None = None,
        quantization: str | None = None,
        text_encoder_quantization: str | None = None,
        guider: Guider | None | str = "default",
        prompt_encoder=None,
        progress: bool = True,
    ):
        """Build the pipeline straight from an official LTX-2 checkpoint: a single file (2.0 / 2.3) or an LTX-2.5
        file set (a folder, or a list of files; see `diffusers_ltx2.conversion.files`).

        Tensors are streamed into the diffusers modules one at a time (the key mapping of `ltx2 convert`). 2.0 / 2.3:
        Gemma ships separately: pass `text_encoder` and `tokenizer`, or a `prompt_encoder`, or call with
        `prompt_embeds`. 2.5: the set's text encoder file gives `text_encoder` / `tokenizer` (unless passed), its
        diffusion VAE the `diffusion_decoder`, its duration head the `duration_head` (upscalers: `ltx2 convert`).

        Args:
            path: the official `.safetensors` file, or a 2.5 folder / list of files.
            dtype: dtype of the floating weights (`None` keeps the file's); `torch_dtype` is the older spelling
                (as in diffusers, which deprecates it), accepted too.
            fp8: for FP8 files, `"dequantize"` (weight * weight_scale -> bf16) or `"keep"` (float8 weights);
                `None`: "dequantize", or "keep" with `quantization="fp8-cast"` / `"fp8-scaled-mm"` (the file's float8
                weights are kept, with a notice, rather than dequantized and quantized again).
            quantization: quantize the transformer after loading (see `diffusers_ltx2.quantization`); the bf16
                transformer is whole in CPU memory once. With `fp8="keep"`, "fp8-scaled-mm" switches the file's
                float8 layers to the scaled matmul (ltx-core's policy for FP8 checkpoints).
            text_encoder_quantization: quanto mode for the `text_encoder` passed in (quantized in place).

        Raises:
            FileNotFoundError, ConversionError (unknown/missing keys, a 2.5 set missing a file a pipeline needs),
            ValueError (`fp8="keep"` with a quantization other than fp8-cast / fp8-scaled-mm; a torchao mode this
            machine cannot run).
        """
        from ..conversion.loading import check_sources_exist, load_pipeline_components
        from ..quantization import check_quantization, check_quantization_machine
        from ..quantization.loading import (quantize_single_file_transformer, quantize_text_encoder_of,
                                            single_file_fp8_mode)

        check_sources_exist(path)
        if dtype is not None and torch_dtype is not None and dtype != torch_dtype:
            raise ValueError(f"dtype={dtype} and torch_dtype={torch_dtype} disagree; pass only dtype")
        dtype = dtype if dtype is not None else torch_dtype
        check_quantization(quantization)
        check_quantization_machine(quantization, dtype)
        check_quantization(text_encoder_quantization, text_encoder=True)
        fp8 = single_file_fp8_mode(path, fp8, quantization)
        kwargs = load_pipeline_components(path, dtype=dtype, fp8=fp8, progress=progress, text_encoder=text_encoder,
                                          tokenizer=tokenizer)
        quantize_single_file_transformer(kwargs["transformer"], quantization, fp8)
        pipe = cls(scheduler=LTX2Scheduler(), guider=guider, prompt_encoder=prompt_encoder, **kwargs)
        quantize_text_encoder_of(pipe, text_encoder_quantization)
        return pipe

    # -- geometry: diffusers' attribute names come from `DiffusersLTX2Surface` ---------------------------------
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
        check_gemma_version(self.text_encoder, expected=getattr(self.config, "gemma_version", None),
                            model_version=getattr(self.config, "model_version", None))
        if max_sequence_length is None:
            max_sequence_length = min(DEFAULT_MAX_SEQUENCE_LENGTH, int(self.tokenizer.model_max_length))
        return GemmaPromptEncoder(self.tokenizer, self.text_encoder, max_sequence_length=max_sequence_length)

    def encode_text_contexts(
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
        Every embedding is repeated `num_videos_per_prompt` times per prompt, in prompt order; a negative of
        batch 1 is used for every prompt.
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
                "prompt embeddings must be PromptEmbeddings, a conditioning file path or a tensor with its "
                f"attention mask, got {type(embeddings).__name__}"
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

    @property
    def model_version(self) -> str:
        """``"2.0"``, ``"2.3"`` or ``"2.5"``: the recorded ``model_version``, else what the transformer config
        implies."""
        from ..versions import model_version_of

        transformer = getattr(self, "transformer", None)
        return model_version_of(transformer.config if transformer is not None else None,
                                getattr(self.config, "model_version", None))

    def model_identities(self) -> list[str]:
        """Identities prompt embeddings may carry to be accepted by this pipeline: the checkpoint's model id
        and the fingerprint of its text connectors (what locally encoded embeddings record)."""
        from ..loaders.identity import connector_fingerprint

        return [i for i in (self.model_identity, connector_fingerprint(self.connectors)) if i]

    # -- denoising -------------------------------------------------------------------------------------------
    @property
    def interrupt(self) -> bool:
        """Set `pipe._interrupt = True` from a callback to stop denoising early (the clip is still decoded)."""
        return getattr(self, "_interrupt", False)

    @property
    def num_timesteps(self) -> int | None:
        """Denoising steps of the last (or running) call."""
        return getattr(self, "_num_timesteps", None)

    def attention_control_for(self, guider: Guider):
        """Attention control able to run any guider's perturbed / isolated / frozen passes on this transformer.

        Its default STG blocks (for plans that name none, e.g. `MultimodalGuider(skip_blocks=None)`) are the
        official ones for this checkpoint: [29] for LTX-2.0, [28] for 2.3 (`gated_attn` / `cross_attn_mod`
        transformers), clipped to the model's depth. It only touches the transformer while a pass needs it.
        """
        return GuidanceAttentionControl(self.transformer)

    @staticmethod
    def callback_tensor_names(callback, tensor_inputs):
        """The tensors a step callback asks for: a diffusers `PipelineCallback` / `MultiPipelineCallbacks` names
        its own (`callback.tensor_inputs`), as in diffusers; otherwise `callback_on_step_end_tensor_inputs`."""
        from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback

        if isinstance(callback, (PipelineCallback, MultiPipelineCallbacks)):
            return list(callback.tensor_inputs)
        return list(tensor_inputs)

    def _step_callback(self, callback, tensor_inputs, contexts: TextContexts | None = None):
        """Adapt a diffusers-style `callback_on_step_end` to the denoising loop.

        The callback sees `latents` / `audio_latents` (packed float32 tokens `(B, N, C)`) and `prompt_embeds` /
        `negative_prompt_embeds` (connector-stage video contexts `(B, L, D)`, the negative `None` when no
        negative pass runs); tensors it returns replace them for the following steps.
        """
        if callback is None:
            return None
        state = {"contexts": contexts}

        def on_step_end(step, sigma, video, audio):
            ctx = state["contexts"]
            names = {"latents": video.latent, "audio_latents": audio.latent,
                     "prompt_embeds": ctx.positive.video_context if ctx is not None else None,
                     "negative_prompt_embeds": ctx.negative.video_context if ctx is not None and ctx.negative
                     is not None else None}
            out = callback(self, step, sigma, {k: names[k] for k in tensor_inputs}) or {}
            if "latents" in out:
                video = replace(video, latent=out["latents"].to(torch.float32))
            if "audio_latents" in out:
                audio = replace(audio, latent=out["audio_latents"].to(torch.float32))
            if ctx is not None and out.get("prompt_embeds") is not None:
                ctx = replace(ctx, positive=replace(ctx.positive, video_context=out["prompt_embeds"]))
            if ctx is not None and ctx.negative is not None and out.get("negative_prompt_embeds") is not None:
                ctx = replace(ctx, negative=replace(ctx.negative, video_context=out["negative_prompt_embeds"]))
            if ctx is state["contexts"]:
                return video, audio
            state["contexts"] = ctx
            return video, audio, ctx

        return on_step_end

    def set_schedule(self, num_inference_steps: int, sigmas, num_frames: int, height: int, width: int, device):
        """Set the scheduler's sigmas for a clip (custom `sigmas` win over `num_inference_steps`)."""
        num_tokens = self.video_latent_shape(1, num_frames, height, width)[0][1]
        self.scheduler.set_timesteps(
            None if sigmas is not None else num_inference_steps, device=device, sigmas=sigmas, num_tokens=num_tokens
        )
        self._num_timesteps = len(self.scheduler.sigmas) - 1
        self._interrupt = False

    def named_progress_bar(self, total: int, name: str, *, keep_name: bool = False):
        """diffusers' `progress_bar(total=...)` labelled `name` (`keep_name`: unless the caller set a label with
        `set_progress_bar_config(desc=...)`, as the two-stage pipelines do per stage); other settings kept."""
        config = dict(getattr(self, "_progress_bar_config", {}))
        if keep_name and "desc" in config:
            return self.progress_bar(total=total)
        self._progress_bar_config = {**config, "desc": name}
        try:
            return self.progress_bar(total=total)
        finally:
            self._progress_bar_config = config

    def run_denoising(
        self, guider: Guider, video: ModalityLatents, audio: ModalityLatents, contexts: TextContexts, *,
        attention_kwargs=None, max_batch_passes: int | None = None, callback=None, callback_tensor_inputs=("latents",),
        use_cross_timestep: bool = True, cross_modal: bool = True, sampler=None, generator=None,
    ) -> tuple[ModalityLatents, ModalityLatents]:
        """The shared denoising loop with a progress bar, the guider's passes and the user's step callback.

        `use_cross_timestep`: the cross-modal attention modulation follows the official rule of the model's version
        (`versions.cross_timestep_rule`: 2.0/2.3 the other modality's sigma, as ltx-core 1.0.0 and diffusers' default;
        2.5 ltx-core 1.2.0's own-timestep scale/shift and other-sigma gate); `False` is diffusers' "legacy" switch
        (own timesteps everywhere).
        `cross_modal=False`: audio<->video attention off in every pass, for audio-only generation.
        `sampler`: `"euler"` (default), `"euler_ancestral"`, `"res_2s"` or a `schedulers.samplers.Sampler`; the
        stochastic ones take their noise seed from `generator` (see `sampler_seed`).
        """
        from ..versions import cross_timestep_rule

        passes = TransformerPasses(
            self.transformer, attention_control=self.attention_control_for(guider),
            attention_kwargs=attention_kwargs, max_batch_passes=max_batch_passes,
            use_cross_timestep=use_cross_timestep, cross_modal=cross_modal,
            cross_timestep_rule=cross_timestep_rule(self.model_version) if use_cross_timestep else "own",
        )
        if self.pass_executor is not None:
            passes = self.pass_executor(passes)
        with self.named_progress_bar(len(self.scheduler.sigmas) - 1, "denoise", keep_name=True) as bar:
            return denoise(
                passes=passes, guider=guider, scheduler=self.scheduler, video=video, audio=audio, contexts=contexts,
                progress_bar=bar, on_step_end=self._step_callback(callback, callback_tensor_inputs, contexts),
                should_stop=lambda: self._interrupt, sampler=sampler, seed=sampler_seed(sampler, generator),
            )

    def finish(
        self, video: ModalityLatents, audio: ModalityLatents, num_frames: int, height: int, width: int, *,
        output_type: str, generator=None, decode_timestep: float = 0.0, decode_noise_scale: float | None = None,
        return_dict: bool = True, conditioned=None, enhanced_prompts: list[str] | None = None,
    ):
        """Decode the generated tokens (appended conditioning dropped) into the pipeline output.

        `conditioned` (`conditioning.ConditionedLatents`): a frozen source is returned as given (original pixels /
        the original waveform at the vocoder rate) instead of a VAE round trip; audio-only has no frames (`None`).
        `enhanced_prompts`: the prompts prompt enhancement wrote, returned in the output.
        """
        audio_only = conditioned is not None and conditioned.audio_only
        video_latents = None if audio_only else self.unpack_video_latents(video, num_frames, height, width)
        audio_out = self.unpack_audio_latents(audio)
        frames, sample_rate = video_latents, None
        if output_type != "latent":
            pixels = conditioned.video_pixels if conditioned is not None else None
            waveform = conditioned.waveform if conditioned is not None else None
            decode_video = not audio_only and pixels is None
            with self.named_progress_bar(int(decode_video) + int(waveform is None), "decode") as bar:
                if audio_only:
                    frames = None
                elif pixels is not None:
                    frames = self.video_processor.postprocess_video(pixels, output_type=output_type)
                else:
                    frames = self.decode_video(video_latents, output_type, generator=generator,
                                               decode_timestep=decode_timestep, decode_noise_scale=decode_noise_scale)
                    bar.update()
                if waveform is not None:
                    audio_out = waveform.float().cpu()  # a tensor whatever output_type, as decode_audio returns
                else:
                    audio_out = self.decode_audio(audio_out, output_type)
                    bar.update()
            sample_rate = self.audio_sample_rate
        self.maybe_free_model_hooks()
        if not return_dict:
            return frames, audio_out
        return LTX2AudioVideoPipelineOutput(frames=frames, audio=audio_out, sample_rate=sample_rate,
                                            enhanced_prompts=enhanced_prompts)

    # -- images ----------------------------------------------------------------------------------------------
    @staticmethod
    def check_image(image, batch_size: int, total: int | None = None) -> None:
        """Validate an `image` argument (types, shapes, dtype, value range, count) before any model runs; see
        `diffusers_ltx2.pipelines.images.check_image`."""
        check_image(image, batch_size, total)

    def encode_pixels(self, pixels: torch.Tensor, batch_size: int, device) -> torch.Tensor:
        """VAE-encode `(B, 3, F, H, W)` pixels in `[-1, 1]` into normalized diffusion-space latents (the
        posterior mean); a batch of one is broadcast to `batch_size`."""
        pixels = pixels.to(device=device, dtype=self.vae.dtype)
        auto_tile_vae(self.vae, *pixels.shape[2:], budget_bytes=self.vae_memory_budget)
        with torch.no_grad():
            latents = self.vae.encode(pixels).latent_dist.mode()
        latents = L.normalize_video(latents.float(), self.vae.latents_mean, self.vae.latents_std)
        return latents.expand(batch_size, -1, -1, -1, -1) if latents.shape[0] == 1 else latents

    @property
    def default_image_crf(self) -> int:
        """H.264 CRF of image conditions left without one: 18 for LTX-2.4+ checkpoints, 33 before (official
        `detect_params(...).default_image_crf`, keyed on the checkpoint's `model_version`; `versions.default_image_crf`)."""
        from ..versions import default_image_crf

        return default_image_crf(self.model_version)

    def prepare_image(self, image, image_crf: int | None = None):
        """`image=` re-compressed as the official image loader (`images.prepare_images`; `image_crf=None`: the
        model's CRF, `default_image_crf`, for PIL images / image files), before any model runs."""
        return prepare_images(image, image_crf, self.default_image_crf)

    def encode_image(self, image, height: int, width: int, batch_size: int, device) -> torch.Tensor:
        """Resize image(s) to cover the clip, centre-crop (official loader; `prepare_image` re-compresses them
        first) and encode them as normalized first-frame latents `(batch_size, C, 1, h, w)`: one image is used for
        every video, one per prompt is repeated for that prompt's videos (in order), one per video is used as is."""
        pixels = image_pixels(image, height, width)
        return spread_over_videos(self.encode_pixels(pixels, pixels.shape[0], device), batch_size)

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
                     decode_timestep: float | list[float] = 0.0, decode_noise_scale: float | list[float] | None = None):
        """VAE-decode denormalized latents and post-process to `output_type`.

        `decode_timestep` / `decode_noise_scale` (timestep-conditioned VAEs only): one value or one per video,
        as in diffusers; the noise scale defaults to the timestep. Tiled automatically above one official tile or over
        `vae_memory_budget` (`diffusers_ltx2.memory.vae_tiling`). With a `diffusion_decoder` (LTX-2.5) and
        `video_decoder` "auto" / "diffusion", that decoder runs instead (`generator` seeds its pixel noise).
        """
        from .diffusion_decode import diffusion_decode, uses_diffusion_decoder

        if uses_diffusion_decoder(self.video_decoder, getattr(self, "diffusion_decoder", None)):
            video = diffusion_decode(self.diffusion_decoder, latents, generator=generator, tiling=self.diffusion_tiling,
                                     latent_statistics=(self.vae.latents_mean, self.vae.latents_std))
            return self.video_processor.postprocess_video(video, output_type=output_type)
        latents = latents.to(self.vae.dtype)
        timestep = None
        if self.vae.config.timestep_conditioning:
            batch = latents.shape[0]

            def per_video(value):
                value = torch.as_tensor(value, dtype=torch.float32, device=latents.device).flatten()
                return value.expand(batch) if value.numel() == 1 else value

            decode_t = per_video(decode_timestep)
            noise_scale = (decode_t if decode_noise_scale is None else per_video(decode_noise_scale)).view(-1, 1, 1, 1, 1)
            mean, std = self.vae.latents_mean, self.vae.latents_std
            normalized = L.normalize_video(latents.float(), mean, std)
            noise = randn_tensor(normalized.shape, generator=generator, device=latents.device, dtype=torch.float32)
            normalized = (1 - noise_scale) * normalized + noise_scale * noise
            latents = L.denormalize_video(normalized, mean, std).to(self.vae.dtype)
            timestep = decode_t.to(latents.dtype)
        r_t, r_s = self.vae_temporal_ratio, self.vae_spatial_ratio
        auto_tile_vae(self.vae, (latents.shape[2] - 1) * r_t + 1, latents.shape[3] * r_s, latents.shape[4] * r_s,
                      budget_bytes=self.vae_memory_budget, batch_size=latents.shape[0])
        with torch.no_grad():  # diffusers' tiles, streamed into the output (`memory.tiled_decode`)
            video = streamed_decode(self.vae, latents, timestep)
        return self.video_processor.postprocess_video(video, output_type=output_type)

    def decode_audio(self, latents: torch.Tensor, output_type: str):
        """Audio VAE -> mel -> vocoder; float32 stereo waveforms `(B, 2, samples)` as a CPU `torch.Tensor` for
        every output type (diffusers' LTX-2 pipelines return the vocoder's tensor whatever `output_type`)."""
        with torch.no_grad():
            mel = self.audio_vae.decode(latents.to(self.audio_vae.dtype), return_dict=False)[0]
            wave = self.vocoder(mel.to(self.vocoder.dtype)).float()
        return wave.cpu()
