"""`LTX2PipelineBase`: the components and the steps every LTX-2 pipeline of this package shares.

A call: `pipelines.call.resolve_call` checks and resolves the arguments into a `PipelineCall`; the pipeline makes
its list of `pipelines.stage.Stage`s from it; `generate` enhances the prompts when asked
(`pipelines.enhancement`), encodes them once (`pipelines.prompts`), predicts the clip length when the duration head
decides it (`pipelines.duration`), runs the stages (`pipelines.runtime`, `stage.run_stages`) and `finish`es
(decodes). The concrete pipelines only compose stages in their `__call__`; nothing here is duplicated between them.
"""

from __future__ import annotations

import logging
import os
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
from ..guiders import Guider, MultimodalGuider
from ..loaders.lora import LTX2OfficialLoraLoaderMixin
from ..memory.offload import OffloadMixin
from ..memory.tiled_decode import streamed_decode
from ..memory.vae_tiling import auto_tile_vae
from ..schedulers import LTX2Scheduler
from ..latents import layout as L
from ..latents.geometry import ClipGeometry
from ..latents.state import ModalityLatents
from ..transformer import GuidanceAttentionControl
from .call_lock import serialized_call
from .diffusers_compat import (
    DIFFUSERS_ONLY_COMPONENTS, absent_components, as_ltx2_scheduler, check_diffusers_components, read_model_index,
    saved_by_this_package,
)
from .diffusers_surface import DiffusersLTX2Surface
from .duration import check_duration_head
from .encoder import ModelLatentEncoder
from .enhancement import PromptEnhancementMixin, skip_unloadable_processor
from .images import check_image, first_frame_latents, prepare_images
from .pipeline_output import LTX2AudioVideoPipelineOutput
from .prompts import PromptContextsMixin
from .runtime import named_progress_bar, stage_runtime
from .stage import StageResult, run_stages

logger = logging.getLogger(__name__)


def default_guider() -> Guider:
    """The guider a pipeline gets when none is saved with it: `MultimodalGuider` with the recommended values
    (video cfg 3, stg 1, modality 3, rescale 0.7; audio cfg 7, stg 1, modality 3, rescale 0.7) and the
    model's own STG block (29 for LTX-2.0, 28 for 2.3, chosen by `attention_control_for`)."""
    return MultimodalGuider()


class LTX2PipelineBase(PromptContextsMixin, PromptEnhancementMixin, DiffusersLTX2Surface, OffloadMixin,
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
        from ..conversion.pipeline_components import check_sources_exist, load_pipeline_components
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

    # -- running: stages, then decoding -----------------------------------------------------------------------
    def generate(self, call, stages):
        """Run a resolved call (`pipelines.call.PipelineCall`) and decode it.

        The call's prompts are enhanced when it asks for it (`call.enhancement`) and encoded once; a clip length
        left to the duration head is predicted from them (`call.predict_length`); then `stages` - a list of
        `Stage`s, or `call -> list` when the stages depend on the final call (a predicted length) - run in order
        (`stage.run_stages`) and the last result is `finish`ed.

        Raises:
            ValueError: a list of stages for a call whose length is still to be predicted (before any model runs).
        """
        if call.duration is not None and not callable(stages):
            raise ValueError("the clip length of this call is predicted after encoding: pass its stages as a "
                             "function of the call")
        self._interrupt = False
        enhanced = self.enhance_call_prompts(call.enhancement, call.inputs.prompts)
        contexts = self.encode_text_contexts(
            enhanced or call.inputs.prompts, call.inputs.negative_prompts, prompt_embeds=call.inputs.prompt_embeds,
            negative_prompt_embeds=call.inputs.negative_prompt_embeds, need_negative=call.guider.uses_negative_prompt,
            num_videos_per_prompt=call.num_videos_per_prompt, max_sequence_length=call.max_sequence_length,
            device=call.device,
        )
        call = call.predict_length(self, contexts)
        stages = stages(call) if callable(stages) else stages
        return self.finish(run_stages(stages, stage_runtime(self, call, contexts)), call, enhanced_prompts=enhanced)

    def finish(self, result: StageResult, call, enhanced_prompts: list[str] | None = None):
        """Decode a stage's final tokens (appended conditioning dropped) into the pipeline output.

        A frozen source (`result.conditioned`) is returned as given (original pixels / the original waveform at the
        vocoder rate) instead of a VAE round trip; audio-only has no frames (`None`). Decoding follows
        `call.output` (`OutputOptions`), under a "decode" progress bar; the latents are unpacked on the result's
        geometry (a two-stage call interrupted after stage 1 returns the half-size clip). `enhanced_prompts`: the
        prompts prompt enhancement wrote, returned in the output.
        """
        g, out, conditioned = result.geometry, call.output, result.conditioned
        audio_only = conditioned.audio_only
        video_latents = None if audio_only else self.unpack_video_latents(result.video, g.num_frames, g.height,
                                                                          g.width)
        audio_out = self.unpack_audio_latents(result.audio)
        frames, sample_rate = video_latents, None
        if out.output_type != "latent":
            pixels, waveform = conditioned.video_pixels, conditioned.waveform
            decodes_video = not audio_only and pixels is None
            with named_progress_bar(self, int(decodes_video) + int(waveform is None), "decode") as bar:
                if audio_only:
                    frames = None
                elif pixels is not None:
                    frames = self.video_processor.postprocess_video(pixels, output_type=out.output_type)
                else:
                    frames = self.decode_video(video_latents, out.output_type, generator=call.generator,
                                               decode_timestep=out.decode_timestep,
                                               decode_noise_scale=out.decode_noise_scale)
                    bar.update()
                if waveform is not None:
                    audio_out = waveform.float().cpu()  # a tensor whatever output_type, as decode_audio returns
                else:
                    audio_out = self.decode_audio(audio_out, out.output_type)
                    bar.update()
            sample_rate = self.audio_sample_rate
        self.maybe_free_model_hooks()
        if not out.return_dict:
            return frames, audio_out
        return LTX2AudioVideoPipelineOutput(frames=frames, audio=audio_out, sample_rate=sample_rate,
                                            enhanced_prompts=enhanced_prompts)

    # -- images ----------------------------------------------------------------------------------------------
    @staticmethod
    def check_image(image, batch_size: int, total: int | None = None) -> None:
        """Validate an `image` argument (types, shapes, dtype, value range, count) before any model runs; see
        `diffusers_ltx2.pipelines.images.check_image`."""
        check_image(image, batch_size, total)

    def latent_encoder(self, device=None) -> ModelLatentEncoder:
        """The `conditioning.LatentEncoder` over this pipeline's VAEs and transformer (what conditions get)."""
        return ModelLatentEncoder(self.transformer, self.vae, getattr(self, "audio_vae", None),
                                  device=device or self._execution_device,
                                  output_sample_rate=self.audio_sample_rate if self.vocoder is not None else 24000,
                                  vae_memory_budget=self.vae_memory_budget)

    def encode_pixels(self, pixels: torch.Tensor, batch_size: int, device) -> torch.Tensor:
        """VAE-encode `(B, 3, F, H, W)` pixels in `[-1, 1]` into normalized diffusion-space latents (the
        posterior mean); a batch of one is broadcast to `batch_size` (`ModelLatentEncoder.encode_video`)."""
        return self.latent_encoder(device).encode_video(pixels, batch_size)

    @property
    def default_image_crf(self) -> int:
        """H.264 CRF of image conditions left without one: 18 for LTX-2.4+ checkpoints, 33 before (official
        `detect_params(...).default_image_crf`, keyed on the checkpoint's `model_version`;
        `versions.default_image_crf`)."""
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
        return first_frame_latents(image, height, width, batch_size, self.latent_encoder(device))

    # -- geometry ------------------------------------------------------------------------------------------------
    def clip_geometry(self, batch_size: int, num_frames: int, height: int, width: int,
                      frame_rate: float) -> ClipGeometry:
        """The `ClipGeometry` of a clip on this pipeline's VAEs (compression ratios, audio latent rate) and model (the
        CRF of its image conditions, `default_image_crf`; its conditioning rule, `versions.conditioning_rule`)."""
        from ..versions import conditioning_rule

        per_second = L.audio_latents_per_second(self.audio_vae)
        return ClipGeometry(
            batch_size=batch_size, num_frames=num_frames, height=height, width=width, frame_rate=float(frame_rate),
            temporal_ratio=self.vae_temporal_compression_ratio, spatial_ratio=self.vae_spatial_compression_ratio,
            audio_latents_per_second=per_second,
            audio_latent_length=L.audio_latent_length(num_frames, frame_rate, per_second),
            image_crf=self.default_image_crf, conditioning_rule=conditioning_rule(self.model_version),
        )

    def audio_latent_shape(self, batch_size: int, num_frames: int, frame_rate: float):
        """`(packed, unpacked)` shapes of the audio latents of a clip."""
        length = L.audio_latent_length(num_frames, frame_rate, L.audio_latents_per_second(self.audio_vae))
        channels = self.transformer.config.audio_in_channels
        mel = self.audio_vae.config.mel_bins // self.audio_vae.mel_compression_ratio
        return (batch_size, length, channels), (batch_size, channels // mel, length, mel)

    def video_latent_shape(self, batch_size: int, num_frames: int, height: int, width: int):
        """`(packed, unpacked)` shapes of the video latents of a clip."""
        f, h, w = L.latent_video_size(num_frames, height, width, self.vae_temporal_compression_ratio,
                                      self.vae_spatial_compression_ratio)
        c = self.transformer.config.in_channels
        return (batch_size, f * h * w, c), (batch_size, c, f, h, w)

    def as_clean_tokens(self, latents: torch.Tensor, audio: bool = False) -> torch.Tensor:
        """diffusers' clean `latents` / `audio_latents` as normalized packed tokens: unpacked ones are in the VAE's
        space (what `output_type="latent"` returns: `(B, C, F, H, W)` / `(B, C, T, M)`), packed ones `(B, N, C)`
        are taken as normalized tokens."""
        latents = latents.float()
        if audio and latents.ndim == 4:
            return L.normalize_audio_tokens(L.pack_audio(latents), self.audio_vae.latents_mean,
                                            self.audio_vae.latents_std)
        if not audio and latents.ndim == 5:
            return L.pack_video(L.normalize_video(latents, self.vae.latents_mean, self.vae.latents_std))
        return latents

    # -- decoding --------------------------------------------------------------------------------------------
    def unpack_video_latents(self, video: ModalityLatents, num_frames: int, height: int, width: int):
        """Target tokens -> denormalized `(B, C, F, H, W)` VAE latents."""
        f, h, w = L.latent_video_size(num_frames, height, width, self.vae_temporal_compression_ratio,
                                      self.vae_spatial_compression_ratio)
        grid = L.unpack_video(video.target(), f, h, w)
        return L.denormalize_video(grid, self.vae.latents_mean, self.vae.latents_std)

    def unpack_audio_latents(self, audio: ModalityLatents):
        """Audio tokens -> denormalized `(B, C, T, M)` audio VAE latents."""
        tokens = L.denormalize_audio_tokens(audio.target(), self.audio_vae.latents_mean, self.audio_vae.latents_std)
        mel = self.audio_vae.config.mel_bins // self.audio_vae.mel_compression_ratio
        return L.unpack_audio(tokens, mel)

    def decode_video(self, latents: torch.Tensor, output_type: str, *, generator=None,
                     decode_timestep: float | list[float] = 0.0, decode_noise_scale: float | list[float] | None = None,
                     output_device: torch.device | str | None = None):
        """VAE-decode denormalized latents and post-process to `output_type`.

        `decode_timestep` / `decode_noise_scale` (timestep-conditioned VAEs only): one value or one per video,
        as in diffusers; the noise scale defaults to the timestep. Tiled automatically above one official tile or over
        `vae_memory_budget` (`diffusers_ltx2.memory.vae_tiling`). With a `diffusion_decoder` (LTX-2.5) and
        `video_decoder` "auto" / "diffusion", that decoder runs instead (`generator` seeds its pixel noise).
        `output_device` (e.g. "cpu" for a long clip): where the frames are assembled and post-processed; a tiled VAE
        decode copies each finished tile there, so the decoding device holds one tile, not the clip.
        """
        from .diffusion_decode import diffusion_decode, uses_diffusion_decoder

        if uses_diffusion_decoder(self.video_decoder, getattr(self, "diffusion_decoder", None)):
            video = diffusion_decode(self.diffusion_decoder, latents, generator=generator, tiling=self.diffusion_tiling,
                                     latent_statistics=(self.vae.latents_mean, self.vae.latents_std))
            video = video if output_device is None else video.to(output_device)
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
        r_t, r_s = self.vae_temporal_compression_ratio, self.vae_spatial_compression_ratio
        auto_tile_vae(self.vae, (latents.shape[2] - 1) * r_t + 1, latents.shape[3] * r_s, latents.shape[4] * r_s,
                      budget_bytes=self.vae_memory_budget, batch_size=latents.shape[0])
        with torch.no_grad():  # diffusers' tiles, streamed into the output (`memory.tiled_decode`)
            video = streamed_decode(self.vae, latents, timestep, output_device=output_device)
        return self.video_processor.postprocess_video(video, output_type=output_type)

    def decode_audio(self, latents: torch.Tensor, output_type: str):
        """Audio VAE -> mel -> vocoder; float32 stereo waveforms `(B, 2, samples)` as a CPU `torch.Tensor` for
        every output type (diffusers' LTX-2 pipelines return the vocoder's tensor whatever `output_type`)."""
        with torch.no_grad():
            mel = self.audio_vae.decode(latents.to(self.audio_vae.dtype), return_dict=False)[0]
            wave = self.vocoder(mel.to(self.vocoder.dtype)).float()
        return wave.cpu()
