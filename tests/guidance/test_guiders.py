"""Guider math and planning without a model: the combine formula against ltx-core's `MultiModalGuider.calculate`,
dial validation, which passes each step plans, and saving / loading guiders."""

from __future__ import annotations

import itertools
import json
import types

import pytest
import torch
from ltx_core.components.guiders import MultiModalGuider as OfficialGuider
from ltx_core.components.guiders import MultiModalGuiderParams

from diffusers_ltx2 import (
    ClassifierFreeGuidance,
    ModalityGuidance,
    ModalityGuidanceParams,
    MultimodalGuider,
    Prediction,
    SpatioTemporalGuidance,
)
from diffusers_ltx2.guiders import multimodal_combine
from diffusers_ltx2.transformer import default_skip_blocks

GRID = list(itertools.product((1.0, 3.0, 7.0), (0.0, 1.0, 2.5), (1.0, 3.0), (0.0, 0.5, 0.7, 1.0)))


@pytest.mark.parametrize("cfg,stg,modality,rescale", GRID)
def test_combine_equals_ltx_core(cfg, stg, modality, rescale):
    g = torch.Generator().manual_seed(int(cfg * 100 + stg * 10 + modality + rescale * 1000))
    c, u, p, m = (torch.randn(2, 37, 16, generator=g) * s for s in (1.0, 1.3, 0.9, 1.1))
    ref = OfficialGuider(MultiModalGuiderParams(
        cfg_scale=cfg, stg_scale=stg, modality_scale=modality, rescale_scale=rescale,
    )).calculate(c, u, p, m)
    ours = multimodal_combine(c, u, p, m, cfg=cfg, stg=stg, modality_scale=modality, rescale=rescale)
    # Same fp32 operations in the same order; we only leave out terms whose scale is neutral, which the
    # official code multiplies by exactly 0. 1 ulp of slack for the reduction order of std().
    torch.testing.assert_close(ours, ref, rtol=2e-7, atol=2e-6)
    assert ours.dtype == torch.float32


def test_batched_videos_are_rescaled_each_as_its_own_official_call():
    """The official pipelines guide one video per call: a batch of videos combines like one official call per
    video (the rescale std per video, as diffusers' per-sample `rescale_noise_cfg`), not one std over the batch."""
    from diffusers_ltx2.guiders.combine import combine_per_video

    g = torch.Generator().manual_seed(5)
    c, u, p, m = (torch.randn(3, 37, 16, generator=g) * s for s in (1.0, 1.3, 0.9, 1.1))
    c[1] *= 4.0  # one loud video: over the whole batch its std would change the others' factor
    official = OfficialGuider(MultiModalGuiderParams(cfg_scale=3.0, stg_scale=1.0, modality_scale=3.0,
                                                     rescale_scale=0.7))
    dials = dict(cfg=3.0, stg=1.0, modality_scale=3.0, rescale=0.7)
    ours = combine_per_video(c, u, p, m, **dials)
    for i in range(3):
        ref = official.calculate(c[i:i + 1], u[i:i + 1], p[i:i + 1], m[i:i + 1])
        torch.testing.assert_close(ours[i:i + 1], ref, rtol=2e-7, atol=2e-6)
    assert (official.calculate(c, u, p, m)[0] - ours[0]).abs().max() > 1e-3  # the batch-wide std differs
    no_rescale = dict(dials, rescale=0.0)
    assert torch.equal(combine_per_video(c, u, p, m, **no_rescale), multimodal_combine(c, u, p, m, **no_rescale))


def test_combine_neutral_terms_need_no_tensor_and_skip_works():
    c = torch.randn(1, 5, 4)
    assert torch.equal(multimodal_combine(c), c)
    with pytest.raises(ValueError, match="negative-prompt"):
        multimodal_combine(c, cfg=3.0)
    with pytest.raises(ValueError, match="perturbed"):
        multimodal_combine(c, stg=1.0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        multimodal_combine(c, rescale=1.5)
    # bf16 inputs are combined in fp32
    out = multimodal_combine(c.bfloat16(), c.bfloat16() * 0.5, cfg=2.0)
    assert out.dtype == torch.float32


@pytest.mark.parametrize("kwargs,match", [
    (dict(cfg=-1.0), "cfg"), (dict(stg=-0.5), "stg"), (dict(modality_scale=-2), "modality_scale"),
    (dict(rescale=-0.1), "rescale"), (dict(rescale=1.01), "rescale"), (dict(cfg=float("nan")), "cfg"),
    (dict(skip_step=-1), "skip_step"), (dict(skip_step=1.5), "skip_step"), (dict(skip_step=True), "skip_step"),
    (dict(skip_step="1"), "skip_step"), (dict(perturb_attn="yes"), "perturb_attn"), (dict(cfg="3"), "cfg"),
])
def test_invalid_dials_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ModalityGuidanceParams(**kwargs)
    with pytest.raises(ValueError, match=match):
        MultimodalGuider(video=kwargs)


def _fake_transformer(num_layers: int, **config):
    return types.SimpleNamespace(config=types.SimpleNamespace(**config), transformer_blocks=[None] * num_layers)


def test_skip_blocks_validation_and_model_defaults():
    with pytest.raises(ValueError, match="outside"):
        MultimodalGuider(skip_blocks=[-1])
    with pytest.raises(ValueError, match="duplicates"):
        MultimodalGuider(skip_blocks=[3, 3])
    with pytest.raises(ValueError, match="block indices"):
        MultimodalGuider(skip_blocks=["29"])
    guider = MultimodalGuider(skip_blocks=[29])
    guider.validate_for(_fake_transformer(48))
    with pytest.raises(ValueError, match=r"skip_blocks \[29\] are outside.*8 blocks"):
        guider.validate_for(_fake_transformer(8))
    with pytest.raises(ValueError, match="outside"):
        SpatioTemporalGuidance(skip_blocks=[5]).validate_for(_fake_transformer(4))
    # default STG block: LTX-2.0 29, 2.3 (gated attention / prompt modulation) 28, clipped to the depth
    assert default_skip_blocks(_fake_transformer(48)) == (29,)
    assert default_skip_blocks(_fake_transformer(48, gated_attn=True, cross_attn_mod=True)) == (28,)
    assert default_skip_blocks(_fake_transformer(2)) == (1,)


def _names(plan):
    return [p.name for p in plan.passes]


def test_plan_runs_only_needed_passes():
    off = dict(cfg=1.0, stg=0.0, modality_scale=1.0)
    plan = MultimodalGuider(video=off, audio=off).plan(0, 10, 1.0)
    assert _names(plan) == ["cond"] and not plan.passes[0].needs_attention_control
    plan = MultimodalGuider(video=dict(cfg=3.0), audio=off).plan(0, 10, 1.0)
    assert _names(plan) == ["cond", "uncond"] and plan.passes[1].negative
    plan = MultimodalGuider().plan(0, 10, 1.0)
    assert _names(plan) == ["cond", "uncond", "perturbed", "isolated"]
    ptb, iso = plan.passes[2], plan.passes[3]
    assert ptb.perturb_video and ptb.perturb_audio and ptb.a2v and ptb.v2a and not ptb.negative
    assert not iso.a2v and not iso.v2a and not (iso.perturb_video or iso.perturb_audio)
    assert plan.skip_blocks == ()  # the model's default, chosen by the attention control
    assert MultimodalGuider(skip_blocks=[3]).plan(0, 10, 1.0).skip_blocks == (3,)


def test_plan_perturb_attn_and_cross_attn():
    # official: a modality with stg 0 is not perturbed; perturb_attn=False switches a modality off
    plan = MultimodalGuider(video=dict(stg=1.0), audio=dict(stg=0.0)).plan(0, 4, 1.0)
    assert _names(plan) == ["cond", "perturbed"]
    assert plan.passes[1].perturb_video and not plan.passes[1].perturb_audio
    plan = MultimodalGuider(video=dict(stg=1.0, perturb_attn=False), audio=dict(stg=1.0)).plan(0, 4, 1.0)
    assert not plan.passes[1].perturb_video and plan.passes[1].perturb_audio
    # nothing perturbed: the STG pass would equal the conditional one; it is not run and the delta is zero
    guider = MultimodalGuider(video=dict(stg=2.0, perturb_attn=False), audio=dict(stg=1.0, perturb_attn=False))
    assert _names(guider.plan(0, 4, 1.0)) == ["cond"]
    c = Prediction(torch.randn(1, 3, 2), torch.randn(1, 2, 2))
    out = guider.combine(0, guider.plan(0, 4, 1.0), {"cond": c})
    assert torch.equal(out.video, c.video) and torch.equal(out.audio, c.audio)
    # cross_attn: the video flag gates audio->video, the audio flag video->audio, in every pass
    plan = MultimodalGuider(video=dict(cross_attn=False, cfg=3.0, stg=1.0), audio=dict(cfg=7.0)).plan(0, 4, 1.0)
    assert all(not p.a2v and p.v2a for p in plan.passes)
    plan = MultimodalGuider(audio=dict(cross_attn=False, cfg=2.0)).plan(0, 4, 1.0)
    assert [(p.a2v, p.v2a) for p in plan.passes] == [(True, False)] * 3 + [(False, False)]


def test_plan_skip_step_official_semantics():
    guider = MultimodalGuider(audio=dict(RECOMMENDED_AUDIO, skip_step=1), video=dict(RECOMMENDED_VIDEO, skip_step=2))
    recompute = [(p.video, p.audio) for p in (guider.plan(i, 7, 1.0) for i in range(7))]
    assert recompute == [(True, True), (False, False), (False, True), (True, False), (False, True),
                         (False, False), (True, True)]
    assert guider.plan(1, 7, 1.0).passes == () and not guider.plan(1, 7, 1.0).runs_model
    plan = guider.plan(3, 7, 1.0)  # video recomputed, audio reuses its x0
    frozen = {p.name: (p.freeze_video, p.freeze_audio) for p in plan.passes}
    # official: the audio stream is frozen in every pass built from the conditional modality objects
    assert frozen == {"cond": (False, True), "uncond": (False, False), "perturbed": (False, True),
                      "isolated": (False, True)}
    # a pass only the skipped modality needs is not run
    g2 = MultimodalGuider(video=dict(cfg=3.0), audio=dict(modality_scale=3.0, skip_step=1))
    assert _names(g2.plan(1, 4, 1.0)) == ["cond", "uncond"]
    assert _names(g2.plan(2, 4, 1.0)) == ["cond", "uncond", "isolated"]


RECOMMENDED_VIDEO = dict(cfg=3.0, stg=1.0, modality_scale=3.0, rescale=0.7)
RECOMMENDED_AUDIO = dict(cfg=7.0, stg=1.0, modality_scale=3.0, rescale=0.7)


def test_combine_uses_each_modalitys_dials():
    guider = MultimodalGuider(video=dict(cfg=3.0, stg=1.0, rescale=0.7), audio=dict(cfg=7.0, modality_scale=2.0))
    g = torch.Generator().manual_seed(0)
    preds = {k: Prediction(torch.randn(1, 6, 4, generator=g), torch.randn(1, 3, 4, generator=g))
             for k in ("cond", "uncond", "perturbed", "isolated")}
    out = guider.combine(0, guider.plan(0, 4, 1.0), preds)
    c, u, p, m = (preds[k] for k in ("cond", "uncond", "perturbed", "isolated"))
    torch.testing.assert_close(out.video, multimodal_combine(c.video, u.video, p.video, cfg=3.0, stg=1.0, rescale=0.7))
    torch.testing.assert_close(out.audio, c.audio + 6.0 * (c.audio - u.audio) + 1.0 * (c.audio - m.audio))


def test_stg_and_modality_guiders():
    g = torch.Generator().manual_seed(1)
    c, p, m = (Prediction(torch.randn(1, 4, 2, generator=g), torch.randn(1, 3, 2, generator=g)) for _ in range(3))
    stg = SpatioTemporalGuidance(stg_scale=2.0, audio_stg_scale=0.0, skip_blocks=[1])
    plan = stg.plan(0, 3, 1.0)
    assert [x.name for x in plan.passes] == ["cond", "perturbed"] and plan.skip_blocks == (1,)
    assert plan.passes[1].perturb_video and not plan.passes[1].perturb_audio
    out = stg.combine(0, plan, {"cond": c, "perturbed": p})
    torch.testing.assert_close(out.video, c.video + 2.0 * (c.video - p.video))
    assert torch.equal(out.audio, c.audio)
    mod = ModalityGuidance(modality_scale=3.0, audio_modality_scale=1.0)
    plan = mod.plan(0, 3, 1.0)
    assert not plan.passes[1].a2v and not plan.passes[1].v2a
    out = mod.combine(0, plan, {"cond": c, "isolated": m})
    torch.testing.assert_close(out.video, c.video + 2.0 * (c.video - m.video))
    assert torch.equal(out.audio, c.audio)
    assert [x.name for x in ModalityGuidance(1.0, 1.0).plan(0, 3, 1.0).passes] == ["cond"]
    with pytest.raises(ValueError):
        SpatioTemporalGuidance(stg_scale=-1.0)
    with pytest.raises(ValueError):
        ModalityGuidance(modality_scale=-1.0)


@pytest.mark.parametrize("guider", [
    MultimodalGuider(video=dict(cfg=2.0, stg=0.5, skip_step=1, cross_attn=False),
                     audio=dict(cfg=5.0, rescale=0.3, perturb_attn=False), skip_blocks=[4, 7]),
    MultimodalGuider(),
    SpatioTemporalGuidance(1.5, 0.5, skip_blocks=[2]),
    ModalityGuidance(2.0, 4.0),
    ClassifierFreeGuidance(2.0, 5.0),
])
def test_guider_config_round_trip(guider, tmp_path):
    guider.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "guider_config.json").read_text())
    assert saved["_class_name"] == type(guider).__name__
    loaded = type(guider).from_pretrained(tmp_path)
    assert type(loaded) is type(guider)
    public = lambda cfg: {k: v for k, v in cfg.items() if not k.startswith("_")}  # noqa: E731
    assert public(loaded.config) == public(guider.config)
    for i in range(4):
        assert loaded.plan(i, 4, 0.5) == guider.plan(i, 4, 0.5)
    if isinstance(guider, MultimodalGuider):
        assert loaded.video == guider.video and loaded.audio == guider.audio
        assert loaded.skip_blocks == guider.skip_blocks
