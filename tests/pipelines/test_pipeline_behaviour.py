"""What the pipeline does with its inputs: outputs, first-frame images, guidance, callbacks, custom guiders."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import PIL.Image
import torch

from diffusers_ltx2 import ClassifierFreeGuidance, Guider, Prediction, StepPlan
from diffusers_ltx2.factory import TINY_CLIP
from diffusers_ltx2.guiders import CONDITIONAL, GuidancePass
from diffusers_ltx2.latents import layout as L


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_output_types(tiny_pipe):
    np_out = tiny_pipe("a cat", num_inference_steps=2, generator=_gen(), output_type="np", **TINY_CLIP)
    f, h, w = TINY_CLIP["num_frames"], TINY_CLIP["height"], TINY_CLIP["width"]
    assert np_out.frames.shape == (1, f, h, w, 3) and np_out.frames.dtype == np.float32
    assert 0.0 <= np_out.frames.min() and np_out.frames.max() <= 1.0
    # audio is a float32 tensor whatever the output type, as diffusers' LTX-2 pipelines return it
    assert isinstance(np_out.audio, torch.Tensor) and np_out.audio.dtype == torch.float32
    assert np_out.audio.shape[:2] == (1, 2)
    assert np_out.sample_rate == tiny_pipe.vocoder.config.output_sampling_rate
    # audio covers the clip: 4T - 3 mel frames of 240 samples at 24 kHz, T = round(frames / fps * 25)
    t = round(f / TINY_CLIP["frame_rate"] * 25)
    assert np_out.audio.shape[2] == (4 * t - 3) * 240

    pt_out = tiny_pipe("a cat", num_inference_steps=2, generator=_gen(), output_type="pt", **TINY_CLIP)
    assert pt_out.frames.shape == (1, f, 3, h, w) and isinstance(pt_out.audio, torch.Tensor)
    np.testing.assert_allclose(pt_out.frames.permute(0, 1, 3, 4, 2).numpy(), np_out.frames, atol=1e-6)

    # the default is "pil", as diffusers' LTX2Pipeline
    pil_out = tiny_pipe("a cat", num_inference_steps=2, generator=_gen(), **TINY_CLIP)
    assert len(pil_out.frames[0]) == f and isinstance(pil_out.frames[0][0], PIL.Image.Image)
    np.testing.assert_array_equal(np.asarray(pil_out.frames[0][0]), (np_out.frames[0, 0] * 255).round().astype(np.uint8))
    torch.testing.assert_close(pil_out.audio, np_out.audio)

    frames, audio = tiny_pipe("a cat", num_inference_steps=2, generator=_gen(), return_dict=False, output_type="np",
                              **TINY_CLIP)
    np.testing.assert_array_equal(frames, np_out.frames)


def test_batch_and_videos_per_prompt(tiny_pipe):
    out = tiny_pipe(["a cat", "a dog"], num_videos_per_prompt=2, num_inference_steps=1, generator=_gen(),
                    output_type="latent", **TINY_CLIP)
    assert out.frames.shape[0] == 4 and out.audio.shape[0] == 4
    assert not torch.allclose(out.frames[0], out.frames[1])  # different noise per video


def test_first_frame_image_is_kept_at_strength_one(tiny_pipe):
    rng = np.random.default_rng(0)
    image = rng.random((TINY_CLIP["height"], TINY_CLIP["width"], 3)).astype(np.float32)
    out = tiny_pipe("a cat", image=image, num_inference_steps=3, generator=_gen(), output_type="latent",
                    **TINY_CLIP)
    expected = tiny_pipe.encode_image(image, TINY_CLIP["height"], TINY_CLIP["width"], 1, "cpu")
    expected = L.denormalize_video(expected, tiny_pipe.vae.latents_mean, tiny_pipe.vae.latents_std)
    torch.testing.assert_close(out.frames[:, :, :1], expected, atol=1e-5, rtol=0)
    free = tiny_pipe("a cat", num_inference_steps=3, generator=_gen(), output_type="latent", **TINY_CLIP)
    assert (free.frames[:, :, :1] - expected).abs().max() > 1e-2

    partial = tiny_pipe("a cat", image=image, image_strength=0.5, num_inference_steps=3, generator=_gen(),
                        output_type="latent", **TINY_CLIP)
    d_partial = (partial.frames[:, :, :1] - expected).abs().max()
    assert 1e-4 < d_partial < (free.frames[:, :, :1] - expected).abs().max()


def test_first_frame_tokens_get_zero_timestep(tiny_pipe):
    seen = []
    tiny_pipe.transformer.register_forward_pre_hook(
        lambda mod, args, kwargs: seen.append(kwargs["timestep"].clone()), with_kwargs=True)
    image = np.zeros((TINY_CLIP["height"], TINY_CLIP["width"], 3), dtype=np.float32)
    tiny_pipe("a cat", image=image, num_inference_steps=2, generator=_gen(), output_type="latent", **TINY_CLIP)
    t = seen[0]
    tokens_per_frame = (TINY_CLIP["height"] // 32) * (TINY_CLIP["width"] // 32)
    assert t.shape[-1] > tokens_per_frame, "per-token timesteps when tokens are conditioned"
    sigma0 = float(tiny_pipe.scheduler.sigmas_for(2)[0]) * 1000.0  # the schedule of the call
    assert torch.all(t[:, :tokens_per_frame] == 0) and torch.all(t[:, tokens_per_frame:] == sigma0)


def test_cfg_changes_output_and_batches_passes(tiny_pipe):
    calls = []
    tiny_pipe.transformer.register_forward_pre_hook(
        lambda mod, args, kwargs: calls.append(kwargs["hidden_states"].shape[0]), with_kwargs=True)
    off = tiny_pipe("a cat", num_inference_steps=2, generator=_gen(), output_type="latent", **TINY_CLIP)
    assert calls == [1, 1]
    calls.clear()
    on = tiny_pipe("a cat", num_inference_steps=2, generator=_gen(), output_type="latent",
                   guider=ClassifierFreeGuidance(4.0, 7.0), **TINY_CLIP)
    assert calls == [2, 2], "conditional and negative passes run as one batched call"
    assert (on.frames - off.frames).abs().max() > 1e-3
    calls.clear()
    seq = tiny_pipe("a cat", num_inference_steps=2, generator=_gen(), output_type="latent",
                    guider=ClassifierFreeGuidance(4.0, 7.0), max_batch_passes=1, **TINY_CLIP)
    assert calls == [1, 1, 1, 1]
    torch.testing.assert_close(seq.frames, on.frames, atol=1e-5, rtol=0)


def test_callback_can_read_and_replace_latents(tiny_pipe):
    steps = []

    def callback(pipe, i, sigma, tensors):
        steps.append((i, float(sigma), tuple(tensors["latents"].shape), tuple(tensors["audio_latents"].shape)))
        return {"audio_latents": torch.zeros_like(tensors["audio_latents"])}

    out = tiny_pipe("a cat", num_inference_steps=3, generator=_gen(), output_type="latent",
                    callback_on_step_end=callback, callback_on_step_end_tensor_inputs=["latents", "audio_latents"],
                    **TINY_CLIP)
    assert [s[0] for s in steps] == [0, 1, 2]
    assert steps[0][1] == float(tiny_pipe.scheduler.sigmas_for(3)[0])
    zero = L.unpack_audio(
        L.denormalize_audio_tokens(torch.zeros(1, out.audio.shape[2], out.audio.shape[1] * out.audio.shape[3]),
                                   tiny_pipe.audio_vae.latents_mean, tiny_pipe.audio_vae.latents_std),
        out.audio.shape[3])
    torch.testing.assert_close(out.audio, zero)


class _CFGZeroStar(Guider):
    """CFG-zero* (projection-rescaled negative) written against the public interface only."""

    def __init__(self, scale: float = 4.0):
        self.scale = scale

    @property
    def uses_negative_prompt(self) -> bool:
        return True

    def plan(self, step_index, num_steps, sigma):
        return StepPlan(passes=(CONDITIONAL, GuidancePass("neg", negative=True)))

    def combine(self, step_index, plan, predictions: Mapping[str, Prediction]) -> Prediction:
        def one(c, u):
            alpha = (c * u).flatten(1).sum(1) / (u * u).flatten(1).sum(1).clamp_min(1e-8)
            u = u * alpha.view(-1, 1, 1)
            return c + (self.scale - 1) * (c - u)

        c, u = predictions["cond"], predictions["neg"]
        return Prediction(one(c.video, u.video), one(c.audio, u.audio))


def test_user_defined_guider_plugs_in(tiny_pipe):
    custom = tiny_pipe("a cat", num_inference_steps=2, generator=_gen(), output_type="latent",
                       guider=_CFGZeroStar(4.0), **TINY_CLIP)
    plain = tiny_pipe("a cat", num_inference_steps=2, generator=_gen(), output_type="latent",
                      guider=ClassifierFreeGuidance(4.0, 4.0), **TINY_CLIP)
    assert torch.isfinite(custom.frames).all()
    assert (custom.frames - plain.frames).abs().max() > 1e-4


def test_interrupt_stops_early(tiny_pipe):
    seen = []

    def callback(pipe, i, sigma, tensors):
        seen.append(i)
        pipe._interrupt = True
        return {}

    tiny_pipe("a cat", num_inference_steps=4, generator=_gen(), output_type="latent",
              callback_on_step_end=callback, **TINY_CLIP)
    assert seen == [0]


def test_grayscale_and_rgba_pil_images_are_taken_as_their_rgb_conversion(tiny_pipe):
    rng = np.random.default_rng(1)
    size = (TINY_CLIP["width"], TINY_CLIP["height"])
    grey = PIL.Image.fromarray(rng.integers(0, 256, size[::-1], dtype=np.uint8), "L")
    rgba = PIL.Image.fromarray(rng.integers(0, 256, (*size[::-1], 4), dtype=np.uint8), "RGBA")
    for image in (grey, rgba):
        out = tiny_pipe("a cat", image=image, num_inference_steps=1, generator=_gen(), output_type="latent",
                        **TINY_CLIP)
        rgb = tiny_pipe("a cat", image=image.convert("RGB"), num_inference_steps=1, generator=_gen(),
                        output_type="latent", **TINY_CLIP)
        torch.testing.assert_close(out.frames, rgb.frames, atol=0, rtol=0)
