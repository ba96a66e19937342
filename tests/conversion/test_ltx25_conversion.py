"""LTX-2.5 per-component files: recognised, converted (`ltx2 convert`, folder or files one by one), loaded
(`from_single_file`, `from_pretrained`), refused with a clear message when a pipeline part is missing."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from diffusers_ltx2.cli.convert import main_convert
from diffusers_ltx2.conversion import ConversionError, convert_single_file, inspect_checkpoint
from diffusers_ltx2.conversion.configs import normalize_version
from diffusers_ltx2.conversion.errors import UnsupportedCheckpointError
from diffusers_ltx2.conversion.files import inspect_set
from diffusers_ltx2.conversion.keymap import KeyMapper, Route, map_diffusion_decoder_key, map_duration_head_key
from official_configs import GEMMA_VERSION_25, MODEL_ID_25


@pytest.fixture(scope="module")
def converted(ltx25_set, tmp_path_factory):
    """The set converted once from its folder with the CLI (small shards exercise the index)."""
    dst = tmp_path_factory.mktemp("conv25") / "pipe"
    assert main_convert([str(ltx25_set["folder"]), str(dst), "--no-progress", "--max-shard-size", "100KB"]) == 0
    return dst


def test_files_are_recognised_by_content(ltx25_set):
    roles = {f.path.name: f.role for f in inspect_set(ltx25_set["folder"]).files}
    expected = {"transformer": "transformer", "text_encoder": "text_encoder", "video_vae_conv": "video_vae",
                "video_vae_diffusion": "video_vae_diffusion", "audio_vae": "audio_vae",
                "duration_head": "duration_head", "spatial_upsampler": "upsampler", "temporal_upsampler": "upsampler",
                "distilled_lora": "lora"}
    assert roles == {ltx25_set[k].name: role for k, role in expected.items()}
    info = inspect_checkpoint(ltx25_set["folder"])
    assert info.version == "2.5" and info.is_set and info.path == ltx25_set["transformer"]
    key = "decoder.conv_in.conv.weight"
    assert info.sources[f"vae.{key}"] == (ltx25_set["video_vae_conv"], key)


def test_converted_folder_layout_and_identity(converted):
    index = json.loads((converted / "model_index.json").read_text())
    assert index["_class_name"] == ["diffusers_ltx2_pipeline", "LTX2AudioVideoPipeline"]  # see _plain_diffusers
    assert index["diffusion_decoder"] == ["diffusers", "LTX2VideoDiffusionDecoderModel"]
    assert index["duration_head"] == ["ltx2", "LTX2DurationHead"]
    assert index["text_encoder"] == ["transformers", "Gemma4UnifiedForConditionalGeneration"]
    assert index["latent_upsampler"] == ["ltx2", "LTX2LatentUpsamplerModel"]
    assert "temporal_latent_upsampler" not in index  # a plain model folder, not a pipeline component
    assert (index["model_identity"], index["model_version"], index["gemma_version"]) == (
        MODEL_ID_25, "2.5.0", GEMMA_VERSION_25)
    assert json.loads((converted / "temporal_latent_upsampler" / "config.json").read_text())["temporal_upsample"]
    assert (converted / "tokenizer" / "tokenizer.json").is_file()
    assert json.loads((converted / "text_encoder" / "config.json").read_text())["gemma_version"] == GEMMA_VERSION_25
    lora = load_file(str(next((converted / "loras").glob("*.safetensors"))))
    assert any(k.startswith("transformer.") and "lora_A" in k for k in lora)  # diffusers/PEFT keys
    assert (converted / "transformer" / "diffusion_pytorch_model.safetensors.index.json").is_file()


def test_files_named_one_by_one_convert_alike(ltx25_set, converted, tmp_path):
    """The CLI with the files listed (any order) writes the same tensors as with the folder."""
    names = ["transformer", "video_vae_conv", "text_encoder", "audio_vae", "video_vae_diffusion"]
    dst = tmp_path / "pipe"
    assert main_convert([*[str(ltx25_set[n]) for n in reversed(names)], str(dst), "--no-progress"]) == 0
    for component in ("transformer", "diffusion_decoder", "connectors"):
        ours = load_file(str(dst / component / "diffusion_pytorch_model.safetensors"))
        full = {}
        for shard in sorted((converted / component).glob("*.safetensors")):
            full.update(load_file(str(shard)))
        assert ours.keys() == full.keys()
        assert all(torch.equal(ours[k], full[k]) for k in ours)
    assert not (dst / "duration_head").exists() and not (dst / "loras").exists()


def test_from_pretrained_equals_from_single_file(ltx25_set, converted):
    from diffusers_ltx2 import LTX2AudioVideoPipeline

    a = LTX2AudioVideoPipeline.from_pretrained(converted, dtype=torch.float32)
    b = LTX2AudioVideoPipeline.from_single_file(ltx25_set["folder"], dtype=torch.float32, progress=False)
    assert a.model_version == b.model_version == "2.5"
    assert a.config.gemma_version == b.config.gemma_version == GEMMA_VERSION_25
    assert a.model_identity == b.model_identity == MODEL_ID_25
    for name in ("transformer", "connectors", "vae", "diffusion_decoder", "audio_vae", "vocoder", "text_encoder",
                 "duration_head"):  # the duration head too: the merged pipeline predicts num_frames with it
        sa, sb = getattr(a, name).state_dict(), getattr(b, name).state_dict()
        assert sa.keys() == sb.keys(), name
        assert all(torch.equal(sa[k], sb[k]) for k in sa), name


@pytest.mark.parametrize("drop,message", [
    ("text_encoder", "text encoder with the projection"),
    ("video_vae_conv", "convolutional decoder"),
    ("transformer", "the transformer"),
])
def test_incomplete_set_is_refused_naming_the_missing_file(ltx25_set, tmp_path, drop, message):
    keep = [ltx25_set[k] for k in ("transformer", "text_encoder", "video_vae_conv", "video_vae_diffusion",
                                   "audio_vae") if k != drop]
    with pytest.raises(ConversionError, match=message):
        convert_single_file(keep, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_cli_refuses_two_transformers_in_one_folder(ltx25_set, tmp_path, capsys):
    folder = tmp_path / "set"
    shutil.copytree(ltx25_set["folder"], folder)
    distilled = folder / "diffusion_models" / "ltx-2.5-22b-distilled-transformer-tiny.safetensors"
    shutil.copy(ltx25_set["transformer"], distilled)
    assert main_convert([str(folder), str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "more than one file per component" in err[0] and "one by one" in err[0]
    assert not (tmp_path / "out").exists()


def test_components_load_without_the_other_files(ltx25_set):
    """A partial set loads the components its files hold (the connectors need the text encoder's projection)."""
    from diffusers_ltx2.conversion import load_components_from_single_file

    parts = load_components_from_single_file([ltx25_set["transformer"], ltx25_set["duration_head"]])
    assert set(parts) == {"transformer", "duration_head"}
    parts = load_components_from_single_file(ltx25_set["video_vae_diffusion"])
    assert set(parts) == {"diffusion_decoder"}


def test_versions_are_read_as_their_generation():
    assert normalize_version("2.5.0", {}) == "2.5"
    assert normalize_version("2.4-rc2", {}) == "2.4"
    assert normalize_version(None, {"transformer": {"ff_bias": False}}) == "2.5"
    with pytest.raises(UnsupportedCheckpointError, match="2.7"):
        normalize_version("2.7.0", {})


def test_diffusion_decoder_key_rules():
    present = {"decoder.diff_blocks.0.gate_msa"}
    has = present.__contains__
    assert map_diffusion_decoder_key("decoder.diff_blocks.0.attn.qkv.weight", has) == [
        Route(f"decoder.diff_blocks.0.attn.to_{n}.weight", chunk=(i, 3)) for i, n in enumerate("qkv")]
    assert map_diffusion_decoder_key("decoder.diff_blocks.0.attn.proj.bias", has) == [
        Route("decoder.diff_blocks.0.attn.to_out.0.bias", gate="decoder.diff_blocks.0.gate_msa")]
    assert map_diffusion_decoder_key("decoder.diff_blocks.1.attn.proj.bias", has) == [
        Route("decoder.diff_blocks.1.attn.to_out.0.bias")]
    assert map_diffusion_decoder_key("decoder.t_embedder.mlp.2.weight", has) == [
        Route("decoder.t_embedder.timestep_embedder.linear_2.weight")]
    for dropped in ("decoder.diff_blocks.0.gate_msa", "decoder.coarse_head.weight", "encoder.conv_in.conv.weight"):
        assert map_diffusion_decoder_key(dropped, has) == []
    assert map_duration_head_key("attention_pooler.cross_attn.in_proj_bias")[2] == Route(
        "attention_pooler.to_v.bias", chunk=(2, 3))
    with pytest.raises(KeyError):
        KeyMapper({}).routes("vae_diffusion.something.else")


@pytest.mark.parametrize("role,key", [("text_encoder", "gemma_config"), ("transformer", "gemma_source_checkpoint")])
def test_set_metadata_nested_100000_deep_is_a_value_error_naming_the_file(ltx25_set, tmp_path, capsys, role, key):
    """The JSON a 2.5 set adds to the safetensors metadata (the text encoder's Gemma config, the transformer's
    Gemma declaration) is read as every other file's JSON (`json_files.parse_json`): crafted nesting is a
    `ValueError` naming the file, before any tensor is read, and `ltx2 convert` exits 2 with one line."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from diffusers_ltx2 import LTX2AudioVideoPipeline

    folder = tmp_path / "set"
    shutil.copytree(ltx25_set["folder"], folder)
    path = folder / ltx25_set[role].relative_to(ltx25_set["folder"])
    with safe_open(str(path), framework="pt") as f:
        metadata = dict(f.metadata())
    metadata[key] = "[" * 100_000 + "]" * 100_000
    save_file(load_file(str(path)), str(path), metadata=metadata)
    for attempt in (lambda: inspect_checkpoint(folder),
                    lambda: LTX2AudioVideoPipeline.from_single_file(folder, progress=False)):
        with pytest.raises(ValueError, match=f"{path.name}.*{key}.*nested too deeply"):
            attempt()
    assert main_convert([str(folder), str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nested too deeply" in err[0] and not (tmp_path / "out").exists()
