"""Two-stage pipeline behaviour on the tiny model: LoRA switching leaves the pipeline exactly as it was, the
distilled LoRA is active in stage 2 only (on top of the user's LoRAs), checks run before any model, the official
default negative prompt, A2V keeps the waveform, keyframes stay held in both stages and each stage steps with its
sampler."""

from __future__ import annotations

import copy
import hashlib

import numpy as np
import pytest
import torch
from diffusers.pipelines.ltx2.latent_upsampler import LTX2LatentUpsamplerModel
from two_stage_files import write_official_lora

from diffusers_ltx2 import DEFAULT_NEGATIVE_PROMPT, ClassifierFreeGuidance, LTX2Scheduler, LTX2TwoStagePipeline
from diffusers_ltx2.conditioning import AudioCondition, VideoCondition
from diffusers_ltx2.conditioning.frames import to_vae_pixels
from diffusers_ltx2.loaders.adapter_state import active_adapter_strengths, lora_layers
from diffusers_ltx2.media.audio import resample_audio
from diffusers_ltx2.latents import layout as L
from diffusers_ltx2.pipelines.upsampling import upsample_latents
from diffusers_ltx2.schedulers.samplers import Res2sSampler

CLIP = dict(height=128, width=128, num_frames=17, frame_rate=24.0)  # stage 1: 64x64 (2x2), stage 2: 4x4
PROMPT = "a dog runs on the beach"


@pytest.fixture()
def pipe(tiny_components, tmp_path):
    torch.manual_seed(0)
    up = LTX2LatentUpsamplerModel(in_channels=tiny_components["vae"].config.latent_channels, mid_channels=32,
                                  num_blocks_per_stage=1, use_rational_resampler=False).eval()
    p = LTX2TwoStagePipeline(scheduler=LTX2Scheduler(), guider=ClassifierFreeGuidance(3.0, 7.0),
                             latent_upsampler=up, **tiny_components)
    p.set_progress_bar_config(disable=True)
    write_official_lora(tmp_path / "style.safetensors", p.transformer, seed=1, blocks=(1,))
    write_official_lora(tmp_path / "distilled.safetensors", p.transformer, seed=2)
    p.load_lora_weights(str(tmp_path / "style.safetensors"), adapter_name="style", reference_downscale_factor=1)
    p.load_distilled_lora(str(tmp_path / "distilled.safetensors"), strength=0.8)
    return p


def _run(pipe, steps=2, **kw):
    kw = {**CLIP, "output_type": "latent", **kw}
    return pipe(PROMPT, num_inference_steps=steps, generator=torch.Generator().manual_seed(0), **kw)


def _hash(*models) -> str:
    h = hashlib.sha256()
    for m in models:
        for k, v in sorted(m.state_dict().items()):
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _adapter_state(model):
    return [(list(m.active_adapters), dict(m.scaling), m.disable_adapters) for m in lora_layers(model)]


def _recorder(pipe, names=("latents",)):
    seen = []

    def on_step(p, i, sigma, tensors):
        seen.append(dict(sigma=float(sigma), adapters=active_adapter_strengths(p.transformer),
                         **{k: v.clone() for k, v in tensors.items()}))
        return {}

    return seen, dict(callback_on_step_end=on_step, callback_on_step_end_tensor_inputs=list(names))


@torch.no_grad()
def test_distilled_lora_only_in_stage_2_and_pipeline_restored(pipe):
    before_hash = _hash(pipe.transformer, pipe.connectors)
    before_state = _adapter_state(pipe.transformer)
    assert active_adapter_strengths(pipe.transformer) == {"style": 1.0}  # loaded, inactive
    seen, cb = _recorder(pipe)
    out = _run(pipe, **cb)
    assert [s["sigma"] for s in seen[2:]] == pytest.approx([0.909375, 0.725, 0.421875])
    assert all(s["adapters"] == {"style": 1.0} for s in seen[:2])  # stage 1: the user's LoRA only
    assert all(s["adapters"] == {"style": 1.0, "ltx2_distilled": pytest.approx(0.8)} for s in seen[2:])
    assert seen[0]["latents"].shape[1] == 3 * 2 * 2 and seen[2]["latents"].shape[1] == 3 * 4 * 4
    assert out.frames.shape == (1, pipe.vae.config.latent_channels, 3, 4, 4)
    assert _hash(pipe.transformer, pipe.connectors) == before_hash  # no weight written
    assert _adapter_state(pipe.transformer) == before_state  # adapters exactly as before

    def boom(p, i, sigma, tensors):
        if float(sigma) < 0.8:
            raise RuntimeError("stop")
        return {}

    with pytest.raises(RuntimeError, match="stop"):
        _run(pipe, callback_on_step_end=boom)
    assert _adapter_state(pipe.transformer) == before_state  # restored on error too


@torch.no_grad()
def test_adapters_restored_when_stage_2_raises(pipe):
    """An error inside stage 2 - where the distilled LoRA was switched on at 0.8 - leaves every LoRA layer as it
    was before the call (the test above raises in stage 1, where nothing had been switched)."""
    before = _adapter_state(pipe.transformer)
    seen = []

    def boom(p, i, sigma, tensors):
        seen.append(active_adapter_strengths(p.transformer))
        if "ltx2_distilled" in seen[-1]:
            raise RuntimeError("stage 2 fails")
        return {}

    with pytest.raises(RuntimeError, match="stage 2 fails"):
        _run(pipe, callback_on_step_end=boom)
    assert seen[-1] == {"style": 1.0, "ltx2_distilled": pytest.approx(0.8)}  # it did raise inside stage 2
    assert _adapter_state(pipe.transformer) == before
    assert active_adapter_strengths(pipe.transformer) == {"style": 1.0}


@torch.no_grad()
def test_disable_lora_survives_a_two_stage_call(pipe):
    """`pipe.disable_lora()` switches the user's LoRAs off: stage 1 runs without them, stage 2 with the recipe's
    distilled LoRA only, and after the call (and a second one) they are still off."""
    pipe.disable_lora()
    before = _adapter_state(pipe.transformer)
    assert all(disabled for _, _, disabled in before) and active_adapter_strengths(pipe.transformer) == {}
    for _ in range(2):
        seen, cb = _recorder(pipe)
        _run(pipe, **cb)
        assert all(s["adapters"] == {} for s in seen[:2])
        assert all(s["adapters"] == {"ltx2_distilled": pytest.approx(0.8)} for s in seen[2:])
        assert _adapter_state(pipe.transformer) == before
    pipe.enable_lora()
    assert active_adapter_strengths(pipe.transformer) == {"style": 1.0}


@torch.no_grad()
def test_strength_override_and_distilled_recipe(pipe):
    seen, cb = _recorder(pipe)
    _run(pipe, distilled_lora_strength=0.5, **cb)
    assert seen[-1]["adapters"]["ltx2_distilled"] == pytest.approx(0.5)
    seen, cb = _recorder(pipe)
    _run(pipe, distilled=True, **cb)  # distilled checkpoint: 8 + 3 fixed sigmas, no extra LoRA
    assert len(seen) == 8 + 3
    assert all("ltx2_distilled" not in s["adapters"] for s in seen)


def test_bad_inputs_refused_before_any_model_runs(pipe, tiny_components_master):
    calls = []
    pipe.transformer.register_forward_pre_hook(lambda *a: calls.append(1))
    with pytest.raises(ValueError, match="multiple of 64, got 96; nearest valid values: 64 or 128"):
        _run(pipe, height=96)
    with pytest.raises(ValueError, match="8k\\+1"):
        _run(pipe, num_frames=16)
    with pytest.raises(ValueError, match="distilled_lora_strength"):
        _run(pipe, distilled_lora_strength=-1.0)
    bare = LTX2TwoStagePipeline(scheduler=LTX2Scheduler(), **copy.deepcopy(tiny_components_master))
    bare.transformer.register_forward_pre_hook(lambda *a: calls.append(1))
    with pytest.raises(ValueError, match="latent_upsampler"):
        _run(bare)
    with pytest.raises(ValueError, match="latent_upsampler"):
        bare.upsample_latents(torch.zeros(1, 16, 1, 2, 2))
    bare.register_modules(latent_upsampler=pipe.latent_upsampler)
    with pytest.raises(ValueError, match="load_distilled_lora"):
        _run(bare)
    x15 = LTX2LatentUpsamplerModel(in_channels=16, mid_channels=32, num_blocks_per_stage=1,
                                   rational_spatial_scale=1.5)
    bare.register_modules(latent_upsampler=x15)
    with pytest.raises(ValueError, match="x2 upsampler"):
        _run(bare, distilled=True)
    assert calls == []


def test_default_negative_prompt_is_the_official_one(pipe, monkeypatch):
    ltx_reference = pytest.importorskip("ltx_reference")  # noqa: F841  (torchaudio stub)
    from ltx_pipelines.utils.constants import DEFAULT_NEGATIVE_PROMPT as OFFICIAL

    assert DEFAULT_NEGATIVE_PROMPT == OFFICIAL
    seen = []
    encode = pipe.encode_text_contexts  # the pipelines' own prompt step (encode_prompt is diffusers')

    def spy(prompts, negative_prompts, **kw):
        seen.append((negative_prompts, kw["need_negative"]))
        return encode(prompts, negative_prompts, **kw)

    monkeypatch.setattr(pipe, "encode_text_contexts", spy)
    _run(pipe, steps=1)
    _run(pipe, steps=1, negative_prompt="")
    _run(pipe, steps=1, distilled=True)
    assert seen == [([DEFAULT_NEGATIVE_PROMPT], True), ([""], True), (None, False)]


@torch.no_grad()
def test_upsample_latents_entry_point(pipe):
    x = torch.randn(1, 16, 2, 2, 3)
    out = pipe.upsample_latents(x)
    assert out.shape == (1, 16, 2, 4, 6)
    torch.testing.assert_close(out, upsample_latents(x, pipe.latent_upsampler, pipe.vae.latents_mean,
                                                     pipe.vae.latents_std), rtol=0, atol=0)


@pytest.mark.slow
@torch.no_grad()
def test_two_stage_audio_to_video_keeps_the_waveform(pipe):
    rate = 22050
    t = torch.arange(rate) / rate
    wave = torch.stack([torch.sin(2 * torch.pi * 300 * t), torch.sin(2 * torch.pi * 500 * t)]) * 0.4
    seen, cb = _recorder(pipe, ("latents", "audio_latents"))
    out = _run(pipe, conditions=[AudioCondition(wave, rate)], output_type="pt", **cb)
    assert all(torch.equal(s["audio_latents"], seen[0]["audio_latents"]) for s in seen)  # frozen in both stages
    expected = resample_audio(wave, rate, pipe.audio_sample_rate)[:, : round(17 / 24 * 24000)]
    torch.testing.assert_close(out.audio[0], expected, rtol=0, atol=0)
    assert out.frames.shape == (1, 17, 3, 128, 128)


@pytest.mark.slow
@torch.no_grad()
def test_two_stage_keyframes_are_held_in_both_stages(pipe):
    img = np.random.RandomState(0).randint(0, 255, (96, 96, 3), dtype=np.uint8)
    seen, cb = _recorder(pipe)
    _run(pipe, conditions=[VideoCondition(img, 0), VideoCondition(img, 16)], **cb)
    for stage, steps, size in ((1, seen[:2], 64), (2, seen[2:], 128)):
        pixels = to_vae_pixels(VideoCondition(img).frames, size, size, 33)
        encoded = L.pack_video(pipe.encode_pixels(pixels, 1, "cpu"))
        n, k = 3 * encoded.shape[1], encoded.shape[1]
        for s in steps:
            assert s["latents"].shape[1] == n + k, stage  # the last-frame keyframe appended at this size
            assert torch.equal(s["latents"][:, :k], encoded), stage  # frame 0 held
            assert torch.equal(s["latents"][:, n:], encoded), stage  # keyframe held


@torch.no_grad()
def test_each_stage_steps_with_its_sampler(pipe):
    """`sampler=` steps stage 1 and `stage_2_sampler=` the refinement: the transformer calls of each stage (told
    apart by their token count) are that sampler's x0 evaluations (res_2s: two per step and one to land on 0), and
    a configured sampler instance reaches its stage (its noise seed changes the result)."""
    tokens = []
    pipe.transformer.register_forward_pre_hook(lambda m, args, kw: tokens.append(kw["hidden_states"].shape[1]),
                                               with_kwargs=True)
    per_stage = {}
    for samplers in (("euler", "euler"), ("res_2s", "euler"), ("euler", "res_2s")):
        tokens.clear()
        per_stage[samplers] = _run(pipe, sampler=samplers[0], stage_2_sampler=samplers[1]).frames
        assert (tokens.count(3 * 2 * 2), tokens.count(3 * 4 * 4)) == tuple(
            {"euler": n, "res_2s": 2 * n + 1}[name] for name, n in zip(samplers, (2, 3))), samplers
    euler = per_stage[("euler", "euler")]
    assert all((out - euler).abs().max() > 1e-4 for key, out in per_stage.items() if key != ("euler", "euler"))
    a = _run(pipe, stage_2_sampler=Res2sSampler(noise_seed=1)).frames
    b = _run(pipe, stage_2_sampler=Res2sSampler(noise_seed=2)).frames
    assert torch.equal(a, _run(pipe, stage_2_sampler=Res2sSampler(noise_seed=1)).frames)
    assert (a - b).abs().max() > 1e-5
