"""Every bad input raises a clear ValueError before any model runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffusers_ltx2.factory import TINY_CLIP


@pytest.fixture()
def counted_pipe(tiny_pipe):
    """The tiny pipeline with a counter of forward calls over every model component."""
    calls = []
    for name in ("text_encoder", "connectors", "transformer", "vae", "audio_vae", "vocoder"):
        getattr(tiny_pipe, name).register_forward_pre_hook(lambda mod, args, name=name: calls.append(name))
    tiny_pipe.calls = calls
    return tiny_pipe


CASES = [
    (dict(num_frames=10), r"8k\+1.*nearest valid values: 9 or 17"),
    (dict(num_frames=0), "positive integer"),
    (dict(height=50), r"height must be a multiple of 32 and at least 64, got 50; nearest valid value: 64"),
    (dict(height=80), r"height must be a multiple of 32.*nearest valid values: 64 or 96"),
    # a 32-pixel side is a 1-pixel latent, which the VAE decoder's padding cannot take
    (dict(height=32), r"height must be at least 64 \(two latent pixels\), got 32; nearest valid value: 64"),
    (dict(width=32), r"width must be at least 64"),
    (dict(width=100), r"width must be a multiple of 32.*96 or 128"),
    (dict(prompt=[]), "empty list"),
    (dict(prompt=["a", 3]), "only strings"),
    (dict(prompt=None), "exactly one of prompt or prompt_embeds"),
    (dict(prompt=["a", "b"], negative_prompt=["x", "y", "z"]), "negative_prompt has batch size 3"),
    # as diffusers: only a single string is broadcast over the prompts, a list must match them
    (dict(prompt=["a", "b"], negative_prompt=["c"], guidance_scale=3.0),
     "negative_prompt has batch size 1, but the prompts have batch size 2"),
    (dict(image=np.zeros((64, 64))), r"\(H, W, 3\)"),
    (dict(image=torch.zeros(1, 4, 64, 64)), r"\(3, H, W\)"),
    (dict(image=42), "must be a path, PIL image"),  # paths are images too (C: any video input)
    (dict(prompt=["a", "b", "c"], image=[np.zeros((64, 64, 3))] * 2), "2 images for a batch of 3"),
    (dict(image_strength=1.5), r"image_strength must be in \[0, 1\]"),
    (dict(output_type="gif"), "output_type must be one of"),
    (dict(frame_rate=0), "frame_rate must be a positive number"),
    (dict(latents=torch.zeros(1, 7, 16)), "latents has shape"),
    (dict(audio_latents=torch.zeros(1, 3, 32)), "audio_latents has shape"),
    (dict(generator=[torch.Generator(), torch.Generator()]), "2 generators for an effective batch of 1"),
    (dict(callback_on_step_end=lambda *a: {}, callback_on_step_end_tensor_inputs=["noise_pred"]),
     "callback tensor inputs"),
    (dict(sigmas=[1.0, 0.5, 0.7]), "decreasing"),
    (dict(prompt_embeds=torch.zeros(1, 4, 4)), "needs its prompt_attention_mask"),
    (dict(prompt_embeds=torch.zeros(1, 4, 4), prompt_attention_mask=torch.ones(1, 5)), r"\(batch, tokens\)"),
    (dict(prompt_attention_mask=torch.ones(1, 4)), "without prompt_embeds"),
    (dict(prompt_embeds=3), "PromptEmbeddings, a conditioning file path or a tensor"),
    # images: floats outside [0, 1] (e.g. 0-255 floats) and integer dtypes other than uint8 are refused
    (dict(image=np.full((64, 64, 3), 200.0, dtype=np.float32)), r"in \[0, 1\].*pass a uint8 array"),
    (dict(image=torch.full((3, 64, 64), -0.5)), r"in \[0, 1\]"),
    (dict(image=np.zeros((64, 64, 3), dtype=np.int64)), "must be uint8"),
    (dict(image=np.full((64, 64, 3), np.nan, dtype=np.float32)), "NaN"),
    (dict(prompt=["a", "b"], num_videos_per_prompt=2, image=[np.zeros((64, 64, 3))] * 3),
     r"3 images for a batch of 2 prompts: pass 1, 2 \(one per prompt\) or 4 \(one per video\)"),
    # diffusers' call arguments
    (dict(guider=__import__("diffusers_ltx2").MultimodalGuider(), guidance_scale=4.0),
     r"either guider= or diffusers' guidance arguments \(guidance_scale\)"),
    (dict(stg_scale=1.0, spatio_temporal_guidance_blocks=[]), "spatio_temporal_guidance_blocks is empty"),
    (dict(guidance_rescale=1.5), r"guidance_rescale must be in \[0, 1\]"),
    (dict(stg_scale=-1.0), "negative guidance scales"),
    (dict(guidance_scale="4"), "guidance_scale must be a finite number"),
    (dict(spatio_temporal_guidance_blocks=[99]), "outside the transformer's blocks"),
    (dict(timesteps=[1000, 500], sigmas=[1.0, 0.5]), "either timesteps or sigmas"),
    (dict(timesteps=[500, 1000]), "decreasing"),
    (dict(noise_scale=1.5), r"noise_scale must be in \[0, 1\]"),
    (dict(min_seconds=5.0, max_seconds=2.0), "min_seconds"),
]


@pytest.mark.parametrize("overrides,message", CASES)
def test_bad_input_fails_before_any_model_call(counted_pipe, overrides, message):
    kwargs = dict(TINY_CLIP, prompt="a cat", num_inference_steps=2)
    if "prompt_embeds" in overrides:
        kwargs.pop("prompt")
    kwargs.update(overrides)
    with pytest.raises(ValueError, match=message):
        counted_pipe(**kwargs)
    assert counted_pipe.calls == []


def test_good_input_does_call_models(counted_pipe):
    counted_pipe("a cat", num_inference_steps=1, output_type="latent", **TINY_CLIP)
    assert "transformer" in counted_pipe.calls and "text_encoder" in counted_pipe.calls
