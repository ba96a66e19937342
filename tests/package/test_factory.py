"""Tests of the random-weight LTX-2 model factory (`diffusers_ltx2.factory`)."""

import dataclasses

import numpy as np
import pytest
import torch

from diffusers_ltx2 import factory
from diffusers_ltx2.factory import SMALL, SMALL_CLIP, TINY, TINY_CLIP, build_components, build_diffusers_pipeline

MODULES = ("text_encoder", "connectors", "transformer", "vae", "audio_vae", "vocoder")

# Guidance fully off: one transformer call per step (diffusers falls back to the video value when an audio
# scale is 0 / None, so the audio values are passed explicitly as "off" too).
NO_GUIDANCE = dict(
    guidance_scale=1.0, stg_scale=0, modality_scale=1, audio_guidance_scale=1, audio_stg_scale=0,
    audio_modality_scale=1, guidance_rescale=0, audio_guidance_rescale=0,
)


@pytest.fixture(scope="module")
def tiny():
    return build_components(TINY, seed=0)


@pytest.fixture(scope="module")
def pipe():
    pipeline = build_diffusers_pipeline(TINY, seed=0)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def _run(pipe, **kwargs):
    args = dict(prompt="a cat", height=64, width=64, num_frames=9, num_inference_steps=2, **NO_GUIDANCE)
    args.update(kwargs)
    return pipe(**args, generator=torch.Generator().manual_seed(0))


def test_components_and_configs(tiny):
    assert set(tiny) == {"tokenizer", *MODULES}
    for name in MODULES:
        assert not tiny[name].training, name
        assert not any(p.requires_grad for p in tiny[name].parameters()), name
    transformer, connectors = tiny["transformer"].config, tiny["connectors"].config
    assert connectors.caption_channels == tiny["text_encoder"].config.text_config.hidden_size == TINY.gemma_hidden
    assert connectors.text_proj_in_factor == TINY.gemma_layers + 1
    assert transformer.caption_channels == connectors.caption_channels
    assert transformer.in_channels == tiny["vae"].config.latent_channels
    assert transformer.audio_in_channels == tiny["audio_vae"].config.latent_channels * 16
    assert transformer.rope_type == "split" and transformer.perturbed_attn is False
    assert transformer.num_layers >= 2 and SMALL.num_layers >= 2
    # normalisation statistics are non-trivial and sized for the (packed) latents the pipeline normalises
    for vae, width in ((tiny["vae"], transformer.in_channels), (tiny["audio_vae"], transformer.audio_in_channels)):
        assert vae.latents_mean.shape == vae.latents_std.shape == (width,)
        assert vae.latents_mean.abs().min() > 0 and (vae.latents_std - 1).abs().min() > 0
        assert vae.latents_std.min() > 0


def test_invalid_size_is_rejected():
    with pytest.raises(ValueError, match="audio_heads"):
        dataclasses.replace(TINY, audio_heads=1)
    with pytest.raises(ValueError, match="connector"):
        dataclasses.replace(TINY, connector_head_dim=8)
    with pytest.raises(ValueError, match="240"):
        dataclasses.replace(TINY, vocoder_upsample_factors=(6, 5, 4))


def test_determinism(tiny):
    rng_state = torch.get_rng_state()
    again = build_components(TINY, seed=0)
    other = build_components(TINY, seed=1)
    assert torch.equal(torch.get_rng_state(), rng_state), "building must not touch the global RNG"
    for name in MODULES:
        ref, same, diff = (c[name].state_dict() for c in (tiny, again, other))
        assert ref.keys() == same.keys() == diff.keys()
        for key in ref:
            assert torch.equal(ref[key], same[key]), f"{name}.{key} not reproducible"
        seeded = [key for key, _ in tiny[name].named_parameters()] + [k for k in ref if k.startswith("latents_")]
        for key in seeded:
            assert not torch.equal(ref[key], diff[key]), f"{name}.{key} does not depend on the seed"


def test_tokenizer_left_padding(tiny):
    tok = tiny["tokenizer"]
    assert tok.padding_side == "left" and tok.model_max_length == TINY.max_sequence_length
    assert (tok.pad_token_id, tok.eos_token_id, tok.bos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    batch = tok(["A Cat.", "a dog walks on the beach"], padding=True, return_tensors="pt")
    ids, mask = batch.input_ids, batch.attention_mask
    assert ids.shape == (2, 7)  # <bos> + 6 words
    assert mask[0].tolist() == [0, 0, 0, 1, 1, 1, 1] and mask[1].tolist() == [1] * 7
    assert ids[0, :3].tolist() == [tok.pad_token_id] * 3 and ids[0, 3] == tok.bos_token_id
    assert tok.convert_ids_to_tokens(ids[0, 4:].tolist()) == ["a", "cat", "."]  # lower-cased, punctuation split
    assert tok("zebra").input_ids == [tok.bos_token_id, tok.unk_token_id]
    padded = tok("a cat", padding="max_length", max_length=16).input_ids
    assert len(padded) == 16 and padded[-3:] == tok("a cat").input_ids


def test_gemma_returns_all_hidden_states(tiny):
    batch = tiny["tokenizer"](["a cat", "a red car drives fast"], padding="max_length", max_length=16,
                              return_tensors="pt")
    with torch.no_grad():
        out = tiny["text_encoder"](input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                   output_hidden_states=True)
    assert len(out.hidden_states) == TINY.gemma_layers + 1
    for h in out.hidden_states:
        assert h.shape == (2, 16, TINY.gemma_hidden) and torch.isfinite(h).all()
        assert 0.1 < h.std() < 10


def test_video_vae_compression(tiny):
    vae = tiny["vae"]
    assert (vae.spatial_compression_ratio, vae.temporal_compression_ratio) == (32, 8)
    gen = torch.Generator().manual_seed(0)
    for frames, height, width in ((9, 64, 64), (17, 64, 96), (1, 32, 64)):
        video = torch.rand(1, 3, frames, height, width, generator=gen) * 2 - 1
        with torch.no_grad():
            latent = vae.encode(video).latent_dist.mode()
            assert latent.shape == (1, TINY.latent_channels, (frames - 1) // 8 + 1, height // 32, width // 32)
            if (frames, height) == (9, 64):  # the decoder's reflect padding needs latents of at least 2x2
                decoded = vae.decode(latent).sample
                assert decoded.shape == video.shape and torch.isfinite(decoded).all()
                assert 0.05 < decoded.std() < 5


def test_audio_vae_and_vocoder(tiny):
    audio_vae, vocoder = tiny["audio_vae"], tiny["vocoder"]
    cfg = audio_vae.config
    assert cfg.sample_rate / cfg.mel_hop_length / audio_vae.temporal_compression_ratio == 25
    assert (cfg.mel_bins, cfg.in_channels, cfg.output_channels) == (64, 2, 2)
    mel = torch.randn(1, 2, 37, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        latent = audio_vae.encode(mel).latent_dist.mode()
        assert latent.shape == (1, TINY.audio_latent_channels, 10, 16)
        decoded = audio_vae.decode(latent).sample
        assert decoded.shape == (1, 2, 4 * 10 - 3, 64)
        wave = vocoder(decoded)
    assert vocoder.config.output_sampling_rate == 24000
    assert wave.shape == (1, 2, 37 * 240) and torch.isfinite(wave).all() and wave.std() > 1e-3


def test_transformer_output_is_finite_and_varied(tiny):
    transformer = tiny["transformer"]
    gen = torch.Generator().manual_seed(0)
    frames, height, width, audio_frames, text = 2, 2, 3, 9, 16
    inputs = dict(
        hidden_states=torch.randn(1, frames * height * width, TINY.latent_channels, generator=gen),
        audio_hidden_states=torch.randn(1, audio_frames, TINY.audio_latent_features, generator=gen),
        encoder_hidden_states=torch.randn(1, text, TINY.caption_channels, generator=gen),
        audio_encoder_hidden_states=torch.randn(1, text, TINY.caption_channels, generator=gen),
        num_frames=frames, height=height, width=width, audio_num_frames=audio_frames, return_dict=False,
    )
    with torch.no_grad():
        video, audio = transformer(timestep=torch.tensor([500.0]), **inputs)
        video_late, _ = transformer(timestep=torch.tensor([100.0]), **inputs)
        video_iso, audio_iso = transformer(timestep=torch.tensor([500.0]), isolate_modalities=True, **inputs)
    assert video.shape == inputs["hidden_states"].shape and audio.shape == inputs["audio_hidden_states"].shape
    for out in (video, audio):
        assert torch.isfinite(out).all() and 0.1 < out.std() < 10
        assert out.std(dim=1).min() > 1e-2, "output constant over tokens"
    assert (video - video_late).abs().max() > 1e-2, "timestep has no effect"
    assert (video - video_iso).abs().max() > 1e-2 and (audio - audio_iso).abs().max() > 1e-2, "no a2v/v2a effect"


def test_diffusers_pipeline_smoke(pipe):
    out = _run(pipe, output_type="np")
    frames, audio = out.frames, out.audio
    assert isinstance(frames, np.ndarray) and frames.shape == (1, 9, 64, 64, 3)
    assert np.isfinite(frames).all() and frames.std() > 0.01
    audio_latents = round(9 / 24.0 * 25)
    assert audio.shape == (1, 2, (4 * audio_latents - 3) * 240) and torch.isfinite(audio).all()
    again = _run(pipe, output_type="np")
    np.testing.assert_array_equal(again.frames, frames)  # seeded generator -> identical result


def test_diffusers_pipeline_latent_output(pipe):
    out = _run(pipe, output_type="latent", max_sequence_length=TINY.max_sequence_length)
    assert out.frames.shape == (1, TINY.latent_channels, 2, 2, 2) and torch.isfinite(out.frames).all()
    assert out.audio.shape == (1, TINY.audio_latent_channels, 9, 16) and torch.isfinite(out.audio).all()


def test_scheduler_matches_official_ltx2_schedule():
    """The diffusers scheduler config reproduces the official LTX2Scheduler formula (facts file)."""
    scheduler = factory.build_scheduler()
    steps, tokens = 8, 4096
    scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps), mu=2.05)
    t = torch.linspace(1, 0, steps + 1, dtype=torch.float64)[:-1]
    sigma = torch.exp(torch.tensor(2.05, dtype=torch.float64))
    sigma = sigma / (sigma + (1 / t - 1))
    one_minus = 1 - sigma
    sigma = 1 - one_minus / (one_minus[-1] / (1 - 0.1))  # stretch: last non-zero sigma -> 0.1
    assert tokens == scheduler.config.max_image_seq_len
    torch.testing.assert_close(scheduler.sigmas[:-1].double(), sigma, atol=1e-5, rtol=0)
    assert scheduler.sigmas[-1] == 0


def test_small_preset_dimensions():
    with torch.device("meta"):  # structure only: no memory, no weights
        small = {name: build() for name, build in factory._build_models(SMALL).items()}
    counts = factory.parameter_counts(small)
    assert counts["transformer"] == max(counts.values()) > 10 * counts["vae"]
    tokens = (SMALL_CLIP["num_frames"] - 1) // 8 + 1, SMALL_CLIP["height"] // 32, SMALL_CLIP["width"] // 32
    assert tokens == (3, 8, 12)
    config = small["transformer"].config
    assert config.num_attention_heads * config.attention_head_dim == 512 and config.in_channels == 128
    assert config.audio_in_channels == small["audio_vae"].latents_mean.numel() == 128
    assert TINY_CLIP == dict(height=64, width=64, num_frames=9, frame_rate=24.0)


def test_dtype_cast():
    half = build_components(TINY, seed=0, dtype=torch.bfloat16)
    for name in MODULES:
        assert {p.dtype for p in half[name].parameters()} == {torch.bfloat16}, name
    assert half["vae"].latents_mean.dtype == torch.bfloat16
