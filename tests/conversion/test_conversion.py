"""Conversion: key mapping, configs, streaming writer, errors/atomicity, FP8, LoRA, Gemma and CLI."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from official_checkpoints import CONFIGS, official_state_dict, write_official_checkpoint
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from diffusers_ltx2.conversion import (
    ConversionError,
    CorruptCheckpointError,
    KeyMismatchError,
    UnsupportedCheckpointError,
    convert_lora_file,
    convert_single_file,
    load_fp8_transformer,
    reference_downscale_factor,
)
from diffusers_ltx2.conversion.configs import normalize_version, video_vae_config
from diffusers_ltx2.conversion.keymap import KeyMapper, map_transformer_key, map_vocoder_key
from diffusers_ltx2.conversion.output_dir import atomic_output_dir
from diffusers_ltx2.conversion.streaming import parse_size

REPO = Path(__file__).resolve().parents[2]


def _no_leftovers(parent: Path, name: str) -> bool:
    return not (parent / name).exists() and not any(p.name.startswith(f".{name}.") for p in parent.iterdir())


def _save(path: Path, sd: dict, config: dict, version: str = "2.0.0") -> Path:
    save_file(sd, str(path), metadata={"config": json.dumps(config), "model_version": version})
    return path


# ----------------------------------------------------------------------------------------------- keymap


def test_transformer_keys_reuse_diffusers_and_fix_23_prompt_adaln():
    assert map_transformer_key("adaln_single.linear.weight") == "time_embed.linear.weight"
    assert map_transformer_key("audio_adaln_single.linear.bias") == "audio_time_embed.linear.bias"
    assert map_transformer_key("patchify_proj.weight") == "proj_in.weight"
    assert map_transformer_key("transformer_blocks.3.attn1.q_norm.weight") == "transformer_blocks.3.attn1.norm_q.weight"
    assert map_transformer_key("transformer_blocks.0.scale_shift_table_a2v_ca_audio") == (
        "transformer_blocks.0.audio_a2v_cross_attn_scale_shift_table"
    )
    # diffusers 0.42.1 leaves these under the official names, which its model does not have
    assert map_transformer_key("prompt_adaln_single.linear.weight") == "prompt_adaln.linear.weight"
    assert map_transformer_key("audio_prompt_adaln_single.emb.timestep_embedder.linear_1.bias") == (
        "audio_prompt_adaln.emb.timestep_embedder.linear_1.bias"
    )


def test_routing_of_every_component():
    m = KeyMapper(CONFIGS["2.3"])
    assert m.map("model.diffusion_model.video_embeddings_connector.transformer_1d_blocks.0.attn1.k_norm.weight") == (
        "connectors", "video_connector.transformer_blocks.0.attn1.norm_k.weight")
    assert m.map("model.diffusion_model.audio_embeddings_connector.learnable_registers") == (
        "connectors", "audio_connector.learnable_registers")
    assert m.map("text_embedding_projection.video_aggregate_embed.bias") == ("connectors", "video_text_proj_in.bias")
    assert KeyMapper(CONFIGS["2.0"]).map("text_embedding_projection.aggregate_embed.weight") == (
        "connectors", "text_proj_in.weight")
    assert m.map("vae.per_channel_statistics.mean-of-means") == ("vae", "latents_mean")
    assert m.map("audio_vae.per_channel_statistics.std-of-means") == ("audio_vae", "latents_std")
    assert m.map("vae.per_channel_statistics.mean-of-stds") is None  # unused statistic, dropped on purpose
    assert m.map("model.diffusion_model.transformer_blocks.0.ff.net.0.proj.weight_scale") is None  # FP8 scale
    with pytest.raises(KeyError):
        m.map("upsampler.conv.weight")


def test_video_vae_blocks_follow_the_checkpoint_layout():
    """2.3's decoder has four upsamplers; diffusers' single-file table only knows 2.0's three."""
    m = KeyMapper(CONFIGS["2.3"])
    assert m.map("vae.decoder.up_blocks.0.res_blocks.0.conv1.conv.weight")[1] == "decoder.mid_block.resnets.0.conv1.conv.weight"
    assert m.map("vae.decoder.up_blocks.7.conv.conv.weight")[1] == "decoder.up_blocks.3.upsamplers.0.conv.conv.weight"
    assert m.map("vae.decoder.up_blocks.8.res_blocks.1.conv2.conv.bias")[1] == "decoder.up_blocks.3.resnets.1.conv2.conv.bias"
    assert m.map("vae.encoder.down_blocks.3.conv.conv.weight")[1] == "encoder.down_blocks.1.downsamplers.0.conv.conv.weight"
    assert m.map("vae.encoder.down_blocks.8.res_blocks.0.conv1.conv.weight")[1] == "encoder.mid_block.resnets.0.conv1.conv.weight"
    assert KeyMapper(CONFIGS["2.0"]).map("vae.decoder.last_time_embedder.timestep_embedder.linear_1.weight")[1] == (
        "decoder.time_embedder.timestep_embedder.linear_1.weight")
    cfg = video_vae_config(CONFIGS["2.3"])
    assert cfg["upsample_factor"] == (2, 2, 1, 2) and cfg["upsample_type"][:2] == ("spatiotemporal", "spatiotemporal")
    assert (cfg["spatial_compression_ratio"], cfg["temporal_compression_ratio"]) == (32, 8)


def test_vocoder_keys():
    assert map_vocoder_key("conv_pre.weight") == "conv_in.weight"
    assert map_vocoder_key("vocoder.resblocks.2.acts1.0.downsample.lowpass.filter") == (
        "vocoder.resnets.2.acts1.0.downsample.filter")
    assert map_vocoder_key("bwe_generator.act_post.act.beta") == "bwe_generator.act_out.act.beta"
    assert map_vocoder_key("mel_stft.stft_fn.forward_basis") == "mel_stft.stft_fn.forward_basis"


def test_versions():
    assert normalize_version("2.0.0", {}) == "2.0"
    assert normalize_version("2.3", {}) == "2.3"
    assert normalize_version(None, {"transformer": {"caption_proj_before_connector": True}}) == "2.3"
    with pytest.raises(UnsupportedCheckpointError, match="2.0, 2.3"):
        normalize_version("3.1.0", {})


def test_parse_size():
    assert parse_size("5GB") == 5 * 10**9 and parse_size("2GiB") == 2 * 2**30 and parse_size(123) == 123
    with pytest.raises(ValueError):
        parse_size("lots")


# ----------------------------------------------------------------------------------------------- writer / dtype


def test_sharding_dtype_and_folder_layout(tmp_path):
    src = tmp_path / "official.safetensors"
    write_official_checkpoint(src, "2.3")
    out = convert_single_file(src, tmp_path / "out", dtype="bf16", max_shard_size="100KB", progress=False)
    index = json.loads((out / "vae" / "diffusion_pytorch_model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1
    total = 0
    for shard in shards:
        size = (out / "vae" / shard).stat().st_size
        with safe_open(str(out / "vae" / shard), "pt") as f:
            keys = list(f.keys())
            assert all(f.get_tensor(k).dtype == torch.bfloat16 for k in keys)
            nbytes = sum(f.get_tensor(k).nbytes for k in keys)
        assert nbytes <= 100_000 or len(keys) == 1  # only a single oversized tensor may exceed the limit
        assert size >= nbytes
        total += len(keys)
    assert total == len(index["weight_map"])
    model_index = json.loads((out / "model_index.json").read_text())
    # the class, in the custom-pipeline form plain diffusers can answer without `import diffusers_ltx2`
    assert model_index["_class_name"] == ["diffusers_ltx2_pipeline", "LTX2AudioVideoPipeline"]
    assert (out / "diffusers_ltx2_pipeline.py").is_file()
    assert model_index["vocoder"] == ["ltx2", "LTX2VocoderWithBWE"]
    assert model_index["text_encoder"] == [None, None]
    assert json.loads((out / "scheduler" / "scheduler_config.json").read_text())["_class_name"] == "LTX2Scheduler"
    guider = json.loads((out / "guider" / "guider_config.json").read_text())
    assert guider["_class_name"] == "MultimodalGuider"
    assert guider["audio"]["cfg"] == 7.0 and guider["video"]["cfg"] == 3.0  # the recommended dials
    assert json.loads((out / "transformer" / "config.json").read_text())["perturbed_attn"] is True


def test_model_index_entries_resolve_in_diffusers(tmp_path):
    """Every diffusers-library entry must be loadable by diffusers' own pipeline loader."""
    from diffusers import pipelines
    from diffusers.pipelines.pipeline_loading_utils import ALL_IMPORTABLE_CLASSES, get_class_obj_and_candidates

    src = tmp_path / "official.safetensors"
    write_official_checkpoint(src, "2.0")
    out = convert_single_file(src, tmp_path / "out", progress=False)
    index = json.loads((out / "model_index.json").read_text())
    for name in ("transformer", "connectors", "vae", "audio_vae", "vocoder"):
        lib, cls = index[name]
        obj = get_class_obj_and_candidates(lib, cls, ALL_IMPORTABLE_CLASSES, pipelines, hasattr(pipelines, lib),
                                           component_name=name)[0]
        model = obj.from_pretrained(out / name)
        assert type(model).__name__ == cls


# ----------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_file_leaves_nothing(tmp_path, damage):
    src = tmp_path / "official.safetensors"
    write_official_checkpoint(src, "2.0")
    data = src.read_bytes()
    src.write_bytes({"truncate": data[: len(data) // 2], "garbage": b"\x13" * 4096, "empty": b""}[damage])
    with pytest.raises(CorruptCheckpointError, match="official.safetensors"):
        convert_single_file(src, tmp_path / "out", progress=False)
    assert _no_leftovers(tmp_path, "out")


def test_missing_and_unknown_keys_are_listed(tmp_path):
    sd = official_state_dict(CONFIGS["2.0"])
    del sd["model.diffusion_model.transformer_blocks.1.attn2.to_v.bias"]
    sd["model.diffusion_model.transformer_blocks.0.mystery.weight"] = torch.zeros(2)
    sd["spatial_upsampler.res_blocks.0.weight"] = torch.zeros(2)
    src = _save(tmp_path / "bad.safetensors", sd, CONFIGS["2.0"])
    with pytest.raises(KeyMismatchError) as info:
        convert_single_file(src, tmp_path / "out", progress=False)
    assert "transformer: transformer_blocks.1.attn2.to_v.bias" in info.value.missing
    assert "spatial_upsampler.res_blocks.0.weight" in info.value.unknown
    assert any("mystery" in k for k in info.value.unknown)
    assert "mystery" in str(info.value)
    assert _no_leftovers(tmp_path, "out")


def test_unknown_version_and_missing_metadata(tmp_path):
    src = tmp_path / "v.safetensors"
    write_official_checkpoint(src, "2.0", model_version="9.9.0")
    with pytest.raises(UnsupportedCheckpointError, match="9.9.0"):
        convert_single_file(src, tmp_path / "out", progress=False)
    save_file({"model.diffusion_model.patchify_proj.weight": torch.zeros(2, 2)}, str(src))
    with pytest.raises(UnsupportedCheckpointError, match="config"):
        convert_single_file(src, tmp_path / "out", progress=False)
    assert _no_leftovers(tmp_path, "out")


def test_atomic_output_dir_on_interrupt_and_existing_output(tmp_path):
    dst = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        with atomic_output_dir(dst) as tmp:
            (tmp / "half_written.safetensors").write_bytes(b"x" * 10)
            raise KeyboardInterrupt
    assert _no_leftovers(tmp_path, "out")
    dst.mkdir()
    (dst / "keep.txt").write_text("old")
    (dst / "model_index.json").write_text('{"_class_name": "LTX2AudioVideoPipeline"}')  # a folder we wrote
    with pytest.raises(ConversionError, match="exists"):
        with atomic_output_dir(dst):
            pass
    with pytest.raises(RuntimeError):
        with atomic_output_dir(dst, overwrite=True) as tmp:
            raise RuntimeError("fails half-way")
    assert (dst / "keep.txt").read_text() == "old"  # a failed overwrite leaves the old folder intact


# ----------------------------------------------------------------------------------------------- FP8


def _fp8_checkpoint(path: Path) -> tuple[Path, dict]:
    """2.0 tiny checkpoint, bf16, with block-0 linear weights in float8_e4m3fn + per-tensor scales."""
    sd = {k: v.to(torch.bfloat16) for k, v in official_state_dict(CONFIGS["2.0"], seed=3).items()}
    quantized = {}
    for key in list(sd):
        if key.startswith("model.diffusion_model.transformer_blocks.0.") and key.endswith(".weight") and sd[key].ndim == 2:
            w = sd[key].float()
            scale = w.abs().max() / torch.finfo(torch.float8_e4m3fn).max
            sd[key] = (w / scale).to(torch.float8_e4m3fn)
            sd[key.removesuffix(".weight") + ".weight_scale"] = scale.reshape(())
            sd[key.removesuffix(".weight") + ".input_scale"] = torch.tensor(1.0)
            quantized[key] = (sd[key], scale)
    return _save(path, sd, CONFIGS["2.0"]), quantized


def test_fp8_requires_a_mode(tmp_path):
    src, _ = _fp8_checkpoint(tmp_path / "fp8.safetensors")
    with pytest.raises(ConversionError, match="float8"):
        convert_single_file(src, tmp_path / "out", progress=False)
    assert _no_leftovers(tmp_path, "out")


def test_fp8_dequantize_and_keep(tmp_path):
    from diffusers import LTX2VideoTransformer3DModel

    src, quantized = _fp8_checkpoint(tmp_path / "fp8.safetensors")
    deq = convert_single_file(src, tmp_path / "deq", fp8="dequantize", progress=False)
    weights = load_file(str(deq / "transformer" / "diffusion_pytorch_model.safetensors"))
    assert not any(k.endswith(("_scale")) for k in weights)
    for key, (w8, scale) in quantized.items():
        new = "transformer_blocks.0." + key.split("transformer_blocks.0.", 1)[1]
        new = new.replace(".q_norm", ".norm_q").replace(".k_norm", ".norm_k")
        assert weights[new].dtype == torch.bfloat16
        torch.testing.assert_close(weights[new], (w8.float() * scale).to(torch.bfloat16), rtol=0, atol=0)
    assert weights["proj_in.weight"].dtype == torch.bfloat16  # non-FP8 tensors keep their dtype

    kept = convert_single_file(src, tmp_path / "keep", fp8="keep", progress=False)
    manifest = json.loads((kept / "transformer" / "ltx2_fp8.json").read_text())
    assert len(manifest["modules"]) == len(quantized)
    raw = load_file(str(kept / "transformer" / "diffusion_pytorch_model.safetensors"))
    assert raw["transformer_blocks.0.attn1.to_q.weight"].dtype == torch.float8_e4m3fn
    assert raw["transformer_blocks.0.attn1.to_q.weight_scale"].dtype == torch.float32

    # FP8 loading (dequantize per call) == loading the dequantized fp32 conversion
    deq32 = convert_single_file(src, tmp_path / "deq32", fp8="dequantize", dtype="fp32", progress=False)
    ref = LTX2VideoTransformer3DModel.from_pretrained(deq32 / "transformer").eval()
    fp8_model = load_fp8_transformer(kept / "transformer", dtype=torch.float32)
    assert fp8_model.transformer_blocks[0].attn1.to_q.weight.dtype == torch.float8_e4m3fn
    gen = torch.Generator().manual_seed(0)
    b, tv, ta = 1, 4, 3
    args = dict(
        hidden_states=torch.randn(b, tv, 8, generator=gen), audio_hidden_states=torch.randn(b, ta, 8, generator=gen),
        encoder_hidden_states=torch.randn(b, 5, 12, generator=gen),
        audio_encoder_hidden_states=torch.randn(b, 5, 12, generator=gen),
        timestep=torch.full((b, tv), 500.0), audio_timestep=torch.full((b, ta), 500.0),
        num_frames=1, height=2, width=2, audio_num_frames=ta, return_dict=False,
    )
    with torch.no_grad():
        r, g = ref(**args), fp8_model(**args)
    # identical fp32 weights on both sides (dequantized once vs per call): only op-order noise remains
    torch.testing.assert_close(g[0], r[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g[1], r[1], rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------------------------- LoRA


def test_lora_conversion(tmp_path):
    from diffusers import LTX2VideoTransformer3DModel
    from diffusers.pipelines.ltx2 import LTX2TextConnectors

    src_ckpt = tmp_path / "official.safetensors"
    write_official_checkpoint(src_ckpt, "2.0")
    out = convert_single_file(src_ckpt, tmp_path / "pipe", progress=False)
    gen = torch.Generator().manual_seed(0)
    r = 4
    lora = {
        "diffusion_model.transformer_blocks.0.attn1.to_q.lora_A.weight": torch.randn(r, 16, generator=gen),
        "diffusion_model.transformer_blocks.0.attn1.to_q.lora_B.weight": torch.randn(16, r, generator=gen),
        "diffusion_model.transformer_blocks.1.audio_ff.net.2.lora_A.weight": torch.randn(r, 32, generator=gen),
        "diffusion_model.transformer_blocks.1.audio_ff.net.2.lora_B.weight": torch.randn(8, r, generator=gen),
        # community-style factors with alpha, inside a connector block
        "diffusion_model.video_embeddings_connector.transformer_1d_blocks.0.attn1.to_k.lora_down.weight":
            torch.randn(r, 12, generator=gen),
        "diffusion_model.video_embeddings_connector.transformer_1d_blocks.0.attn1.to_k.lora_up.weight":
            torch.randn(12, r, generator=gen),
        "diffusion_model.video_embeddings_connector.transformer_1d_blocks.0.attn1.to_k.alpha": torch.tensor(2.0),
    }
    src = tmp_path / "ic_lora.safetensors"
    save_file(lora, str(src), metadata={"reference_downscale_factor": "2", "format": "pt"})
    dst = convert_lora_file(src, tmp_path / "ic_lora_diffusers.safetensors")
    sd = load_file(str(dst))
    with safe_open(str(dst), "pt") as f:
        meta = f.metadata()
    assert reference_downscale_factor(meta) == 2
    assert set(sd) == {
        "transformer.transformer_blocks.0.attn1.to_q.lora_A.weight",
        "transformer.transformer_blocks.0.attn1.to_q.lora_B.weight",
        "transformer.transformer_blocks.1.audio_ff.net.2.lora_A.weight",
        "transformer.transformer_blocks.1.audio_ff.net.2.lora_B.weight",
        "connectors.video_connector.transformer_blocks.0.attn1.to_k.lora_A.weight",
        "connectors.video_connector.transformer_blocks.0.attn1.to_k.lora_B.weight",
    }
    # PEFT loading reproduces W + B @ A (official, no alpha) and W + alpha/r * B @ A (alpha stored)
    transformer = LTX2VideoTransformer3DModel.from_pretrained(out / "transformer").eval()
    connectors = LTX2TextConnectors.from_pretrained(out / "connectors").eval()
    x16, x12 = torch.randn(3, 16, generator=gen), torch.randn(3, 12, generator=gen)
    q, k = transformer.transformer_blocks[0].attn1.to_q, connectors.video_connector.transformer_blocks[0].attn1.to_k
    w_q, b_q, w_k, b_k = q.weight.clone(), q.bias.clone(), k.weight.clone(), k.bias.clone()
    transformer.load_lora_adapter({k_: v for k_, v in sd.items() if k_.startswith("transformer.")}, prefix="transformer")
    connectors.load_lora_adapter({k_: v for k_, v in sd.items() if k_.startswith("connectors.")}, prefix="connectors")
    a_q = lora["diffusion_model.transformer_blocks.0.attn1.to_q.lora_A.weight"]
    bb_q = lora["diffusion_model.transformer_blocks.0.attn1.to_q.lora_B.weight"]
    a_k = lora["diffusion_model.video_embeddings_connector.transformer_1d_blocks.0.attn1.to_k.lora_down.weight"]
    bb_k = lora["diffusion_model.video_embeddings_connector.transformer_1d_blocks.0.attn1.to_k.lora_up.weight"]
    # PEFT wraps the layers: fetch them again
    q, k = transformer.transformer_blocks[0].attn1.to_q, connectors.video_connector.transformer_blocks[0].attn1.to_k
    with torch.no_grad():
        torch.testing.assert_close(q(x16), torch.nn.functional.linear(x16, w_q + bb_q @ a_q, b_q))
        torch.testing.assert_close(k(x12), torch.nn.functional.linear(x12, w_k + (2.0 / r) * bb_k @ a_k, b_k))


def test_lora_errors(tmp_path):
    src = tmp_path / "bad.safetensors"
    save_file({"diffusion_model.transformer_blocks.0.attn1.to_q.lora_A.weight": torch.zeros(2, 4),
               "lora_unet_something": torch.zeros(1)}, str(src))
    with pytest.raises(KeyMismatchError) as info:
        convert_lora_file(src, tmp_path / "out.safetensors")
    assert "lora_unet_something" in info.value.unknown
    assert any("only ['lora_A']" in m for m in info.value.missing)
    assert not (tmp_path / "out.safetensors").exists()


# ----------------------------------------------------------------------------------------------- Gemma + CLI


@pytest.mark.slow
def test_gemma_folder_and_cli(tmp_path):
    import subprocess

    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (
        AutoTokenizer,
        Gemma3Config,
        Gemma3ForConditionalGeneration,
        PreTrainedTokenizerFast,
    )

    text = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
            "num_key_value_heads": 1, "head_dim": 16, "vocab_size": 64}
    vision = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
              "image_size": 28, "patch_size": 14}
    gemma = Gemma3ForConditionalGeneration(Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=4))
    gemma_dir = tmp_path / "gemma"
    gemma.save_pretrained(gemma_dir)
    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "a": 4, "cat": 5}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>",
                            unk_token="<unk>", padding_side="left").save_pretrained(gemma_dir)

    src = tmp_path / "official.safetensors"
    write_official_checkpoint(src, "2.3")
    cmd = [sys.executable, str(REPO / "conversion" / "convert_checkpoint.py"), str(src), str(tmp_path / "out"),
           "--gemma", str(gemma_dir), "--dtype", "bf16", "--no-progress"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    out = tmp_path / "out"
    index = json.loads((out / "model_index.json").read_text())
    assert index["text_encoder"] == ["transformers", "Gemma3ForConditionalGeneration"]
    assert index["tokenizer"][0] == "transformers"
    assert Gemma3ForConditionalGeneration.from_pretrained(out / "text_encoder").config.text_config.hidden_size == 32
    assert AutoTokenizer.from_pretrained(out / "tokenizer")("a cat")["input_ids"] == [4, 5]

    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)  # exists -> clear error, exit 2
    assert again.returncode == 2 and "already exists" in again.stderr
