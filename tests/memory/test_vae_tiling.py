"""Automatic VAE tiling: the plan (pure), the hand-off to diffusers' tiled decode, and tiled vs untiled decodes
of the tiny random-weight VAE (exact away from the seams, continuous across them, measured deviation near them)."""

from __future__ import annotations

import pytest
import torch

from diffusers_ltx2.memory.vae_tiling import (VaeTiling, apply_vae_tiling, auto_tile_vae, decode_bytes, plan_vae_tiling,
                                             tiled_decode_bytes)

REAL = dict(decoder_channels=256, patch_size=4, dtype_bytes=2)  # LTX-2 video VAE decoder, bf16
GB = 1024**3


def test_plan_follows_the_official_default_and_the_budget():
    assert plan_vae_tiling(121, 512, 512, **REAL) == VaeTiling(None, None, 64, 24)  # one tile in space only
    assert plan_vae_tiling(57, 512, 512, **REAL) is None
    assert plan_vae_tiling(121, 512, 768, **REAL) == VaeTiling(512, 64, 64, 24)  # TilingConfig.default()
    assert plan_vae_tiling(33, 512, 768, **REAL) == VaeTiling(512, 64, None, None)
    # 121 x 512 x 768 untiled: 3.5 widest-level tensors of (121 + 1) x 128 x 192 x 256 values, 2 bytes each = 5.9 GB
    assert decode_bytes(121, 512, 768, **REAL) == 7 * 122 * 128 * 192 * 256 // 2 * 2
    assert plan_vae_tiling(57, 512, 512, **REAL, budget_bytes=8 * GB) is None
    tight = plan_vae_tiling(57, 512, 512, **REAL, budget_bytes=1 * GB)
    assert tight is not None and tight.tile_px < 512
    assert tiled_decode_bytes(57, 512, 512, tight, **REAL) <= 1 * GB < decode_bytes(57, 512, 512, **REAL)
    smallest = plan_vae_tiling(57, 512, 512, **REAL, budget_bytes=1)  # nothing fits: the smallest tiles
    assert smallest == VaeTiling(128, 32, 16, 8)


def test_plan_is_monotonic_in_the_budget():
    sizes = [plan_vae_tiling(97, 768, 1280, **REAL, budget_bytes=b * GB).tile_px for b in (32, 8, 4, 2, 1)]
    assert sizes == sorted(sizes, reverse=True)


@pytest.fixture()
def vae(tiny_components):
    return tiny_components["vae"].eval()


def _decode(vae, z):
    with torch.no_grad():
        return vae.decode(z, return_dict=False)[0]


def test_auto_tiling_leaves_hand_configured_tiling_alone(vae):
    vae.enable_tiling(tile_sample_min_height=256, tile_sample_min_width=256)
    assert auto_tile_vae(vae, 9, 64, 1024) is None and vae.tile_sample_min_width == 256
    vae.disable_tiling()
    assert auto_tile_vae(vae, 9, 64, 1024) == VaeTiling(512, 64, None, None) and vae.use_tiling
    assert auto_tile_vae(vae, 9, 64, 64) is None and not vae.use_tiling  # auto-enabled tiling is auto-disabled


# Tiny random VAE, 9 frames x 64 x 1024 px, official 512 px tiles / 64 px overlap (diffusers stride 448):
# measured relative L2 deviation 0.22 of the untiled decode, confined to columns 301..1023 around the blend
# region (the random decoder's receptive field reaches ~200 px); columns 0..300 bit-identical. A trained VAE
# decodes smooth images, where the official pipelines tile by default; its deviation needs the real weights
# (untested here).
TINY_SPATIAL_REL_BOUND = 0.3


def test_spatial_tiles_exact_away_from_seams_and_continuous_across(vae):
    torch.manual_seed(0)
    z = torch.randn(1, vae.config.latent_channels, 2, 2, 32)
    ref = _decode(vae, z)
    apply_vae_tiling(vae, VaeTiling(512, 64, None, None))
    tiled = _decode(vae, z)
    assert tiled.shape == ref.shape
    torch.testing.assert_close(tiled[..., :256], ref[..., :256], rtol=0, atol=1e-5)  # far from any seam
    rel = ((tiled - ref).norm() / ref.norm()).item()
    assert 0 < rel <= TINY_SPATIAL_REL_BOUND
    # no seam: the largest column-to-column step of the tiled decode is no larger than the untiled one's
    step = lambda x: (x[..., 1:] - x[..., :-1]).abs().amax(dim=(0, 1, 2, 3))  # noqa: E731
    assert step(tiled).max() <= step(ref).max() * 1.05


# 81 frames x 64 x 64, official 64-frame tiles / 24 overlap: measured relative L2 deviation 0.72; frames 0..11
# bit-identical, growing to ~3 (absolute) in the second tile: the random decoder's temporal receptive field
# spans ~6 latent frames (48 pixel frames), far more than the overlap. Real-VAE figure untested (no weights).
TINY_TEMPORAL_REL_BOUND = 0.8


def test_temporal_tiles_keep_the_frame_count_and_the_first_frames(vae):
    torch.manual_seed(0)
    z = torch.randn(1, vae.config.latent_channels, 11, 2, 2)  # 81 frames x 64 x 64
    ref = _decode(vae, z)
    apply_vae_tiling(vae, plan_vae_tiling(81, 64, 64, decoder_channels=8))
    assert vae.use_framewise_decoding and not vae.use_tiling
    tiled = _decode(vae, z)
    assert tiled.shape == ref.shape
    per_frame = (tiled - ref).abs().amax(dim=(0, 1, 3, 4))
    rel = ((tiled - ref).norm() / ref.norm()).item()
    assert per_frame[:12].max() < 1e-5  # the first tile's early frames: untouched
    assert 0 < rel <= TINY_TEMPORAL_REL_BOUND


def test_pipeline_decodes_tiled_when_over_budget(tiny_pipe):
    from diffusers_ltx2.factory import TINY_CLIP

    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    plain = tiny_pipe("a cat", num_inference_steps=2, generator=gen(), output_type="pt", **TINY_CLIP).frames
    assert not tiny_pipe.vae.use_tiling
    tiny_pipe.vae_memory_budget = 1  # nothing fits: smallest tiles
    tiled = tiny_pipe("a cat", num_inference_steps=2, generator=gen(), output_type="pt", **TINY_CLIP).frames
    assert tiny_pipe.vae.use_tiling and tiled.shape == plain.shape
    # 64 x 64 px clip in 128 px tiles: one tile, so the decode is the untiled one
    torch.testing.assert_close(tiled, plain, rtol=0, atol=1e-6)
