"""euler-ancestral and res_2s: every step of our loop equals ltx-pipelines 1.2.0's `utils/samplers.py` given the
same noise (same seeds), with a deterministic toy x0 model in place of the transformer; then the samplers on the
tiny pipeline and the CLI."""

from __future__ import annotations

import math

import pytest
import torch
from official_12 import requires_official_12, run_official_12

from diffusers_ltx2 import LTX2Scheduler
from diffusers_ltx2.guiders import CONDITIONAL as COND, Prediction
from diffusers_ltx2.latents.state import ModalityLatents
from diffusers_ltx2.pipelines.denoising import denoise
from diffusers_ltx2.transformer import TextContexts
from diffusers_ltx2.pipelines.diffusers_compat import no_guidance
from diffusers_ltx2.schedulers.samplers import (
    EulerAncestralSampler,
    Res2sSampler,
    euler_ancestral_step,
    make_sampler,
    res2s_coefficients,
)

TOY = """
def toy_x0(latent, sigma, offset):
    # deterministic 'model': depends non-linearly on the latent, its neighbour token and sigma
    s = float(sigma)
    return torch.tanh(latent) * (1 - s) + 0.3 * latent.roll(1, dims=1) * s + offset
"""
_namespace = {"torch": torch}
exec(TOY, _namespace)  # noqa: S102 - the same source is the toy model on both sides
toy_x0 = _namespace["toy_x0"]


def _states(seed=0):
    g = torch.Generator().manual_seed(seed)
    video = torch.randn(1, 12, 4, generator=g)
    audio = torch.randn(1, 5, 3, generator=g)
    v_mask = torch.ones(1, 12)
    v_mask[0, :3] = 0.0  # a clean first frame (image condition)
    v_mask[0, 3] = 0.5  # a partial-strength token
    v_clean = torch.zeros(1, 12, 4)
    v_clean[0, :4] = torch.randn(4, 4, generator=g)
    video[0, :3] = v_clean[0, :3]  # conditioned tokens start at their clean values, as the pipelines build them
    return dict(video=video, audio=audio, v_mask=v_mask, v_clean=v_clean, a_mask=torch.ones(1, 5),
                a_clean=torch.zeros(1, 5, 3), v_off=torch.linspace(-0.5, 0.5, 4), a_off=torch.linspace(0.2, -0.2, 3))


OFFICIAL = TOY + """
from ltx_core.components.diffusion_steps import EulerAncestralDiffusionStep, Res2sDiffusionStep
from ltx_pipelines.utils.samplers import euler_ancestral_denoising_loop, res2s_audio_video_denoising_loop
from ltx_pipelines.utils.types import DenoisedLatentResult, LatentState

def state(latent, mask, clean):
    pos = torch.zeros(1, 1, latent.shape[1], 2)
    return LatentState(latent=latent.clone(), denoise_mask=mask.unsqueeze(-1), positions=pos, clean_latent=clean)

x = IN["states"]
for key, (name, eta, seed, sigmas) in IN["cases"].items():
    calls = []
    def denoiser(transformer, video_state, audio_state, sigmas, step_index):
        sigma = sigmas[step_index]
        calls.append((step_index, float(sigma), video_state.latent.clone(), audio_state.latent.clone()))
        return (DenoisedLatentResult(toy_x0(video_state.latent, sigma, x["v_off"])),
                DenoisedLatentResult(toy_x0(audio_state.latent, sigma, x["a_off"])))
    v = state(x["video"], x["v_mask"], x["v_clean"])
    a = state(x["audio"], x["a_mask"], x["a_clean"])
    if name == "euler_ancestral":
        v, a = euler_ancestral_denoising_loop(sigmas, v, a, EulerAncestralDiffusionStep(eta=eta), None, denoiser,
                                              noise_seed=seed, model_dtype=torch.float32)
    else:
        v, a = res2s_audio_video_denoising_loop(sigmas, v, a, Res2sDiffusionStep(), None, denoiser,
                                                noise_seed=seed, eta=eta, model_dtype=torch.float32)
    OUT[key] = dict(video=v.latent, audio=a.latent, calls=calls)
"""

SIGMAS = torch.tensor([1.0, 0.99375, 0.9875, 0.975, 0.909375, 0.725, 0.421875, 0.2, 0.0])
CASES = {
    "ancestral-distilled": ("euler_ancestral", 1.0, 10007, SIGMAS),  # the 2.5 distilled stage-1 settings
    "ancestral-eta0.4": ("euler_ancestral", 0.4, 3, SIGMAS),
    "res2s-hq": ("res_2s", 0.5, -1, SIGMAS),  # the HQ pipeline: bong iterations on small steps, 0.0011 last sigma
    "res2s-large-steps": ("res_2s", 0.7, 5, torch.tensor([1.0, 0.6, 0.25, 0.0])),  # no bong iterations
    "res2s-eta0": ("res_2s", 0.0, 8, torch.tensor([0.9, 0.5, 0.0])),  # deterministic full steps
}


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """All cases run by ltx-pipelines 1.2.0 in one child process."""
    return run_official_12(OFFICIAL, dict(states=_states(), cases=CASES), tmp_path_factory.mktemp("samplers"))


class ToyPasses:
    """Stands in for `TransformerPasses`: the conditional pass returns the toy x0; records what it was given."""

    def __init__(self, offsets):
        self.offsets, self.calls = offsets, []

    def __call__(self, plan, video, audio, contexts, sigma):
        assert [p.name for p in plan.passes] == [COND.name]
        self.calls.append((float(sigma), video.latent.clone(), audio.latent.clone()))
        return {COND.name: Prediction(toy_x0(video.latent, sigma, self.offsets[0]),
                                 toy_x0(audio.latent, sigma, self.offsets[1]))}


def _ours(x, sigmas, sampler):
    def modality(latent, mask, clean):
        n = latent.shape[1]
        return ModalityLatents(latent=latent.clone(), clean=clean, denoise_mask=mask,
                               coords=torch.zeros(1, 1, n, 2), num_target_tokens=n)

    schedule = LTX2Scheduler().sigmas_for(sigmas=sigmas[:-1].tolist())  # a stage's sigmas: the given ones + 0
    passes = ToyPasses((x["v_off"], x["a_off"]))
    contexts = TextContexts(positive=None)
    v, a = denoise(passes=passes, guider=no_guidance(), sigmas=schedule, contexts=contexts, sampler=sampler,
                   video=modality(x["video"], x["v_mask"], x["v_clean"]),
                   audio=modality(x["audio"], x["a_mask"], x["a_clean"]))
    return v.latent, a.latent, passes.calls


@requires_official_12
@pytest.mark.parametrize("case", CASES)
def test_every_step_equals_official(official, case):
    name, eta, seed, sigmas = CASES[case]
    x, ref = _states(), official[case]
    sampler = (EulerAncestralSampler(eta=eta, noise_seed=seed) if name == "euler_ancestral"
               else Res2sSampler(eta=eta, noise_seed=seed))
    video, audio, calls = _ours(x, sigmas, sampler)
    # the model is called as often, at the same sigmas, on the same latents (euler-ancestral bit-exact; res_2s
    # float32 vs the float64 midpoint sigma: observed <= 1.2e-7)
    assert len(calls) == len(ref["calls"]) == sampler.model_calls(len(sigmas) - 1)
    for (s, v, a), (_, rs, rv, ra) in zip(calls, ref["calls"]):
        assert math.isclose(s, rs, rel_tol=1e-6)
        torch.testing.assert_close(v, rv.float(), rtol=0, atol=1e-6)
        torch.testing.assert_close(a, ra.float(), rtol=0, atol=1e-6)
    torch.testing.assert_close(video, ref["video"], rtol=0, atol=1e-6)
    torch.testing.assert_close(audio, ref["audio"], rtol=0, atol=1e-6)
    assert torch.equal(video[0, :3], x["v_clean"][0, :3])  # the conditioned tokens never moved


def test_noise_really_enters():
    """Different noise seeds give different results (the noise is used), the same seed the same result."""
    x = _states()
    a1 = _ours(x, SIGMAS, EulerAncestralSampler(noise_seed=1))[0]
    assert torch.equal(a1, _ours(x, SIGMAS, EulerAncestralSampler(noise_seed=1))[0])
    assert (a1 - _ours(x, SIGMAS, EulerAncestralSampler(noise_seed=2))[0]).abs().max() > 1e-3
    r1 = _ours(x, SIGMAS, Res2sSampler(noise_seed=1))[0]
    assert (r1 - _ours(x, SIGMAS, Res2sSampler(noise_seed=2))[0]).abs().max() > 1e-3


def test_ancestral_without_noise_is_euler():
    """eta = 0: the ancestral step is the Euler step exactly (same loop, no noise drawn)."""
    x = _states()
    euler = _ours(x, SIGMAS, "euler")
    ancestral = _ours(x, SIGMAS, EulerAncestralSampler(eta=0.0))
    torch.testing.assert_close(ancestral[0], euler[0], rtol=0, atol=1e-6)
    sample, x0 = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    expected = sample + (sample - x0) / 0.8 * (0.5 - 0.8)
    torch.testing.assert_close(euler_ancestral_step(sample, x0, 0.8, 0.5, None, eta=0.0), expected)


def test_res2s_coefficients():
    # h -> 0: a21 = c2 phi_1(0) = 1/2, b2 = phi_2(0) / c2 = 1, b1 = phi_1(0) - b2 = 0
    assert res2s_coefficients(0.0) == (0.5, 0.0, 1.0)
    a21, b1, b2 = res2s_coefficients(1.0)
    assert math.isclose(a21, 0.5 * (1 - math.exp(-0.5)) / 0.5)
    assert math.isclose(b2, 2 * (math.exp(-1) - 1 + 1))
    assert math.isclose(b1 + b2, 1 - math.exp(-1))  # b1 + b2 = phi_1(-h)


def test_make_sampler_rejects_unknown():
    for bad in ("heun", 3, "res2s"):
        with pytest.raises(ValueError, match="sampler must be one of"):
            make_sampler(bad)
    with pytest.raises(ValueError, match="eta"):
        EulerAncestralSampler(eta=1.5)
    with pytest.raises(ValueError, match="noise_seed"):
        Res2sSampler(noise_seed=1.5)
    assert make_sampler("euler-ancestral").name == "euler_ancestral"


# -- on the pipeline ---------------------------------------------------------------------------------------------
RUN = dict(height=64, width=64, num_frames=9, num_inference_steps=3, output_type="latent", max_sequence_length=32)


def _count_calls(pipe):
    calls = []
    pipe.transformer.register_forward_pre_hook(lambda *a: calls.append(1))
    return calls


def test_pipeline_samplers_guided_and_conditioned(tiny_pipe):
    """Every sampler runs the pipeline's guidance (CFG: two passes, batched in one call) and image condition; the
    number of transformer calls is the sampler's x0 evaluations; same generator, same result."""
    image = torch.rand(3, 64, 64)
    out = {}
    for name, evaluations in (("euler", 3), ("euler_ancestral", 3), ("res_2s", 7)):
        calls = _count_calls(tiny_pipe)
        kw = dict(RUN, image=image, guidance_scale=3.0, stg_scale=0.0, modality_scale=1.0, audio_guidance_scale=3.0,
                  audio_stg_scale=0.0, audio_modality_scale=1.0, sampler=name)
        first = tiny_pipe("a dog runs", generator=torch.Generator().manual_seed(1), **kw)
        assert len(calls) == evaluations
        again = tiny_pipe("a dog runs", generator=torch.Generator().manual_seed(1), **kw)
        assert torch.equal(first.frames, again.frames) and torch.equal(first.audio, again.audio)
        out[name] = first.frames
    assert (out["euler"] - out["res_2s"]).abs().max() > 1e-4
    assert (out["euler"] - out["euler_ancestral"]).abs().max() > 1e-4


def test_sde_noise_seeds(tiny_pipe):
    """With the same initial noise, euler-ancestral's SDE noise follows the generator seed (official seed + 10000),
    res_2s' does not (the official HQ pipeline's fixed default -1) unless a seed is configured."""
    g = torch.Generator().manual_seed(0)
    noise = dict(latents=torch.randn(tiny_pipe.video_latent_shape(1, 9, 64, 64)[0], generator=g),
                 audio_latents=torch.randn(tiny_pipe.audio_latent_shape(1, 9, 24.0)[0], generator=g))

    def run(sampler, seed):
        return tiny_pipe("a dog", generator=torch.Generator().manual_seed(seed), sampler=sampler, **noise,
                         **RUN).frames

    assert (run("euler_ancestral", 1) - run("euler_ancestral", 2)).abs().max() > 1e-4
    torch.testing.assert_close(run("res_2s", 1), run("res_2s", 2), rtol=0, atol=0)
    assert (run(Res2sSampler(noise_seed=1), 1) - run(Res2sSampler(noise_seed=2), 1)).abs().max() > 1e-4


def test_bad_sampler_fails_before_any_model_runs(tiny_pipe):
    calls = _count_calls(tiny_pipe)
    with pytest.raises(ValueError, match="sampler must be one of"):
        tiny_pipe("a dog", sampler="heun", **RUN)
    assert calls == []
