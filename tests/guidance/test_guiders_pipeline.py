"""Guiders through the pipeline: one transformer call per step, skip steps without calls, guider per call and saved
with the pipeline, the 2.3 STG block, a user-written APG guider, and the CLI flags."""

from __future__ import annotations

from typing import Mapping

import pytest
import torch
from diffusers import LTX2VideoTransformer3DModel

import diffusers_ltx2
from diffusers_ltx2 import (
    ClassifierFreeGuidance,
    GuidanceAttentionControl,
    Guider,
    LTX2AudioVideoPipeline,
    MultimodalGuider,
    Prediction,
    StepPlan,
)
from diffusers_ltx2.factory import TINY_CLIP
from diffusers_ltx2.guiders import CONDITIONAL, GuidancePass
from diffusers_ltx2.pipelines.base import default_guider

RUN = dict(TINY_CLIP, output_type="latent")


def _run(pipe, guider, steps=3, **kw):
    return pipe("a dog runs on the beach", num_inference_steps=steps, generator=torch.Generator().manual_seed(0),
                guider=guider, **RUN, **kw)


def test_one_call_per_step_and_none_when_both_skip(tiny_pipe):
    calls, per_step = [], []
    handle = tiny_pipe.transformer.register_forward_hook(lambda m, a, o: calls.append(a))

    def on_step(pipe, i, sigma, tensors):
        per_step.append(len(calls))
        calls.clear()
        return {}

    guider = MultimodalGuider(video=dict(cfg=3.0, stg=1.0, modality_scale=3.0, rescale=0.7, skip_step=2),
                              audio=dict(cfg=7.0, stg=1.0, modality_scale=3.0, rescale=0.7, skip_step=1))
    _run(tiny_pipe, guider, steps=7, callback_on_step_end=on_step)
    _run(tiny_pipe, MultimodalGuider(), steps=2, callback_on_step_end=on_step)
    handle.remove()
    # steps 1 and 5: video (every 3rd) and audio (every 2nd) both reuse their last x0 -> no transformer call
    assert per_step == [1, 0, 1, 1, 1, 0, 1] + [1, 1]


def test_batched_and_sequential_passes_agree_end_to_end(tiny_pipe):
    batched = _run(tiny_pipe, MultimodalGuider())
    sequential = _run(tiny_pipe, MultimodalGuider(), max_batch_passes=1)
    # Per pass the two agree to ~1e-6 (test_attention_control); over 3 steps guidance amplifies that up to
    # ~10x: observed ~6e-6 on latents of magnitude ~6.
    torch.testing.assert_close(batched.frames, sequential.frames, rtol=0, atol=5e-5)
    torch.testing.assert_close(batched.audio, sequential.audio, rtol=0, atol=5e-5)


def test_stg_changes_the_output_and_guider_per_call(tiny_pipe):
    off = dict(cfg=1.0, stg=0.0, modality_scale=1.0)
    plain = _run(tiny_pipe, MultimodalGuider(video=off, audio=off))
    stg = _run(tiny_pipe, MultimodalGuider(video=dict(stg=1.0), audio=dict(stg=1.0)))
    assert (stg.frames - plain.frames).abs().max() > 1e-2
    assert (stg.audio - plain.audio).abs().max() > 1e-2
    # the pipeline's own guider is untouched by per-call guiders; by default it is the recommended multimodal one
    assert isinstance(default_guider(), MultimodalGuider) and default_guider().skip_blocks is None
    assert isinstance(tiny_pipe.guider, ClassifierFreeGuidance)


def test_pipeline_saves_and_reloads_its_multimodal_guider(tiny_pipe, tmp_path):
    guider = MultimodalGuider(video=dict(cfg=2.5, stg=0.5, modality_scale=2.0, rescale=0.3, cross_attn=False),
                              audio=dict(cfg=6.0, stg=1.0, skip_step=1, perturb_attn=False), skip_blocks=[0])
    tiny_pipe.guider = None
    tiny_pipe.register_modules(guider=guider)
    tiny_pipe.save_pretrained(tmp_path)
    loaded = diffusers_ltx2.LTX2AudioVideoPipeline.from_pretrained(tmp_path)
    assert isinstance(loaded.guider, MultimodalGuider)
    assert (loaded.guider.video, loaded.guider.audio, loaded.guider.skip_blocks) == (
        guider.video, guider.audio, guider.skip_blocks)
    a = _run(tiny_pipe, None)
    b = _run(loaded, None)
    torch.testing.assert_close(a.frames, b.frames, rtol=0, atol=0)
    torch.testing.assert_close(a.audio, b.audio, rtol=0, atol=0)


def _tiny_transformer(num_layers, **extra):
    return LTX2VideoTransformer3DModel(
        in_channels=16, out_channels=16, num_attention_heads=2, attention_head_dim=8, cross_attention_dim=16,
        audio_in_channels=32, audio_out_channels=32, audio_num_attention_heads=2, audio_attention_head_dim=4,
        audio_cross_attention_dim=8, num_layers=num_layers, caption_channels=32, rope_type="split", **extra,
    )


@pytest.mark.parametrize("extra,block", [({}, 29), (dict(gated_attn=True, audio_gated_attn=True,
                                                       cross_attn_mod=True, audio_cross_attn_mod=True), 28)])
def test_default_stg_block_follows_the_checkpoint(tiny_components, extra, block):
    tiny_components["transformer"] = _tiny_transformer(30, **extra)
    pipe = LTX2AudioVideoPipeline(scheduler=diffusers_ltx2.LTX2Scheduler(), **tiny_components)
    control = pipe.attention_control_for(pipe.guider)
    assert isinstance(control, GuidanceAttentionControl) and control.default_skip_blocks == (block,)
    plan = pipe.guider.plan(0, 10, 1.0)
    with control.activate(plan.passes, 1, plan.skip_blocks) as act:
        stg_rows = act.modes[(block, "attn1")]
        assert stg_rows == ("full", "full", "value", "full")  # only the STG pass, only in the default block
        assert all(m == "full" for i in range(30) if i != block for m in act.modes[(i, "attn1")])
    with pytest.raises(ValueError, match="outside"):
        MultimodalGuider(skip_blocks=[30]).validate_for(pipe.transformer)


class AdaptiveProjectedGuidance(Guider):
    """APG (Sadat et al.) plus STG, written against the public `Guider` interface only: the cfg delta is split
    into parts parallel / orthogonal to the conditional prediction and the parallel part weighted by `eta`."""

    def __init__(self, scale: float, eta: float, stg: float = 0.0):
        self.scale, self.eta, self.stg = scale, eta, stg

    @property
    def uses_negative_prompt(self) -> bool:
        return True

    def plan(self, step_index: int, num_steps: int, sigma: float) -> StepPlan:
        passes = [CONDITIONAL, GuidancePass("neg", negative=True)]
        if self.stg:
            passes.append(GuidancePass("ptb", perturb_video=True, perturb_audio=True))
        return StepPlan(passes=tuple(passes))

    def combine(self, step_index: int, plan: StepPlan, predictions: Mapping[str, Prediction]) -> Prediction:
        def one(c, u, p):
            delta = c - u
            coef = (delta * c).flatten(1).sum(1) / (c * c).flatten(1).sum(1).clamp_min(1e-12)
            parallel = coef.view(-1, 1, 1) * c
            out = c + (self.scale - 1) * (self.eta * parallel + (delta - parallel))
            return out + self.stg * (c - p) if p is not None else out

        c, u, p = predictions["cond"], predictions["neg"], predictions.get("ptb")
        return Prediction(one(c.video, u.video, p and p.video), one(c.audio, u.audio, p and p.audio))


def test_user_defined_apg_guider_plugs_in_unchanged(tiny_pipe):
    apg = _run(tiny_pipe, AdaptiveProjectedGuidance(scale=4.0, eta=1.0, stg=1.0))
    # eta = 1 keeps the whole cfg delta: APG + STG reduces to the multimodal guider's cfg + stg
    ref = _run(tiny_pipe, MultimodalGuider(video=dict(cfg=4.0, stg=1.0), audio=dict(cfg=4.0, stg=1.0)))
    torch.testing.assert_close(apg.frames, ref.frames, rtol=0, atol=1e-4)
    torch.testing.assert_close(apg.audio, ref.audio, rtol=0, atol=1e-4)
    projected = _run(tiny_pipe, AdaptiveProjectedGuidance(scale=4.0, eta=0.0, stg=1.0))
    assert torch.isfinite(projected.frames).all() and (projected.frames - apg.frames).abs().max() > 1e-3


def test_cli_guidance_flags():
    from diffusers_ltx2.cli import parse_args
    from diffusers_ltx2.cli.guidance_args import guider_from_args

    base = ["generate", "--model", "m", "--prompt", "p", "--output", "o.mp4"]
    default = guider_from_args(parse_args(base)[1])
    assert (default.video, default.audio, default.skip_blocks) == (MultimodalGuider().video, MultimodalGuider().audio,
                                                                   None)
    args = parse_args(base + "--cfg 2 --audio-cfg 5 --stg 0.5 --audio-stg 0 --modality-scale 1 "
                             "--audio-modality-scale 2.5 --rescale 0 --audio-rescale 0.9 --skip-step 1 "
                             "--audio-skip-step 2 --no-perturb-attn --no-audio-cross-attn "
                             "--skip-blocks 28,29".split())[1]
    g = guider_from_args(args)
    assert (g.video.cfg, g.video.stg, g.video.modality_scale, g.video.rescale, g.video.skip_step) == (2, 0.5, 1, 0, 1)
    assert (g.audio.cfg, g.audio.stg, g.audio.modality_scale, g.audio.rescale, g.audio.skip_step) == (5, 0, 2.5, 0.9, 2)
    assert (g.video.perturb_attn, g.video.cross_attn, g.audio.perturb_attn, g.audio.cross_attn) == (
        False, True, True, False)
    assert g.skip_blocks == (28, 29)
    # every dial is checked with its flag's name, before anything is imported
    for bad, match in ((["--audio-rescale", "1.5"], "--audio-rescale: must be in"), (["--skip-step", "-1"],
                       "--skip-step: must be >= 0"), (["--cfg", "-2"], "--cfg: must be a finite number >= 0"),
                       (["--skip-blocks", "a,b"], "--skip-blocks: must be comma-separated")):
        with pytest.raises(ValueError, match=match):
            parse_args(base + bad)