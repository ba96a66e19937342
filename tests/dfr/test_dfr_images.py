"""DFR image conditioning (`dfr.images`, `LTX2DFRPipeline(conditions= / image=)`) against ltx-pipelines 1.2
`DFRPipeline(images=)` on the tiny official 2.5 set: the same PNG files given to both sides (1.2 loads and
re-compresses them with its own loader at its CRF), fp32, the same noise. Base and detailing stages with an image at
frame 0 (strength 1) and one at a later frame (strength 0.6), and with an image at frame 0 at strength 0.7 (the
detailing stage and the round re-noise to sigma < 1, where 1.2's noising of image tokens differs from the
1.0.0 rule), then temporal round 1 with that image: every latent <= 1e-4 (TOL: the bound of the stage parity tests,
fp32 on both sides; dropping 1.2's noising rule for the image tokens moves stage 2 by 7e-4 (later frame, strength
0.6) and 9e-2 (frame 0, strength 0.7), so the bound separates the rules).

The temporal placement deliberately differs from 1.2 for frames > 0 (scaled by 2**round, see `dfr.images`): tested
directly on the tiles of rounds 1 and 2 - each image lands at its original time, in every tile that covers it -
and against 1.2's own rule where the two agree (frame 0)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from dfr_files import official_contexts, run_official_dfr
from diffusers_ltx2 import LTX2TwoStagePipeline
from diffusers_ltx2.conditioning import VideoCondition
from diffusers_ltx2.conversion.upsampler import load_official_upsampler
from diffusers_ltx2.dfr import stages as S
from diffusers_ltx2.dfr.arguments import dfr_images
from diffusers_ltx2.dfr.images import DFRImage, stage_images, tile_images
from diffusers_ltx2.dfr.layout import resolve_canvas, temporal_tiles
from diffusers_ltx2.latents import layout as L
from diffusers_ltx2.transformer import TextContexts

HEIGHT, WIDTH, FRAMES, FPS, SEED = 128, 192, 73, 24.0, 5
TOL = 1e-4
LATER = 40


def _png(path, seed):
    """A smooth random RGB picture (not the clip's size: both sides resize and crop it)."""
    g = np.random.default_rng(seed)
    small = g.integers(0, 256, size=(6, 9, 3), dtype=np.uint8)
    Image.fromarray(small).resize((150, 100), Image.BILINEAR).save(path)
    return str(path)


@pytest.fixture(scope="module")
def setup(ltx25_set, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dfr12img")
    pipe = LTX2TwoStagePipeline.from_single_file(ltx25_set["folder"], dtype=torch.float32, progress=False)
    pipe.set_progress_bar_config(disable=True)
    spatial = load_official_upsampler(ltx25_set["spatial_upsampler"], dtype=torch.float32)
    temporal = load_official_upsampler(ltx25_set["temporal_upsampler"], dtype=torch.float32)
    embeds = official_contexts(pipe)
    pngs = [_png(tmp / f"img{i}.png", seed=i) for i in range(2)]
    two = [[pngs[0], 0, 1.0, None], [pngs[1], LATER, 0.6, None]]
    first = [[pngs[0], 0, 0.7, None]]
    off_two = run_official_dfr(pipe, ltx25_set, tmp_path_factory.mktemp("two"), embeds, height=HEIGHT, width=WIDTH,
                               frames=FRAMES, fps=FPS, seed=SEED, rounds=0, images=two)
    off_first = run_official_dfr(pipe, ltx25_set, tmp_path_factory.mktemp("first"), embeds, height=HEIGHT,
                                 width=WIDTH, frames=FRAMES, fps=FPS, seed=SEED, rounds=1, images=first)
    return dict(pipe=pipe, spatial=spatial, temporal=temporal, contexts=TextContexts(positive=embeds),
                two=(two, off_two), first=(first, off_first))


def _close(ours, official, what):
    assert ours.shape == official.shape, what
    err = (ours.float() - official.float()).abs().max().item()
    assert err <= TOL, f"{what}: max |diff| {err:.2e}"


def _ours(pipe, spec):
    """The same images through our argument: `VideoCondition(path, frame, strength)`, the model's CRF."""
    return dfr_images(pipe, [VideoCondition(p, frame_index=f, strength=s) for p, f, s, _ in spec], None, 1.0, None,
                      FRAMES)


def _base_and_detail(setup, key):
    pipe, spatial = setup["pipe"], setup["spatial"]
    spec, off = setup[key]
    assert off["crf"] == pipe.default_image_crf == 18  # 1.2's resolve_crf of the 2.5 set = ours
    images = _ours(pipe, spec)
    frames, _, positions = resolve_canvas(FRAMES)
    rt = S.dfr_runtime(pipe, setup["contexts"], generator=torch.Generator().manual_seed(SEED))
    base = S.base_stage(pipe, rt, num_frames=frames, height=HEIGHT // 2, width=WIDTH // 2, frame_rate=FPS,
                        positions=positions, conditions=stage_images(images))
    _close(base.video, off["s1_video"], f"{key}: stage 1 video")
    _close(base.keyframes, off["s1_slots"], f"{key}: stage 1 keyframe slots")
    _close(base.audio, L.pack_audio(off["s1_audio"]), f"{key}: stage 1 audio")
    official_base = S.StageResult(off["s1_video"], L.pack_audio(off["s1_audio"]), off["s1_slots"], positions)
    detail = S.detail_stage(pipe, rt, official_base, num_frames=frames, height=HEIGHT, width=WIDTH, frame_rate=FPS,
                            upsampler=spatial, reference_downscale_factor=2, conditions=stage_images(images))
    _close(detail.video, off["s2_video"], f"{key}: stage 2 video")
    _close(detail.keyframes, off["s2_slots"], f"{key}: stage 2 keyframe slots")
    _close(detail.audio, L.pack_audio(off["s2_audio"]), f"{key}: stage 2 audio")
    return images, rt, frames, positions


def test_images_at_frame_0_and_later_equal_official_base_and_detailing(setup):
    _base_and_detail(setup, "two")


def test_image_below_full_strength_equals_official_stages_and_round(setup):
    images, rt, frames, positions = _base_and_detail(setup, "first")
    off = setup["first"][1]
    detail = S.StageResult(off["s2_video"], L.pack_audio(off["s2_audio"]), off["s2_slots"], positions)
    out, _, _ = S.temporal_round(setup["pipe"], rt, detail, round_index=1, num_frames=frames, height=HEIGHT,
                                 width=WIDTH, frame_rate=FPS, temporal_upsampler=setup["temporal"], seed=SEED,
                                 images=images)
    _close(out.video, off["r1_video"], "round 1 stitched video")
    assert out.positions == off["r1_positions"]
    _close(out.keyframes, off["r1_keyframes"], "round 1 carried keyframes")


def _round_tiles(frames, positions, rounds):
    """The tiles of each temporal round as the pipeline lays them out (seams: the carried positions x2)."""
    out, n = [], frames
    carried = list(positions)
    for r in range(1, rounds + 1):
        n = 2 * (n - 1) + 1
        seams = [2 * p for p in carried]
        tiles = temporal_tiles(seams, n, 2 ** r)
        out.append((n, tiles))
        carried = sorted(set(seams) | {p for t in tiles for p in t.slots})
    return out


def _official_tile_frames(frames_in, tile):
    """ltx-pipelines 1.2 `DFRPipeline`'s tile rule (dfr_pipeline.py): the first tile takes every image as given,
    others re-base the unscaled frame index."""
    if tile.pixel_start == 0:
        return list(frames_in)
    return [f - tile.pixel_start for f in frames_in if tile.pixel_start <= f <= tile.pixel_end]


def test_temporal_rounds_place_images_at_their_time_in_every_covering_tile():
    frames, _, positions = resolve_canvas(FRAMES)
    given = [0, 20, LATER, 72]
    images = [DFRImage(None, f, 0.9) for f in given]
    rounds = _round_tiles(frames, positions, 2)
    # hand-worked round 1: canvas 145 frames, tiles [0, 96] and [48, 144]
    assert [(t.pixel_start, t.pixel_end) for t in rounds[0][1]] == [(0, 96), (48, 144)]
    assert [c.pixel_frames[0] for c in tile_images(images, 1, rounds[0][1][0])] == [0, 40, 80]
    assert [c.pixel_frames[0] for c in tile_images(images, 1, rounds[0][1][1])] == [32, 96]
    for r, (n, tiles) in enumerate(rounds, start=1):
        fps = FPS * 2 ** r
        seen = {f: 0 for f in given}
        for tile in tiles:
            attached = tile_images(images, r, tile)
            for c in attached:
                at = c.pixel_frames[0] + tile.pixel_start
                f = next(f for f in given if f * 2 ** r == at)
                assert at / fps == pytest.approx(f / FPS)  # the time it was given for
                assert 0 <= c.pixel_frames[0] < tile.num_frames and c.strength == 0.9
                seen[f] += 1
            covered = [f for f in given if tile.pixel_start <= f * 2 ** r <= tile.pixel_end]
            assert len(attached) == len(covered)
        assert all(seen.values()), (r, seen)  # every image in some tile of every round
        # frame 0: identical to 1.2 in every tile (0 at every scale)
        for tile in tiles:
            ours = [c.pixel_frames[0] for c in tile_images([DFRImage(None, 0, 1.0)], r, tile)]
            assert ours == _official_tile_frames([0], tile)
    # 1.2's unscaled rule puts frame 40 at round-1 frame 40, i.e. at 20 / 24 s instead of 40 / 24 s
    assert _official_tile_frames([LATER], rounds[0][1][0]) == [LATER] != [2 * LATER]
