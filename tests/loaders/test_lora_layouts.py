"""LoRA files in every layout users meet land on the right layers at the right scale, or fail before the model
is touched (issue 16 A/I, issue 15 item 5).

Expected values are written from the formats' definitions, not from our code: official / diffusers files add
`B @ A` (PEFT scale 1); kohya / community files with an `alpha` add `alpha / rank * B @ A`; diffusers files with
`lora_adapter_metadata` use PEFT's `lora_alpha / r`. The official module names in `LAYERS` are ltx-core's.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from diffusers_ltx2 import ClassifierFreeGuidance, LTX2AudioVideoPipeline, LTX2Scheduler
from diffusers_ltx2.factory import TINY_CLIP

RANK = 4

# (component, diffusers path, official ltx-core module name)
LAYERS = [
    ("transformer", "transformer_blocks.0.attn1.to_q", "diffusion_model.transformer_blocks.0.attn1.to_q"),
    ("transformer", "transformer_blocks.1.audio_ff.net.2", "diffusion_model.transformer_blocks.1.audio_ff.net.2"),
    ("transformer", "transformer_blocks.1.video_to_audio_attn.to_k",
     "diffusion_model.transformer_blocks.1.video_to_audio_attn.to_k"),
    ("transformer", "proj_in", "diffusion_model.patchify_proj"),
    ("transformer", "time_embed.linear", "diffusion_model.adaln_single.linear"),
    ("connectors", "video_connector.transformer_blocks.0.attn1.to_k",
     "diffusion_model.video_embeddings_connector.transformer_1d_blocks.0.attn1.to_k"),
    ("connectors", "audio_connector.transformer_blocks.0.ff.net.0.proj",
     "diffusion_model.audio_embeddings_connector.transformer_1d_blocks.0.ff.net.0.proj"),
    ("connectors", "text_proj_in", "text_embedding_projection.aggregate_embed"),
]


def _module_key(layout: str, component: str, path: str, official: str) -> str:
    if layout in ("official", "official_down_up"):
        return official
    if layout == "diffusers":
        return f"{component}.{path}"
    if layout in ("bare", "bare_default"):
        return path
    if layout == "kohya":
        return "lora_unet_" + official.removeprefix("diffusion_model.").replace(".", "_")
    if layout == "kohya_diffusers_names":
        return "lora_unet_" + path.replace(".", "_")
    if layout == "trainer_connectors":  # another trainer: diffusers connector names under diffusion_model.connectors.
        return f"diffusion_model.connectors.{path}" if component == "connectors" else official
    raise AssertionError(layout)


_SUFFIX = {
    "official": (".lora_A.weight", ".lora_B.weight", None),
    "official_down_up": (".lora_down.weight", ".lora_up.weight", ".alpha"),
    "diffusers": (".lora_A.weight", ".lora_B.weight", None),
    "bare": (".lora_A.weight", ".lora_B.weight", None),
    "bare_default": (".lora_A.default.weight", ".lora_B.default.weight", None),
    "kohya": (".lora_down.weight", ".lora_up.weight", ".alpha"),
    "kohya_diffusers_names": (".lora_down.weight", ".lora_up.weight", ".alpha"),
    "trainer_connectors": (".lora_A.weight", ".lora_B.weight", None),
}


def make_lora(pipe, layout: str, seed: int = 0, layers=LAYERS):
    """(state dict, {(component, path): expected delta W})."""
    gen = torch.Generator().manual_seed(seed)
    a_suffix, b_suffix, alpha_suffix = _SUFFIX[layout]
    sd, expected = {}, {}
    for i, (component, path, official) in enumerate(layers):
        weight = getattr(pipe, component).get_submodule(path).weight
        a = torch.randn(RANK, weight.shape[1], generator=gen) * 0.3
        b = torch.randn(weight.shape[0], RANK, generator=gen) * 0.3
        key = _module_key(layout, component, path, official)
        sd[key + a_suffix], sd[key + b_suffix] = a, b
        scale = 1.0
        if alpha_suffix:
            alpha = 2.0 + i  # a different alpha per module
            sd[key + alpha_suffix] = torch.tensor(alpha)
            scale = alpha / RANK
        expected[(component, path)] = scale * (b @ a)
    return sd, expected


def effective_delta(model, path: str, adapter: str) -> torch.Tensor:
    layer = model.get_submodule(path)
    return layer.scaling[adapter] * (layer.lora_B[adapter].weight @ layer.lora_A[adapter].weight)


def lora_layers(model, adapter: str) -> list[str]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return sorted(n for n, m in model.named_modules() if isinstance(m, BaseTunerLayer) and adapter in m.lora_A)


@pytest.fixture()
def pipe(tiny_components):
    return LTX2AudioVideoPipeline(scheduler=LTX2Scheduler(), guider=ClassifierFreeGuidance(1.0, 1.0),
                                  **tiny_components)


def _untouched(pipe) -> bool:
    return not getattr(pipe.transformer, "peft_config", None) and not getattr(pipe.connectors, "peft_config", None)


@torch.no_grad()
@pytest.mark.parametrize("layout", list(_SUFFIX))
@pytest.mark.parametrize("source", ["file", "dict"])
def test_every_layout_lands_at_the_right_scale(pipe, tmp_path, layout, source):
    sd, expected = make_lora(pipe, layout)
    if source == "file":
        path = tmp_path / "lora.safetensors"
        save_file(sd, str(path))
        pipe.load_lora_weights(str(path), adapter_name="x")
    else:
        pipe.load_lora_weights(sd, adapter_name="x")
    for component in ("transformer", "connectors"):
        assert lora_layers(getattr(pipe, component), "x") == sorted(p for c, p in expected if c == component)
    errors = [(effective_delta(getattr(pipe, c), p, "x") - d).abs().max().item() for (c, p), d in expected.items()]
    assert max(errors) < 1e-6, errors


@torch.no_grad()
def test_converted_file_loads_like_the_source(pipe, tmp_path):
    """`ltx2 convert-lora` uses the same step: the converted kohya file gives the same layers and deltas."""
    from diffusers_ltx2.cli.convert import main_convert_lora

    sd, expected = make_lora(pipe, "kohya")
    src, dst = tmp_path / "kohya.safetensors", tmp_path / "converted.safetensors"
    save_file(sd, str(src), metadata={"ss_reference_downscale_factor": "2"})
    assert main_convert_lora([str(src), str(dst)]) == 0
    pipe.load_lora_weights(str(dst), adapter_name="c")
    assert pipe.reference_downscale_factor == 2
    for (c, p), d in expected.items():
        torch.testing.assert_close(effective_delta(getattr(pipe, c), p, "c"), d, rtol=0, atol=1e-6)


def test_convert_lora_refuses_unknown_modules(tmp_path, capsys):
    from diffusers_ltx2.cli.convert import main_convert_lora

    sd = {"diffusion_model.transformer_blocks.0.attn1.to_q.lora_A.weight": torch.zeros(2, 4),
          "diffusion_model.transformer_blocks.0.attn1.to_q.lora_B.weight": torch.zeros(4, 2),
          "diffusion_model.transformer_blocks.0.attn1.to_gate_logits.lora_A.weight": torch.zeros(2, 4),  # 2.3: fine
          "diffusion_model.transformer_blocks.0.attn1.to_gate_logits.lora_B.weight": torch.zeros(2, 2),
          "down_blocks.0.resnets.0.conv1.lora_A.weight": torch.zeros(2, 4),  # an SD UNet module
          "down_blocks.0.resnets.0.conv1.lora_B.weight": torch.zeros(4, 2)}
    src, dst = tmp_path / "x.safetensors", tmp_path / "out.safetensors"
    save_file(sd, str(src))
    assert main_convert_lora([str(src), str(dst)]) == 2
    err = capsys.readouterr().err
    assert "down_blocks.0.resnets.0.conv1" in err and "no such module in LTX-2" in err
    assert "to_gate_logits" not in err  # a 2.3 module converts without a model at hand
    assert not dst.exists()


def test_ltx23_lora_on_a_20_model_is_refused_naming_the_cause(pipe, tmp_path):
    sd, _ = make_lora(pipe, "official", layers=LAYERS[:1])
    sd.update({
        "diffusion_model.transformer_blocks.0.attn1.to_gate_logits.lora_A.weight": torch.zeros(RANK, 16),
        "diffusion_model.transformer_blocks.0.attn1.to_gate_logits.lora_B.weight": torch.zeros(2, RANK),
        "diffusion_model.transformer_blocks.1.attn1.to_gate_logits.lora_A.weight": torch.zeros(RANK, 16),
        "diffusion_model.transformer_blocks.1.attn1.to_gate_logits.lora_B.weight": torch.zeros(2, RANK),
        "diffusion_model.prompt_adaln_single.linear.lora_A.weight": torch.zeros(RANK, 16),
        "diffusion_model.prompt_adaln_single.linear.lora_B.weight": torch.zeros(32, RANK),
    })
    path = tmp_path / "ltx23.safetensors"
    save_file(sd, str(path))
    with pytest.raises(ValueError) as info:
        pipe.load_lora_weights(str(path), adapter_name="v23")
    message = str(info.value)
    assert "made for LTX-2.3" in message and "exist only in LTX-2.3" in message
    assert "transformer_blocks.*.attn1.to_gate_logits" in message  # grouped by module
    assert "diffusion_model.prompt_adaln_single.linear.lora_A.weight" in message
    assert "3 of 4 modules" in message
    assert _untouched(pipe)


@pytest.mark.parametrize("case", ["deeper", "shape", "garbage", "half", "nan", "inf_alpha", "dora", "twice"])
def test_unfit_loras_raise_before_the_model_is_touched(pipe, case):
    sd, _ = make_lora(pipe, "official", layers=LAYERS[:2])
    good_a = "diffusion_model.transformer_blocks.0.attn1.to_q.lora_A.weight"
    expect = {
        "deeper": "block 7 does not exist (this model has 2 blocks)",
        "shape": "factor shapes do not fit",
        "garbage": "no such module in LTX-2",
        "half": "one of the two factors is missing",
        "nan": "NaN or inf",
        "inf_alpha": "NaN or inf",
        "dora": "not a LoRA factor",
        "twice": "two tensors for the same factor",
    }[case]
    if case == "deeper":
        sd["diffusion_model.transformer_blocks.7.attn1.to_q.lora_A.weight"] = torch.zeros(RANK, 16)
        sd["diffusion_model.transformer_blocks.7.attn1.to_q.lora_B.weight"] = torch.zeros(16, RANK)
    elif case == "shape":
        sd[good_a] = torch.zeros(RANK, 4096)
    elif case == "garbage":
        sd["lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight"] = torch.zeros(RANK, 16)
        sd["lora_te_text_model_encoder_layers_0_mlp_fc1.lora_up.weight"] = torch.zeros(16, RANK)
    elif case == "half":
        del sd["diffusion_model.transformer_blocks.0.attn1.to_q.lora_B.weight"]
    elif case == "nan":
        sd[good_a] = sd[good_a].clone()
        sd[good_a][0, 0] = float("nan")
    elif case == "inf_alpha":
        sd["diffusion_model.transformer_blocks.0.attn1.to_q.alpha"] = torch.tensor(float("inf"))
    elif case == "dora":
        sd["diffusion_model.transformer_blocks.0.attn1.to_q.lora_magnitude_vector"] = torch.ones(16)
    elif case == "twice":
        sd["diffusion_model.transformer_blocks.0.attn1.to_q.lora_A.default.weight"] = sd[good_a]
    with pytest.raises(ValueError, match="nothing was loaded") as info:
        pipe.load_lora_weights(sd, adapter_name="bad")
    assert expect in str(info.value)
    assert _untouched(pipe)
    # the pipeline still loads a good LoRA afterwards
    good, _ = make_lora(pipe, "official", layers=LAYERS[:2])
    pipe.load_lora_weights(good, adapter_name="good")


@pytest.mark.parametrize("name", ["", "   ", "a.b", 3])
def test_bad_adapter_names_are_refused_before_loading(pipe, name):
    sd, _ = make_lora(pipe, "official", layers=LAYERS[:1])
    with pytest.raises(ValueError, match="adapter_name"):
        pipe.load_lora_weights(sd, adapter_name=name)
    assert _untouched(pipe)


def test_empty_or_alpha_only_files_create_no_layer(pipe, tmp_path):
    with pytest.raises(ValueError, match="no tensors"):
        pipe.load_lora_weights({}, adapter_name="empty")
    with pytest.raises(ValueError, match="missing"):
        pipe.load_lora_weights({"lora_unet_transformer_blocks_0_attn1_to_q.alpha": torch.tensor(4.0)},
                               adapter_name="alpha")
    assert _untouched(pipe)


def test_missing_local_file_is_file_not_found(pipe, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for missing in ["missing.safetensors", str(tmp_path / "nope.safetensors"), "./models/lora", "models/loras/x"]:
        with pytest.raises(FileNotFoundError, match="LoRA file not found") as info:
            pipe.load_lora_weights(missing)
        assert missing.lstrip("./") in str(info.value)
    with pytest.raises(FileNotFoundError, match="absent.safetensors"):
        pipe.load_lora_weights(str(tmp_path), weight_name="absent.safetensors")


def test_kohya_reference_factor_is_read_and_contradictions_refused(pipe, tmp_path):
    sd, _ = make_lora(pipe, "kohya", layers=LAYERS[:1])
    path = tmp_path / "kohya_ic.safetensors"
    save_file(sd, str(path), metadata={"ss_reference_downscale_factor": "2"})
    pipe.load_lora_weights(str(path), adapter_name="k")
    assert pipe.reference_downscale_factor == 2 and pipe.ic_lora_adapters["k"].from_metadata
    both = tmp_path / "both.safetensors"
    save_file(sd, str(both), metadata={"ss_reference_downscale_factor": "2", "reference_downscale_factor": "2"})
    pipe.load_lora_weights(str(both), adapter_name="same")  # agreeing spellings are fine
    bad = tmp_path / "bad.safetensors"
    save_file(sd, str(bad), metadata={"ss_reference_downscale_factor": "2", "reference_downscale_factor": "4"})
    with pytest.raises(ValueError, match="disagrees"):
        pipe.load_lora_weights(str(bad), adapter_name="bad")
    assert "bad" not in pipe.transformer.peft_config


# ------------------------------------------------------------------------------------- diffusers metadata


def _run(pipe):
    return pipe("a cat", generator=torch.Generator().manual_seed(0), num_inference_steps=2, max_sequence_length=128,
                output_type="latent", **TINY_CLIP).frames


@torch.no_grad()
def test_diffusers_saved_lora_alpha_survives_unload_and_reload(pipe, tmp_path):
    """A LoRA trained with lora_alpha=16, r=4 (scale 4) and saved with diffusers' `save_lora_weights(...,
    transformer_lora_adapter_metadata=...)` gives the same output after unload + reload; without the
    metadata (scale 1) it would not."""
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    targets = ["transformer_blocks.0.attn1.to_q", "transformer_blocks.0.attn1.to_v", "transformer_blocks.1.ff.net.0.proj"]
    config = LoraConfig(r=RANK, lora_alpha=16, target_modules=targets, init_lora_weights=False)
    pipe.transformer.add_adapter(config, adapter_name="trained")
    before = _run(pipe)
    layers = get_peft_model_state_dict(pipe.transformer, adapter_name="trained")
    LTX2AudioVideoPipeline.save_lora_weights(tmp_path, transformer_lora_layers=layers,
                                             transformer_lora_adapter_metadata=config.to_dict())
    pipe.transformer.delete_adapters("trained")
    plain = _run(pipe)
    pipe.load_lora_weights(str(tmp_path), weight_name="pytorch_lora_weights.safetensors", adapter_name="reloaded")
    after = _run(pipe)
    print(f"alpha round trip: max |after - before| = {(after - before).abs().max():.2e}, "
          f"LoRA effect {(before - plain).abs().max():.2e}")
    torch.testing.assert_close(after, before, rtol=0, atol=1e-6)
    assert pipe.transformer.get_submodule(targets[0]).scaling["reloaded"] == 16 / RANK

    # the same tensors without the metadata load at scale 1: a different output
    pipe.unload_lora_weights()
    no_meta = {f"transformer.{k}": v for k, v in layers.items()}
    pipe.load_lora_weights(no_meta, adapter_name="no_meta")
    assert (_run(pipe) - before).abs().max() > 1e-3


def test_adapter_metadata_rank_must_match_the_factors(pipe, tmp_path):
    sd, _ = make_lora(pipe, "diffusers", layers=LAYERS[:1])
    path = tmp_path / "lora.safetensors"
    meta = {"lora_adapter_metadata": json.dumps({"transformer.r": 8, "transformer.lora_alpha": 8})}
    save_file(sd, str(path), metadata=meta)
    with pytest.raises(ValueError, match="rank 8"):
        pipe.load_lora_weights(str(path), adapter_name="x")
    assert _untouched(pipe)
    both = {**make_lora(pipe, "kohya", layers=LAYERS[:1])[0]}
    path2 = tmp_path / "both.safetensors"
    save_file(both, str(path2), metadata={"lora_adapter_metadata": json.dumps({"transformer.r": RANK,
                                                                                "transformer.lora_alpha": 8})})
    with pytest.raises(ValueError, match="alpha given twice"):
        pipe.load_lora_weights(str(path2), adapter_name="y")


@torch.no_grad()
def test_diffusers_converter_leftovers_and_hotswap(pipe):
    """Keys diffusers' own converter writes for official connector blocks (`transformer.video_embeddings_connector
    ...`) land in the connectors; a hotswap replaces the factors in place."""
    sd, expected = make_lora(pipe, "official", layers=LAYERS[5:6] + LAYERS[:1])
    moved = {("transformer." + k.removeprefix("diffusion_model.")): v for k, v in sd.items()}
    pipe.load_lora_weights(moved, adapter_name="x")
    for (c, p), d in expected.items():
        torch.testing.assert_close(effective_delta(getattr(pipe, c), p, "x"), d, rtol=0, atol=1e-6)
    sd2, expected2 = make_lora(pipe, "official", seed=5, layers=LAYERS[5:6] + LAYERS[:1])
    pipe.load_lora_weights(sd2, adapter_name="x", hotswap=True)
    for (c, p), d in expected2.items():
        torch.testing.assert_close(effective_delta(getattr(pipe, c), p, "x"), d, rtol=0, atol=1e-6)


@torch.no_grad()
def test_convert_lora_keeps_diffusers_adapter_metadata(pipe, tmp_path):
    """A diffusers file with lora_alpha=16, r=4 keeps its scale (4) through `ltx2 convert-lora` and loading."""
    from diffusers_ltx2.cli.convert import main_convert_lora

    sd, expected = make_lora(pipe, "diffusers", layers=LAYERS[:2])
    src, dst = tmp_path / "d.safetensors", tmp_path / "converted.safetensors"
    save_file(sd, str(src), metadata={"lora_adapter_metadata": json.dumps(
        {"transformer.r": RANK, "transformer.lora_alpha": 16, "transformer.target_modules": ["to_q"]})})
    assert main_convert_lora([str(src), str(dst)]) == 0
    pipe.load_lora_weights(str(dst), adapter_name="m")
    for (c, p), d in expected.items():
        torch.testing.assert_close(effective_delta(getattr(pipe, c), p, "m"), 4 * d, rtol=0, atol=1e-6)
    assert lora_layers(pipe.transformer, "m") == sorted(p for _, p in expected)  # not every "to_q" of the model


def test_unknown_keyword_arguments_are_refused_before_loading(pipe):
    sd, _ = make_lora(pipe, "official", layers=LAYERS[:1])
    with pytest.raises(TypeError, match="weight_nmae"):
        pipe.load_lora_weights(sd, adapter_name="x", weight_nmae="lora.safetensors")
    assert _untouched(pipe)
    pipe.load_lora_weights(sd, adapter_name="x", weight_name="ignored for a dict", low_cpu_mem_usage=False)
