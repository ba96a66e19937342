"""Saved conditioning: exact round trips, model identity checks, ComfyUI files, atomic writes, `ltx2 encode`."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from diffusers_ltx2.cli import encode as encode_cli
from diffusers_ltx2.factory import TINY, build_components
from diffusers_ltx2.loaders.conditioning_file import (
    FORMAT_NAME,
    ConditioningFileError,
    as_prompt_embeddings,
    from_comfy_conditioning,
    load_conditioning,
    read_conditioning_metadata,
    save_conditioning,
)
from diffusers_ltx2.loaders.gemma import GemmaPromptEncoder
from diffusers_ltx2.loaders.identity import (
    MissingModelIdentityWarning,
    ModelIdentityMismatchError,
    connector_fingerprint,
    context_dims,
    read_model_id,
)
from diffusers_ltx2.loaders.prompt_embeddings import PromptEmbeddings


def embeddings(batch=2, tokens=6, video=8, audio=4, dtype=torch.float32, identity="model-A", seed=0):
    gen = torch.Generator().manual_seed(seed)
    mask = torch.ones(batch, tokens, dtype=torch.int64)
    mask[0, :2] = 0
    return PromptEmbeddings(
        video_context=torch.randn(batch, tokens, video, generator=gen).to(dtype),
        audio_context=torch.randn(batch, tokens, audio, generator=gen).to(dtype),
        attention_mask=mask,
        model_identity=identity,
        stage="connector",
    )


def assert_same(a: PromptEmbeddings, b: PromptEmbeddings):
    assert a.stage == b.stage and a.model_identity == b.model_identity
    assert a.video_context.dtype == b.video_context.dtype
    assert torch.equal(a.video_context, b.video_context)
    assert (a.audio_context is None) == (b.audio_context is None)
    if a.audio_context is not None:
        assert torch.equal(a.audio_context, b.audio_context)
    assert torch.equal(a.attention_mask, b.attention_mask) and a.attention_mask.dtype == b.attention_mask.dtype


@pytest.fixture(scope="module")
def tiny():
    return build_components(TINY, seed=0)


# ------------------------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_round_trip_is_exact(tmp_path, dtype):
    original = embeddings(dtype=dtype)
    path = save_conditioning(tmp_path / "sub" / "cond.safetensors", original, prompt=["a fox", "a car"], seed=7)
    loaded = load_conditioning(path, video_dim=8, audio_dim=4, model_identities=["model-A"])
    assert_same(loaded, original)

    meta = read_conditioning_metadata(path)
    assert meta["format"] == FORMAT_NAME and meta["format_version"] == "1"
    assert meta["model_identity"] == "model-A" and meta["stage"] == "connector"
    assert meta["dtype"] == str(dtype).removeprefix("torch.")
    assert json.loads(meta["prompt"]) == ["a fox", "a car"] and meta["seed"] == "7"
    assert meta["created_at"].endswith("+00:00")
    assert os.listdir(tmp_path / "sub") == ["cond.safetensors"]


def test_dtype_option_and_feature_stage_round_trip(tmp_path):
    small = save_conditioning(tmp_path / "bf16.safetensors", embeddings(), dtype=torch.bfloat16)
    loaded = load_conditioning(small)
    assert loaded.video_context.dtype == torch.bfloat16
    assert torch.equal(loaded.video_context, embeddings().video_context.to(torch.bfloat16))

    features = PromptEmbeddings(
        video_context=torch.randn(1, 5, 96), audio_context=None,
        attention_mask=torch.tensor([[0, 0, 1, 1, 1]]), model_identity="connectors-abc", stage="features",
    )
    path = save_conditioning(tmp_path / "features.safetensors", features, prompt="p")
    assert_same(load_conditioning(path), features)
    with safe_open(str(path), "pt") as fh:  # ComfyUI's loader must not mistake features for a conditioning
        assert not any(k.startswith("conditioning_data_") for k in fh.keys())


def test_our_files_use_the_comfyui_layout(tmp_path):
    original = embeddings()
    path = save_conditioning(tmp_path / "c.safetensors", original)
    with safe_open(str(path), "pt") as fh:
        data, mask = fh.get_tensor("conditioning_data_0"), fh.get_tensor("attention_mask_0")
        assert fh.metadata()["num_conditionings"] == "1"
    assert torch.equal(data, torch.cat([original.video_context, original.audio_context], dim=-1))
    assert torch.equal(mask, original.attention_mask)


# ----------------------------------------------------------------------------------------- model identity


def test_mismatched_model_is_an_error_naming_both(tmp_path):
    path = save_conditioning(tmp_path / "c.safetensors", embeddings(identity="ltx-2.0-dev"))
    with pytest.raises(ModelIdentityMismatchError) as info:
        load_conditioning(path, model_identities=["ltx-2.3-distilled", None])
    assert "ltx-2.0-dev" in str(info.value) and "ltx-2.3-distilled" in str(info.value)
    # any of the model's identities matches (checkpoint model id or connector fingerprint)
    load_conditioning(path, model_identities=["ltx-2.3-distilled", "ltx-2.0-dev"])
    with pytest.raises(ModelIdentityMismatchError, match="ltx-2.0-dev"):
        as_prompt_embeddings(path, model_identities="other")
    with pytest.raises(ModelIdentityMismatchError, match="ltx-2.0-dev"):
        as_prompt_embeddings(embeddings(identity="ltx-2.0-dev"), model_identities="other")


def test_wrong_width_for_the_model_is_an_error(tmp_path):
    path = save_conditioning(tmp_path / "c.safetensors", embeddings(video=8, audio=4))
    with pytest.raises(ValueError, match=r"video 8 \+ audio 4 .* video 8 \+ audio 8"):
        load_conditioning(path, video_dim=8, audio_dim=8)
    with pytest.raises(ValueError, match="different model"):
        as_prompt_embeddings(embeddings(video=8, audio=4), video_dim=16, audio_dim=4)


def test_fingerprint_is_stable_dtype_independent_and_weight_sensitive(tiny, tmp_path):
    connectors = tiny["connectors"]
    first = connector_fingerprint(connectors)
    assert first.startswith("connectors-") and len(first) == len("connectors-") + 16
    assert connector_fingerprint(build_components(TINY, seed=0)["connectors"]) == first
    saved = tmp_path / "connectors"
    connectors.save_pretrained(saved)  # adds _class_name/_diffusers_version to the config: must not matter
    assert connector_fingerprint(type(connectors).from_pretrained(saved)) == first
    assert connector_fingerprint(connectors) == first
    assert connector_fingerprint(build_components(TINY, seed=1)["connectors"]) != first
    bf16 = build_components(TINY, seed=0, dtype=torch.bfloat16)["connectors"]
    assert connector_fingerprint(bf16) == first
    with torch.no_grad():
        p = next(bf16.parameters())
        p.add_(1.0)  # an in-place change (e.g. a fused LoRA) invalidates the cached value
    assert connector_fingerprint(bf16) != first
    assert context_dims(connectors) == (TINY.caption_channels, TINY.caption_channels)


def test_read_model_id_reads_only_the_header(tmp_path):
    ckpt = tmp_path / "ltx.safetensors"
    save_file({"model.diffusion_model.w": torch.zeros(4)}, ckpt,
              metadata={"encrypted_wandb_properties": "gAAAA-id", "model_version": "2.0"})
    assert read_model_id(ckpt) == "gAAAA-id"
    folder = tmp_path / "pipe"
    (folder / "transformer").mkdir(parents=True)
    save_file({"w": torch.zeros(1)}, folder / "transformer" / "diffusion_pytorch_model.safetensors",
              metadata={"encrypted_wandb_properties": "gAAAA-folder"})
    assert read_model_id(folder) == "gAAAA-folder"
    # `ltx2 convert`'s folders: shards without metadata, the id in model_index.json (as the pipeline loads it)
    converted = tmp_path / "converted"
    (converted / "transformer").mkdir(parents=True)
    save_file({"w": torch.zeros(1)}, converted / "transformer" / "diffusion_pytorch_model.safetensors")
    with pytest.raises(ValueError, match="cannot identify the model"):
        read_model_id(converted)
    (converted / "model_index.json").write_text('{"_class_name": "LTX2AudioVideoPipeline", "model_identity": null}')
    with pytest.raises(ValueError, match="cannot identify the model"):
        read_model_id(converted)
    (converted / "model_index.json").write_text('{"_class_name": "LTX2AudioVideoPipeline", '
                                                '"model_identity": "gAAAA-index"}')
    assert read_model_id(converted) == "gAAAA-index"
    # a file whose tensor data is cut off still has a readable header: no tensor is loaded
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(ckpt.read_bytes()[:-8])
    assert read_model_id(truncated) == "gAAAA-id"
    (tmp_path / "junk.safetensors").write_bytes(b"\x05")
    with pytest.raises(ValueError, match="not a safetensors file"):
        read_model_id(tmp_path / "junk.safetensors")


# ------------------------------------------------------------------------------------------ ComfyUI files


def write_comfy_file(path, *tensors, masks=(), dtype="bfloat16"):
    """Write what ComfyUI-LTXVideo's LTXVSaveConditioning writes."""
    data = {f"conditioning_data_{i}": t.to(getattr(torch, dtype)).contiguous() for i, t in enumerate(tensors)}
    data.update({f"attention_mask_{i}": m.contiguous() for i, m in enumerate(masks)})
    save_file(data, path, metadata={"num_conditionings": str(len(tensors)), "dtype": dtype,
                                    "created_at": "2026-01-05 10:11:12.123456"})


def test_comfyui_file_loads_with_a_warning(tmp_path):
    tensor = torch.randn(1, 10, 7680)
    mask = torch.ones(1, 10, dtype=torch.int64)
    mask[0, 7:] = 0
    path = tmp_path / "comfy.safetensors"
    write_comfy_file(path, tensor, masks=[mask])
    with pytest.warns(MissingModelIdentityWarning, match="no model identity"):
        loaded = load_conditioning(path, model_identities=["some-model"])
    assert loaded.model_identity is None and loaded.stage == "connector"
    assert loaded.video_context.shape == (1, 10, 3840) and loaded.audio_context.shape == (1, 10, 3840)
    assert torch.equal(loaded.video_context, tensor[..., :3840].bfloat16())
    assert torch.equal(loaded.audio_context, tensor[..., 3840:].bfloat16())
    assert torch.equal(loaded.attention_mask, mask)


def test_comfyui_file_without_mask_with_explicit_split_and_errors(tmp_path):
    path = tmp_path / "comfy.safetensors"
    write_comfy_file(path, torch.randn(1, 4, 40), dtype="float16")
    with pytest.warns(MissingModelIdentityWarning):
        loaded = load_conditioning(path, video_dim=24, audio_dim=16)
    assert torch.equal(loaded.attention_mask, torch.ones(1, 4, dtype=torch.int64))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="not a known LTX-2 split"):
            load_conditioning(path)
        with pytest.raises(ValueError, match="expects video 32"):
            load_conditioning(path, video_dim=32, audio_dim=16)
        write_comfy_file(path, torch.randn(1, 4, 40), torch.randn(1, 4, 40))
        with pytest.raises(ValueError, match="exactly one"):
            load_conditioning(path, video_dim=24, audio_dim=16)
    save_file({"weight": torch.zeros(3)}, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match="no conditioning"):
        load_conditioning(tmp_path / "model.safetensors")
    (tmp_path / "broken.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(ValueError, match="not a readable safetensors"):
        load_conditioning(tmp_path / "broken.safetensors")


def test_comfy_conditioning_list_is_accepted(tmp_path):
    tensor = torch.randn(1, 3, 6144)
    out = as_prompt_embeddings([[tensor, {"attention_mask": torch.ones(1, 1, 3, dtype=torch.bool)}]])
    assert out.video_context.shape[-1] == 4096 and out.audio_context.shape[-1] == 2048
    assert out.attention_mask.dtype == torch.int64 and out.attention_mask.shape == (1, 3)
    with pytest.raises(ValueError, match="unprocessed"):
        from_comfy_conditioning([[tensor, {"unprocessed_ltxav_embeds": True}]])


def test_newer_format_version_is_refused(tmp_path):
    tensors = {"conditioning_data_0": torch.zeros(1, 2, 12), "attention_mask_0": torch.ones(1, 2, dtype=torch.int64)}
    save_file(tensors, tmp_path / "future.safetensors",
              metadata={"format": FORMAT_NAME, "format_version": "9", "video_dim": "8", "audio_dim": "4"})
    with pytest.raises(ValueError, match="format version '9'"):
        load_conditioning(tmp_path / "future.safetensors")


# ------------------------------------------------------------------------------------- unusable files


def write_ours(path, tensors: dict, identity: str = "model-A", **metadata):
    """A file in our format with the given tensors and metadata (what a corrupt or forged file looks like)."""
    meta = {"format": FORMAT_NAME, "format_version": "1", "model_identity": identity, **metadata}
    save_file({k: v.contiguous() for k, v in tensors.items()}, path, metadata=meta)


def _features(tokens=5, width=96, **replace):
    tensors = {"gemma_features_0": torch.randn(1, tokens, width),
               "attention_mask_0": torch.ones(1, tokens, dtype=torch.int64)}
    tensors.update(replace)
    return {k: v for k, v in tensors.items() if v is not None}


def _connector(tokens=5, **replace):
    tensors = {"conditioning_data_0": torch.randn(1, tokens, 12),
               "attention_mask_0": torch.ones(1, tokens, dtype=torch.int64)}
    tensors.update(replace)
    return {k: v for k, v in tensors.items() if v is not None}


_FEATURES, _CONNECTOR = {"stage": "features"}, {"stage": "connector", "video_dim": "8", "audio_dim": "4"}
# name -> (tensors, metadata, the refusal's wording); tensors are (batch=1, tokens=5, ...)
UNUSABLE_FILES = {
    "features with NaN": (_features(gemma_features_0=torch.full((1, 5, 96), float("nan"))), _FEATURES, "NaN"),
    "features with inf": (_features(gemma_features_0=torch.full((1, 5, 96), float("inf"))), _FEATURES, "infinite"),
    "integer features": (_features(gemma_features_0=torch.ones(1, 5, 96, dtype=torch.int32)), _FEATURES, "floating"),
    "2-D features": (_features(gemma_features_0=torch.randn(5, 96)), _FEATURES, "batch, tokens, channels"),
    "empty features": (_features(gemma_features_0=torch.randn(1, 0, 96), attention_mask_0=torch.ones(1, 0)),
                       _FEATURES, "empty"),
    "features mask of the wrong length": (_features(attention_mask_0=torch.ones(1, 4)), _FEATURES, "attention_mask"),
    "features mask not binary": (_features(attention_mask_0=torch.full((1, 5), 2)), _FEATURES, "only 0 and 1"),
    "features without a mask": (_features(attention_mask_0=None), _FEATURES, "exactly gemma_features_0"),
    "features next to a connector tensor": ({**_features(), "conditioning_data_0": torch.randn(1, 5, 12)}, _FEATURES,
                                            "exactly gemma_features_0"),
    "unknown stage": (_connector(), {**_CONNECTOR, "stage": "decoder"}, "stage 'decoder'"),
    "no stage": (_connector(), {"video_dim": "8", "audio_dim": "4"}, "stage None"),
    "connector with NaN": (_connector(conditioning_data_0=torch.full((1, 5, 12), float("nan"))), _CONNECTOR, "NaN"),
    "integer connector output": (_connector(conditioning_data_0=torch.ones(1, 5, 12, dtype=torch.int64)), _CONNECTOR,
                                 "floating"),
    "1-D connector output": (_connector(conditioning_data_0=torch.randn(12)), _CONNECTOR, "batch, tokens, channels"),
    "connector mask of the wrong length": (_connector(attention_mask_0=torch.ones(1, 6)), _CONNECTOR, "attention_mask"),
    "connector file holding features": ({**_connector(), "gemma_features_0": torch.randn(1, 5, 96)}, _CONNECTOR,
                                        "gemma_features_0"),
    "connector width not the recorded split": (_connector(), {**_CONNECTOR, "audio_dim": "8"}, "12 wide"),
}


@pytest.mark.parametrize("name", sorted(UNUSABLE_FILES))
def test_unusable_files_are_refused_with_a_value_error(tmp_path, name):
    tensors, metadata, wording = UNUSABLE_FILES[name]
    write_ours(tmp_path / "c.safetensors", tensors, **metadata)
    with pytest.raises(ValueError, match=wording) as info:
        load_conditioning(tmp_path / "c.safetensors")
    assert isinstance(info.value, ConditioningFileError)


def test_well_formed_files_of_both_stages_load(tmp_path):
    write_ours(tmp_path / "f.safetensors", _features(), **_FEATURES)
    assert load_conditioning(tmp_path / "f.safetensors").stage == "features"
    write_ours(tmp_path / "c.safetensors", _connector(), **_CONNECTOR)
    loaded = load_conditioning(tmp_path / "c.safetensors")
    assert loaded.stage == "connector" and loaded.video_context.shape == (1, 5, 8)


# ---------------------------------------------------------------------------------------------- writing


def test_reserved_metadata_and_the_api_key_are_refused_before_writing(tmp_path, monkeypatch):
    target = tmp_path / "c.safetensors"
    with pytest.raises(ValueError, match="reserved"):
        save_conditioning(target, embeddings(), model_identity="forged")
    monkeypatch.setenv("LTX_API_KEY", "sk-super-secret-key")
    with pytest.raises(ValueError, match="LTX_API_KEY"):
        save_conditioning(target, embeddings(), note="key is sk-super-secret-key")
    assert not target.exists() and os.listdir(tmp_path) == []


def test_failed_save_leaves_nothing_half_written(tmp_path):
    """A real mid-write failure (file size limit -> EFBIG) keeps the old file and leaves no partial file."""
    target = tmp_path / "cond.safetensors"
    old = embeddings(batch=1, tokens=2, video=4, audio=4, identity="old")
    save_conditioning(target, old)
    before = target.read_bytes()
    package = os.path.dirname(os.path.dirname(os.path.abspath(load_conditioning.__code__.co_filename)))
    script = textwrap.dedent(f"""
        import resource, signal, sys, types, torch
        # import only the loaders (not the pipelines) to keep the child fast
        stub = types.ModuleType("diffusers_ltx2")
        stub.__path__ = [{package!r}]
        sys.modules["diffusers_ltx2"] = stub
        from diffusers_ltx2.loaders.conditioning_file import save_conditioning
        from diffusers_ltx2.loaders.prompt_embeddings import PromptEmbeddings
        big = PromptEmbeddings(torch.randn(1, 256, 512), torch.randn(1, 256, 512),
                               torch.ones(1, 256, dtype=torch.int64), "new", "connector")
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
        try:
            save_conditioning({str(target)!r}, big)
        except OSError as err:
            print("failed:", err.errno)
            sys.exit(0)
        sys.exit("save did not fail")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            cwd=os.getcwd())
    assert result.returncode == 0, result.stderr + result.stdout
    assert "failed: 27" in result.stdout  # EFBIG: the write itself failed
    assert target.read_bytes() == before
    assert os.listdir(tmp_path) == ["cond.safetensors"]
    assert_same(load_conditioning(target), old)


# -------------------------------------------------------------------------------------- local encoding


def run_cli(argv):
    parser = argparse.ArgumentParser(prog="ltx2")
    encode_cli.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_encode_with_local_gemma(tiny, tmp_path, capsys):
    folder = tmp_path / "pipe"
    tiny["tokenizer"].save_pretrained(folder / "tokenizer")
    tiny["text_encoder"].save_pretrained(folder / "text_encoder")
    tiny["connectors"].save_pretrained(folder / "connectors")
    out = tmp_path / "cond.safetensors"
    prompts = ["a red fox runs in the snow", "waves on the beach at sunset"]
    assert run_cli(["encode", "--model", str(folder), "--prompt", prompts[0], "--prompt", prompts[1],
                    "--output", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out

    identity = connector_fingerprint(tiny["connectors"])
    loaded = load_conditioning(out, model_identities=[identity], video_dim=TINY.caption_channels,
                               audio_dim=TINY.caption_channels)
    direct = GemmaPromptEncoder(tiny["tokenizer"], tiny["text_encoder"], tiny["connectors"], model_identity=identity,
                                max_sequence_length=TINY.max_sequence_length).encode(prompts)
    assert_same(loaded, direct)
    assert json.loads(read_conditioning_metadata(out)["prompt"]) == prompts
    with pytest.raises(ModelIdentityMismatchError):
        load_conditioning(out, model_identities=[connector_fingerprint(build_components(TINY, seed=3)["connectors"])])
