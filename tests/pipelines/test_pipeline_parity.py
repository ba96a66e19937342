"""Our pipeline against diffusers' own `LTX2Pipeline` on identical tiny components.

With guidance off, both run the same transformer on the same noise and sigmas; only the sampler code differs
(ours: x0 + Euler on x0 with per-token timesteps; diffusers: velocity + FlowMatch Euler), which is algebraically
the same update. In fp32 the remaining difference is rounding of `x - (x - s*v)` forms, ~1e-7 per step.
"""

from __future__ import annotations

import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from diffusers.pipelines.ltx2 import LTX2Pipeline

from diffusers_ltx2.factory import TINY_CLIP
from diffusers_ltx2.latents import layout as L


def _diffusers_pipe(components):
    scheduler = FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=False)
    return LTX2Pipeline(scheduler=scheduler, **components)


def test_guidance_off_latents_match_diffusers(tiny_pipe):
    ours = tiny_pipe
    theirs = _diffusers_pipe({k: getattr(ours, k) for k in (
        "vae", "audio_vae", "text_encoder", "tokenizer", "connectors", "transformer", "vocoder")})
    clip = dict(TINY_CLIP)
    steps = 4
    ours.scheduler.set_timesteps(steps, num_tokens=1)
    sigmas = ours.scheduler.sigmas.clone()

    g = torch.Generator().manual_seed(1)
    (vb, vn, vc), _ = ours.video_latent_shape(1, clip["num_frames"], clip["height"], clip["width"])
    (ab, an, ac), _ = ours.audio_latent_shape(1, clip["num_frames"], clip["frame_rate"])
    video_noise = torch.randn(vb, vn, vc, generator=g)
    audio_noise = torch.randn(ab, an, ac, generator=g)

    out = ours("a cat walks", sigmas=sigmas.tolist(), latents=video_noise, audio_latents=audio_noise,
               output_type="latent", max_sequence_length=1024, **clip)

    # diffusers normalizes user-given audio latents; hand it the denormalized noise so it starts from the same point.
    audio_for_diffusers = L.denormalize_audio_tokens(audio_noise, ours.audio_vae.latents_mean, ours.audio_vae.latents_std)
    ref = theirs(
        prompt="a cat walks", sigmas=sigmas[:-1].tolist(), num_inference_steps=steps,
        latents=video_noise, audio_latents=audio_for_diffusers,
        guidance_scale=1.0, stg_scale=0.0, modality_scale=1.0, guidance_rescale=0.0,
        audio_guidance_scale=1.0, audio_stg_scale=0.0, audio_modality_scale=1.0, audio_guidance_rescale=0.0,
        output_type="latent", **clip,
    )
    assert out.frames.shape == ref.frames.shape
    assert out.audio.shape == ref.audio.shape
    torch.testing.assert_close(out.frames, ref.frames, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.audio, ref.audio, atol=1e-5, rtol=0)
    # the run actually denoised: the result is far from the starting noise
    assert (out.frames - L.unpack_video(video_noise, *out.frames.shape[2:])).abs().max() > 1e-2
