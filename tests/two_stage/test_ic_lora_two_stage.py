"""IC-LoRA in two stages (official `ic_lora.py`): the reference and the IC-LoRA in stage 1 only, stage 2 with image
conditions and no user LoRA, `skip_stage_2` returns the half-size clip, adapters restored after the call."""

from __future__ import annotations

import pytest
import torch
from diffusers.pipelines.ltx2.latent_upsampler import LTX2LatentUpsamplerModel
from two_stage_files import write_official_lora

from diffusers_ltx2 import ClassifierFreeGuidance, LTX2ICLoRATwoStagePipeline, LTX2Scheduler
from diffusers_ltx2.loaders.adapter_state import active_adapter_strengths, lora_layers

CLIP = dict(height=128, width=128, num_frames=17, frame_rate=24.0)


@pytest.fixture()
def pipe(tiny_components, tmp_path):
    up = LTX2LatentUpsamplerModel(in_channels=tiny_components["vae"].config.latent_channels, mid_channels=32,
                                  num_blocks_per_stage=1, use_rational_resampler=False).eval()
    p = LTX2ICLoRATwoStagePipeline(scheduler=LTX2Scheduler(), guider=ClassifierFreeGuidance(3.0, 7.0),
                                   latent_upsampler=up, **tiny_components)
    p.set_progress_bar_config(disable=True)
    write_official_lora(tmp_path / "ctl.safetensors", p.transformer, seed=1)
    write_official_lora(tmp_path / "distilled.safetensors", p.transformer, seed=2)
    p.load_lora_weights(str(tmp_path / "ctl.safetensors"), adapter_name="ctl", reference_downscale_factor=2)
    p.load_distilled_lora(str(tmp_path / "distilled.safetensors"), strength=0.6)
    return p


def _run(pipe, **kw):
    seen = []

    def on_step(p, i, sigma, tensors):
        seen.append((tensors["latents"].shape[1], active_adapter_strengths(p.transformer)))
        return {}

    control = torch.rand(17, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    out = pipe("a dancer", control_video=control, generator=torch.Generator().manual_seed(0),
               callback_on_step_end=on_step, **{**CLIP, "output_type": "latent", **kw})
    return out, seen


def _state(model):
    return [(list(m.active_adapters), dict(m.scaling), m.disable_adapters) for m in lora_layers(model)]


@torch.no_grad()
def test_reference_and_ic_lora_in_stage_1_only(pipe):
    before = _state(pipe.transformer)
    out, seen = _run(pipe)  # distilled recipe (official ic_lora.py): 8 + 3 steps
    assert len(seen) == 8 + 3
    target_1, ref = 3 * 2 * 2, 3 * 1 * 1  # 64x64 clip; reference at 64/2 = 32 px -> 1x1 latent
    assert all(n == target_1 + ref and a == {"ctl": 1.0} for n, a in seen[:8])
    assert all(n == 3 * 4 * 4 and a == {} for n, a in seen[8:])  # no reference, no LoRA
    assert out.frames.shape[-2:] == (4, 4)
    assert _state(pipe.transformer) == before

    out, seen = _run(pipe, distilled=False, num_inference_steps=2)  # dev checkpoint: the distilled LoRA alone
    assert [a for _, a in seen[2:]] == [{"ltx2_distilled": pytest.approx(0.6)}] * 3
    assert _state(pipe.transformer) == before


@torch.no_grad()
def test_skip_stage_2_and_checks(pipe):
    out, seen = _run(pipe, skip_stage_2=True, output_type="pt")
    assert len(seen) == 8 and out.frames.shape == (1, 17, 3, 64, 64)
    with pytest.raises(ValueError, match="multiple of 64"):
        _run(pipe, height=96)
    with pytest.raises(ValueError, match="control_video is required"):
        pipe("a dancer", **CLIP)


@torch.no_grad()
def test_each_stage_steps_with_its_sampler(pipe):
    """`sampler=` / `stage_2_sampler=` reach their stage: with res_2s a stage's transformer calls (told apart by
    their token count) are two x0 evaluations per step plus one landing on 0; with euler one per step."""
    tokens = []
    hook = pipe.transformer.register_forward_pre_hook(
        lambda m, args, kw: tokens.append(kw["hidden_states"].shape[1]), with_kwargs=True)
    try:
        for samplers in (("res_2s", "euler"), ("euler", "res_2s")):
            tokens.clear()
            _run(pipe, sampler=samplers[0], stage_2_sampler=samplers[1])
            counts = (tokens.count(3 * 2 * 2 + 3 * 1 * 1), tokens.count(3 * 4 * 4))  # stage 1 (+ reference), 2
            assert counts == tuple({"euler": n, "res_2s": 2 * n + 1}[name] for name, n in zip(samplers, (8, 3)))
    finally:
        hook.remove()
