"""A stage as a value (`pipelines.stage`): stages composed by hand run like a pipeline's, the loop takes its sigmas
and sampler from the stage and leaves the scheduler alone, `from_previous` hands a stage's result to the next, an
interrupt between stages stops there, and a sampler may evaluate the model more than once per step."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from diffusers_ltx2.factory import TINY_CLIP
from diffusers_ltx2.latents.noiser import StartLatents
from diffusers_ltx2.pipelines.call import resolve_call
from diffusers_ltx2.schedulers.samplers import euler_step

FAST = dict(num_inference_steps=3, max_sequence_length=128)


def _call(pipe, **kwargs):
    arguments = dict(prompt="a cat", negative_prompt=None, num_inference_steps=3, sigmas=None, timesteps=None,
                     guider=None, generator=torch.Generator().manual_seed(0), output_type="latent",
                     max_sequence_length=128, **TINY_CLIP)
    return resolve_call(pipe, **{**arguments, **kwargs})


@torch.no_grad()
def test_a_hand_made_stage_is_the_pipelines_call_and_the_scheduler_is_untouched(tiny_pipe):
    tiny_pipe.set_progress_bar_config(disable=True)
    out = tiny_pipe("a cat", generator=torch.Generator().manual_seed(0), output_type="latent", **TINY_CLIP, **FAST)
    call = _call(tiny_pipe)
    stage = call.stage()
    with pytest.raises(dataclasses.FrozenInstanceError):
        stage.sigmas = None
    again = tiny_pipe.generate(call, [stage])
    torch.testing.assert_close(again.frames, out.frames, rtol=0, atol=0)
    torch.testing.assert_close(again.audio, out.audio, rtol=0, atol=0)
    assert tiny_pipe.scheduler.sigmas is None and tiny_pipe.scheduler.timesteps is None  # never set by a call
    assert torch.equal(stage.sigmas, tiny_pipe.scheduler.sigmas_for(3))
    assert tiny_pipe.num_timesteps == 3


@torch.no_grad()
def test_from_previous_and_an_interrupt_between_stages(tiny_pipe):
    tiny_pipe.set_progress_bar_config(disable=True)
    call = _call(tiny_pipe)
    seen = []

    def refine(stage, previous):
        seen.append(previous)
        start = StartLatents(clean=previous.video.target(), noise_scale=float(stage.sigmas[0]))
        return dataclasses.replace(stage, video=start, from_previous=None)

    second = call.stage(sigmas=torch.tensor([0.5, 0.25, 0.0]), from_previous=refine)
    out = tiny_pipe.generate(call, [call.stage(), second])
    assert len(seen) == 1 and tiny_pipe.num_timesteps == 2  # the second stage's steps
    first_only = tiny_pipe.generate(call, [call.stage()])
    assert (out.frames - first_only.frames).abs().max() > 1e-3

    def stop(pipe, step, sigma, tensors):
        pipe._interrupt = True
        return {}

    interrupted = _call(tiny_pipe, callback_on_step_end=stop)
    result = tiny_pipe.generate(interrupted, [interrupted.stage(), interrupted.stage(from_previous=refine)])
    assert len(seen) == 1  # the second stage never started
    assert result.frames.shape == out.frames.shape


class HeunSampler:
    """A two-evaluation sampler (Heun on x0): what the loop's sampler protocol leaves room for."""

    name = "heun"

    def __init__(self):
        self.evaluations = 0

    def step(self, predict, latents, sigmas, index):
        sigma, nxt = sigmas[index], sigmas[index + 1]
        x0 = predict(latents, sigma)
        self.evaluations += 1
        euler = {k: euler_step(x0[k], v, sigma, nxt) for k, v in latents.items()}
        if float(nxt) == 0:
            return euler
        x0_next = predict(euler, nxt)
        self.evaluations += 1
        return {k: latents[k] + ((latents[k] - x0[k]) / sigma + (euler[k] - x0_next[k]) / nxt) / 2 * (nxt - sigma)
                for k in latents}


@torch.no_grad()
def test_a_stage_takes_its_sampler(tiny_pipe):
    tiny_pipe.set_progress_bar_config(disable=True)
    calls = []
    tiny_pipe.transformer.register_forward_pre_hook(lambda *a: calls.append(1))
    call = _call(tiny_pipe)
    euler = tiny_pipe.generate(call, [call.stage()])
    assert len(calls) == 3
    calls.clear()
    heun = HeunSampler()
    out = tiny_pipe.generate(call, [call.stage(sampler=heun)])
    assert heun.evaluations == len(calls) == 2 + 2 + 1  # two per step, one at the last (to sigma 0)
    assert torch.isfinite(out.frames).all() and (out.frames - euler.frames).abs().max() > 1e-4
