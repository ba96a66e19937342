"""`LTX2DFRPipeline` on the tiny official 2.5 set: the composition of the stages (each tested equal to
ltx-pipelines 1.2 in `test_dfr_stages`) with the canvas trim, the frame count and audio length of the output, the
distilled LoRA in every stage, and errors raised before anything runs."""

from __future__ import annotations

import pytest
import torch

from diffusers_ltx2 import LTX2DFRPipeline, LTX2TwoStagePipeline
from diffusers_ltx2.dfr import stages as S
from diffusers_ltx2.dfr.layout import resolve_canvas
from diffusers_ltx2.latents import layout as L
from diffusers_ltx2.transformer import TextContexts

H, W, FPS = 128, 192, 24.0


def test_pipeline_is_the_stage_composition(pipe, embeds):
    """41 frames -> a 49-frame canvas (24-frame segments), one temporal round, trimmed to 81 frames at 48 fps."""
    out = pipe(prompt_embeds=embeds, height=H, width=W, num_frames=41, frame_rate=FPS, temporal_upsample_rounds=1,
               generator=torch.Generator().manual_seed(3), output_type="latent")
    canvas, _, positions = resolve_canvas(41)
    assert canvas == 49
    contexts = TextContexts(positive=embeds)
    rt = S.dfr_runtime(pipe, contexts, generator=torch.Generator().manual_seed(3))
    base = S.base_stage(pipe, rt, num_frames=canvas, height=H // 2, width=W // 2, frame_rate=FPS,
                        positions=positions)
    detail = S.detail_stage(pipe, rt, base, num_frames=canvas, height=H, width=W, frame_rate=FPS,
                            upsampler=pipe.latent_upsampler)
    final, n, rate = S.temporal_round(pipe, rt, detail, round_index=1, num_frames=canvas, height=H, width=W,
                                      frame_rate=FPS, temporal_upsampler=pipe.temporal_latent_upsampler, seed=3)
    assert (n, rate) == (97, 48.0)
    want = L.denormalize_video(final.video[:, :, :11], pipe.vae.latents_mean, pipe.vae.latents_std)
    assert out.frames.shape[2] == 11  # (41 - 1) * 2 + 1 = 81 frames
    torch.testing.assert_close(out.frames, want, rtol=0, atol=1e-5)
    keep = L.audio_latent_length(81, 48.0, L.audio_latents_per_second(pipe.audio_vae))
    assert out.audio.shape[2] == keep < base.audio.shape[1]  # stage 1's audio, cut to the video's duration


def test_decoded_output(pipe, embeds):
    out = pipe(prompt_embeds=embeds, height=H, width=W, num_frames=17, generator=torch.Generator().manual_seed(0),
               output_type="pt")
    assert out.frames.shape[1] == 17 and out.audio is not None


@pytest.mark.parametrize("kwargs, match", [
    (dict(temporal_upsample_rounds=3), "0, 1 or 2"),
    (dict(num_frames=20), "8k\\+1 .*nearest valid values: 17 or 25"),
    (dict(height=96), "64"),
])
def test_errors_before_anything_runs(pipe, embeds, kwargs, match):
    calls = pipe.transformer.forward
    pipe.transformer.forward = None  # any model call would fail differently
    try:
        with pytest.raises(ValueError, match=match):
            pipe(prompt_embeds=embeds, **{"height": H, "width": W, "num_frames": 17, **kwargs})
    finally:
        pipe.transformer.forward = calls


def test_needs_temporal_upsampler(pipe, embeds):
    no_temporal = LTX2DFRPipeline(**{**pipe.components, "temporal_latent_upsampler": None})
    with pytest.raises(ValueError, match="temporal_latent_upsampler"):
        no_temporal(prompt_embeds=embeds, height=H, width=W, num_frames=17, temporal_upsample_rounds=1)
    with pytest.raises(ValueError, match="time only"):
        LTX2DFRPipeline(**{**pipe.components, "temporal_latent_upsampler": pipe.latent_upsampler})


def test_from_pipe_moves_every_component(pipe, embeds):
    """diffusers' `from_pipe`: a 2.5 two-stage pipeline becomes a DFR pipeline sharing its components (the
    diffusion decoder and duration head too) plus the temporal upscaler passed; the result runs as the pipeline
    built directly, and `from_pipe` back to two-stage shares them again."""
    two_stage = LTX2TwoStagePipeline(**{k: v for k, v in pipe.components.items() if k != "temporal_latent_upsampler"})
    dfr = LTX2DFRPipeline.from_pipe(two_stage, temporal_latent_upsampler=pipe.temporal_latent_upsampler)
    assert isinstance(dfr, LTX2DFRPipeline)
    for name, component in pipe.components.items():
        assert dfr.components[name] is component, name
    assert dfr.diffusion_decoder is not None and dfr.duration_head is not None
    dfr.set_progress_bar_config(disable=True)
    kw = dict(prompt_embeds=embeds, height=H, width=W, num_frames=17, output_type="latent")
    a = dfr(generator=torch.Generator().manual_seed(2), **kw)
    b = pipe(generator=torch.Generator().manual_seed(2), **kw)
    torch.testing.assert_close(a.frames, b.frames, rtol=0, atol=0)
    torch.testing.assert_close(a.audio, b.audio, rtol=0, atol=0)
    back = LTX2TwoStagePipeline.from_pipe(dfr)
    assert back.transformer is pipe.transformer and back.latent_upsampler is pipe.latent_upsampler
    assert LTX2DFRPipeline.from_pipe(two_stage).temporal_latent_upsampler is None  # optional: rounds = 0 only


def test_a_saved_dfr_folder_loads_as_ours_through_diffusers(pipe, embeds, tmp_path):
    """diffusers 0.42.1 has its own `LTX2DFRPipeline`, which our registration leaves in place: a folder we save
    must still load as ours through `DiffusionPipeline.from_pretrained` (it loaded as diffusers' and dropped the
    guider, upsamplers and diffusion decoder with a warning), with every component, and run the same; a folder
    naming diffusers' class plainly still loads as diffusers'."""
    import json

    import diffusers

    pipe.save_pretrained(tmp_path / "dfr")
    loaded = diffusers.DiffusionPipeline.from_pretrained(tmp_path / "dfr")
    assert type(loaded) is LTX2DFRPipeline
    present = {k for k, v in pipe.components.items() if v is not None}
    assert {k for k, v in loaded.components.items() if v is not None} - {"guider"} == present - {"guider"}
    assert {"latent_upsampler", "temporal_latent_upsampler", "diffusion_decoder"} <= present
    loaded.set_progress_bar_config(disable=True)
    for name, module in pipe.components.items():
        if isinstance(module, torch.nn.Module):
            a, b = module.state_dict(), loaded.components[name].state_dict()
            assert a.keys() == b.keys(), name
            bad = [k for k in a if not torch.equal(a[k], b[k])]
            assert not bad, (name, bad[:5])
    pa = {type(p).__name__ for p in pipe.transformer.attn_processors.values()}
    pb = {type(p).__name__ for p in loaded.transformer.attn_processors.values()}
    assert pa == pb, (pa, pb)
    sa = {k: v for k, v in pipe.scheduler.config.items() if not k.startswith("_")}
    sb = {k: v for k, v in loaded.scheduler.config.items() if not k.startswith("_")}
    assert sa == sb, (sa, sb)
    kw = dict(prompt_embeds=embeds, height=H, width=W, num_frames=17, output_type="latent")
    # every saved tensor, the attention processors and the scheduler are equal (checked above); the runs differ by
    # float rounding (measured 7e-7, cause not pinned: not the weights); a dropped component would move O(0.1)
    torch.testing.assert_close(loaded(generator=torch.Generator().manual_seed(2), **kw).frames,
                               pipe(generator=torch.Generator().manual_seed(2), **kw).frames, rtol=0, atol=1e-5)
    index = tmp_path / "dfr" / "model_index.json"
    data = json.loads(index.read_text())
    data["_class_name"] = "LTX2DFRPipeline"  # as diffusers' own pipeline saves it
    index.write_text(json.dumps(data))
    plain = diffusers.DiffusionPipeline.from_pretrained(tmp_path / "dfr")
    assert type(plain) is diffusers.LTX2DFRPipeline
