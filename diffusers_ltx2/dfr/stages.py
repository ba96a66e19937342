"""DFR stages as compositions over the package's one denoising loop (`LTX2PipelineBase.run_denoising`) and its
conditioning core, following ltx-pipelines 1.2 `DFRPipeline.__call__`:

- `base_stage`: the half-resolution audio+video pass with generated keyframe slots (distilled sigmas, Euler);
- `detail_stage`: spatial x2 (the base video and its slots through the spatial upsampler), re-noised to the first
  refine sigma, optionally with the detailing IC-LoRA's reference (the base video), Euler;
- `temporal_round`: temporal x2 of the video, split into `2 ** round` keyframe-seam tiles (`layout.temporal_tiles`),
  each denoised video-only with its seam anchors and mid-segment slots by euler-ancestral (eta 0.5, noise seed
  `seed + 1000 * round + tile`), stitched; returns the next round's carried keyframes.

One `torch.Generator` noises every stage in order (1.2's one `GaussianNoiser`): pass the same one to each.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ..pipelines import latents as L
from ..schedulers.samplers import EulerAncestralSampler
from ..schedulers.sigmas import DISTILLED_REFINE_SIGMAS, DISTILLED_SIGMAS
from .conditions import DetailingReference, GeneratedKeyframeSlots, KeyframeAnchors, match_keyframe_noising
from .layout import stitch_tiles, temporal_tiles, to_tile_local
from .temporal import temporal_upsample

#: strength of the carried seam keyframes in a temporal round (1.2 `_ANCHOR_KEYFRAME_STRENGTH`)
ANCHOR_STRENGTH = 0.95
#: euler-ancestral eta of the temporal rounds (1.2 `_TEMPORAL_ANCESTRAL_ETA`)
TEMPORAL_ETA = 0.5
#: RoPE frame rate cap of the temporal rounds (1.2 `_MAX_CONDITIONING_FPS`); playback fps is for decoding only
MAX_CONDITIONING_FPS = 60.0
#: sigmas of a temporal round's tiles (1.2 `DISTILLED_SIGMAS[4:]`)
TEMPORAL_SIGMAS = DISTILLED_SIGMAS[4:]


@dataclass
class StageResult:
    """What a DFR stage hands on.

    Attributes:
        video: `(B, C, F, h, w)` normalized video latents.
        audio: `(B, T, C*M)` normalized packed audio tokens, or None (video-only stage).
        keyframes: `(B, C, K, h, w)` normalized latents of the generated slots, or None.
        positions: pixel frames of `keyframes`.
    """

    video: torch.Tensor
    audio: torch.Tensor | None
    keyframes: torch.Tensor | None
    positions: list[int]


def run_dfr_stage(pipe, contexts, *, num_frames: int, height: int, width: int, frame_rate: float, sigmas,
                  conditions=(), generator=None, initial_video=None, initial_audio=None, noise_scale: float = 1.0,
                  video_only: bool = False, sampler=None, attention_kwargs=None):
    """One stage through the one loop: conditions applied and checked, states noised (video first, then audio; no
    audio noise drawn for `video_only`, as 1.2 runs those stages without audio), slots marked for the keyframe
    embedding, unguided (1.2 `SimpleDenoiser`). Returns `(video tokens state, audio state, slots condition)`."""
    from ..pipelines.two_stage import unguided

    conditions = list(conditions)
    device = pipe._execution_device
    total = 1 if initial_video is None else initial_video.shape[0]
    geometry_pipe = pipe.prepare_conditioned_latents
    from .. import conditioning as C

    geometry = C.geometry_for(pipe, total, num_frames, height, width, frame_rate)
    for c in conditions:
        c.check(geometry)
    audio_noise = None
    if video_only:  # a frozen placeholder audio: no noise drawn, cross-modal attention off
        audio_noise = torch.zeros(pipe.audio_latent_shape(total, num_frames, frame_rate)[0], device=device)
    state = geometry_pipe(conditions, total, num_frames, height, width, frame_rate, generator=generator,
                          audio_latents=audio_noise, device=device,
                          initial_video=None if initial_video is None else L.pack_video(initial_video),
                          initial_audio=initial_audio, noise_scale=noise_scale)
    video, audio = state.video, state.audio
    video = match_keyframe_noising(video, [c for c in conditions if isinstance(c, KeyframeAnchors)], noise_scale)
    slots = next((c for c in conditions if isinstance(c, GeneratedKeyframeSlots)), None)
    if slots is not None:
        if not getattr(pipe.transformer.config, "use_keyframes_abs_pos_embedding", False):
            raise ValueError("generated keyframe slots (DFR) need an LTX-2.5 checkpoint (a transformer with "
                             "use_keyframes_abs_pos_embedding)")
        video = replace(video, keyframe_marker=slots.marker(video.latent.shape[1], video.batch_size, device))
    if video_only:
        audio = replace(audio, latent=audio.clean.clone(), denoise_mask=torch.zeros_like(audio.denoise_mask))
    pipe.set_schedule(None, [float(s) for s in sigmas], num_frames, height, width, device)
    guider = unguided().for_frozen(audio=video_only, cross_modal=not video_only)
    contexts = replace(contexts, frozen_audio=video_only)
    video, audio = pipe.run_denoising(guider, video, audio, contexts, attention_kwargs=attention_kwargs,
                                      sampler=sampler, generator=generator, cross_modal=not video_only)
    return video, audio, slots


def _result(pipe, video, audio, slots, num_frames, height, width, video_only=False) -> StageResult:
    f, h, w = L.latent_video_size(num_frames, height, width, pipe.vae_temporal_ratio, pipe.vae_spatial_ratio)
    return StageResult(
        video=L.unpack_video(video.target(), f, h, w),
        audio=None if video_only else audio.target(),
        keyframes=None if slots is None else slots.slot_latents(video.latent, h, w),
        positions=[] if slots is None else list(slots.pixel_frames),
    )


def base_stage(pipe, contexts, *, num_frames: int, height: int, width: int, frame_rate: float, positions,
               conditions=(), generator=None, sigmas=DISTILLED_SIGMAS, attention_kwargs=None) -> StageResult:
    """DFR stage 1 at `(height, width)` (the half resolution): audio+video of the padded canvas `num_frames`, with
    keyframe slots generated at `positions` (`layout.resolve_canvas`)."""
    slots = GeneratedKeyframeSlots(positions)
    video, audio, slots = run_dfr_stage(
        pipe, contexts, num_frames=num_frames, height=height, width=width, frame_rate=frame_rate, sigmas=sigmas,
        conditions=[*conditions, slots], generator=generator, attention_kwargs=attention_kwargs)
    return _result(pipe, video, audio, slots, num_frames, height, width)


def detail_stage(pipe, contexts, base: StageResult, *, num_frames: int, height: int, width: int,
                 frame_rate: float, upsampler, conditions=(), generator=None, reference_downscale_factor=None,
                 sigmas=DISTILLED_REFINE_SIGMAS, attention_kwargs=None) -> StageResult:
    """DFR stage 2 at `(height, width)`: the base video and slots spatially upsampled (`upsampler`, x2), re-noised
    to `sigmas[0]`, with the base video as the detailing IC-LoRA reference when `reference_downscale_factor` is
    given (load the detailing LoRA on `pipe` for it to act)."""
    from ..pipelines.upsampling import upsample_latents

    mean, std = pipe.vae.latents_mean, pipe.vae.latents_std
    video = upsample_latents(base.video[:1], upsampler, mean, std)
    items = [*conditions, GeneratedKeyframeSlots(base.positions, upsample_latents(base.keyframes, upsampler, mean,
                                                                                    std))]
    if reference_downscale_factor is not None:
        items.append(DetailingReference(base.video[:1], reference_downscale_factor))
    ns = float(sigmas[0])
    v, a, slots = run_dfr_stage(
        pipe, contexts, num_frames=num_frames, height=height, width=width, frame_rate=frame_rate, sigmas=sigmas,
        conditions=items, generator=generator, initial_video=video, initial_audio=base.audio, noise_scale=ns,
        attention_kwargs=attention_kwargs)
    return _result(pipe, v, a, slots, num_frames, height, width)


def _slot_initials(video: torch.Tensor, positions, temporal_ratio: int) -> torch.Tensor:
    """The nearest latent frame of each slot position, `(B, C, K, h, w)` (1.2 `_slot_initials_from_video`)."""
    last = video.shape[2] - 1
    idx = [min(max(round(p / temporal_ratio), 0), last) for p in positions]
    return torch.cat([video[:, :, i: i + 1] for i in idx], dim=2)


def temporal_round(pipe, contexts, previous: StageResult, *, round_index: int, num_frames: int, height: int,
                   width: int, frame_rate: float, temporal_upsampler, seed: int, generator=None,
                   sigmas=TEMPORAL_SIGMAS, attention_kwargs=None, progress=None):
    """One temporal x2 round (1-based `round_index`) on the canvas `num_frames` at `frame_rate` (both before the
    round). `previous.keyframes` / `positions` are the carried keyframes (the detailing stage's slots, then each
    round's result).

    Returns:
        `(StageResult, num_frames, frame_rate)` after the round: the stitched video, the next carried keyframes
        (this round's seams and new slots merged by position; an earlier tile's slot wins) and the doubled canvas
        and playback rate.
    """
    if previous.keyframes is None or not previous.positions:
        raise ValueError(f"temporal round {round_index}: no carried keyframes")
    r = pipe.vae_temporal_ratio
    video = temporal_upsample(previous.video[:1], temporal_upsampler, pipe.vae.latents_mean, pipe.vae.latents_std)
    num_frames, frame_rate = 2 * (num_frames - 1) + 1, 2 * frame_rate
    seams = [2 * p for p in previous.positions]
    seam_index = {p: i for i, p in enumerate(seams)}
    fps = min(frame_rate, MAX_CONDITIONING_FPS)
    tiles = temporal_tiles(seams, num_frames, 2 ** round_index, temporal_ratio=r)
    results, slot_latents = [], {}
    for t, tile in enumerate(tiles):
        tile_video = video[:, :, tile.latent_start: tile.latent_end]
        items = []
        if tile.anchors:
            anchors = torch.cat([previous.keyframes[:, :, seam_index[p]: seam_index[p] + 1] for p in tile.anchors],
                                dim=2)
            items.append(KeyframeAnchors(to_tile_local(tile.anchors, tile.pixel_start), anchors, ANCHOR_STRENGTH))
        local_slots = to_tile_local(tile.slots, tile.pixel_start)
        if local_slots:
            items.append(GeneratedKeyframeSlots(local_slots, _slot_initials(tile_video, local_slots, r)))
        sampler = EulerAncestralSampler(eta=TEMPORAL_ETA, noise_seed=seed + 1000 * round_index + t)
        v, a, slots = run_dfr_stage(
            pipe, contexts, num_frames=tile.num_frames, height=height, width=width, frame_rate=fps, sigmas=sigmas,
            conditions=items, generator=generator, initial_video=tile_video, noise_scale=float(sigmas[0]),
            video_only=True, sampler=sampler, attention_kwargs=attention_kwargs)
        out = _result(pipe, v, a, slots, tile.num_frames, height, width, video_only=True)
        results.append(out.video)
        if out.keyframes is not None:
            for k, p in enumerate(tile.slots):
                slot_latents.setdefault(p, out.keyframes[:, :, k: k + 1])
        if progress is not None:
            progress.update()
    stitched = stitch_tiles(results, tiles)
    carried = {p: previous.keyframes[:, :, i: i + 1] for i, p in enumerate(seams)}
    carried.update(slot_latents)
    positions = sorted(carried)
    keyframes = torch.cat([carried[p] for p in positions], dim=2)
    return StageResult(stitched, previous.audio, keyframes, positions), num_frames, frame_rate
