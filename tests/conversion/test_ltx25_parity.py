"""LTX-2.5 numerics against the official ltx-core 1.2.0 (run in a subprocess, `ltx12_reference`), fp32.

A tiny official 2.5 file set (written by 1.2's own configurators, the release's key layout) is converted with our
streaming loader; every component runs on the same inputs as 1.2's models loaded by 1.2's own builder and key
operations from the same files. Tolerance 1e-4 (the issue's bar); observed differences are ~1e-7 (op order).
The official outputs are computed once, in one 1.2 subprocess for the module (`refs`).
"""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open

import ltx12_reference as R
from diffusers_ltx2.conversion import load_components_from_single_file
from diffusers_ltx2.pipelines.diffusion_decode import diffusion_decode
from diffusers_ltx2.pipelines.diffusion_tiling import DiffusionTiling
from diffusers_ltx2.transformer.inputs import cross_timestep, keyframes_mask
from diffusers_ltx2.versions import cross_timestep_rule

TOL = 1e-4


@pytest.fixture(scope="module")
def parts(ltx25_set):
    """Our components, loaded once from the official set."""
    return load_components_from_single_file(ltx25_set["folder"], dtype=torch.float32, components=[
        "transformer", "connectors", "vae", "diffusion_decoder", "duration_head"])


UNTILED_SHAPES = [(1, 8, 2, 3, 2), (1, 8, 1, 1, 1), (2, 8, 3, 2, 2)]
TILINGS = [(((10, 8), (64, 32), (64, 32)), None), (((10, 8), (64, 32), (64, 32)), 2),
           (((0, 0), (64, 32), (0, 0)), None)]


@pytest.fixture(scope="module")
def refs(parts, ltx25_set, tmp_path_factory):
    """Inputs and 1.2's outputs of every case, from one subprocess: ``{case: (inputs, official outputs)}``."""
    tmp = tmp_path_factory.mktemp("refs12")
    cases, requests = {}, []

    def add(name, value, op, **kwargs):
        torch.save(value, tmp / f"{name}.in.pt")
        cases[name] = value
        requests.append({"op": op, "out": tmp / f"{name}.out.pt", **kwargs})

    add("transformer", _transformer_inputs(parts["transformer"], torch.Generator().manual_seed(0)), "transformer",
        path=ltx25_set["transformer"], inputs=tmp / "transformer.in.pt")
    gen = torch.Generator().manual_seed(2)
    mask = torch.zeros(1, 128, dtype=torch.int64)
    mask[:, -37:] = 1
    add("embeddings", {"states": [torch.randn(1, 128, 12, generator=gen) * 3 for _ in range(3)], "mask": mask},
        "embeddings", transformer=ltx25_set["transformer"], text_encoder=ltx25_set["text_encoder"],
        inputs=tmp / "embeddings.in.pt")
    gen = torch.Generator().manual_seed(0)
    add("duration", {"video": torch.randn(2, 7, 16, generator=gen), "audio": torch.randn(2, 5, 8, generator=gen)},
        "duration_head", path=ltx25_set["duration_head"], inputs=tmp / "duration.in.pt")
    add("conv", torch.randn(1, 8, 2, 2, 3, generator=torch.Generator().manual_seed(1)), "video_decoder",
        path=ltx25_set["video_vae_conv"], latent=tmp / "conv.in.pt")
    for shape in UNTILED_SHAPES:
        name = f"diffusion{shape}"
        add(name, torch.randn(*shape, generator=torch.Generator().manual_seed(1)), "video_decoder",
            path=ltx25_set["video_vae_diffusion"], latent=tmp / f"{name}.in.pt", seed=3)
    for tiling, steps in TILINGS:
        name = f"tiled{tiling}{steps}"
        add(name, torch.randn(1, 8, 3, 3, 3, generator=torch.Generator().manual_seed(1)), "video_decoder",
            path=ltx25_set["video_vae_diffusion"], latent=tmp / f"{name}.in.pt", seed=3,
            tiling=[list(t) for t in tiling], steps=steps)
    add("pipeline_decode", torch.randn(1, 8, 2, 2, 2, generator=torch.Generator().manual_seed(5)), "video_decoder",
        path=ltx25_set["video_vae_diffusion"], latent=tmp / "pipeline_decode.in.pt", seed=7)
    R.run("batch", requests=requests, timeout=1800)
    return {name: (inputs, torch.load(tmp / f"{name}.out.pt")) for name, inputs in cases.items()}


def _video_positions(b: int, f: int, h: int, w: int, fps: float = 24.0) -> torch.Tensor:
    """Pixel-space [start, end) boxes as the official patchifier builds them (causal first frame)."""
    t = torch.arange(f, dtype=torch.float32)
    t_start, t_end = (8 * t - 7).clamp_min(0) / fps, (8 * t + 1) / fps
    ff, hh, ww = torch.meshgrid(torch.arange(f), torch.arange(h), torch.arange(w), indexing="ij")
    ff, hh, ww = ff.flatten(), hh.flatten().float(), ww.flatten().float()
    coords = torch.stack([torch.stack([t_start[ff], t_end[ff]], -1), torch.stack([32 * hh, 32 * (hh + 1)], -1),
                          torch.stack([32 * ww, 32 * (ww + 1)], -1)])
    return coords.unsqueeze(0).expand(b, -1, -1, -1).contiguous()


def _transformer_inputs(transformer, gen):
    """Two samples, video and audio at different sigmas; sample 0's first latent frame is a clean (timestep 0)
    image condition, so the cross-attention rules differ; the first latent frame carries the keyframe marker."""
    b, f, h, w, ta, ctx = 2, 2, 2, 3, 5, 6
    tv = f * h * w
    a_t = torch.arange(ta, dtype=torch.float32)
    x = {
        "v_latent": torch.randn(b, tv, 8, generator=gen), "a_latent": torch.randn(b, ta, transformer.config.audio_in_channels, generator=gen),
        "v_sigma": torch.tensor([0.7, 0.3]), "a_sigma": torch.tensor([0.5, 0.9]), "v_pos": _video_positions(b, f, h, w),
        "a_pos": torch.stack([a_t / 25, (a_t + 1) / 25], -1)[None, None].expand(b, 1, -1, -1).contiguous(),
        "v_ctx": torch.randn(b, ctx, 16, generator=gen), "a_ctx": torch.randn(b, ctx, 8, generator=gen),
        "mask": torch.ones(b, ctx, dtype=torch.int64),
    }
    x["mask"][1, :2] = 0
    x["v_ts"] = x["v_sigma"][:, None].expand(b, tv).clone()
    x["v_ts"][0, : h * w] = 0.0
    x["a_ts"] = x["a_sigma"][:, None].expand(b, ta).clone()
    x["v_keyframes"] = keyframes_mask(transformer, x["v_pos"], tv, tv, b)
    return x


def _run_ours(model, x, rule: str, keyframes: bool = True):
    s = model.config.timestep_scale_multiplier
    with torch.no_grad(), cross_timestep(model, rule, x["v_sigma"] * s, x["a_sigma"] * s) as use_cross:
        return model(
            hidden_states=x["v_latent"], audio_hidden_states=x["a_latent"], encoder_hidden_states=x["v_ctx"],
            audio_encoder_hidden_states=x["a_ctx"], timestep=x["v_ts"] * s, audio_timestep=x["a_ts"] * s,
            sigma=x["v_sigma"] * s, audio_sigma=x["a_sigma"] * s, encoder_attention_mask=x["mask"],
            audio_encoder_attention_mask=x["mask"], video_coords=x["v_pos"], audio_coords=x["a_pos"],
            use_cross_timestep=use_cross, video_keyframes_mask=x["v_keyframes"] if keyframes else None,
            return_dict=False,
        )


def test_transformer_matches_ltx_core_12(parts, refs):
    """The converted 2.5 transformer with the per-version inputs (keyframe marker on the first latent frame, 1.2's
    cross-attention AdaLN rule) equals 1.2's LTXModel on a conditioned call; dropping either input, or using
    ltx-core 1.0.0's / diffusers' rules, does not (both 2.5 differences are real on these inputs)."""
    model = parts["transformer"]
    assert not model.config.ff_bias and model.config.use_keyframes_abs_pos_embedding
    x, ref = refs["transformer"]
    assert x["v_keyframes"][:, :6].eq(1).all() and x["v_keyframes"][:, 6:].eq(0).all()
    rule = cross_timestep_rule("2.5.0")
    assert rule == "own_scale_shift_cross_gate"
    video, audio = _run_ours(model, x, rule)
    assert (video - ref["video"]).abs().max() < TOL
    assert (audio - ref["audio"]).abs().max() < TOL
    for other in ({"rule": "cross_sigma"}, {"rule": "own"}, {"rule": rule, "keyframes": False}):
        v, _ = _run_ours(model, x, **other)
        assert (v - ref["video"]).abs().max() > 1e-2, other


def test_connectors_with_text_encoder_projection_match_ltx_core_12(parts, refs):
    """Projection (from the text encoder file) + connectors (from the transformer file, feed-forward biases
    switched off by ``connector_ff_bias``) equal 1.2's EmbeddingsProcessor, which also checks the Gemma version."""
    x, ref = refs["embeddings"]
    states, mask = x["states"], x["mask"]
    connectors = parts["connectors"]
    biases = [p for n, p in connectors.named_parameters() if ".ff." in n and n.endswith("bias")]
    assert biases and all(bool((b == 0).all()) for b in biases)  # zero-filled: the official FF has none
    with torch.no_grad():
        video, audio, _ = connectors(torch.stack(states, dim=-1), mask)
    assert (video - ref["video"]).abs().max() < TOL
    assert (audio - ref["audio"]).abs().max() < TOL


def test_duration_head_matches_ltx_core_12(parts, refs):
    """diffusers' LTX2DurationHead with the converted weights (MultiheadAttention's fused in_proj split) predicts
    the same seconds as 1.2's DurationHead from video, audio and both connector outputs."""
    x, ref = refs["duration"]
    head = parts["duration_head"]
    with torch.no_grad():
        ours = {"both": head(x["video"], x["audio"]), "video": head(video_tokens=x["video"]),
                "audio": head(audio_tokens=x["audio"])}
    for key in ours:
        assert (ours[key] - ref[key]).abs().max() < TOL * ref[key].abs().max()
    assert not torch.allclose(ours["both"], ours["video"])


def _denormalize(z, model):
    return z * model.latents_std.view(1, -1, 1, 1, 1) + model.latents_mean.view(1, -1, 1, 1, 1)


def test_conv_decoder_matches_ltx_core_12(parts, refs):
    """The conv-decoder VAE file (bare ``encoder.`` / ``decoder.`` keys) decodes as 1.2's ConvVideoDecoder."""
    z, ref = refs["conv"]
    ref = ref["pixels"]
    vae = parts["vae"]
    with torch.no_grad():
        ours = vae.decode(_denormalize(z, vae), return_dict=False)[0]
    assert ours.shape == ref.shape and (ours - ref).abs().max() < TOL


@pytest.mark.parametrize("shape", UNTILED_SHAPES)
def test_diffusion_decoder_matches_ltx_core_12(parts, refs, shape):
    """Untiled diffusion decode (gates folded at conversion, fused qkv split) equals 1.2's DiffusionVideoDecoder,
    also for a single latent frame / a 1x1 latent that diffusers' own `decode` refuses (size-floor padding)."""
    z, ref = refs[f"diffusion{shape}"]
    ref = ref["pixels"]
    model = parts["diffusion_decoder"]
    ours = diffusion_decode(model, _denormalize(z, model), generator=torch.Generator().manual_seed(3))
    assert ours.shape == ref.shape == (shape[0], 3, (shape[2] - 1) * 8 + 1, 32 * shape[3], 32 * shape[4])
    assert (ours - ref).abs().max() < TOL
    if shape[2:] == (1, 1, 1):
        with pytest.raises(ValueError, match="kernel"):
            model.decode(_denormalize(z, model), generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("tiling,steps", TILINGS)
def test_tiled_diffusion_decode_matches_ltx_core_12(parts, refs, tiling, steps):
    """Tiled decoding follows 1.2's schedule, noise and blending (`TileSizeConfig` of the same sizes), one-step x0
    (per-tile noise) and two-step (one noise canvas) decoders."""
    z, ref = refs[f"tiled{tiling}{steps}"]
    ref = ref["pixels"]
    model = parts["diffusion_decoder"]
    ours = diffusion_decode(model, _denormalize(z, model), generator=torch.Generator().manual_seed(3),
                            tiling=DiffusionTiling(*tiling), num_inference_steps=steps)
    assert ours.shape == ref.shape and (ours - ref).abs().max() < TOL


def test_tiling_overlap_below_receptive_field_is_refused(parts):
    """Overlaps smaller than the decoder's halos (1.2 `recommended_pixel_overlaps`) raise before decoding."""
    model = parts["diffusion_decoder"]
    z = torch.zeros(1, 8, 3, 3, 3)
    with pytest.raises(ValueError, match="overlap 16 is below the required 32"):
        diffusion_decode(model, z, tiling=DiffusionTiling(height=(64, 16)))


def test_text_encoder_file_converts_back_to_the_gemma_it_was_packed_from(ltx25_set):
    """1.2's packer flattened the Hugging Face Gemma-4 into ComfyUI names and embedded its tokenizer and assets; the
    converted text encoder holds exactly the original weights (lm_head tied) and the same tokenizer files."""
    from diffusers_ltx2 import LTX2AudioVideoPipeline

    pipe = LTX2AudioVideoPipeline.from_single_file(ltx25_set["folder"], dtype=torch.float32, progress=False)
    root = ltx25_set["gemma_root"]
    with safe_open(str(root / "model.safetensors"), framework="pt") as f:
        original = {k: f.get_tensor(k) for k in f.keys()}
    ours = pipe.text_encoder.state_dict()
    assert set(original) <= set(ours)
    for key, value in original.items():
        assert torch.equal(ours[key], value), key
    assert torch.equal(ours["lm_head.weight"], original["model.language_model.embed_tokens.weight"])
    ids = pipe.tokenizer("w1 w2 w3")["input_ids"]
    assert ids[-3:] == [5, 6, 7]


def test_neighborhood_attention_backends_agree(parts):
    """The CPU fallback (chunked masked SDPA, chosen by "auto" here) computes diffusers' FlexAttention windows:
    same pixels; the model's own processors are restored afterwards; "natten" needs the package."""
    import importlib.util

    from diffusers.models.autoencoders.ltx2_diffusion_decoder import LTX2VideoVaeNeighborhoodAttnProcessor

    from diffusers_ltx2.pipelines import neighborhood_attention as NA

    model = parts["diffusion_decoder"]
    z = torch.randn(1, 8, 2, 2, 2, generator=torch.Generator().manual_seed(4))
    with NA.neighborhood_backend(model, "auto") as chosen:
        assert chosen == "sdpa"
    auto = diffusion_decode(model, z, generator=torch.Generator().manual_seed(0))
    flex = diffusion_decode(model, z, generator=torch.Generator().manual_seed(0), attention="diffusers")
    assert (auto - flex).abs().max() < TOL
    assert all(isinstance(m.processor, LTX2VideoVaeNeighborhoodAttnProcessor)
               for m in model.modules() if hasattr(m, "kernel_size") and hasattr(m, "processor"))
    if importlib.util.find_spec("natten") is None:
        with pytest.raises(ImportError, match="natten"):
            diffusion_decode(model, z, attention="natten")
    with pytest.raises(ValueError, match="backend"):
        diffusion_decode(model, z, attention="cuda")


def test_pipeline_decodes_like_the_official_diffusion_decoder(ltx25_set, refs):
    """`LTX2AudioVideoPipeline.decode_video` on a 2.5 set: the latents the pipeline holds (denormalized with the
    conv VAE's statistics) reach the diffusion decoder re-expressed with its own file's statistics (the tiny set's
    two VAE files differ there; the release's do not), as 1.2 decodes the same normalized latents."""
    from diffusers_ltx2 import LTX2AudioVideoPipeline

    pipe = LTX2AudioVideoPipeline.from_single_file(ltx25_set["folder"], dtype=torch.float32, progress=False)
    assert not torch.equal(pipe.vae.latents_mean, pipe.diffusion_decoder.latents_mean)
    z, ref = refs["pipeline_decode"]
    frames = pipe.decode_video(_denormalize(z, pipe.vae), "pt", generator=torch.Generator().manual_seed(7))
    expected = ((ref["pixels"] + 1) / 2).clamp(0, 1).permute(0, 2, 1, 3, 4)  # (B, F, C, H, W) in [0, 1]
    assert frames.shape == expected.shape and (frames - expected).abs().max() < TOL
