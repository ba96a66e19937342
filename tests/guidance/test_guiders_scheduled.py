"""`ScheduledGuider` (per-sigma-range dials) against ltx-core's `MultiModalGuiderFactory.from_dict` and the official
factory denoising loop (`multi_modal_guider_factory_denoising_func`) on tiny random weights."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

import ltx_reference  # noqa: F401  (stubs torchaudio before ltx-core is imported)

from ltx_core.components.diffusion_steps import EulerDiffusionStep  # noqa: E402
from ltx_core.components.guiders import MultiModalGuiderFactory, MultiModalGuiderParams  # noqa: E402
from ltx_core.types import LatentState  # noqa: E402
from ltx_pipelines.utils.helpers import multi_modal_guider_factory_denoising_func  # noqa: E402
from ltx_pipelines.utils.samplers import euler_denoising_loop  # noqa: E402

from diffusers_ltx2.guiders import ModalityGuidanceParams, MultimodalGuider, ScheduledGuider  # noqa: E402
from diffusers_ltx2.transformer import GuidanceAttentionControl  # noqa: E402
from diffusers_ltx2.guiders.scheduled import PRESETS, params_for_sigma  # noqa: E402
from diffusers_ltx2.latents.state import ModalityLatents  # noqa: E402
from diffusers_ltx2.pipelines.denoising import denoise  # noqa: E402
from diffusers_ltx2.transformer.passes import TransformerPasses  # noqa: E402
from diffusers_ltx2.schedulers import LTX2Scheduler  # noqa: E402

from test_official_parity_guidance import REC_A, REC_V, STG_BLOCKS, _inputs, models  # noqa: E402,F401

OFF = ModalityGuidanceParams()
VIDEO = {math.inf: REC_V, 0.6: dataclasses.replace(REC_V, stg=0.0), 0.2: OFF}
AUDIO = {1.0: dataclasses.replace(REC_A, skip_step=1), 0.6: dataclasses.replace(REC_A, stg=0.0, modality_scale=1.0)}


def official_params(p: ModalityGuidanceParams) -> MultiModalGuiderParams:
    return MultiModalGuiderParams(cfg_scale=p.cfg, stg_scale=p.stg, stg_blocks=list(STG_BLOCKS), rescale_scale=p.rescale,
                                  modality_scale=p.modality_scale, skip_step=p.skip_step)


def test_sigma_lookup_is_the_official_one():
    schedule = {math.inf: REC_V, 0.9: OFF, 0.6: dataclasses.replace(REC_V, stg=0.0), 0.2: REC_A}
    factory = MultiModalGuiderFactory.from_dict({k: official_params(p) for k, p in schedule.items()})
    ours = ScheduledGuider(video=schedule).video_schedule
    no_inf = {0.9: OFF, 0.6: REC_V}  # sigma above every key: the largest key's params
    factory_no_inf = MultiModalGuiderFactory.from_dict({k: official_params(p) for k, p in no_inf.items()})
    for sigma in (2.0, 1.0, 0.95, 0.9, 0.8999, 0.6, 0.5, 0.2, 0.1, 0.0):
        assert official_params(params_for_sigma(ours, sigma)) == factory.params(sigma), sigma
        assert official_params(params_for_sigma(ScheduledGuider(video=no_inf).video_schedule, sigma)) == \
            factory_no_inf.params(sigma), sigma


def test_plan_skips_the_passes_whose_dials_are_off():
    guider = ScheduledGuider(video=VIDEO, audio=AUDIO, skip_blocks=list(STG_BLOCKS))
    names = lambda step, sigma: [p.name for p in guider.plan(step, 10, sigma).passes]  # noqa: E731
    assert names(0, 0.9) == ["cond", "uncond", "perturbed", "isolated"]
    assert names(1, 0.9) == ["cond", "uncond", "perturbed", "isolated"]  # audio skips, video fully guided
    assert names(0, 0.5) == ["cond", "uncond", "isolated"]  # STG off everywhere: no perturbed pass
    assert names(0, 0.1) == ["cond", "uncond"]  # video unguided; audio cfg only
    only_video_off = ScheduledGuider(video={math.inf: OFF}, audio={math.inf: OFF})
    assert [p.name for p in only_video_off.plan(0, 4, 0.5).passes] == ["cond"]
    assert not only_video_off.uses_negative_prompt and guider.uses_negative_prompt


@pytest.mark.parametrize("bad, match", [({}, "non-empty"), ({-1.0: OFF}, "sigmas >= 0"), ({math.nan: OFF}, "sigmas"),
                                        ({1.0: dict(cfg=-1)}, "cfg"), ({1.0: dict(bogus=1)}, "unknown"),
                                        ("strong", "schedule")])
def test_bad_schedules_are_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        ScheduledGuider(video=bad)


def test_presets_and_save_reload(tmp_path):
    for name in PRESETS:
        assert ScheduledGuider.from_preset(name).plan(0, 10, 1.0).passes  # every preset guides the first step
    late = ScheduledGuider.from_preset("guidance_off_late")
    assert [p.name for p in late.plan(0, 10, 0.1).passes] == ["cond"]
    with pytest.raises(ValueError, match="unknown preset"):
        ScheduledGuider.from_preset("nope")
    guider = ScheduledGuider(video=VIDEO, audio=AUDIO, skip_blocks=[1])
    guider.save_pretrained(tmp_path)
    loaded = ScheduledGuider.from_pretrained(tmp_path)
    assert loaded.video_schedule == guider.video_schedule and loaded.audio_schedule == guider.audio_schedule
    assert loaded.skip_blocks == (1,)
    default_audio = ScheduledGuider(video=VIDEO)
    default_audio.save_pretrained(tmp_path / "d")
    assert ScheduledGuider.from_pretrained(tmp_path / "d").audio_schedule == default_audio.video_schedule


def test_guided_loop_matches_the_official_factory_loop(models):  # noqa: F811
    steps = 6
    video, audio, ctx = _inputs(models, batch=1, seed=5)  # the official loop takes a scalar sigma: batch 1
    scheduler = LTX2Scheduler()
    scheduler.set_timesteps(steps)
    sigmas = scheduler.sigmas.clone()
    # the schedule really switches dials inside this run
    assert sigmas[0] > 0.6 and any(0.2 < s <= 0.6 for s in sigmas[:-1]) and any(s <= 0.2 for s in sigmas[:-1])
    factory = lambda schedule, negative: MultiModalGuiderFactory.from_dict(  # noqa: E731
        {k: official_params(p) for k, p in schedule.items()}, negative_context=negative)
    fn = multi_modal_guider_factory_denoising_func(
        factory(VIDEO, ctx.negative.video_context), factory(AUDIO, ctx.negative.audio_context),
        ctx.positive.video_context, ctx.positive.audio_context, models.official,
    )

    def state(m: ModalityLatents):
        return LatentState(latent=m.latent.clone(), denoise_mask=m.denoise_mask.unsqueeze(-1), positions=m.coords,
                           clean_latent=m.clean.clone())

    guider = ScheduledGuider(video=VIDEO, audio=AUDIO, skip_blocks=list(STG_BLOCKS))
    with torch.no_grad():
        ref_v, ref_a = euler_denoising_loop(sigmas, state(video), state(audio), EulerDiffusionStep(), fn)
        runner = TransformerPasses(models.ours, attention_control=GuidanceAttentionControl(models.ours))
        out_v, out_a = denoise(passes=runner, guider=guider, sigmas=scheduler.sigmas, video=video, audio=audio,
                               contexts=ctx)
        # not vacuous: a constant (fully guided) run ends elsewhere
        const_v, _ = denoise(passes=runner, guider=MultimodalGuider(REC_V, REC_A, skip_blocks=list(STG_BLOCKS)),
                             sigmas=scheduler.sigmas, video=video, audio=audio, contexts=ctx)
    # Same tolerance reasoning as test_official_parity_guidance (per-pass ~5e-6, amplified by guidance <= 10x and
    # accumulated over the steps); the bound is 1e-4.
    torch.testing.assert_close(out_v.latent, ref_v.latent, rtol=0, atol=1e-4)
    torch.testing.assert_close(out_a.latent, ref_a.latent, rtol=0, atol=1e-4)
    assert (const_v.latent - out_v.latent).abs().max() > 1e-2
    print(f"max |ours - official factory loop|: video {(out_v.latent - ref_v.latent).abs().max():.2e}, "
          f"audio {(out_a.latent - ref_a.latent).abs().max():.2e}")


def test_frozen_modality_gets_no_pass_in_any_sigma_range():
    """A2V / V2A / audio-only: the scheduled guider plans, in every range, what `MultimodalGuider.for_frozen`
    plans for that range's dials (no negative / perturbed / isolated pass for the frozen modality)."""
    guider = ScheduledGuider.from_preset("stg_off_late")
    for kwargs in (dict(audio=True), dict(video=True), dict(video=True, cross_modal=False)):
        frozen = guider.for_frozen(**kwargs)
        for step, sigma in enumerate((1.0, 0.9, 0.5, 0.2, 0.05)):
            expected = guider.guider_at(sigma).for_frozen(**kwargs).plan(step, 5, sigma)
            assert frozen.plan(step, 5, sigma) == expected
    assert guider.for_frozen() is guider
    # the copy keeps the schedule (and saves like the original)
    assert dict(guider.for_frozen(audio=True).config) == dict(guider.config)
