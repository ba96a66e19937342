"""DFR layout math (`diffusers_ltx2.dfr.layout`) equals ltx-pipelines 1.2's `dfr_layout.py` (run in a subprocess on
the official 1.2 sources) over a sweep of clip lengths, rounds and tile counts, including its errors."""

from __future__ import annotations

import pytest
import torch
from official_12 import requires_official_12, run_official_12

from diffusers_ltx2.dfr import layout as D

FRAMES = [9, 17, 25, 33, 49, 57, 65, 97, 121, 161, 193, 241, 257, 481]


def _ours(num_frames: int, tiles: int) -> dict:
    canvas, segment, positions = D.resolve_canvas(num_frames)
    out = {"canvas": (canvas, segment, positions), "rounds": []}
    for rnd in (1, 2):  # as DFRPipeline: seams scale x2 per round, the canvas maps N -> 2(N - 1) + 1
        positions = [2 * p for p in positions]
        canvas = 2 * (canvas - 1) + 1
        try:
            result = [tuple(t) for t in D.temporal_tiles(positions, canvas, tiles or 2 ** rnd)]
        except ValueError:
            result = "ValueError"
        out["rounds"].append(result)
    return out


@requires_official_12
def test_layout_equals_official(tmp_path):
    cases = [(n, t) for n in FRAMES for t in (0, 1, 3, 5)]
    official = run_official_12("""
        from ltx_pipelines import dfr_layout as D
        res = {}
        for n, t in IN["cases"]:
            canvas, segment, positions = D.resolve_canvas(n)
            out = {"canvas": (canvas, segment, positions), "rounds": []}
            for rnd in (1, 2):
                positions = [2 * p for p in positions]
                canvas = 2 * (canvas - 1) + 1
                try:
                    result = [tuple(x) for x in D.tile_ranges(positions, canvas, t or 2 ** rnd)]
                except ValueError:
                    result = "ValueError"
                out["rounds"].append(result)
            res[(n, t)] = out
        OUT["res"] = res
        OUT["segments"] = {c: D.choose_segment_length(c) for c in range(1, 400)}
    """, {"cases": cases}, tmp_path)
    assert {c: D.choose_segment_length(c) for c in range(1, 400)} == official["segments"]
    for n, t in cases:
        ours = _ours(n, t)
        assert ours == official["res"][(n, t)], (n, t)


@requires_official_12
def test_errors_and_stitch_equal_official(tmp_path):
    gen = torch.Generator().manual_seed(0)
    canvas, _, positions = D.resolve_canvas(121)
    seams, canvas = [2 * p for p in positions], 2 * (canvas - 1) + 1
    tiles = D.temporal_tiles(seams, canvas, 2)
    latents = [torch.randn(1, 4, t.latent_end - t.latent_start, 2, 3, generator=gen) for t in tiles]
    bad = {"short_seam": ([8, 16], 17, 1), "not_terminal": ([16, 32], 41, 1), "not_increasing": ([32, 16, 40], 41, 1),
           "off_border": ([20, 40], 41, 1)}
    official = run_official_12("""
        from ltx_pipelines import dfr_layout as D
        tiles = D.tile_ranges(IN["seams"], IN["canvas"], 2)
        OUT["stitched"] = D.stitch_tile_latents(IN["latents"], tiles)
        OUT["errors"] = {}
        for name, (seams, frames, n) in IN["bad"].items():
            try:
                D.tile_ranges(seams, frames, n)
                OUT["errors"][name] = None
            except ValueError:
                OUT["errors"][name] = "ValueError"
        for n in (0, 1, 8, 10):
            try:
                D.resolve_canvas(n)
                OUT["errors"][n] = None
            except ValueError:
                OUT["errors"][n] = "ValueError"
    """, {"seams": seams, "canvas": canvas, "latents": latents, "bad": bad}, tmp_path)
    assert torch.equal(D.stitch_tiles(latents, tiles), official["stitched"])
    for name, (seams_, frames, n) in bad.items():
        assert official["errors"][name] == "ValueError"
        with pytest.raises(ValueError):
            D.temporal_tiles(seams_, frames, n)
    for n in (0, 1, 8, 10):
        assert official["errors"][n] == "ValueError"
        with pytest.raises(ValueError):
            D.resolve_canvas(n)


def test_stitch_rejects_wrong_tiles():
    tiles = D.temporal_tiles([24, 48], 49, 2)
    good = [torch.zeros(1, 2, t.latent_end - t.latent_start, 1, 1) for t in tiles]
    assert D.stitch_tiles(good, tiles).shape[2] == 7  # the whole canvas, each latent once
    with pytest.raises(ValueError, match="one latent per tile"):
        D.stitch_tiles(good[:1], tiles)
    with pytest.raises(ValueError, match="latent frames"):
        D.stitch_tiles([good[0], good[1][:, :, 1:]], tiles)


def test_tiles_cover_canvas_once():
    """Whatever the split, the kept latents of the tiles are the canvas' latent frames, each once, in order."""
    for n in FRAMES[1:]:
        canvas, _, positions = D.resolve_canvas(n)
        for k in range(1, 6):
            tiles = D.temporal_tiles(positions, canvas, k)
            kept = [i for t in tiles for i in range(t.latent_start + t.drop_latents, t.latent_end)]
            assert kept == list(range((canvas - 1) // 8 + 1)), (n, k)
            assert all(t.pixel_start in t.anchors for t in tiles[1:] if t.pixel_start)  # frame 0 is no keyframe
