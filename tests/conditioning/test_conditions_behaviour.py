"""Conditioned generation through the pipeline on the tiny model: frozen modalities never change and cost no
passes, the frozen source comes back as given, retake keeps tokens outside the window bit-identical, audio-only
runs one placeholder video token with both cross-modal attentions off and no modality pass."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffusers_ltx2 import ClassifierFreeGuidance, MultimodalGuider
from diffusers_ltx2.conditioning import (
    AudioCondition,
    FrozenVideo,
    TemporalRegion,
    VideoCondition,
    check_conditions,
    initial_state,
    keyframe_positions,
    region_mask,
)
from diffusers_ltx2.conditioning.frames import to_vae_pixels
from diffusers_ltx2.factory import TINY_CLIP
from diffusers_ltx2.media.audio import resample_audio
from diffusers_ltx2.latents import layout as L
from diffusers_ltx2.latents.noiser import StartLatents

CLIP = dict(TINY_CLIP, num_frames=17)


def _initial_state(pipe, conditions, *geometry, generator, latents=None):
    """The pipelines' one initial-state builder on the tiny pipeline's encoder (conditions checked first)."""
    g = pipe.clip_geometry(*geometry)
    return initial_state(check_conditions(conditions, g), g, pipe.latent_encoder("cpu"), generator=generator,
                         video=StartLatents(noise=latents))  # 64x64, 17 frames -> 3 latent frames of 2x2
PROMPT = "a dog runs on the beach"


def _run(pipe, conditions=None, guider=None, steps=3, **kw):
    kw = {**CLIP, "output_type": "latent", **kw}
    return pipe(PROMPT, num_inference_steps=steps, generator=torch.Generator().manual_seed(0),
                guider=guider or ClassifierFreeGuidance(3.0, 7.0), conditions=conditions, **kw)


def _wave(seconds=1.0, rate=22050):
    t = torch.arange(int(seconds * rate)) / rate
    return torch.stack([torch.sin(2 * torch.pi * 300 * t), torch.sin(2 * torch.pi * 500 * t)]) * 0.4, rate


def _recorder():
    seen = []

    def on_step(pipe, i, sigma, tensors):
        seen.append({k: v.clone() for k, v in tensors.items()})
        return {}

    return seen, on_step


# -- pure functions against the official ones ------------------------------------------------------------------
def test_keyframe_positions_match_official_get_pixel_coords():
    import ltx_reference  # noqa: F401
    from ltx_core.components.patchifiers import VideoLatentPatchifier, get_pixel_coords
    from ltx_core.types import SpatioTemporalScaleFactors, VideoLatentShape

    for frame_index in (0, 8, 16, 33):
        shape = VideoLatentShape(batch=2, channels=4, frames=2, height=3, width=5)
        coords = VideoLatentPatchifier(1).get_patch_grid_bounds(shape, device=torch.device("cpu"))
        ref = get_pixel_coords(coords, SpatioTemporalScaleFactors.default(), causal_fix=frame_index == 0).float()
        ref[:, 0] = (ref[:, 0] + frame_index) / 24.0
        ours = keyframe_positions(2, 2, 3, 5, frame_index=frame_index, frame_rate=24.0)
        torch.testing.assert_close(ours, ref, rtol=0, atol=0)


def test_region_mask_overlap_rule_and_ramp():
    spans = torch.tensor([[0.0, 0.1], [0.1, 0.2], [0.2, 0.3], [0.3, 0.4], [0.4, 0.5]])
    assert region_mask(spans, 0.15, 0.3).tolist() == [0, 1, 1, 0, 0]  # [t0, t1) overlaps [start, end)
    assert region_mask(spans, 0.2, 0.2 + 1e-6).tolist() == [0, 0, 1, 0, 0]
    ramp = region_mask(spans, 0.2, 0.3, ramp_s=0.2)
    torch.testing.assert_close(ramp, torch.tensor([0.5, 1.0, 1.0, 1.0, 0.5]))  # gaps 0.1 -> 1 - 0.1 / 0.2


# -- keyframes ---------------------------------------------------------------------------------------------------
def test_keyframes_are_appended_and_dropped_before_decoding(tiny_pipe):
    img = np.random.RandomState(0).randint(0, 255, (64, 64, 3), dtype=np.uint8)
    seen, on_step = _recorder()
    out = _run(tiny_pipe, [VideoCondition(img, 0), VideoCondition(img, 8, 0.5), VideoCondition(img, 16)],
               callback_on_step_end=on_step)
    n = 3 * 4
    assert seen[0]["latents"].shape[1] == n + 2 * 4  # two appended one-frame keyframes
    assert out.frames.shape[2:] == (3, 2, 2)  # the target grid only
    # frame 0 held (strength 1): its tokens are the encoded image at every step
    encoded = L.pack_video(tiny_pipe.encode_pixels(to_vae_pixels(VideoCondition(img).frames, 64, 64, 33), 1, "cpu"))
    for tensors in seen:
        assert torch.equal(tensors["latents"][:, :4], encoded)
        assert torch.equal(tensors["latents"][:, n + 4:], encoded)  # the last keyframe, strength 1


def test_image_shorthand_composes_with_keyframes(tiny_pipe):
    img = np.random.RandomState(1).randint(0, 255, (64, 64, 3), dtype=np.uint8)
    plain = _run(tiny_pipe, image=torch.from_numpy(img).permute(2, 0, 1).float() / 255)
    with_image = _run(tiny_pipe, [], image=torch.from_numpy(img).permute(2, 0, 1).float() / 255)
    torch.testing.assert_close(plain.frames, with_image.frames, rtol=0, atol=0)  # same path, same noise
    out = _run(tiny_pipe, [VideoCondition(img, 16)], image=torch.from_numpy(img).permute(2, 0, 1).float() / 255)
    assert out.frames.shape == plain.frames.shape


# -- audio-to-video ------------------------------------------------------------------------------------------------
def test_audio_to_video_keeps_the_audio_and_returns_the_input_waveform(tiny_pipe):
    wave, rate = _wave()
    seen, on_step = _recorder()
    out = _run(tiny_pipe, [AudioCondition(wave, rate)], guider=MultimodalGuider(), output_type="pt",
               callback_on_step_end=on_step, callback_on_step_end_tensor_inputs=["latents", "audio_latents"])
    first = seen[0]["audio_latents"]
    assert all(torch.equal(t["audio_latents"], first) for t in seen)  # never changes
    assert not torch.equal(seen[0]["latents"], seen[-1]["latents"])  # the video is generated
    expected = resample_audio(wave, rate, tiny_pipe.audio_sample_rate)[:, : round(17 / 24 * 24000)]
    assert out.sample_rate == tiny_pipe.audio_sample_rate
    torch.testing.assert_close(out.audio[0], expected, rtol=0, atol=0)
    assert out.frames.shape == (1, 17, 3, 64, 64)


def test_audio_shorter_than_the_clip_is_padded_with_silence(tiny_pipe):
    wave, rate = _wave(seconds=0.3)
    out = _run(tiny_pipe, [AudioCondition(wave, rate)], output_type="np")
    n = round(17 / 24 * 24000)
    assert out.audio.shape == (1, 2, n)
    # a float32 tensor whatever output_type, as for generated audio (decode_audio)
    assert isinstance(out.audio, torch.Tensor) and out.audio.dtype == torch.float32
    assert torch.all(out.audio[0, :, round(0.31 * 24000):] == 0)


def test_a_frozen_modality_costs_no_passes_and_skip_step_still_works(tiny_pipe):
    calls = []
    handle = tiny_pipe.transformer.register_forward_hook(
        lambda m, a, kw, o: calls.append(kw["hidden_states"].shape[0]), with_kwargs=True)
    wave, rate = _wave()
    video_cfg = dict(cfg=3.0, skip_step=1)
    guider = MultimodalGuider(video=video_cfg)  # audio: the recommended cfg 7, stg 1, modality 3
    try:
        _run(tiny_pipe, guider=guider, steps=4)
        unfrozen = list(calls)
        calls.clear()
        _run(tiny_pipe, [AudioCondition(wave, rate)], guider=guider, steps=4)
        frozen = list(calls)
    finally:
        handle.remove()
    assert unfrozen == [4, 4, 4, 4]  # audio needs cond + uncond + perturbed + isolated every step
    assert frozen == [2, 2]  # video only: cond + uncond, and no call on its skipped steps 1 and 3


# -- video-to-audio --------------------------------------------------------------------------------------------------
def test_video_to_audio_keeps_the_video_and_returns_the_input_frames(tiny_pipe):
    frames = torch.rand(17, 64, 64, 3, generator=torch.Generator().manual_seed(2))
    seen, on_step = _recorder()
    out = _run(tiny_pipe, [FrozenVideo(frames)], guider=MultimodalGuider(), output_type="pt",
               callback_on_step_end=on_step, callback_on_step_end_tensor_inputs=["latents", "audio_latents"])
    assert all(torch.equal(t["latents"], seen[0]["latents"]) for t in seen)
    assert not torch.equal(seen[0]["audio_latents"], seen[-1]["audio_latents"])
    torch.testing.assert_close(out.frames[0], frames.permute(0, 3, 1, 2), rtol=0, atol=1e-6)
    assert out.audio.shape[:2] == (1, 2)


# -- retake ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("video,audio", [(True, True), (True, False), (False, True)])
def test_retake_keeps_everything_outside_the_window_bit_identical(tiny_pipe, video, audio):
    frames = torch.rand(17, 64, 64, 3, generator=torch.Generator().manual_seed(3))
    wave, rate = _wave()
    conditions = [FrozenVideo(frames), AudioCondition(wave, rate), TemporalRegion(0.3, 0.5, video=video, audio=audio)]
    seen, on_step = _recorder()
    _run(tiny_pipe, conditions, callback_on_step_end=on_step,
         callback_on_step_end_tensor_inputs=["latents", "audio_latents"])
    src_v = L.pack_video(tiny_pipe.encode_pixels(to_vae_pixels(conditions[0].frames, 64, 64, 0), 1, "cpu"))
    from diffusers_ltx2.conditioning import encode_audio_tokens

    g = tiny_pipe.clip_geometry(1, 17, 64, 64, 24.0)
    src_a = encode_audio_tokens(tiny_pipe, conditions[1].clip_waveform(g), rate, g.audio_latent_length)
    v_span = (torch.arange(3) * 8 + 1) / 24.0  # latent frame ends; starts max(0, 8f - 7) / 24
    v_start = (torch.arange(3) * 8 - 7).clamp(min=0) / 24.0
    v_in = ((v_span > 0.3) & (v_start < 0.5)).repeat_interleave(4) if video else torch.zeros(12, dtype=torch.bool)
    coords = tiny_pipe.transformer.audio_rope.prepare_audio_coords(1, g.audio_latent_length, "cpu")[0, 0]
    a_in = ((coords[:, 1] > 0.3) & (coords[:, 0] < 0.5)) if audio else torch.zeros(len(coords), dtype=torch.bool)
    assert v_in.any() == video and a_in.any() == audio and not v_in.all() and not a_in.all()
    last = seen[-1]
    assert torch.equal(last["latents"][0, ~v_in], src_v[0, ~v_in])
    assert torch.equal(last["audio_latents"][0, ~a_in], src_a[0, ~a_in])
    if video:
        assert (last["latents"][0, v_in] - src_v[0, v_in]).abs().max() > 0.05
    if audio:
        assert (last["audio_latents"][0, a_in] - src_a[0, a_in]).abs().max() > 0.05


def test_retake_ramp_partially_renoises_the_edges(tiny_pipe):
    frames = torch.rand(17, 64, 64, 3, generator=torch.Generator().manual_seed(3))
    wave, rate = _wave()
    state = _initial_state(
        tiny_pipe, [FrozenVideo(frames), AudioCondition(wave, rate), TemporalRegion(0.3, 0.4, ramp_s=0.2)], 1, 17,
        64, 64, 24.0, generator=torch.Generator().manual_seed(0))
    mask = state.audio.denoise_mask[0]
    assert ((mask > 0) & (mask < 1)).any() and (mask == 1).any() and (mask == 0).any()


# -- audio-only ---------------------------------------------------------------------------------------------------
def test_audio_only_runs_one_placeholder_video_token_without_cross_modal_attention(tiny_pipe, monkeypatch):
    shapes, passes = [], []
    handle = tiny_pipe.transformer.register_forward_hook(
        lambda m, a, kw, o: shapes.append(tuple(kw["hidden_states"].shape[:2])), with_kwargs=True)
    control = tiny_pipe.attention_control_for(MultimodalGuider())
    activate = control.activate

    def recording_activate(p, batch_size, skip_blocks=()):
        passes.append(list(p))
        return activate(p, batch_size, skip_blocks)

    monkeypatch.setattr(control, "activate", recording_activate)
    monkeypatch.setattr(tiny_pipe, "attention_control_for", lambda guider: control)
    try:
        out = _run(tiny_pipe, guider=MultimodalGuider(), output_modalities=("audio",), output_type="np")
    finally:
        handle.remove()
    assert out.frames is None and out.audio.shape[:2] == (1, 2)
    # cond + uncond (audio cfg 7) + perturbed (audio stg 1); no isolated pass; one video token per row
    assert shapes == [(3, 1)] * 3
    # (the order of passes inside one call is the grouping's: passes sharing a prefix stay adjacent)
    assert [sorted(p.name for p in step) for step in passes] == [["cond", "perturbed", "uncond"]] * 3
    assert all(not p.a2v and not p.v2a and not p.perturb_video for step in passes for p in step)


def test_audio_only_output_does_not_depend_on_the_video_stream(tiny_pipe):
    a = _run(tiny_pipe, guider=MultimodalGuider(), output_modalities=("audio",))
    # a different clip size changes only the (absent) video; same audio length (17 frames at 24 fps)
    b = _run(tiny_pipe, guider=MultimodalGuider(), output_modalities=("audio",), height=128, width=96)
    torch.testing.assert_close(a.audio, b.audio, rtol=0, atol=0)


def test_conditions_broadcast_over_prompts_and_videos_per_prompt(tiny_pipe):
    img = np.random.RandomState(2).randint(0, 255, (64, 64, 3), dtype=np.uint8)
    wave, rate = _wave()
    out = tiny_pipe([PROMPT, "a cat"], num_videos_per_prompt=2, num_inference_steps=2, guider=MultimodalGuider(),
                    conditions=[VideoCondition(img, 8), AudioCondition(wave, rate)], output_type="np",
                    generator=torch.Generator().manual_seed(0), **CLIP)
    assert out.frames.shape[0] == 4 and out.audio.shape[0] == 4
    assert all(np.array_equal(out.audio[i], out.audio[0]) for i in range(4))  # the given sound, every clip


def test_given_noise_covers_the_target_tokens_and_keyframes_draw_theirs(tiny_pipe):
    img = np.random.RandomState(3).randint(0, 255, (64, 64, 3), dtype=np.uint8)
    noise = torch.randn(1, 12, tiny_pipe.transformer.config.in_channels, generator=torch.Generator().manual_seed(9))
    state = _initial_state(
        tiny_pipe, [VideoCondition(img, 8, 0.5)], 1, 17, 64, 64, 24.0, latents=noise,
        generator=torch.Generator().manual_seed(0))
    assert state.video.latent.shape[1] == 16
    assert torch.equal(state.video.latent[:, :12], noise)  # mask 1 on the target tokens: pure given noise
    clean, mask = state.video.clean[:, 12:], 0.5
    assert not torch.equal(state.video.latent[:, 12:], clean)  # half-noised keyframe tokens
    assert (state.video.denoise_mask[:, 12:] == mask).all()


def test_guiders_spend_no_pass_on_a_frozen_modality():
    from diffusers_ltx2 import ModalityGuidance, SpatioTemporalGuidance

    names = lambda plan: [p.name for p in plan.passes]  # noqa: E731
    video_only = MultimodalGuider(video=dict(cfg=1.0, stg=0.0, modality_scale=1.0))  # audio: recommended
    assert names(video_only.plan(0, 4, 1.0)) == ["cond", "uncond", "perturbed", "isolated"]  # all for the audio
    a2v = video_only.for_frozen(audio=True)
    assert names(a2v.plan(0, 4, 1.0)) == ["cond"] and not a2v.uses_negative_prompt
    plan = MultimodalGuider().for_frozen(audio=True).plan(0, 4, 1.0)
    assert not plan.audio and plan.video and not any(p.perturb_audio or p.freeze_audio for p in plan.passes)
    audio_only = MultimodalGuider().for_frozen(video=True, cross_modal=False).plan(0, 4, 1.0)
    assert names(audio_only) == ["cond", "uncond", "perturbed"]
    assert all(not (p.a2v or p.v2a or p.perturb_video) for p in audio_only.passes)
    assert ClassifierFreeGuidance(1.0, 7.0).for_frozen(audio=True).plan(0, 4, 1.0).passes == \
        ClassifierFreeGuidance(1.0, 1.0).plan(0, 4, 1.0).passes
    assert not ModalityGuidance(3.0, 3.0).for_frozen(video=True, cross_modal=False).uses_negative_prompt
    stg = SpatioTemporalGuidance(1.0, 1.0).for_frozen(video=True)
    assert (stg.video_scale, stg.audio_scale) == (0.0, 1.0)
    custom = MultimodalGuider()
    assert custom.for_frozen() is custom


def test_a_modality_a_retake_keeps_whole_is_guided_as_retake_py_others_as_a2vid(tiny_pipe):
    """Official retake.py gives a kept modality its own `MultiModalGuider` (negative context, STG, skip_step);
    a2vid gives frozen audio `MultiModalGuiderParams()` and no negative context. Neither spends a pass on it."""
    from diffusers_ltx2.transformer.passes import TextContexts
    from diffusers_ltx2.loaders.prompt_embeddings import PromptEmbeddings

    frames, (wave, rate) = torch.rand(17, 64, 64, 3), _wave()
    geometry = (1, 17, 64, 64, 24.0)
    kept = _initial_state(
        tiny_pipe, [FrozenVideo(frames), AudioCondition(wave, rate), TemporalRegion(0.3, 0.4, audio=False)], *geometry,
        generator=torch.Generator().manual_seed(0))
    a2v = _initial_state(tiny_pipe, [AudioCondition(wave, rate)], *geometry,
                         generator=torch.Generator().manual_seed(0))
    assert kept.frozen_audio and kept.guided_frozen == {"audio"}
    assert a2v.frozen_audio and a2v.guided_frozen == frozenset()

    names = lambda plan: [p.name for p in plan.passes]  # noqa: E731
    guider = MultimodalGuider(video=dict(cfg=3.0, stg=1.0, modality_scale=1.0),
                              audio=dict(cfg=7.0, stg=1.0, modality_scale=3.0, skip_step=1))
    retake = guider.for_frozen(audio=True, guided=kept.guided_frozen)
    for step in range(4):
        plan = retake.plan(step, 4, 1.0)
        assert names(plan) == ["cond", "uncond", "perturbed"] and plan.video and not plan.audio
        perturbed = plan.passes[2]
        assert perturbed.perturb_video and perturbed.perturb_audio  # its STG perturbs the kept stream
        skipped = step % 2 == 1  # audio skip_step=1: its stream input is frozen, except in the negative pass
        assert [p.freeze_audio for p in plan.passes] == [skipped, False, skipped]
    plan = guider.for_frozen(audio=True).plan(1, 4, 1.0)
    assert not any(p.perturb_audio or p.freeze_audio for p in plan.passes)

    pos, neg = (PromptEmbeddings(torch.full((1, 2, 4), v), torch.full((1, 2, 4), v), torch.ones(1, 2))
                for v in (1.0, -1.0))
    uncond = next(p for p in plan.passes if p.negative)
    retake_ctx = TextContexts(pos, neg, frozen_audio=True, guided_frozen=kept.guided_frozen)
    a2v_ctx = TextContexts(pos, neg, frozen_audio=True)
    assert retake_ctx.for_pass(uncond, "audio") is neg and a2v_ctx.for_pass(uncond, "audio") is pos
    assert retake_ctx.for_pass(uncond, "video") is neg and retake_ctx.for_pass(plan.passes[0], "audio") is pos
