"""`LTX2DFRPipeline.__call__` takes diffusers' DFR call arguments that mean the same here (diffusers 0.42.1
`LTX2DFRPipeline` / `LTX2DFRTemporalRefinePipeline`): the step callback at every step of every stage with diffusers'
`(pipe, step, timestep, callback_kwargs)` contract and its returned tensors used, `pipe._interrupt`, the duration
head (`num_frames=None`, `min_seconds` / `max_seconds`), `use_cross_timestep`, diffusers' tensor prompt embeddings,
`return_dict`, prompt enhancement; the arguments of diffusers' one-pass-per-call design are refused, naming why."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dfr_files import gemma_states
from diffusers_ltx2.dfr import stages as S
from diffusers_ltx2.dfr.arguments import REFUSED_ARGUMENTS
from diffusers_ltx2.latents import layout as L
from diffusers_ltx2.schedulers.sigmas import DISTILLED_REFINE_SIGMAS, DISTILLED_SIGMAS

H, W = 128, 192
BASE, DETAIL, TILE = len(DISTILLED_SIGMAS) - 1, len(DISTILLED_REFINE_SIGMAS) - 1, len(S.TEMPORAL_SIGMAS) - 1
NAMES = ["latents", "audio_latents", "prompt_embeds"]
LATER_FRAME = 40


def _call(pipe, embeds, **kw):
    kw = {"num_frames": 17, "generator": torch.Generator().manual_seed(0), "output_type": "latent", **kw}
    return pipe(prompt_embeds=embeds, height=H, width=W, **kw)


def _stage_names(monkeypatch):
    """Record the name and step count of every stage `run_stage` runs."""
    names, real = [], S.run_stage

    def run_stage(stage, runtime):
        names.append((stage.name, stage.num_steps))
        return real(stage, runtime)

    monkeypatch.setattr(S, "run_stage", run_stage)
    return names


def test_callback_at_every_step_of_every_stage(pipe, embeds, monkeypatch):
    stages, calls = _stage_names(monkeypatch), []

    def callback(p, step, timestep, kwargs):
        assert p is pipe and torch.is_tensor(timestep)
        calls.append((p.num_timesteps, step, sorted(kwargs)))
        return {}

    _call(pipe, embeds, temporal_upsample_rounds=1, callback_on_step_end=callback,
          callback_on_step_end_tensor_inputs=NAMES)
    names = [n for n, _ in stages]
    assert names[0].startswith("DFR base") and names[1].startswith("DFR detailing")
    tiles = names[2:]
    assert tiles and all(n.startswith("DFR temporal round 1/1, tile ") for n in tiles)
    # the official schedules: 1.2 DISTILLED_SIGMAS (8 steps), STAGE_2_DISTILLED_SIGMAS (3), DISTILLED_SIGMAS[4:] (4)
    assert [n for _, n in stages] == [BASE, DETAIL] + [TILE] * len(tiles) == [8, 3] + [4] * len(tiles)
    want = [(n, i, sorted(NAMES)) for _, n in stages for i in range(n)]
    assert calls == want


def test_callback_tensors_are_used(pipe, embeds):
    """Zeroing the audio at the base stage's last step and the video at the detailing stage's last step: the
    output is the zero latents denormalized (DFR ships stage 1's audio and the last stage's video)."""
    def callback(p, step, timestep, kwargs):
        if p.num_timesteps == BASE and step == BASE - 1:
            return {"audio_latents": torch.zeros_like(kwargs["audio_latents"])}
        if p.num_timesteps == DETAIL and step == DETAIL - 1:
            return {"latents": torch.zeros_like(kwargs["latents"])}
        return {}

    out = _call(pipe, embeds, callback_on_step_end=callback,
                callback_on_step_end_tensor_inputs=["latents", "audio_latents"])
    zero_video = L.denormalize_video(torch.zeros_like(out.frames), pipe.vae.latents_mean, pipe.vae.latents_std)
    torch.testing.assert_close(out.frames, zero_video, rtol=0, atol=0)
    b, c, t, m = out.audio.shape
    tokens = L.denormalize_audio_tokens(torch.zeros(b, t, c * m), pipe.audio_vae.latents_mean,
                                        pipe.audio_vae.latents_std)
    torch.testing.assert_close(out.audio, L.unpack_audio(tokens, m), rtol=0, atol=0)
    plain = _call(pipe, embeds)
    assert not torch.allclose(plain.frames, out.frames)


@pytest.mark.parametrize("stop_in, steps_run, size", [
    (BASE, 2, (H // 2 // 32, W // 2 // 32)),  # stopped in the base stage: the half-size clip
    (DETAIL, BASE + 1, (H // 32, W // 32)),  # stopped in the detailing stage: no temporal round
])
def test_interrupt_stops_denoising(pipe, embeds, stop_in, steps_run, size):
    calls = []

    def callback(p, step, timestep, kwargs):
        calls.append(step)
        if p.num_timesteps == stop_in and step == steps_run - 1 - (0 if stop_in == BASE else BASE):
            p._interrupt = True
        return {}

    out = _call(pipe, embeds, temporal_upsample_rounds=1, callback_on_step_end=callback)
    assert len(calls) == steps_run
    assert out.frames.shape[2:] == (3, *size)  # 17 frames, rounds not run
    assert _call(pipe, embeds).frames.shape[2:] == (3, H // 32, W // 32)  # the next call is not interrupted


def test_duration_head_predicts_num_frames(pipe, embeds):
    auto = _call(pipe, embeds, num_frames=None)
    frames = (auto.frames.shape[2] - 1) * 8 + 1
    torch.testing.assert_close(auto.frames, _call(pipe, embeds, num_frames=frames).frames, rtol=0, atol=0)
    bounded = _call(pipe, embeds, num_frames=None, min_seconds=3.0, max_seconds=3.5)
    assert bounded.frames.shape[2] == (73 - 1) // 8 + 1  # (73 - 1) / 24 fps = 3 s, within [3, 3.5] s
    head = pipe.duration_head
    pipe.duration_head = None
    try:
        with pytest.raises(ValueError, match="duration_head"):
            _call(pipe, embeds, num_frames=None)
    finally:
        pipe.duration_head = head


def test_diffusers_arguments_with_the_same_meaning(pipe, embeds, monkeypatch):
    base = _call(pipe, embeds)
    same = _call(pipe, embeds, num_videos_per_prompt=1, use_cross_timestep=True, attention_kwargs={},
                 decode_timestep=0.0, decode_noise_scale=None, max_sequence_length=128)
    torch.testing.assert_close(same.frames, base.frames, rtol=0, atol=0)
    # every joint DFR stage steps both modalities at one sigma and the tiles run video alone, so the cross-attention
    # timestep rule changes nothing here (nor in 1.2); the flag still reaches every stage's transformer passes
    import diffusers_ltx2.pipelines.runtime as runtime

    flags, real = [], runtime.TransformerPasses

    def passes(*args, **kwargs):
        flags.append(kwargs["use_cross_timestep"])
        return real(*args, **kwargs)

    monkeypatch.setattr(runtime, "TransformerPasses", passes)
    off = _call(pipe, embeds, temporal_upsample_rounds=1, use_cross_timestep=False).frames
    assert flags and set(flags) == {False}
    flags.clear()
    torch.testing.assert_close(_call(pipe, embeds, temporal_upsample_rounds=1).frames, off, rtol=0, atol=1e-6)
    assert flags and set(flags) == {True}
    frames, audio = _call(pipe, embeds, return_dict=False)[:2]
    torch.testing.assert_close(frames, base.frames, rtol=0, atol=0)
    with pytest.raises(ValueError, match="one clip per call"):
        _call(pipe, embeds, num_videos_per_prompt=2)
    with pytest.raises(ValueError, match="callback tensor inputs"):
        _call(pipe, embeds, callback_on_step_end=lambda *a: {}, callback_on_step_end_tensor_inputs=["noise"])


def test_diffusers_tensor_prompt_embeds_with_mask(pipe):
    """diffusers' `prompt_embeds` (packed Gemma hidden states `(B, L, D * layers)`) with `prompt_attention_mask`
    equal the same states given as connector outputs."""
    from diffusers_ltx2.loaders.prompt_embeddings import PromptEmbeddings

    states, mask = gemma_states(pipe, 4, 40)
    with torch.no_grad():
        v, a, m = pipe.connectors(states, mask)
    want = _call(pipe, PromptEmbeddings(v, a, m)).frames
    got = pipe(prompt_embeds=states.flatten(2), prompt_attention_mask=mask, height=H, width=W, num_frames=17,
               generator=torch.Generator().manual_seed(0), output_type="latent").frames
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


def test_prompt_enhancement_arguments_reach_the_enhancer(pipe, embeds, monkeypatch):
    """The enhancement arguments go to the package's enhancer machinery (an LTX-2.5 pipeline needs its
    `prompt_enhancer` component, which the tiny DFR set does not have: refused before anything runs), and the
    enhanced prompt is the one encoded and returned."""
    with pytest.raises(ValueError, match="prompt_enhancer"):
        pipe("a fox", height=H, width=W, num_frames=17, enable_prompt_enhancement=True)
    seen = {}

    def prompt_enhancement(enabled, prompts, **kw):
        seen["request"] = (enabled, prompts, kw["system_prompt"], kw["max_new_tokens"], kw["seed"],
                           kw["generation_kwargs"])
        return "request" if enabled else None

    def encode(prompts, negative, **kw):
        seen["encoded"] = prompts
        from diffusers_ltx2.transformer import TextContexts
        return TextContexts(positive=embeds)

    monkeypatch.setattr(pipe, "prompt_enhancement", prompt_enhancement)
    monkeypatch.setattr(pipe, "enhance_call_prompts", lambda request, prompts: ["a fox, enhanced"])
    monkeypatch.setattr(pipe, "encode_text_contexts", encode)
    out = pipe("a fox", height=H, width=W, num_frames=17, enable_prompt_enhancement=True, system_prompt="sys",
               prompt_max_new_tokens=9, prompt_enhancement_kwargs={"do_sample": False}, prompt_enhancement_seed=3,
               generator=torch.Generator().manual_seed(0), output_type="latent")
    assert seen["request"] == (True, ["a fox"], "sys", 9, 3, {"do_sample": False})
    assert seen["encoded"] == ["a fox, enhanced"] and out.enhanced_prompts == ["a fox, enhanced"]


def test_the_enhancer_sees_the_first_image_as_given(pipe, embeds, monkeypatch):
    """1.2's DFRPipeline hands its first image to the enhancer (`enhance_prompt_image=images[0][0]`), before any
    re-compression: so does ours, through the pipelines' image-to-video enhancement (`image=`, else the first
    single-frame `VideoCondition`)."""
    from diffusers_ltx2.conditioning import VideoCondition
    from diffusers_ltx2.pipelines.enhancement import PromptEnhancement
    from diffusers_ltx2.transformer import TextContexts

    seen = []
    monkeypatch.setattr(pipe, "encode_text_contexts", lambda prompts, negative, **kw: TextContexts(positive=embeds))
    monkeypatch.setattr(pipe, "_enhancer", lambda: (None, None, None))
    monkeypatch.setattr(pipe, "processor", object(), raising=False)
    monkeypatch.setattr(pipe, "enhance_call_prompts", lambda request, prompts: seen.append(request) or ["x"])
    monkeypatch.setattr(S, "run_stage", lambda *a: (_ for _ in ()).throw(RuntimeError("stop")))
    picture = np.full((32, 48, 3), 200, dtype=np.uint8)
    for kwargs in ({"image": picture}, {"conditions": [VideoCondition(picture, frame_index=8)]}):
        with pytest.raises(RuntimeError, match="stop"):
            pipe("a fox", height=H, width=W, num_frames=17, output_type="latent",
                 enable_prompt_enhancement=True, generator=torch.Generator().manual_seed(0), **kwargs)
        assert isinstance(seen[-1], PromptEnhancement) and np.array_equal(np.asarray(seen[-1].image), picture)


@pytest.mark.parametrize("name, value", [
    ("latents", torch.zeros(1, 8, 4, 4, 6)), ("audio_latents", torch.zeros(1, 8, 10, 4)),
    ("keyframes_latents", torch.zeros(1, 8, 1, 4, 6)), ("keyframe_positions", [24]),
    ("reference_latents", torch.zeros(1, 8, 4, 2, 3)), ("guidance_keyframe_latents", torch.zeros(1, 8, 1, 4, 6)),
    ("guidance_keyframe_positions", [0]), ("guidance_keyframe_strength", 1.0), ("generate_slots", True),
    ("sigmas", [1.0, 0.5]), ("timesteps", [1000, 500]), ("num_inference_steps", 8), ("noise_scale", 0.5),
    ("freeze_audio", True), ("video_tiles", []), ("round_index", 1), ("source_seconds", 1.0),
    ("condition_num_frames", 17), ("negative_prompt", "blurry"), ("negative_prompt_embeds", None),
    ("negative_prompt_attention_mask", None), ("guidance_scale", 3.0), ("guider", None),
])
def test_refused_arguments_name_why(pipe, embeds, name, value, monkeypatch):
    ran = []
    monkeypatch.setattr(S, "run_stage", lambda *a: ran.append(1))
    with pytest.raises(ValueError, match=f"does not take {name}=: ") as err:
        _call(pipe, embeds, **{name: value})
    assert REFUSED_ARGUMENTS[name] in str(err.value) and not ran


def _picture(tmp_path, name="img.png"):
    from PIL import Image

    path = tmp_path / name
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 72, 3), dtype=np.uint8)).save(path)
    return str(path)


def test_image_refusals_come_before_anything_runs_and_unknown_arguments_are_type_errors(pipe, embeds, tmp_path,
                                                                                       monkeypatch):
    from diffusers.pipelines.ltx2.pipeline_ltx2_condition import LTX2VideoCondition
    from PIL import Image

    from diffusers_ltx2.conditioning import AudioCondition, VideoCondition

    def ran(*args, **kwargs):
        raise AssertionError("a model ran before the refusal")

    monkeypatch.setattr(pipe, "encode_text_contexts", ran)
    monkeypatch.setattr(S, "run_stage", ran)
    img = _picture(tmp_path)
    cases = [
        ({"conditions": [VideoCondition(img, frame_index=17)]}, "outside the clip's frames 0..16"),
        ({"conditions": [VideoCondition(img, frame_index=-18)]}, "outside the clip's frames 0..16"),
        ({"conditions": [LTX2VideoCondition(frames=Image.open(img), index=3)]}, "past the clip's 3 latent frames"),
        ({"conditions": [LTX2VideoCondition(frames=Image.open(img), index=1, strength=1.5)]}, "strength"),
        ({"image": img, "image_strength": 1.5}, "image_strength must be a number in"),
        ({"image": img, "image_crf": 60}, "image_crf"),
        ({"image": [img, img]}, "one first-frame image"),
        ({"image": img, "conditions": [VideoCondition(img, frame_index=0)]}, "more than one image at frame 0"),
        ({"conditions": [VideoCondition(np.zeros((9, 64, 64, 3), np.uint8))]}, "9-frame clip"),
        ({"conditions": [AudioCondition(np.zeros((1, 16000), np.float32), sample_rate=16000)]}, "AudioCondition"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            _call(pipe, embeds, **kwargs)
    with pytest.raises(ValueError, match="strength must be a number in"):
        VideoCondition(img, strength=-0.1)
    with pytest.raises(TypeError, match="unexpected keyword argument 'nonsense'"):
        _call(pipe, embeds, nonsense=1)


def test_images_reach_every_stage_at_its_size_and_each_round_tile_at_the_scaled_frame(pipe, embeds, tmp_path,
                                                                                     monkeypatch):
    """A 49-frame clip (seams 24, 48; round 1: tiles [0, 48] and [0, 96]) with images at frames 0 and 40: the base
    stage encodes them at half size, the detailing stage at full size, round 1 attaches frame 0 to both tiles and
    frame 40 at frame 80 to the tile that holds it (1.2 would put it at 40: `dfr.images`)."""
    from diffusers_ltx2.conditioning import VideoCondition
    from diffusers_ltx2.dfr.images import ImageAtFrame

    seen, real = [], S.run_stage

    def run_stage(stage, runtime):
        images = [c for c in stage.conditions if isinstance(c, ImageAtFrame)]
        seen.append((stage.name, stage.geometry.height, [(c.pixel_frames[0], c.strength) for c in images]))
        return real(stage, runtime)

    monkeypatch.setattr(S, "run_stage", run_stage)
    img = _picture(tmp_path)
    out = _call(pipe, embeds, num_frames=49, temporal_upsample_rounds=1, image=img,
                conditions=[VideoCondition(img, frame_index=LATER_FRAME, strength=0.5)])
    assert out.frames.shape[2] == (97 - 1) // 8 + 1
    assert [(h, frames) for _, h, frames in seen] == [
        (H // 2, [(LATER_FRAME, 0.5), (0, 1.0)]),
        (H, [(LATER_FRAME, 0.5), (0, 1.0)]),
        (H, [(0, 1.0)]),
        (H, [(2 * LATER_FRAME, 0.5), (0, 1.0)]),
    ]
    assert [name.split(" (")[0].split(",")[0] for name, _, _ in seen] == [
        "DFR base", "DFR detailing", "DFR temporal round 1/1", "DFR temporal round 1/1"]
