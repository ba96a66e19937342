"""The two-stage recipe (official ltx-pipelines 1.0.0 `ti2vid_two_stages.py`, `distilled.py`, and the shared stage
2 of `keyframe_interpolation.py` / `a2vid_two_stage.py` / `ic_lora.py`) as a mixin of stages:

1. Stage 1 at `(H/2, W/2)`: the call's schedule and guider (`distilled=True`: the 8 distilled sigmas, no
   guidance); conditions encoded at the half size; the distilled LoRA off.
2. `upsample_latents`: un-normalise the video latent with the VAE's per-channel statistics, run the latent
   upsampler, re-normalise (`ltx_core.model.upsampler.upsample_video`).
3. Stage 2 at `(H, W)` (`refine_stage`): the upsampled video and the stage-1 audio are the clean starting latents,
   re-noised with `noise_scale = sigmas[0] = 0.909375` where the denoise mask is > 0 (same generator, video noise
   then audio), conditions re-applied at full size (images re-encoded, A2V audio frozen again), sigmas
   `[0.909375, 0.725, 0.421875, 0]`, one unguided pass per step, the distilled LoRA active on top of the user's
   LoRAs (not for distilled checkpoints).
4. Decode. As ltx-pipelines 1.0.0 does, the *stage-2* audio latent is decoded (with A2V the audio is frozen in both
   stages and the input waveform is returned).

Both stages are `Stage` values run by the one `run_stages`; the LoRA switch is a PEFT adapter activation
(`loaders.adapter_state.adapters_active`): nothing is reloaded or copied, and the pipeline's adapters are exactly
as before after the call.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from diffusers import (
    AutoencoderKLLTX2Audio,
    AutoencoderKLLTX2Video,
    LTX2VideoDiffusionDecoderModel,
    LTX2VideoTransformer3DModel,
)
from diffusers.pipelines.ltx2 import LTX2DurationHead, LTX2TextConnectors, LTX2Vocoder, LTX2VocoderWithBWE
from diffusers.pipelines.ltx2.latent_upsampler import LTX2LatentUpsamplerModel

from ..guiders import ClassifierFreeGuidance, Guider
from ..latents import layout as L
from ..latents.noiser import StartLatents
from ..schedulers import DISTILLED_REFINE_SIGMAS
from ..schedulers.samplers import EULER, Sampler
from . import validation as V
from .stage import AdapterSet, Stage, StageResult
from .upsampling import upsample_latents, upsampler_scale

#: adapter name `load_distilled_lora` gives the distilled LoRA.
DISTILLED_ADAPTER = "ltx2_distilled"
#: resolution unit of two-stage generation: the half-size stage must still be a multiple of the VAE's 32.
TWO_STAGE_MULTIPLE = 64


def unguided() -> Guider:
    """The guider of stage 2 and of distilled stage 1: one conditional pass per step (official
    `simple_denoising_func`)."""
    return ClassifierFreeGuidance(1.0, 1.0)


class TwoStageMixin:
    """The parts of the two-stage recipe a pipeline class gains by mixing this in before its base class: the
    `latent_upsampler` component, `upsample_latents`, the distilled LoRA adapter, the two-stage checks and the
    two stages (`two_stages`: stage 1 at half size, the refinement `refine_stage` starting from its upsampled
    latents). It needs the `LTX2PipelineBase` machinery."""

    #: `generate_long_video` runs one call per window guided by the previous window's latents at the call's size; a
    #: call whose first stage runs at half size cannot take them (`pipelines.sliding` refuses it)
    supports_sliding_windows = False

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
        latent_upsampler: LTX2LatentUpsamplerModel | None = None,
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
        """The base pipeline's components (`LTX2PipelineBase`: `guider` left out = the recommended
        `MultimodalGuider`, `None` = no guidance; LTX-2.5's `diffusion_decoder`) plus `latent_upsampler`.

        Raises:
            ValueError: a `latent_upsampler` that is another model, made for other latents, or has NaN / inf
                weights (`conversion.upsampler.check_latent_upsampler`), before anything runs.
        """
        super().__init__(scheduler=scheduler, vae=vae, audio_vae=audio_vae, text_encoder=text_encoder,
                         tokenizer=tokenizer, connectors=connectors, transformer=transformer, vocoder=vocoder,
                         guider=guider, prompt_encoder=prompt_encoder, model_identity=model_identity,
                         model_version=model_version, gemma_version=gemma_version, processor=processor,
                         prompt_enhancer=prompt_enhancer, duration_head=duration_head,
                         audio_scheduler=audio_scheduler, diffusion_decoder=diffusion_decoder)
        from ..conversion.upsampler import check_latent_upsampler

        check_latent_upsampler(latent_upsampler, getattr(getattr(vae, "config", None), "latent_channels", None))
        self.register_modules(latent_upsampler=latent_upsampler)

    # -- latent-only entry point -----------------------------------------------------------------------------
    def upsample_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Upsample normalized `(B, C, F, h, w)` video latents with `latent_upsampler` (official `upsample_video`:
        un-normalise with the VAE statistics, upsample, re-normalise); returns `(B, C, F, h*s, w*s)` float32.
        For latents returned by `output_type="latent"` (denormalized VAE latents), normalize first with
        `diffusers_ltx2.latents.layout.normalize_video(x, pipe.vae.latents_mean, pipe.vae.latents_std)`.
        Raises `ValueError` without a `latent_upsampler` or for a wrong rank / channel count."""
        if self.latent_upsampler is None:
            raise ValueError("this pipeline has no latent_upsampler: pass latent_upsampler= (an "
                             "LTX2LatentUpsamplerModel, see `ltx2 convert --upsampler`)")
        return upsample_latents(latents.float(), self.latent_upsampler, self.vae.latents_mean, self.vae.latents_std)

    # -- the distilled LoRA ----------------------------------------------------------------------------------
    def load_distilled_lora(self, path_or_state_dict, strength: float = 1.0, **kwargs) -> str:
        """Load the distilled LoRA (official `ltx-2-19b-distilled-lora-*.safetensors` or diffusers format) as the
        PEFT adapter `"ltx2_distilled"`; it stays inactive except during stage 2, where it is added on top of the
        user's active LoRAs at `strength` (official `--distilled-lora PATH STRENGTH`)."""
        if DISTILLED_ADAPTER in self.ic_lora_adapters:
            raise ValueError("a distilled LoRA is already loaded; delete_adapters('ltx2_distilled') first")
        before = {id(m): list(m.active_adapters) for m in _layers(self)}
        self.load_lora_weights(path_or_state_dict, adapter_name=DISTILLED_ADAPTER, strength=strength,
                               reference_downscale_factor=1, **kwargs)
        for m in _layers(self):  # inactive outside stage 2; other layers keep what they had
            m._active_adapter = [n for n in before.get(id(m), m.active_adapters) if n != DISTILLED_ADAPTER]
        return DISTILLED_ADAPTER

    @property
    def distilled_lora_loaded(self) -> bool:
        return DISTILLED_ADAPTER in self.ic_lora_adapters

    # -- checks ------------------------------------------------------------------------------------------------
    def check_two_stage(self, height, width, *, distilled: bool, distilled_lora_strength,
                        stage_1_distilled_lora_strength=None) -> None:
        """Two-stage rules, checked before any model runs: sizes multiples of 64 (the half-size stage must be a
        multiple of 32), a latent upsampler, the distilled LoRA unless the checkpoint is distilled, and positive
        LoRA strengths (a stage-1 strength needs the distilled LoRA: not with `distilled=True`)."""
        V.check_resolution(height, width, TWO_STAGE_MULTIPLE)
        if self.latent_upsampler is None:
            raise ValueError("two-stage generation needs a latent_upsampler (convert the official "
                             "ltx-2-spatial-upscaler-x2 file with `ltx2 convert --upsampler`)")
        if upsampler_scale(self.latent_upsampler) != 2.0:
            raise ValueError(f"the two-stage recipe generates at half size: it needs an x2 upsampler, this one is "
                             f"x{upsampler_scale(self.latent_upsampler)} (use upsample_latents for other stages)")
        if not distilled and not self.distilled_lora_loaded:
            raise ValueError("stage 2 runs with the distilled LoRA: call pipe.load_distilled_lora(path) first, or "
                             "pass distilled=True for a distilled checkpoint")
        if distilled_lora_strength is not None:
            V.check_positive("distilled_lora_strength", distilled_lora_strength)
        if stage_1_distilled_lora_strength is not None:
            if distilled:
                raise ValueError("stage_1_distilled_lora_strength needs the distilled LoRA: not with distilled=True")
            V.check_positive("stage_1_distilled_lora_strength", stage_1_distilled_lora_strength)

    def default_stage_1_sampler(self, distilled: bool) -> str:
        """Stage 1's sampler when a call leaves it out: `"euler_ancestral"` with `distilled=True` on LTX-2.5 (official
        `DistilledPipeline`: the ancestral stage 1 from model version 2.5 on), else `"euler"`."""
        from ..versions import is_at_least

        return "euler_ancestral" if distilled and is_at_least(self.model_version, (2, 5)) else "euler"

    def two_stages(self, call, *, distilled: bool, distilled_lora_strength: float | None = None,
                   stage_1_distilled_lora_strength: float | None = None, refine_audio: bool = True,
                   stage_1_conditions=None, stage_2_conditions=None, stage_2_keep: frozenset | None = None,
                   stage_1_name: str | None = None, skip_stage_2: bool = False) -> list[Stage]:
        """Stage 1 at half the call's size (its guider, sigmas, conditions, sampler: `call.stage()`, the distilled
        LoRA off) and the refinement at full size (`refine_stage`, with `call.stage_2_sampler`).

        Args:
            call: the resolved `PipelineCall` (its geometry is the output's).
            distilled: distilled checkpoint: stage 2 adds no LoRA (else the distilled LoRA at
                `distilled_lora_strength`, default the one given to `load_distilled_lora`).
            stage_1_distilled_lora_strength: the distilled LoRA in stage 1 too, at this strength (official HQ).
            refine_audio: `False`: the stage-1 audio is the one returned (official HQ: stage 2 refines the video).
            stage_1_conditions, stage_2_conditions: per-stage conditions (default: the call's in both).
            stage_2_keep: the user's adapters kept in stage 2 (`None`: all; official `ic_lora.py`: none).
            stage_1_name: stage 1's progress-bar description.
            skip_stage_2: stage 1 alone (decoded at half size).
        """
        g = call.geometry
        half = replace(g, height=g.height // 2, width=g.width // 2)
        name = stage_1_name or f"stage 1/2 ({half.height}x{half.width}{', distilled' if distilled else ''})"
        conditions = call.conditions if stage_1_conditions is None else tuple(stage_1_conditions)
        stage_1_add = () if stage_1_distilled_lora_strength is None else (
            (DISTILLED_ADAPTER, float(stage_1_distilled_lora_strength)),)
        stage_1 = call.stage(geometry=half, conditions=conditions, name=name,
                             adapters=AdapterSet(drop=frozenset({DISTILLED_ADAPTER}), add=stage_1_add))
        if skip_stage_2:
            return [stage_1]
        add = () if distilled else ((DISTILLED_ADAPTER, float(
            self.ic_lora_adapters[DISTILLED_ADAPTER].strength if distilled_lora_strength is None
            else distilled_lora_strength)),)  # the default strength is recorded on the transformer (from_pipe)
        refine = self.refine_stage(
            g, conditions=call.conditions if stage_2_conditions is None else tuple(stage_2_conditions),
            adapters=AdapterSet(drop=frozenset({DISTILLED_ADAPTER}), keep=stage_2_keep, add=add), device=call.device,
            sampler=call.stage_2_sampler)
        return [stage_1, refine if refine_audio else replace(refine, keep_previous=("audio",))]

    def refine_stage(self, geometry, *, conditions=(), adapters: AdapterSet | None = None, device=None,
                     sampler: Sampler = EULER) -> Stage:
        """Stage 2 of the recipe at `geometry` (official `denoise_audio_video(..., noise_scale=sigmas[0],
        initial_video_latent=, initial_audio_latent=)` with `simple_denoising_func`): `DISTILLED_REFINE_SIGMAS`,
        unguided, starting from the previous stage's upsampled video and its audio (`upsampled_start`), stepped by
        `sampler` (official: Euler; the HQ pipeline res_2s)."""
        tokens = geometry.latent_frames * geometry.tokens_per_latent_frame
        sigmas = self.scheduler.sigmas_for(sigmas=list(DISTILLED_REFINE_SIGMAS), num_tokens=tokens).to(device)
        return Stage(geometry=geometry, sigmas=sigmas, guider=unguided(), conditions=tuple(conditions),
                     adapters=adapters, sampler=sampler,
                     name=f"stage 2/2 ({geometry.height}x{geometry.width}, refine)",
                     from_previous=self.upsampled_start)

    def upsampled_start(self, stage: Stage, previous: StageResult) -> Stage:
        """`stage` starting from `previous`'s latents: its video upsampled (`upsample_latents`), its audio as is,
        both re-noised to `stage.sigmas[0]`."""
        g = previous.geometry
        grid = L.unpack_video(previous.video.target(), g.latent_frames, g.latent_height, g.latent_width)
        scale = float(stage.sigmas[0])
        return replace(stage, from_previous=None,
                       video=StartLatents(clean=L.pack_video(self.upsample_latents(grid)), noise_scale=scale),
                       audio=StartLatents(clean=previous.audio.target(), noise_scale=scale))


def _layers(pipe):
    from ..loaders.adapter_state import lora_layers

    return [m for model in (pipe.transformer, pipe.connectors) if model is not None for m in lora_layers(model)]
