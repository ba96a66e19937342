"""Every existing mode on a tiny LTX-2.5 model (`factory.build_components_25`): keyframes, A2V, V2A, retake,
extend, two-stage, IC-LoRA, quantization, offload and training run (1-2 steps, tiny sizes) and do what the mode
means on 2.5 (frozen sources held, the 2.5 cross-attention rule and keyframe marker in every transformer call);
image conditions take the 2.4+ CRF (18). The README's "what runs on which version" table lists these tests.
"""

from __future__ import annotations

import copy

import numpy as np
import PIL.Image
import pytest
import torch
from two_stage_files import write_official_lora
from upsampler_files import tiny_upsampler_config, write_official_upsampler

from diffusers_ltx2 import (
    ClassifierFreeGuidance, LTX2AudioVideoPipeline, LTX2ICLoRAPipeline, LTX2Scheduler, LTX2TwoStagePipeline,
)
from diffusers_ltx2.conditioning import AudioCondition, FrozenVideo, TemporalRegion, VideoCondition
from diffusers_ltx2.factory import TINY_CLIP, build_components_25
from diffusers_ltx2.media import crf_compress
from diffusers_ltx2.transformer import passes as transformer_passes

RUN = dict(num_inference_steps=2, max_sequence_length=128, generator=None, output_type="latent")
SR = 24000


@pytest.fixture(scope="module")
def parts_25():
    parts = build_components_25()
    parts.pop("duration_head")  # these calls fix num_frames
    with torch.no_grad():  # a trained-looking keyframe embedding, so the marker changes the output
        parts["transformer"].keyframes_abs_pos_embedding.normal_(0, 0.5, generator=torch.Generator().manual_seed(3))
    return parts


def _pipe(parts, cls=LTX2AudioVideoPipeline, **kw):
    return cls(scheduler=LTX2Scheduler(), guider=ClassifierFreeGuidance(1.0, 1.0), **copy.deepcopy(parts), **kw)


@pytest.fixture()
def calls(monkeypatch):
    """Every transformer pass of the shared loop: its cross-attention rule and whether the keyframe marker went in."""
    seen = []
    original = transformer_passes.TransformerPasses.__init__

    def spy(self, *args, **kwargs):
        original(self, *args, **kwargs)
        seen.append(self.cross_timestep_rule)

    monkeypatch.setattr(transformer_passes.TransformerPasses, "__init__", spy)
    return seen


def _run(pipe, **kw):
    args = dict(RUN, **TINY_CLIP)
    args.update(kw)
    args["generator"] = torch.Generator().manual_seed(0)
    return pipe("a cat", **args)


def _clip(n=TINY_CLIP["num_frames"]):
    g = np.random.default_rng(0)
    return g.integers(0, 255, (n, TINY_CLIP["height"], TINY_CLIP["width"], 3), dtype=np.uint8)


def _wave(seconds=2.0):
    t = np.arange(int(SR * seconds)) / SR
    return np.stack([np.sin(2 * np.pi * 220 * t), np.sin(2 * np.pi * 330 * t)]).astype(np.float32) * 0.3


def test_keyframes(parts_25, calls):
    """An image on the first and the last frame (first-last frame interpolation); the 2.5 rule in every pass."""
    img = PIL.Image.fromarray(_clip(1)[0])
    out = _run(_pipe(parts_25), conditions=[VideoCondition(img, 0), VideoCondition(img, -1)])
    assert torch.isfinite(out.frames).all() and set(calls) == {"own_scale_shift_cross_gate"}


def test_audio_to_video_keeps_the_sound(parts_25, calls):
    out = _run(_pipe(parts_25), conditions=[AudioCondition(_wave(), SR)], output_type="pt")
    assert out.frames is not None and set(calls) == {"own_scale_shift_cross_gate"}
    n = out.audio.shape[-1]
    torch.testing.assert_close(out.audio[0], torch.from_numpy(_wave())[:, :n], atol=1e-6, rtol=0)


def test_video_to_audio_keeps_the_frames(parts_25):
    clip = _clip()
    out = _run(_pipe(parts_25), conditions=[FrozenVideo(clip)], output_type="np")
    assert np.abs(out.frames[0] * 255 - clip).max() <= 1 and out.audio is not None


def test_retake_changes_only_the_window(parts_25):
    """Outside the window the latents do not depend on the seed (the source is held), inside they do."""
    pipe = _pipe(parts_25)
    conditions = [FrozenVideo(_clip()), AudioCondition(_wave(), SR), TemporalRegion(0.2, 0.3)]  # clip: 0.375 s
    a = _run(pipe, conditions=conditions).frames
    b = pipe("a cat", conditions=conditions, **dict(RUN, **TINY_CLIP, generator=torch.Generator().manual_seed(5)))
    diff = (a - b.frames).abs().amax(dim=(0, 1, 3, 4))  # per latent frame
    assert diff[0] == 0 and diff[-1] > 1e-3, diff


def test_extend_continues_the_clip(parts_25):
    pipe = _pipe(parts_25)
    clip = _clip(17)
    out = pipe.extend(clip, 8, overlap_frames=8, prompt="a cat", audio=_wave(17 / TINY_CLIP["frame_rate"]), sample_rate=SR,
                      output_type="np", num_inference_steps=2, max_sequence_length=128,
                      generator=torch.Generator().manual_seed(0), height=TINY_CLIP["height"],
                      width=TINY_CLIP["width"], frame_rate=TINY_CLIP["frame_rate"])
    assert out.frames[0].shape[0] == 17 + 8


def test_long_video_in_sliding_windows(parts_25, calls):
    """Three windows on 2.5: the requested frames and a one-call clip's audio length, the first window equal to a
    one-window call with the same generator, the 2.5 rule in every window's passes."""
    from diffusers_ltx2.long_video import plan_windows

    pipe = _pipe(parts_25)
    size = dict(height=64, width=64, frame_rate=24.0, num_inference_steps=2, max_sequence_length=128)
    assert len(plan_windows(57, 25, 16)) == 3
    out = pipe.generate_long_video("a cat", num_frames=57, window=25, overlap=16, output_type="latent",
                                   generator=torch.Generator().manual_seed(0), **size)
    one = pipe("a cat", num_frames=57, output_type="latent", generator=torch.Generator().manual_seed(0), **size)
    first = pipe("a cat", num_frames=25, output_type="latent", generator=torch.Generator().manual_seed(0), **size)
    assert out.frames.shape == one.frames.shape and out.audio.shape == one.audio.shape
    torch.testing.assert_close(out.frames[:, :, :3], first.frames[:, :, :3], rtol=0, atol=0)  # window 1's own
    assert set(calls) == {"own_scale_shift_cross_gate"} and len(calls) == 3 + 2


@pytest.mark.parametrize("distilled", [False, True], ids=["dev_lora", "distilled"])
def test_two_stage(parts_25, tmp_path, calls, distilled):
    """Two stages (and the distilled recipe, which picks 2.5's euler-ancestral stage 1) at 128 x 128."""
    from diffusers_ltx2.conversion.upsampler import load_official_upsampler

    pipe = _pipe(parts_25, LTX2TwoStagePipeline)
    up = tmp_path / "up.safetensors"
    write_official_upsampler(up, tiny_upsampler_config(pipe.vae.config.latent_channels), seed=1)
    pipe.register_modules(latent_upsampler=load_official_upsampler(up, dtype=torch.float32))
    if not distilled:
        lora = tmp_path / "distilled.safetensors"
        write_official_lora(lora, pipe.transformer, seed=3)
        pipe.load_distilled_lora(str(lora))
    out = _run(pipe, height=128, width=128, distilled=distilled, num_inference_steps=None if distilled else 2)
    assert out.frames.shape[-2:] == (4, 4) and torch.isfinite(out.frames).all()
    assert set(calls) == {"own_scale_shift_cross_gate"} and len(calls) == 2  # one loop per stage


def test_ic_lora(parts_25, tmp_path):
    from test_ic_lora_loading import write_lora

    pipe = _pipe(parts_25, LTX2ICLoRAPipeline)
    path = tmp_path / "ic.safetensors"
    write_lora(path, pipe.transformer, metadata={"reference_downscale_factor": "2"})
    pipe.load_lora_weights(str(path))
    out = _run(pipe, control_video=torch.rand(TINY_CLIP["num_frames"], 3, 64, 64))
    assert torch.isfinite(out.frames).all()


def test_ic_lora_two_stage(parts_25, tmp_path, calls):
    """The two-stage IC-LoRA pipeline (official `ic_lora.py` recipe, distilled) on 2.5: the reference in stage 1
    only, full size out, the 2.5 rule in both stages' passes."""
    from test_ic_lora_loading import write_lora

    from diffusers_ltx2 import LTX2ICLoRATwoStagePipeline
    from diffusers_ltx2.conversion.upsampler import load_official_upsampler

    pipe = _pipe(parts_25, LTX2ICLoRATwoStagePipeline)
    up = tmp_path / "up.safetensors"
    write_official_upsampler(up, tiny_upsampler_config(pipe.vae.config.latent_channels), seed=1)
    pipe.register_modules(latent_upsampler=load_official_upsampler(up, dtype=torch.float32))
    path = tmp_path / "ic.safetensors"
    write_lora(path, pipe.transformer, metadata={"reference_downscale_factor": "2"})
    pipe.load_lora_weights(str(path))
    tokens = []
    pipe.transformer.register_forward_pre_hook(lambda m, a, kw: tokens.append(kw["hidden_states"].shape[1]),
                                               with_kwargs=True)
    out = _run(pipe, height=128, width=128, num_inference_steps=None,
               control_video=torch.rand(TINY_CLIP["num_frames"], 3, 128, 128))
    assert out.frames.shape[-2:] == (4, 4) and torch.isfinite(out.frames).all()
    assert set(tokens[:8]) == {2 * 2 * 2 + 2 * 1 * 1} and set(tokens[8:]) == {2 * 4 * 4}  # reference in stage 1
    assert set(calls) == {"own_scale_shift_cross_gate"} and len(calls) == 2


@pytest.mark.parametrize("mode", ["int8", "fp8-cast"])
def test_quantization(parts_25, mode):
    from diffusers_ltx2.quantization import quantize_transformer_

    ref = _run(_pipe(parts_25)).frames
    pipe = _pipe(parts_25)
    assert quantize_transformer_(pipe.transformer, mode)
    got = _run(pipe).frames
    assert torch.isfinite(got).all() and 0 < (got - ref).abs().max() < 0.25 * ref.abs().max()


@pytest.mark.parametrize("mode", ["model", "blocks", "disk"])
def test_offload_equals_resident(parts_25, mode, tmp_path):
    from diffusers_ltx2.memory import apply_offload

    ref = _run(_pipe(parts_25))
    pipe = _pipe(parts_25)
    apply_offload(pipe, mode, "cpu", offload_folder=tmp_path / "offload")
    got = _run(pipe)
    # model / blocks: bit-exact. disk: measured max 1.4e-6 on the 2.5 model (exact on the 2.0 one in
    # test_offload.py); the weights read back from the files are equal, so a summation-order difference of the
    # CPU kernels on the re-read tensors, not a wrong weight: a wrong or missing block would move O(0.1)
    tol = 1e-5 if mode == "disk" else 0.0
    torch.testing.assert_close(got.frames, ref.frames, rtol=0, atol=tol)
    torch.testing.assert_close(got.audio, ref.audio, rtol=0, atol=tol)


def test_training_uses_the_25_cross_attention_rule(parts_25, tmp_path):
    """A LoRA trains on the 2.5 transformer (first-frame conditioning on), and the training forward runs with the
    rule of ltx-core 1.2, whose trainer is the official one for 2.5 (no keyframe marker in training, as there)."""
    from training_fixtures import make_config, write_dataset

    from diffusers_ltx2.transformer.inputs import cross_timestep
    from diffusers_ltx2.training import strategies as S
    from diffusers_ltx2.training.trainer import Trainer

    transformer = copy.deepcopy(parts_25["transformer"])
    root = write_dataset(tmp_path / "data", transformer, n_clips=2)
    cfg = make_config(root, tmp_path / "out", {"name": "text_to_video", "with_audio": True,
                                               "first_frame_conditioning_p": 1.0},
                      optimization={"steps": 2, "learning_rate": 1e-3})
    trainer = Trainer(cfg, transformer=transformer)
    result = trainer.train(progress=False)
    assert result.output.is_file() and all(np.isfinite(result.losses))

    batch = trainer.batch_for([0])
    noise = S.draw_step_noise(cfg, batch, S.sample_generators(0, [0]))
    model = trainer.unwrapped.eval()
    with torch.no_grad():
        inputs = S.build_inputs(cfg, model, batch, noise)
        got = S.predict_velocity(model, inputs)
        kw = dict(hidden_states=inputs.video.latent, audio_hidden_states=inputs.audio.latent,
                  encoder_hidden_states=inputs.contexts.video_context,
                  audio_encoder_hidden_states=inputs.contexts.audio_context,
                  encoder_attention_mask=inputs.contexts.attention_mask,
                  audio_encoder_attention_mask=inputs.contexts.attention_mask,
                  timestep=inputs.video.timesteps(inputs.sigma.view(-1, 1)) * 1000,
                  audio_timestep=inputs.audio.timesteps(inputs.sigma.view(-1, 1)) * 1000,
                  sigma=inputs.sigma * 1000, audio_sigma=inputs.sigma * 1000, video_coords=inputs.video.coords,
                  audio_coords=inputs.audio.coords, return_dict=False)
        s = inputs.sigma * 1000
        with cross_timestep(model, "own_scale_shift_cross_gate", s, s) as use_cross:
            want = model(use_cross_timestep=use_cross, **kw)
        old = model(use_cross_timestep=True, **kw)
    torch.testing.assert_close(got[0], want[0], rtol=0, atol=0)
    assert (got[0] - old[0]).abs().max() > 1e-4  # first-frame tokens at timestep 0: the rules differ


def test_image_conditions_take_the_24_crf(parts_25):
    """18 on 2.5 (official `resolve_crf` keyed on model_version), also with no text encoder loaded (diffusers'
    Gemma-4 rule would give 33 there); `image=`, `VideoCondition` and a given `image_crf` agree."""
    pipe = _pipe(parts_25)
    assert pipe.model_version == "2.5" and pipe.default_image_crf == 18
    pipe.text_encoder = None
    assert pipe.default_image_crf == 18
    assert pipe.clip_geometry(1, 9, 64, 64, 24.0).image_crf == 18
    img = PIL.Image.fromarray(_clip(1)[0])
    prepared = pipe.prepare_image(img)[0]
    prepared = np.asarray(prepared).reshape(np.array(img).shape).astype(np.int16)  # (1, H, W, 3) uint8 frames
    assert np.array_equal(prepared, crf_compress(np.array(img), 18))
    assert not np.array_equal(prepared, crf_compress(np.array(img), 33))
    seen = {}
    import diffusers_ltx2.conditioning.video as V

    original = V.to_vae_pixels

    def spy(frames, height, width, crf):
        seen["crf"] = crf
        return original(frames, height, width, crf)

    V.to_vae_pixels = spy
    try:
        full = _pipe(parts_25)
        _run(full, conditions=[VideoCondition(img, 0)], num_inference_steps=1)
        assert seen["crf"] == 18
        _run(full, conditions=[VideoCondition(img, 0, crf=33)], num_inference_steps=1)
        assert seen["crf"] == 33
    finally:
        V.to_vae_pixels = original


def test_from_pipe_into_two_stage_keeps_the_25_components():
    """diffusers' `from_pipe` shares a model only where the target's `__init__` annotates its type: the two-stage
    pipeline's duration head and diffusion decoder (LTX-2.5) were unannotated, so they were silently dropped."""
    pipe = _pipe(build_components_25())
    two = LTX2TwoStagePipeline.from_pipe(pipe)
    assert two.duration_head is pipe.duration_head and two.diffusion_decoder is pipe.diffusion_decoder
