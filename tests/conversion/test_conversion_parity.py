"""Numerical parity: tiny official checkpoints (ltx-core) vs the converted diffusers components, fp32.

Each case writes a random official single file with ltx-core's configurators, converts it with
``convert_single_file`` (sharded, to exercise the index), loads the components with the diffusers classes
and compares forward passes with the reference models loaded by ltx-core's own loader from the same file.
"""

from __future__ import annotations

import pytest
import torch
from official_checkpoints import GEMMA_HIDDEN, GEMMA_STATES, load_official, write_official_checkpoint
from diffusers import AutoencoderKLLTX2Audio, AutoencoderKLLTX2Video, LTX2VideoTransformer3DModel
from diffusers.pipelines.ltx2 import LTX2TextConnectors, LTX2Vocoder, LTX2VocoderWithBWE
from ltx_core.guidance.perturbations import (
    BatchedPerturbationConfig,
    Perturbation,
    PerturbationConfig,
    PerturbationType,
)
from ltx_core.model.transformer.modality import Modality

from diffusers_ltx2.conversion import convert_single_file, load_components_from_single_file

VERSIONS = ["2.0", "2.3"]


def _max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """Max absolute difference divided by the reference's max magnitude (scale-free)."""
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


@pytest.fixture(scope="module", params=VERSIONS)
def converted(request, tmp_path_factory):
    """(version, official file, converted folder) per version, built once per module."""
    version = request.param
    root = tmp_path_factory.mktemp(f"ltx{version}")
    src = root / "official.safetensors"
    write_official_checkpoint(src, version, seed=1)
    out = convert_single_file(src, root / "diffusers", max_shard_size="300KB", progress=False)
    return version, src, out


def _video_positions(b: int, f: int, h: int, w: int, fps: float = 24.0) -> torch.Tensor:
    """Pixel-space [start, end) boxes as the official patchifier builds them (causal first frame)."""
    t = torch.arange(f, dtype=torch.float32)
    t_start, t_end = (8 * t - 7).clamp_min(0) / fps, (8 * t + 1) / fps
    ff, hh, ww = torch.meshgrid(torch.arange(f), torch.arange(h), torch.arange(w), indexing="ij")
    ff, hh, ww = ff.flatten(), hh.flatten().float(), ww.flatten().float()
    coords = torch.stack(
        [
            torch.stack([t_start[ff], t_end[ff]], -1),
            torch.stack([32 * hh, 32 * (hh + 1)], -1),
            torch.stack([32 * ww, 32 * (ww + 1)], -1),
        ]
    )  # (3, T, 2)
    return coords.unsqueeze(0).expand(b, -1, -1, -1).contiguous()


def _transformer_inputs(version: str, gen: torch.Generator):
    b, f, h, w, ta, ctx = 2, 2, 2, 3, 5, 6
    tv = f * h * w
    video_ctx_dim, audio_ctx_dim = (GEMMA_HIDDEN, GEMMA_HIDDEN) if version == "2.0" else (16, 8)
    a_t = torch.arange(ta, dtype=torch.float32)
    inputs = {
        "v_latent": torch.randn(b, tv, 8, generator=gen),
        "a_latent": torch.randn(b, ta, 8, generator=gen),
        "v_sigma": torch.tensor([0.7, 0.3]),
        "a_sigma": torch.tensor([0.5, 0.9]),
        "v_pos": _video_positions(b, f, h, w),
        "a_pos": torch.stack([a_t / 25, (a_t + 1) / 25], -1)[None, None].expand(b, 1, -1, -1).contiguous(),
        "v_ctx": torch.randn(b, ctx, video_ctx_dim, generator=gen),
        "a_ctx": torch.randn(b, ctx, audio_ctx_dim, generator=gen),
        "mask": torch.ones(b, ctx, dtype=torch.int64),
    }
    inputs["mask"][1, :2] = 0  # left padding in the second sample
    # per-token timesteps: the first latent frame is a clean conditioning frame in sample 0
    inputs["v_ts"] = inputs["v_sigma"][:, None].expand(b, tv).clone()
    inputs["v_ts"][0, : h * w] = 0.0
    inputs["a_ts"] = inputs["a_sigma"][:, None].expand(b, ta).clone()
    return inputs


def _run_official(model, x, perturbations=None):
    b = x["v_latent"].shape[0]
    video = Modality(x["v_latent"], x["v_sigma"], x["v_ts"], x["v_pos"], x["v_ctx"], context_mask=x["mask"])
    audio = Modality(x["a_latent"], x["a_sigma"], x["a_ts"], x["a_pos"], x["a_ctx"], context_mask=x["mask"])
    return model(video, audio, perturbations or BatchedPerturbationConfig.empty(b))


def _run_diffusers(model, x, **kw):
    scale = model.config.timestep_scale_multiplier  # diffusers takes timesteps already scaled
    return model(
        hidden_states=x["v_latent"], audio_hidden_states=x["a_latent"],
        encoder_hidden_states=x["v_ctx"], audio_encoder_hidden_states=x["a_ctx"],
        timestep=x["v_ts"] * scale, audio_timestep=x["a_ts"] * scale,
        sigma=x["v_sigma"] * scale, audio_sigma=x["a_sigma"] * scale,
        encoder_attention_mask=x["mask"], audio_encoder_attention_mask=x["mask"],
        video_coords=x["v_pos"], audio_coords=x["a_pos"],
        use_cross_timestep=True,  # ltx-core modulates a2v/v2a with the other modality's sigma
        return_dict=False, **kw,
    )


@torch.no_grad()
def test_transformer_parity(converted):
    """Video and audio outputs match ltx-core, plain and with STG (self-attention skipped in block 1)."""
    version, src, out = converted
    ref = load_official(src, "transformer")
    ours = LTX2VideoTransformer3DModel.from_pretrained(out / "transformer", torch_dtype=torch.float32).eval()
    assert ours.config.perturbed_attn, "converted config must enable STG"
    x = _transformer_inputs(version, torch.Generator().manual_seed(0))
    rv, ra = _run_official(ref, x)
    ov, oa = _run_diffusers(ours, x)
    # fp32 on both sides, same math in a different op order: ~1e-6 observed; 1e-4 is the bar.
    assert (ov - rv).abs().max() < 1e-4
    assert (oa - ra).abs().max() < 1e-4

    stg = BatchedPerturbationConfig(
        [PerturbationConfig([Perturbation(PerturbationType.SKIP_VIDEO_SELF_ATTN, [1]),
                             Perturbation(PerturbationType.SKIP_AUDIO_SELF_ATTN, [1])])] * 2
    )
    pv, pa = _run_official(ref, x, stg)
    sv, sa = _run_diffusers(ours, x, spatio_temporal_guidance_blocks=[1], perturbation_mask=torch.zeros(2))
    assert (pv - rv).abs().max() > 1e-3, "STG must change the prediction"
    assert (sv - pv).abs().max() < 1e-4
    assert (sa - pa).abs().max() < 1e-4


@torch.no_grad()
def test_connectors_parity(converted):
    """Gemma hidden states -> video/audio contexts match ltx-core's EmbeddingsProcessor (left padding)."""
    version, src, out = converted
    ref = load_official(src, "embeddings")
    ours = LTX2TextConnectors.from_pretrained(out / "connectors", torch_dtype=torch.float32).eval()
    gen = torch.Generator().manual_seed(2)
    seq = 128  # a multiple of the 128 learnable registers; batch 1 (ltx-core's register swap squeezes it)
    states = tuple(torch.randn(1, seq, GEMMA_HIDDEN, generator=gen) * 3 for _ in range(GEMMA_STATES))
    mask = torch.zeros(1, seq, dtype=torch.int64)
    mask[:, -37:] = 1
    rv, ra, rmask = ref.process_hidden_states(states, mask, padding_side="left")
    ov, oa, omask = ours(torch.stack(states, dim=-1), mask, padding_side="left")
    assert torch.equal(omask.to(rmask.dtype), rmask)
    assert (ov - rv).abs().max() < 1e-4
    assert (oa - ra).abs().max() < 1e-4


@torch.no_grad()
def test_video_vae_parity(converted):
    """Decode (and encode) match ltx-core; diffusers leaves latent (de)normalisation to the caller."""
    version, src, out = converted
    ours = AutoencoderKLLTX2Video.from_pretrained(out / "vae", torch_dtype=torch.float32).eval()
    mean = ours.latents_mean.view(1, -1, 1, 1, 1)
    std = ours.latents_std.view(1, -1, 1, 1, 1)
    gen = torch.Generator().manual_seed(3)

    dec = load_official(src, "vae_decoder")
    dec.decode_noise_scale = 0.0  # ltx-core adds decode noise itself; diffusers leaves it to the pipeline
    z = torch.randn(1, 8, 2, 2, 2, generator=gen)
    t = torch.tensor([0.05])
    ref = dec(z, timestep=t if dec.timestep_conditioning else None)
    got = ours.decode(z * std + mean, temb=t if ours.config.timestep_conditioning else None).sample
    assert got.shape == ref.shape
    # 7+ conv layers with pixel norms in fp32: differences are summation-order noise (~1e-6 relative);
    # 1e-4 of the output range leaves margin while catching any mis-mapped weight (those give O(1)).
    assert _max_rel(got, ref) < 1e-4

    enc = load_official(src, "vae_encoder")
    video = torch.randn(1, 3, 9, 64, 64, generator=gen)
    ref_lat = enc(video)
    got_lat = (ours.encode(video).latent_dist.mode() - mean) / std
    assert _max_rel(got_lat, ref_lat) < 1e-4


@torch.no_grad()
def test_audio_vae_parity(converted):
    """Audio latents -> mel spectrogram matches ltx-core's AudioDecoder."""
    version, src, out = converted
    ref_model = load_official(src, "audio_decoder")
    ours = AutoencoderKLLTX2Audio.from_pretrained(out / "audio_vae", torch_dtype=torch.float32).eval()
    gen = torch.Generator().manual_seed(4)
    z = torch.randn(1, 2, 6, 16, generator=gen)  # (B, z_channels, frames, mel_bins / 4)
    ref = ref_model(z)
    # ltx-core un-normalises the patchified latent (b t (c f)) inside the decoder; diffusers does not.
    b, c, t, f = z.shape
    flat = z.permute(0, 2, 1, 3).reshape(b, t, c * f) * ours.latents_std + ours.latents_mean
    got = ours.decode(flat.reshape(b, t, c, f).permute(0, 2, 1, 3)).sample
    assert got.shape == ref.shape
    assert _max_rel(got, ref) < 1e-4  # same argument as the video VAE (conv stack, fp32)


@torch.no_grad()
def test_vocoder_parity(converted):
    """Mel -> waveform matches ltx-core (2.3: vocoder with bandwidth extension to 48 kHz)."""
    version, src, out = converted
    ref_model = load_official(src, "vocoder")
    cls = LTX2VocoderWithBWE if version == "2.3" else LTX2Vocoder
    ours = cls.from_pretrained(out / "vocoder", torch_dtype=torch.float32).eval()
    mel = torch.randn(1, 2, 12, 64, generator=torch.Generator().manual_seed(5))
    ref, got = ref_model(mel), ours(mel)
    assert got.shape == ref.shape
    # Snake/anti-aliasing filters and transposed convs in fp32: summation-order noise only; the
    # waveform is in [-1, 1], so 1e-4 absolute is far below anything audible and far above fp32 noise.
    assert (got - ref).abs().max() < 1e-4


@torch.no_grad()
def test_load_components_from_single_file_matches_folder(converted):
    """The streaming loader (``from_single_file`` path) yields exactly the tensors of the converted folder."""
    version, src, out = converted
    mods = load_components_from_single_file(src)
    folder = LTX2VideoTransformer3DModel.from_pretrained(out / "transformer")
    a, b = mods["transformer"].state_dict(), folder.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert set(mods) == {"transformer", "connectors", "vae", "audio_vae", "vocoder"}
    assert mods["transformer"].config.perturbed_attn
