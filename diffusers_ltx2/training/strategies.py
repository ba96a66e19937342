"""Training strategies: a batch of precomputed latents + the step's random draws -> the transformer's inputs,
the flow-matching targets and the loss masks.

Sources followed: the official `text_to_video` and `video_to_video` strategies (`ltx_trainer/training_strategies/`,
LTX-2 repository). The token state is built with the same code the inference pipelines use, so what is trained is
what runs: `latents.layout.pack_video` / `pack_audio` (official patchifier order), RoPE positions from the
transformer's own `prepare_video_coords` (pixel boxes, causal fix, seconds, `pipelines.encoder.ModelLatentEncoder`),
for IC-LoRA the `conditioning.ReferenceVideo` condition (positions on the reference's small grid scaled by the
reference downscale factor), and the one noiser (`latents.noiser.noise_tokens`, at the step's sigma per sample).

One deliberate difference from the official trainer: reference tokens are appended *after* the target tokens
(as our inference pipeline and ltx-pipelines' `VideoConditionByReferenceLatent` do) rather than before them. The
transformer has no causal structure, so the outputs per token are the same up to float rounding; the loss is on
the target tokens either way.

Without audio (IC-LoRA, or text-to-video with `with_audio: false`) the official trainer disables the audio
modality; here the audio stream gets one dummy token and audio<->video cross-attention is switched off in every
block (`isolate_modalities`), which is the same computation for the video tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..conditioning import ConditioningState, ReferenceVideo
from ..latents import layout as L
from ..latents.geometry import ClipGeometry
from ..latents.noiser import noise_tokens
from ..latents.state import ModalityLatents
from ..loaders.prompt_embeddings import PromptEmbeddings
from ..pipelines.encoder import ModelLatentEncoder
from . import objective, timesteps
from .config import TrainingConfig, VideoToVideoConfig

__all__ = ["StepNoise", "TrainingInputs", "draw_step_noise", "build_inputs", "sample_generators"]


@dataclass
class StepNoise:
    """The random draws of one step: `sigma` `(B,)`, `first_frame` `(B,)` bool (first latent frame given clean),
    `video_noise` `(B, N, C)` on the target tokens, `audio_noise` `(B, T, C_a)` or `None`."""

    sigma: torch.Tensor
    first_frame: torch.Tensor
    video_noise: torch.Tensor
    audio_noise: torch.Tensor | None


@dataclass
class TrainingInputs:
    """Transformer inputs and loss terms of one step.

    `video` / `audio`: token states (noisy latent, clean, denoise mask, positions); `sigma` `(B,)`;
    `video_target` `(B, N, C)` velocity targets of the target tokens and `video_loss_mask` `(B, N)`;
    `audio_target` / `audio_loss_mask` when audio is trained (else `None`); `isolate_audio`: audio<->video
    attention off (no audio trained)."""

    video: ModalityLatents
    audio: ModalityLatents
    contexts: PromptEmbeddings
    sigma: torch.Tensor
    video_target: torch.Tensor
    video_loss_mask: torch.Tensor
    audio_target: torch.Tensor | None
    audio_loss_mask: torch.Tensor | None
    isolate_audio: bool


def sample_generators(seed: int, sample_indices: list[int]) -> list[torch.Generator]:
    """One generator per sample, seeded from `(seed, global sample index)`: the draws of a sample do not depend on
    how samples are split over processes or gradient-accumulation steps (data-parallel runs match one process with
    the whole batch; a resumed run draws what the uninterrupted one drew)."""
    return [torch.Generator().manual_seed(seed * 1_000_003 + i) for i in sample_indices]


def draw_step_noise(config: TrainingConfig, batch: dict, generators: list[torch.Generator]) -> StepNoise:
    """Per sample, in this order: sigma (the configured sampler), the first-frame coin, video noise, audio noise."""
    fm = config.flow_matching
    lat = batch["latents"]
    b, c, f, h, w = lat.shape
    n = f * h * w
    p = config.training_strategy.first_frame_conditioning_p
    sig, first, vn, an = [], [], [], []
    for g in generators:
        sig.append(timesteps.sample_sigmas(fm.timestep_sampling_mode, 1, n, fm.timestep_sampling_params, g))
        first.append(torch.rand((1,), generator=g) < p if p > 0 else torch.zeros(1, dtype=torch.bool))
        vn.append(torch.randn((1, n, c), generator=g))
        if config.trains_audio:
            a = batch["audio_latents"]
            an.append(torch.randn((1, a.shape[2], a.shape[1] * a.shape[3]), generator=g))
    if len(generators) != b:
        raise ValueError(f"{len(generators)} generators for a batch of {b}")
    return StepNoise(torch.cat(sig), torch.cat(first), torch.cat(vn), torch.cat(an) if an else None)


def build_inputs(config: TrainingConfig, transformer, batch: dict, noise: StepNoise) -> TrainingInputs:
    """Token states, targets and loss masks of a batch (deterministic given `noise`)."""
    strategy = config.training_strategy
    x0_grid = batch["latents"].float()
    b, _, f, h, w = x0_grid.shape
    device = x0_grid.device
    fps = float(batch["fps"][0])
    x0 = L.pack_video(x0_grid)
    mask = torch.ones(x0.shape[:2], device=device)
    mask[noise.first_frame.to(device), : h * w] = 0.0  # official: the first latent frame is h * w tokens
    sigma = noise.sigma.to(device)
    vnoise = noise.video_noise.to(device)
    encoder = ModelLatentEncoder(transformer, device=device)
    video = ModalityLatents(latent=x0, clean=x0, denoise_mask=mask, coords=encoder.video_positions(b, f, h, w, fps),
                            num_target_tokens=x0.shape[1])
    audio_target = audio_loss_mask = None
    if config.trains_audio:
        a0 = L.pack_audio(batch["audio_latents"].float().to(device))
        an = noise.audio_noise.to(device)
        ones = torch.ones(a0.shape[:2], device=device)
        audio = ModalityLatents(
            latent=noise_tokens(a0, ones, an, sigma), clean=torch.zeros_like(a0), denoise_mask=ones,
            coords=encoder.audio_positions(b, a0.shape[1]), num_target_tokens=a0.shape[1],
        )
        audio_target = objective.velocity_target(a0, an)
        audio_loss_mask = audio.denoise_mask > 0
    else:
        channels = transformer.config.audio_in_channels
        audio = ModalityLatents(
            latent=torch.zeros(b, 1, channels, device=device), clean=torch.zeros(b, 1, channels, device=device),
            denoise_mask=torch.zeros(b, 1, device=device), coords=encoder.audio_positions(b, 1), num_target_tokens=1,
        )
    if isinstance(strategy, VideoToVideoConfig):
        ref = batch["reference_latents"].float().to(device)
        factor = strategy.reference_downscale_factor
        _, _, rf, rh, rw = ref.shape
        if (rh * factor, rw * factor) != (h, w):
            raise ValueError(
                f"reference latents {rh}x{rw} times reference_downscale_factor {factor} do not give the target's "
                f"{h}x{w} latent grid (preprocess the references with --reference-downscale-factor {factor})"
            )
        state = ConditioningState(video=video, audio=audio)
        geometry = ClipGeometry(batch_size=b, num_frames=(f - 1) * 8 + 1, height=h * 32, width=w * 32, frame_rate=fps)
        ReferenceVideo(latents=ref, downscale_factor=factor).apply_to(state, encoder, geometry)
        video = state.video
        vnoise = torch.cat([vnoise, torch.zeros_like(video.clean[:, x0.shape[1]:])], dim=1)  # held tokens: unused
    video.latent = noise_tokens(video.clean, video.denoise_mask, vnoise, sigma)
    contexts = PromptEmbeddings(
        video_context=batch["video_context"].to(device), audio_context=batch["audio_context"].to(device),
        attention_mask=batch["attention_mask"].to(device),
    )
    return TrainingInputs(
        video=video, audio=audio, contexts=contexts, sigma=sigma,
        video_target=objective.velocity_target(x0, vnoise[:, : x0.shape[1]]), video_loss_mask=mask > 0,
        audio_target=audio_target, audio_loss_mask=audio_loss_mask, isolate_audio=not config.trains_audio,
    )


def predict_velocity(transformer, inputs: TrainingInputs, dtype: torch.dtype | None = None):
    """One differentiable transformer call (the pipelines' calling convention: per-token timesteps
    `mask * sigma * 1000`, per-sample sigma for the cross-modal AdaLN, positions passed explicitly).
    Returns the velocity predictions `(B, N_video, C)` (all video tokens, reference included) and
    `(B, N_audio, C_a)`. `transformer` may be wrapped (DDP): then pass the model `dtype`."""
    from ..transformer.inputs import cross_timestep
    from ..versions import cross_timestep_rule, model_version_of

    video, audio = inputs.video, inputs.audio
    dtype = dtype or transformer.dtype
    sigma = inputs.sigma.view(-1, 1)
    ctx = inputs.contexts
    model = getattr(transformer, "module", transformer)  # DDP
    # the cross-attention AdaLN rule of the model's version, as the pipelines (2.5: the rule of ltx-core 1.2, whose
    # trainer passes no keyframe marker either)
    rule = cross_timestep_rule(model_version_of(model.config))
    with cross_timestep(model, rule, inputs.sigma * 1000.0, inputs.sigma * 1000.0) as use_cross:
        return transformer(
            hidden_states=video.latent.to(dtype), audio_hidden_states=audio.latent.to(dtype),
            encoder_hidden_states=ctx.video_context.to(dtype), audio_encoder_hidden_states=ctx.audio_context.to(dtype),
            encoder_attention_mask=ctx.attention_mask, audio_encoder_attention_mask=ctx.attention_mask,
            timestep=video.timesteps(sigma) * 1000.0, audio_timestep=audio.timesteps(sigma) * 1000.0,
            sigma=inputs.sigma * 1000.0, audio_sigma=inputs.sigma * 1000.0,
            video_coords=video.coords, audio_coords=audio.coords, use_cross_timestep=use_cross,
            isolate_modalities=inputs.isolate_audio, return_dict=False,
        )


def compute_loss(inputs: TrainingInputs, video_pred: torch.Tensor, audio_pred: torch.Tensor) -> torch.Tensor:
    """Per-sample loss `(B,)` on the target tokens (appended reference tokens sliced off, no loss)."""
    n = inputs.video.num_target_tokens
    audio = audio_pred if inputs.audio_target is not None else None
    return objective.flow_matching_loss(video_pred[:, :n], inputs.video_target, inputs.video_loss_mask,
                                        audio, inputs.audio_target, inputs.audio_loss_mask)
