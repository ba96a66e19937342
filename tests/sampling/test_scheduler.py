"""Tests for the LTX-2 sigma schedule and scheduler, checked against the installed ltx-core reference."""

import math

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from ltx_core.components.diffusion_steps import EulerDiffusionStep
from ltx_core.components.schedulers import LTX2Scheduler as ReferenceScheduler

from diffusers_ltx2.schedulers import (
    DISTILLED_REFINE_SIGMAS,
    DISTILLED_SIGMAS,
    LTX2Scheduler,
    ltx2_sigmas,
    shift_for_tokens,
    validate_sigmas,
)

# (F, H, W) latent grids and their token counts.
LATENT_GRIDS = {256: (1, 16, 16), 1024: (4, 16, 16), 4096: (4, 32, 32), 6144: (6, 32, 32)}
STEP_COUNTS = (1, 2, 8, 30, 40)


def reference(steps, tokens=None, **kwargs):
    """Sigmas from ltx-core, with a dummy latent of the requested token count (or no latent)."""
    latent = None if tokens is None else torch.zeros(1, 128, *LATENT_GRIDS[tokens])
    return ReferenceScheduler().execute(steps, latent=latent, **kwargs)


@pytest.mark.parametrize("steps", STEP_COUNTS)
@pytest.mark.parametrize("tokens", sorted(LATENT_GRIDS))
def test_sigmas_match_ltx_core(steps, tokens):
    ours = ltx2_sigmas(steps, num_tokens=tokens)
    ref = reference(steps, tokens)
    assert ours.dtype == torch.float32 and ours.shape == (steps + 1,)
    assert ours[-1].item() == 0.0
    if torch.isfinite(ref).all():
        torch.testing.assert_close(ours, ref, rtol=0, atol=1e-6)
    else:
        # ltx-core divides 0/0 when all non-zero sigmas round to 1.0 (single step); we use the limit instead.
        assert steps == 1
        torch.testing.assert_close(ours, torch.tensor([0.1, 0.0]), rtol=0, atol=1e-6)


def test_default_matches_latent_free_reference_and_is_not_linear():
    ours = ltx2_sigmas(30)
    torch.testing.assert_close(ours, reference(30), rtol=0, atol=1e-6)
    assert not torch.allclose(ours, torch.linspace(1, 0, 31), atol=1e-3)
    assert math.isclose(ours[-2].item(), 0.1, abs_tol=1e-6)
    assert (ours[1:] < ours[:-1]).all()


@pytest.mark.parametrize("kwargs", [dict(stretch=False), dict(terminal=0.05), dict(max_shift=1.5, base_shift=0.5)])
def test_sigma_options_match_ltx_core(kwargs):
    ours = ltx2_sigmas(12, num_tokens=1024, **kwargs)
    torch.testing.assert_close(ours, reference(12, 1024, **kwargs), rtol=0, atol=1e-6)


def test_token_count_changes_schedule():
    assert shift_for_tokens(1024) == pytest.approx(0.95)
    assert shift_for_tokens(4096) == pytest.approx(2.05)
    assert (ltx2_sigmas(8, 256)[1:-2] < ltx2_sigmas(8, 6144)[1:-2]).all()


@pytest.mark.parametrize(
    "kwargs",
    [dict(num_steps=0), dict(num_steps=2.5), dict(num_steps=4, num_tokens=0), dict(num_steps=4, terminal=1.0),
     dict(num_steps=4, terminal=0.0), dict(num_steps=4, max_shift=float("nan")), dict(num_steps=4, num_tokens=10**7)],
)
def test_ltx2_sigmas_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        ltx2_sigmas(**kwargs)


def test_distilled_constants():
    assert len(DISTILLED_SIGMAS) == 9 and DISTILLED_SIGMAS[-1] == 0.0
    assert DISTILLED_REFINE_SIGMAS == DISTILLED_SIGMAS[-4:]
    scheduler = LTX2Scheduler()
    scheduler.set_timesteps(distilled=True)
    assert scheduler.num_inference_steps == 8
    torch.testing.assert_close(scheduler.sigmas, torch.tensor(DISTILLED_SIGMAS, dtype=torch.float32))
    scheduler.set_timesteps(sigmas=DISTILLED_REFINE_SIGMAS)
    assert scheduler.num_inference_steps == 3
    torch.testing.assert_close(scheduler.timesteps, torch.tensor([909.375, 725.0, 421.875]))


@pytest.mark.parametrize("steps", STEP_COUNTS)
def test_scheduler_default_is_official_text_to_video(steps):
    scheduler = LTX2Scheduler()
    scheduler.set_timesteps(steps, num_tokens=256)  # ignored: use_token_count_shift=False
    torch.testing.assert_close(scheduler.sigmas, reference(steps), rtol=0, atol=1e-6)
    torch.testing.assert_close(scheduler.timesteps, scheduler.sigmas[:-1] * 1000)
    assert scheduler.num_inference_steps == steps


@pytest.mark.parametrize("tokens", [256, 1024, 6144])
def test_scheduler_token_count_shift_matches_hq_reference(tokens):
    scheduler = LTX2Scheduler(use_token_count_shift=True)
    scheduler.set_timesteps(30, num_tokens=tokens)
    torch.testing.assert_close(scheduler.sigmas, reference(30, tokens), rtol=0, atol=1e-6)
    scheduler.set_timesteps(30)  # no token count -> default 4096
    torch.testing.assert_close(scheduler.sigmas, reference(30), rtol=0, atol=1e-6)


def test_validate_sigmas_accepts_types_and_appends_zero():
    for raw in ([1.0, 0.5, 0.1], np.array([1.0, 0.5, 0.1]), torch.tensor([1.0, 0.5, 0.1, 0.0], dtype=torch.float64)):
        out = validate_sigmas(raw)
        assert out.dtype == torch.float32
        torch.testing.assert_close(out, torch.tensor([1.0, 0.5, 0.1, 0.0]))


@pytest.mark.parametrize(
    "bad",
    [[], [0.0], [[1.0, 0.0]], [1.0, 1.0, 0.0], [0.5, 0.7, 0.0], [1.2, 0.5, 0.0], [1.0, -0.1],
     [1.0, float("nan"), 0.0], [1.0, float("inf")], ["a", "b"]],
)
def test_validate_sigmas_rejects(bad):
    with pytest.raises(ValueError):
        validate_sigmas(bad)


def test_set_timesteps_argument_errors():
    scheduler = LTX2Scheduler()
    with pytest.raises(ValueError):
        scheduler.set_timesteps()
    with pytest.raises(ValueError):
        scheduler.set_timesteps(sigmas=[1.0, 0.5, 0.0], distilled=True)
    with pytest.raises(ValueError):
        scheduler.set_timesteps(5, distilled=True)
    with pytest.raises(ValueError):
        scheduler.set_timesteps(3, sigmas=[1.0, 0.0])
    with pytest.raises(ValueError):
        scheduler.set_timesteps(8, num_tokens=-3)
    with pytest.raises(ValueError):
        LTX2Scheduler(terminal=2.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_euler_step_matches_ltx_core(dtype):
    gen = torch.Generator().manual_seed(0)
    scheduler = LTX2Scheduler()
    scheduler.set_timesteps(8)
    sample = torch.randn(2, 64, 16, generator=gen).to(dtype)
    for index in range(8):
        x0 = torch.randn(2, 64, 16, generator=gen).to(dtype)
        expected = EulerDiffusionStep().step(sample, x0, scheduler.sigmas, index)
        out = scheduler.step(x0, sample, index).prev_sample
        assert out.dtype == dtype
        torch.testing.assert_close(out, expected, rtol=0, atol=0)
        assert not torch.equal(out, sample)
        (tuple_out,) = scheduler.step(x0, sample, index, return_dict=False)
        assert torch.equal(tuple_out, out)
        sample = out
    # The final step lands exactly on the x0 prediction (sigma_next = 0).
    x0 = torch.randn(2, 64, 16, generator=gen)
    torch.testing.assert_close(scheduler.step(x0, x0 + 0.3, 7).prev_sample, x0, atol=1e-5, rtol=0)


def test_step_errors():
    scheduler = LTX2Scheduler()
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError):
        scheduler.step(x, x, 0)  # set_timesteps not called
    scheduler.set_timesteps(4)
    for bad_index in (-1, 4, 1.0):
        with pytest.raises(ValueError):
            scheduler.step(x, x, bad_index)
    with pytest.raises(ValueError):
        scheduler.step(torch.zeros(2, 4), x, 0)


def test_save_and_load_round_trip(tmp_path):
    scheduler = LTX2Scheduler(max_shift=1.9, terminal=0.05, use_token_count_shift=True)
    scheduler.save_config(tmp_path)
    assert (tmp_path / "scheduler_config.json").is_file()
    loaded = LTX2Scheduler.from_pretrained(tmp_path)
    for key in ("max_shift", "base_shift", "stretch", "terminal", "default_num_tokens", "use_token_count_shift"):
        assert loaded.config[key] == scheduler.config[key]
    scheduler.set_timesteps(20, num_tokens=1024)
    loaded.set_timesteps(20, num_tokens=1024)
    assert torch.equal(scheduler.sigmas, loaded.sigmas)
    torch.testing.assert_close(loaded.sigmas, reference(20, 1024, max_shift=1.9, terminal=0.05), rtol=0, atol=1e-6)


def test_from_flow_match_config_reanchors_shift():
    flow = FlowMatchEulerDiscreteScheduler(
        use_dynamic_shifting=True, base_shift=0.95, max_shift=2.05, base_image_seq_len=1024,
        max_image_seq_len=4096, shift_terminal=0.1,
    )
    scheduler = LTX2Scheduler.from_flow_match_config(flow)
    assert scheduler.config.base_shift == pytest.approx(0.95) and scheduler.config.max_shift == pytest.approx(2.05)
    assert scheduler.config.stretch and scheduler.config.terminal == pytest.approx(0.1)
    # Same line given at other anchors: shift(256) = 0.5, shift(4096) = 1.15 -> evaluated at 1024.
    other = LTX2Scheduler.from_flow_match_config(dict(flow.config, base_shift=0.5, max_shift=1.15,
                                                      base_image_seq_len=256, shift_terminal=None))
    assert other.config.base_shift == pytest.approx(0.5 + 0.65 * 768 / 3840)
    assert other.config.max_shift == pytest.approx(1.15) and not other.config.stretch
    assert LTX2Scheduler.from_flow_match_config(flow.config, use_token_count_shift=True).config.use_token_count_shift
    with pytest.raises(ValueError):
        LTX2Scheduler.from_flow_match_config(dict(flow.config, time_shift_type="linear"))
    with pytest.raises(ValueError):
        LTX2Scheduler.from_flow_match_config(dict(flow.config, use_karras_sigmas=True))
    with pytest.raises(ValueError):
        LTX2Scheduler.from_flow_match_config(42)
