"""DFR stages as `Stage` values run by the one `run_stage` (the package's one denoising loop, initial-state
builder and noiser), following ltx-pipelines 1.2 `DFRPipeline.__call__`:

- `base_stage`: the half-resolution audio+video pass with generated keyframe slots (distilled sigmas, Euler);
- `detail_stage`: spatial x2 (the base video and its slots through the spatial upsampler), re-noised to the first
  refine sigma, optionally with the detailing IC-LoRA's reference (the base video: the core's `ReferenceVideo`
  given latents), Euler;
- `temporal_round`: temporal x2 of the video, split into `2 ** round` keyframe-seam tiles (`layout.temporal_tiles`),
  each a video-only stage with its seam anchors and mid-segment slots, stepped by euler-ancestral (eta 0.5, noise
  seed `seed + 1000 * round + tile`), stitched; returns the next round's carried keyframes.

Every stage runs on a `StageRuntime` (`dfr_runtime`, or the pipeline's from its resolved call); its generator
noises every stage in order (1.2's one `GaussianNoiser`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from ..conditioning import ReferenceVideo
from ..latents import layout as L
from ..latents.noiser import StartLatents
from ..pipelines.call import RunOptions
from ..pipelines.refine import unguided
from ..pipelines.runtime import stage_runtime
from ..pipelines.stage import AdapterSet, Stage, StageRuntime, run_stage
from ..schedulers.samplers import EULER, EulerAncestralSampler, Sampler
from ..schedulers.sigmas import DISTILLED_REFINE_SIGMAS, DISTILLED_SIGMAS
from .conditions import GeneratedKeyframeSlots, KeyframeAnchors
from .images import tile_images
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


class _RunCall(NamedTuple):
    """What `pipelines.runtime.stage_runtime` reads of a resolved call."""

    run: RunOptions
    device: torch.device
    generator: object


def dfr_runtime(pipe, contexts, *, generator=None, attention_kwargs=None) -> StageRuntime:
    """The `StageRuntime` of DFR stages run outside a pipeline call (`stage_runtime` of a call with these run
    options): `contexts` (`transformer.TextContexts`), one `generator` noising every stage in order."""
    return stage_runtime(pipe, _RunCall(RunOptions(attention_kwargs=attention_kwargs), pipe._execution_device,
                                        generator), contexts)


def dfr_stage(pipe, *, num_frames: int, height: int, width: int, frame_rate: float, sigmas, conditions=(),
              initial_video=None, initial_audio=None, noise_scale: float = 1.0, video_only: bool = False,
              sampler: Sampler = EULER, adapters: AdapterSet | None = None, name: str | None = None) -> Stage:
    """One DFR stage as a `Stage`: conditions checked at its geometry, unguided (1.2 `SimpleDenoiser`), starting
    from `initial_video` (`(B, C, F, h, w)`) / `initial_audio` (packed) re-noised to `noise_scale`, or from noise;
    `video_only`: the audio held and no audio noise drawn, as 1.2 runs those stages without audio. Raises
    ValueError for conditions that do not fit, or keyframe slots on a checkpoint before LTX-2.5."""
    total = 1 if initial_video is None else initial_video.shape[0]
    geometry = pipe.clip_geometry(total, num_frames, height, width, frame_rate)
    for c in conditions:
        c.check(geometry)
    if any(isinstance(c, GeneratedKeyframeSlots) for c in conditions) and not getattr(
            pipe.transformer.config, "use_keyframes_abs_pos_embedding", False):
        raise ValueError("generated keyframe slots (DFR) need an LTX-2.5 checkpoint (a transformer with "
                         "use_keyframes_abs_pos_embedding)")
    tokens = geometry.latent_frames * geometry.tokens_per_latent_frame
    sigmas = pipe.scheduler.sigmas_for(sigmas=[float(s) for s in sigmas], num_tokens=tokens)
    video = StartLatents(noise_scale=noise_scale, clean=None if initial_video is None else L.pack_video(initial_video))
    audio = StartLatents(noise_scale=noise_scale, clean=initial_audio)
    return Stage(geometry=geometry, sigmas=sigmas.to(pipe._execution_device), guider=unguided(),
                 conditions=tuple(conditions), adapters=adapters, video=video, audio=audio, video_only=video_only,
                 sampler=sampler, name=name)


def _run(stage: Stage, runtime: StageRuntime) -> StageResult:
    """`run_stage` (after `runtime.on_stage_start`), its tokens read back on the stage's latent grid (slots: the
    stage's `GeneratedKeyframeSlots`)."""
    runtime.on_stage_start(stage)
    result = run_stage(stage, runtime)
    g = result.geometry
    slots = next((c for c in stage.conditions if isinstance(c, GeneratedKeyframeSlots)), None)
    return StageResult(
        video=L.unpack_video(result.video.target(), g.latent_frames, g.latent_height, g.latent_width),
        audio=None if stage.video_only else result.audio.target(),
        keyframes=None if slots is None else slots.slot_latents(result.video.latent, g.latent_height,
                                                                  g.latent_width),
        positions=[] if slots is None else list(slots.pixel_frames),
    )


def base_stage(pipe, runtime: StageRuntime, *, num_frames: int, height: int, width: int, frame_rate: float,
               positions, conditions=(), sigmas=DISTILLED_SIGMAS, adapters: AdapterSet | None = None,
               name: str | None = None) -> StageResult:
    """DFR stage 1 at `(height, width)` (the half resolution): audio+video of the padded canvas `num_frames`, with
    keyframe slots generated at `positions` (`layout.resolve_canvas`)."""
    return _run(dfr_stage(pipe, num_frames=num_frames, height=height, width=width, frame_rate=frame_rate,
                          sigmas=sigmas, conditions=[*conditions, GeneratedKeyframeSlots(positions)],
                          adapters=adapters, name=name), runtime)


def detail_stage(pipe, runtime: StageRuntime, base: StageResult, *, num_frames: int, height: int, width: int,
                 frame_rate: float, upsampler, conditions=(), reference_downscale_factor=None,
                 sigmas=DISTILLED_REFINE_SIGMAS, adapters: AdapterSet | None = None,
                 name: str | None = None) -> StageResult:
    """DFR stage 2 at `(height, width)`: the base video and slots spatially upsampled (`upsampler`, x2), re-noised
    to `sigmas[0]`, with the base video as the detailing IC-LoRA reference (`ReferenceVideo` of its latents at
    `reference_downscale_factor`, strength 1: 1.2's `VideoConditionByReferenceLatent`) when the factor is given
    (add the detailing LoRA in `adapters` for it to act)."""
    from ..pipelines.upsampling import upsample_latents

    mean, std = pipe.vae.latents_mean, pipe.vae.latents_std
    video = upsample_latents(base.video[:1], upsampler, mean, std)
    items = [*conditions, GeneratedKeyframeSlots(base.positions, upsample_latents(base.keyframes, upsampler, mean,
                                                                                    std))]
    if reference_downscale_factor is not None:
        items.append(ReferenceVideo(latents=base.video[:1], downscale_factor=reference_downscale_factor))
    ns = float(sigmas[0])
    return _run(dfr_stage(pipe, num_frames=num_frames, height=height, width=width, frame_rate=frame_rate,
                          sigmas=sigmas, conditions=items, initial_video=video, initial_audio=base.audio,
                          noise_scale=ns, adapters=adapters, name=name), runtime)


def _slot_initials(video: torch.Tensor, positions, temporal_ratio: int) -> torch.Tensor:
    """The nearest latent frame of each slot position, `(B, C, K, h, w)` (1.2 `_slot_initials_from_video`)."""
    last = video.shape[2] - 1
    idx = [min(max(round(p / temporal_ratio), 0), last) for p in positions]
    return torch.cat([video[:, :, i: i + 1] for i in idx], dim=2)


def temporal_round(pipe, runtime: StageRuntime, previous: StageResult, *, round_index: int, num_frames: int,
                   height: int, width: int, frame_rate: float, temporal_upsampler, seed: int, images=(),
                   sigmas=TEMPORAL_SIGMAS, adapters: AdapterSet | None = None, name: str | None = None):
    """One temporal x2 round (1-based `round_index`) on the canvas `num_frames` at `frame_rate` (both before the
    round). `previous.keyframes` / `positions` are the carried keyframes (the detailing stage's slots, then each
    round's result). `images`: the call's `images.DFRImage`s, attached tile-locally at their frame scaled by
    `2 ** round_index` (`images.tile_images`; 1.2 does not scale: see `dfr.images`). Each tile is a video-only `Stage` (named `name` and its tile) run by `run_stage`; once
    `runtime.should_stop()` (interrupt) the tiles left are the temporally upsampled video as it is.

    Returns:
        `(StageResult, num_frames, frame_rate)` after the round: the stitched video, the next carried keyframes
        (this round's seams and new slots merged by position; an earlier tile's slot wins) and the doubled canvas
        and playback rate.
    """
    if previous.keyframes is None or not previous.positions:
        raise ValueError(f"temporal round {round_index}: no carried keyframes")
    r = pipe.vae_temporal_compression_ratio
    video = temporal_upsample(previous.video[:1], temporal_upsampler, pipe.vae.latents_mean, pipe.vae.latents_std)
    num_frames, frame_rate = 2 * (num_frames - 1) + 1, 2 * frame_rate
    seams = [2 * p for p in previous.positions]
    seam_index = {p: i for i, p in enumerate(seams)}
    fps = min(frame_rate, MAX_CONDITIONING_FPS)
    tiles = temporal_tiles(seams, num_frames, 2 ** round_index, temporal_ratio=r)
    results, slot_latents = [], {}
    for t, tile in enumerate(tiles):
        tile_video = video[:, :, tile.latent_start: tile.latent_end]
        if runtime.should_stop():  # interrupted: the tiles left keep the upsampled video (nothing re-noised)
            results.append(tile_video)
            continue
        items = tile_images(images, round_index, tile)
        if tile.anchors:
            anchors = torch.cat([previous.keyframes[:, :, seam_index[p]: seam_index[p] + 1] for p in tile.anchors],
                                dim=2)
            items.append(KeyframeAnchors(to_tile_local(tile.anchors, tile.pixel_start), anchors, ANCHOR_STRENGTH))
        local_slots = to_tile_local(tile.slots, tile.pixel_start)
        if local_slots:
            items.append(GeneratedKeyframeSlots(local_slots, _slot_initials(tile_video, local_slots, r)))
        sampler = EulerAncestralSampler(eta=TEMPORAL_ETA, noise_seed=seed + 1000 * round_index + t)
        out = _run(dfr_stage(pipe, num_frames=tile.num_frames, height=height, width=width, frame_rate=fps,
                             sigmas=sigmas, conditions=items, initial_video=tile_video, noise_scale=float(sigmas[0]),
                             video_only=True, sampler=sampler, adapters=adapters,
                             name=None if name is None else f"{name}, tile {t + 1}/{len(tiles)}"), runtime)
        results.append(out.video)
        if out.keyframes is not None:
            for k, p in enumerate(tile.slots):
                slot_latents.setdefault(p, out.keyframes[:, :, k: k + 1])
    stitched = stitch_tiles(results, tiles)
    carried = {p: previous.keyframes[:, :, i: i + 1] for i, p in enumerate(seams)}
    carried.update(slot_latents)
    positions = sorted(carried)
    keyframes = torch.cat([carried[p] for p in positions], dim=2)
    return StageResult(stitched, previous.audio, keyframes, positions), num_frames, frame_rate
