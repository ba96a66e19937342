"""A tiny LTX-2.5 model in our pipeline: diffusers' own 2.5 pipeline gives the same latents with guidance off,
diffusers-format 2.5 folders load, the per-version transformer inputs reach every pass, decoder choice, CRF."""

from __future__ import annotations

import copy

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from diffusers.pipelines.ltx2 import LTX2DurationHead, LTX2Pipeline

from diffusers_ltx2 import LTX2AudioVideoPipeline, LTX2Scheduler
from diffusers_ltx2.factory import TINY_CLIP, build_components_25
from diffusers_ltx2.transformer import passes as transformer_passes
from diffusers_ltx2.latents import layout as L
from diffusers_ltx2.transformer.inputs import first_frame_token_count
from diffusers_ltx2.versions import cross_timestep_rule, default_image_crf, model_version_of


@pytest.fixture(scope="module")
def components_25():
    return build_components_25()


def _fresh(components):
    return {k: copy.deepcopy(v) for k, v in components.items()}


def _run_both(ours: LTX2AudioVideoPipeline, theirs: LTX2Pipeline, steps: int = 3):
    clip = dict(TINY_CLIP)
    ours.scheduler.set_timesteps(steps, num_tokens=1)
    sigmas = ours.scheduler.sigmas.clone()
    g = torch.Generator().manual_seed(1)
    (vb, vn, vc), _ = ours.video_latent_shape(1, clip["num_frames"], clip["height"], clip["width"])
    (ab, an, ac), _ = ours.audio_latent_shape(1, clip["num_frames"], clip["frame_rate"])
    video_noise, audio_noise = torch.randn(vb, vn, vc, generator=g), torch.randn(ab, an, ac, generator=g)
    out = ours("a cat walks", sigmas=sigmas.tolist(), latents=video_noise, audio_latents=audio_noise,
               output_type="latent", max_sequence_length=1024, **clip)
    audio_for_diffusers = L.denormalize_audio_tokens(audio_noise, ours.audio_vae.latents_mean,
                                                     ours.audio_vae.latents_std)
    ref = theirs(
        prompt="a cat walks", sigmas=sigmas[:-1].tolist(), num_inference_steps=steps, num_frames=clip["num_frames"],
        height=clip["height"], width=clip["width"], frame_rate=clip["frame_rate"], latents=video_noise,
        audio_latents=audio_for_diffusers, guidance_scale=1.0, stg_scale=0.0, modality_scale=1.0,
        guidance_rescale=0.0, audio_guidance_scale=1.0, audio_stg_scale=0.0, audio_modality_scale=1.0,
        audio_guidance_rescale=0.0, output_type="latent",
    )
    return out, ref


def test_diffusers_format_25_folder_loads_and_matches_diffusers_pipeline(components_25, tmp_path):
    """diffusers' `LTX2Pipeline` over a 2.5 model, saved with `save_pretrained` (diffusers 0.42.1's layout, with its
    `duration_head` component), loads as our pipeline (version inferred: 2.5); with guidance off both give the same
    latents as long as the keyframe embedding is zero. diffusers never passes the keyframe marker, so with a trained
    (non-zero) embedding only ours changes: the marker reaches our transformer on every call."""
    parts = _fresh(components_25)
    parts.pop("diffusion_decoder")
    with torch.no_grad():
        parts["transformer"].keyframes_abs_pos_embedding.zero_()
    theirs = LTX2Pipeline(scheduler=FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=False), **parts)
    theirs.save_pretrained(tmp_path / "diffusers25")
    ours = LTX2AudioVideoPipeline.from_pretrained(tmp_path / "diffusers25", dtype=torch.float32, guider=None)
    # the saved duration head loads with the folder (main's pipeline predicts num_frames with it); these calls fix
    # num_frames, so it does not run
    assert ours.model_version == "2.5" and ours.diffusion_decoder is None
    assert isinstance(ours.duration_head, LTX2DurationHead)
    assert cross_timestep_rule(ours.config.model_version or ours.model_version) == "own_scale_shift_cross_gate"
    out, ref = _run_both(ours, theirs)
    torch.testing.assert_close(out.frames, ref.frames, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.audio, ref.audio, atol=1e-5, rtol=0)

    with torch.no_grad():
        for pipe in (ours, theirs):
            pipe.transformer.keyframes_abs_pos_embedding.fill_(0.5)
    out2, ref2 = _run_both(ours, theirs)
    torch.testing.assert_close(ref2.frames, ref.frames, atol=1e-6, rtol=0)  # diffusers ignores the embedding
    assert (out2.frames - out.frames).abs().max() > 1e-3


def _pipe(components, **kw) -> LTX2AudioVideoPipeline:
    parts = _fresh(components)
    parts.pop("duration_head")
    return LTX2AudioVideoPipeline(scheduler=LTX2Scheduler(), guider=None, **parts, **kw)


def test_every_pass_gets_the_version_rule(components_25, tiny_components, monkeypatch):
    """Each stage's pass executor gets the cross-attention rule of the model version: 2.5 -> ltx-core 1.2's,
    2.0 -> 1.0.0's; `use_cross_timestep=False` keeps diffusers' legacy rule for both."""
    seen = []
    original = transformer_passes.TransformerPasses.__init__

    def spy(self, *args, **kwargs):
        original(self, *args, **kwargs)
        seen.append(self.cross_timestep_rule)

    monkeypatch.setattr(transformer_passes.TransformerPasses, "__init__", spy)
    old = LTX2AudioVideoPipeline(scheduler=LTX2Scheduler(), guider=None, **tiny_components)
    for pipe in (_pipe(components_25), old):
        for flag in (True, False):
            pipe("a cat", num_inference_steps=1, max_sequence_length=128, output_type="latent",
                 use_cross_timestep=flag, **TINY_CLIP)
    assert seen == ["own_scale_shift_cross_gate", "own", "cross_sigma", "own"]


def test_conditioned_call_differs_by_rule(components_25):
    """With an image condition (first-frame tokens at timestep 0) the two rules give different videos, so the rule
    choice matters exactly where the official versions differ."""
    pipe = _pipe(components_25)
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    kw = dict(image=image, num_inference_steps=2, max_sequence_length=128, output_type="latent", **TINY_CLIP)
    a = pipe("a cat", generator=torch.Generator().manual_seed(0), **kw).frames
    b = pipe("a cat", generator=torch.Generator().manual_seed(0), use_cross_timestep=False, **kw).frames
    assert (a - b).abs().max() > 1e-4


def test_first_frame_marker_counts_target_tokens_only():
    """The marker covers the leading latent frame of the target, never appended conditioning tokens."""
    from diffusers import LTX2VideoTransformer3DModel

    model = LTX2VideoTransformer3DModel(num_layers=1, num_attention_heads=2, attention_head_dim=8,
                                        audio_num_attention_heads=2, audio_attention_head_dim=4,
                                        cross_attention_dim=16, audio_cross_attention_dim=8, caption_channels=16)
    coords = model.rope.prepare_video_coords(1, 3, 2, 3, "cpu", fps=24.0)  # 3 latent frames of 2x3 tokens
    assert first_frame_token_count(coords, 18) == 6
    appended = torch.cat([coords, coords[:, :, :6]], dim=2)  # e.g. a keyframe at frame 0 appended after the target
    assert first_frame_token_count(appended, 18) == 6
    assert first_frame_token_count(coords[:, :, :6], 6) == 6  # a one-frame clip: every token


def test_video_decoder_choice(components_25):
    pipe = _pipe(components_25)
    kw = dict(num_inference_steps=1, max_sequence_length=128, output_type="pt", **TINY_CLIP)
    diffusion = pipe("a cat", generator=torch.Generator().manual_seed(0), **kw).frames
    pipe.video_decoder = "conv"
    conv = pipe("a cat", generator=torch.Generator().manual_seed(0), **kw).frames
    assert diffusion.shape == conv.shape == (1, 9, 3, 64, 64)
    assert (diffusion - conv).abs().max() > 1e-2
    pipe.video_decoder = "blurry"
    with pytest.raises(ValueError, match="video_decoder"):
        pipe("a cat", **kw)
    no_decoder = _pipe({k: v for k, v in components_25.items() if k != "diffusion_decoder"})
    no_decoder.video_decoder = "diffusion"
    with pytest.raises(ValueError, match="needs a diffusion_decoder"):
        no_decoder("a cat", **kw)


def test_default_image_crf_and_version_inference():
    assert default_image_crf("2.5.0") == default_image_crf("2.4-rc2") == 18
    assert default_image_crf("2.3.0") == default_image_crf(None) == 33
    assert model_version_of({"ff_bias": False}) == "2.5"
    assert model_version_of({"gated_attn": True}) == "2.3"
    assert model_version_of({}) == "2.0"
    assert model_version_of({"gated_attn": True}, declared="2.5.1") == "2.5"
