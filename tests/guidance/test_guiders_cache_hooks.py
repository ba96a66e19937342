"""diffusers' transformer cache hooks (`enable_cache`) with our batched guidance passes (diffusers 0.42.1)."""

from __future__ import annotations

import diffusers
import pytest
import torch

from diffusers_ltx2.guiders import MultimodalGuider
from diffusers_ltx2.transformer import GuidanceAttentionControl
from diffusers_ltx2.pipelines.denoising import denoise
from diffusers_ltx2.transformer.passes import TransformerPasses
from diffusers_ltx2.schedulers import LTX2Scheduler

from test_attention_control import make_inputs

STEPS = 8


def _denoise(tr, cache=None, max_batch_passes=None):
    if cache is not None:
        tr.enable_cache(cache)
    video, audio, ctx = make_inputs(tr, batch=1)
    scheduler = LTX2Scheduler()
    scheduler.set_timesteps(STEPS)
    runner = TransformerPasses(tr, attention_control=GuidanceAttentionControl(tr), max_batch_passes=max_batch_passes)
    with torch.no_grad():
        v, a = denoise(passes=runner, guider=MultimodalGuider(skip_blocks=[1]), sigmas=scheduler.sigmas, video=video,
                       audio=audio, contexts=ctx)
    if cache is not None:
        tr.disable_cache()
    return v.latent, a.latent


@pytest.mark.parametrize("max_batch_passes", [None, 2])
def test_taylorseer_works_with_batched_passes(tiny_components, max_batch_passes):
    tr = tiny_components["transformer"]
    plain = _denoise(tr, max_batch_passes=max_batch_passes)
    # caching never active: exactly the uncached run (the hooks and per-call cache contexts change nothing)
    off = _denoise(tr, diffusers.TaylorSeerCacheConfig(disable_cache_before_step=100), max_batch_passes)
    assert torch.equal(off[0], plain[0]) and torch.equal(off[1], plain[1])
    # caching active from step 3 on: a different but sane result (extrapolated steps)
    on = _denoise(tr, diffusers.TaylorSeerCacheConfig(disable_cache_before_step=3, cache_interval=3,
                                                      taylor_factors_dtype=torch.float32), max_batch_passes)
    deviation = max((on[0] - plain[0]).abs().max().item(), (on[1] - plain[1]).abs().max().item())
    assert torch.isfinite(on[0]).all() and torch.isfinite(on[1]).all()
    assert 0 < deviation < 10 * plain[0].abs().max().item()


def test_faster_cache_is_refused_with_a_clear_error(tiny_components):
    tr = tiny_components["transformer"]
    tr.enable_cache(diffusers.FasterCacheConfig(current_timestep_callback=lambda: 500))
    with pytest.raises(ValueError, match="FasterCacheConfig.*pass-major.*disable_cache"):
        TransformerPasses(tr, attention_control=GuidanceAttentionControl(tr))


@pytest.mark.parametrize("config", [lambda: diffusers.FirstBlockCacheConfig(threshold=0.05),
                                    lambda: diffusers.MagCacheConfig(mag_ratios=[1.0] * STEPS, num_inference_steps=STEPS)],
                         ids=["first_block", "mag"])
def test_first_block_and_mag_cache_cannot_be_enabled_on_ltx2_in_diffusers(tiny_components, config):
    """diffusers 0.42.1 has no block metadata for LTX-2's two-stream block: it refuses before anything runs.
    (If a later diffusers supports it, this test fails and the compatibility notes must be revisited.)"""
    with pytest.raises(ValueError, match="not registered"):
        tiny_components["transformer"].enable_cache(config())


def test_pyramid_attention_broadcast_runs_with_batched_passes(tiny_components):
    tr = tiny_components["transformer"]
    plain = _denoise(tr)
    pab = diffusers.PyramidAttentionBroadcastConfig(spatial_attention_block_skip_range=2,
                                                    spatial_attention_timestep_skip_range=(-1, 1001),
                                                    current_timestep_callback=lambda: 500)
    got = _denoise(tr, pab, max_batch_passes=2)
    assert torch.isfinite(got[0]).all() and torch.isfinite(got[1]).all()
    assert (got[0] - plain[0]).abs().max() > 0  # attention outputs were really reused
