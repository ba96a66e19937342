"""Converted official checkpoints as pipelines: `from_pretrained` on the converted folder, `from_single_file`
on the official file, and the two agree."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from diffusers_ltx2 import LTX2AudioVideoPipeline, PromptEmbeddings
from diffusers_ltx2.conversion import convert_single_file
from diffusers_ltx2.guiders import ClassifierFreeGuidance, MultimodalGuider
from diffusers_ltx2.loaders.identity import context_dims

from official_checkpoints import CONFIGS, write_official_checkpoint


def _consistent_config(version: str) -> dict:
    """The tiny official config with the DiT's audio width equal to the audio VAE's packed latent
    (z_channels x mel_bins / 4 = 2 x 16), as in the released models (8 x 16 = 128), so the pipeline runs."""
    config = copy.deepcopy(CONFIGS[version])
    ddconfig = config["audio_vae"]["model"]["params"]["ddconfig"]
    width = ddconfig["z_channels"] * ddconfig["mel_bins"] // 4
    config["transformer"]["audio_in_channels"] = config["transformer"]["audio_out_channels"] = width
    return config


def _embeddings(pipe, seed=0) -> PromptEmbeddings:
    """Random connector-stage embeddings of the widths this transformer expects (Gemma is not shipped)."""
    widths = context_dims(pipe.transformer)
    g = torch.Generator().manual_seed(seed)
    return PromptEmbeddings(video_context=torch.randn(1, 8, widths[0], generator=g),
                            audio_context=torch.randn(1, 8, widths[1], generator=g),
                            attention_mask=torch.ones(1, 8, dtype=torch.int64))


@pytest.mark.parametrize("version", ["2.0", "2.3"])
def test_single_file_and_converted_folder_give_the_same_pipeline(tmp_path, version):
    src = tmp_path / "official.safetensors"
    write_official_checkpoint(src, version, seed=3, config=_consistent_config(version))
    folder = convert_single_file(src, tmp_path / "diffusers", progress=False)

    from_folder = LTX2AudioVideoPipeline.from_pretrained(folder)
    from_file = LTX2AudioVideoPipeline.from_single_file(src, progress=False)
    assert from_folder.text_encoder is None and from_file.text_encoder is None
    assert isinstance(from_folder.guider, MultimodalGuider) and isinstance(from_file.guider, MultimodalGuider)
    for name in ("transformer", "connectors", "vae", "audio_vae", "vocoder"):
        a, b = getattr(from_folder, name).state_dict(), getattr(from_file, name).state_dict()
        assert a.keys() == b.keys(), name
        assert all(torch.equal(a[k], b[k]) for k in a), name

    run = dict(height=64, width=64, num_frames=9, num_inference_steps=2, output_type="latent",
               guider=ClassifierFreeGuidance(1.0, 1.0))
    out_a = from_folder(prompt_embeds=_embeddings(from_folder), generator=torch.Generator().manual_seed(0), **run)
    out_b = from_file(prompt_embeds=_embeddings(from_file), generator=torch.Generator().manual_seed(0), **run)
    assert torch.isfinite(out_a.frames).all() and torch.isfinite(out_a.audio).all()
    # identical weights (checked above); memory layouts of loaded vs streamed tensors may pick other fp32 BLAS
    # kernels, which reorders sums: ~1e-6 after two steps
    torch.testing.assert_close(out_a.frames, out_b.frames, rtol=0, atol=1e-5)
    torch.testing.assert_close(out_a.audio, out_b.audio, rtol=0, atol=1e-5)


def test_from_single_file_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        LTX2AudioVideoPipeline.from_single_file(tmp_path / "nope.safetensors")


def test_model_identity_is_recorded_and_checked(tmp_path):
    """The checkpoint's API model id travels into the converted folder and the single-file pipeline, and
    embeddings carrying another model's id are refused."""
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    src = tmp_path / "official.safetensors"
    write_official_checkpoint(src, "2.0", seed=3, config=_consistent_config("2.0"))
    with safe_open(str(src), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        metadata = dict(f.metadata(), encrypted_wandb_properties="model-A")
    save_file(tensors, str(src), metadata=metadata)

    folder = convert_single_file(src, tmp_path / "diffusers", progress=False)
    assert json.loads((folder / "model_index.json").read_text())["model_identity"] == "model-A"
    pipe = LTX2AudioVideoPipeline.from_pretrained(folder)
    assert pipe.model_identity == "model-A"
    assert LTX2AudioVideoPipeline.from_single_file(src, progress=False).model_identity == "model-A"

    run = dict(height=64, width=64, num_frames=9, num_inference_steps=1, output_type="latent",
               guider=ClassifierFreeGuidance(1.0, 1.0))
    good = _embeddings(pipe)
    pipe(prompt_embeds=PromptEmbeddings(good.video_context, good.audio_context, good.attention_mask,
                                        model_identity="model-A"), **run)
    with pytest.raises(ValueError, match="model-B"):
        pipe(prompt_embeds=PromptEmbeddings(good.video_context, good.audio_context, good.attention_mask,
                                            model_identity="model-B"), **run)


def test_fp8_keep_folder_loads_with_float8_weights(tmp_path):
    """`ltx2 convert --fp8 keep` output loads through `from_pretrained` with float8 block weights and gives the
    dequantized model's output."""
    from official_checkpoints import official_state_dict
    from safetensors.torch import save_file

    from diffusers_ltx2.conversion.fp8 import FP8ScaledLinear

    config = _consistent_config("2.0")
    sd = official_state_dict(config, seed=3)
    for key in list(sd):
        if key.startswith("model.diffusion_model.transformer_blocks.0.") and key.endswith(".weight") \
                and sd[key].ndim == 2:
            w = sd[key].float()
            scale = w.abs().max() / torch.finfo(torch.float8_e4m3fn).max
            sd[key] = (w / scale).to(torch.float8_e4m3fn)
            sd[key.removesuffix(".weight") + ".weight_scale"] = scale.reshape(())
    src = tmp_path / "fp8.safetensors"
    save_file(sd, str(src), metadata={"config": json.dumps(config), "model_version": "2.0.0"})

    kept = LTX2AudioVideoPipeline.from_pretrained(
        convert_single_file(src, tmp_path / "keep", fp8="keep", progress=False), dtype=torch.float32)
    deq = LTX2AudioVideoPipeline.from_pretrained(
        convert_single_file(src, tmp_path / "deq", fp8="dequantize", dtype="fp32", progress=False))
    to_q = kept.transformer.transformer_blocks[0].attn1.to_q
    assert isinstance(to_q, FP8ScaledLinear) and to_q.weight.dtype == torch.float8_e4m3fn

    run = dict(height=64, width=64, num_frames=9, num_inference_steps=2, output_type="latent",
               guider=ClassifierFreeGuidance(1.0, 1.0))
    a = kept(prompt_embeds=_embeddings(kept), generator=torch.Generator().manual_seed(0), **run)
    b = deq(prompt_embeds=_embeddings(deq), generator=torch.Generator().manual_seed(0), **run)
    # the same dequantized fp32 weights (once at conversion vs per call): op-order noise only
    torch.testing.assert_close(a.frames, b.frames, rtol=0, atol=1e-5)
    torch.testing.assert_close(a.audio, b.audio, rtol=0, atol=1e-5)
