"""Community GGUF LTX-2 transformer files: built here with the `gguf` package (llama.cpp's writer and numpy
codec, a peer we did not write) from ltx-core's own transformer (official key names), loaded through diffusers'
GGUF support, with LoRAs."""

from __future__ import annotations

import copy
import json
import logging

import pytest
import torch

pytest.importorskip("gguf")

import gguf_files as gf  # noqa: E402
from diffusers_ltx2.conversion.configs import transformer_config  # noqa: E402
from diffusers_ltx2.conversion.keymap import map_transformer_key  # noqa: E402
from diffusers_ltx2.quantization import transformer_quantization  # noqa: E402
from diffusers_ltx2.quantization.gguf import gguf_linear_names, load_gguf_transformer  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")

CONFIG_23 = copy.deepcopy(gf.cc.CONFIGS["2.3"])
CONFIG_23["transformer"].update(attention_head_dim=16, cross_attention_dim=32, audio_attention_head_dim=16,
                                audio_cross_attention_dim=32)
CONFIGS = {"2.0": gf.GGUF_CONFIG, "2.3": CONFIG_23}


def _config_folder(path, version):
    (path / "transformer").mkdir(parents=True)
    cfg = {"_class_name": "LTX2VideoTransformer3DModel", **transformer_config(CONFIGS[version], version)}
    (path / "transformer" / "config.json").write_text(json.dumps(cfg))
    return path


@pytest.mark.parametrize("version,qtype", [("2.0", "Q8_0"), ("2.0", "Q4_0"), ("2.3", "Q8_0")])
def test_gguf_file_loads_with_its_block_types(version, qtype, tmp_path):
    """Every tensor lands on its diffusers parameter: the quantized block linears as `GGUFLinear`s whose weights
    diffusers decodes as the gguf package does, the rest as plain tensors, exactly; a `model.diffusion_model.`
    prefix (official single-file naming) loads the same. (diffusers 0.42.1 multiplies a block's float16 scale by
    its int8 values in float16, the gguf package in float32: one float16 rounding apart, <= 2^-11 relative.)"""
    from diffusers.quantizers.gguf.utils import GGUFLinear, dequantize_gguf_tensor

    sd = gf.official_transformer_state_dict(CONFIGS[version])
    kinds = gf.write_gguf(tmp_path / "t.gguf", sd, qtype)
    peer = gf.dequantized_state_dict(tmp_path / "t.gguf")
    model = load_gguf_transformer(tmp_path / "t.gguf", _config_folder(tmp_path / "cfg", version), dtype=torch.float32)
    assert transformer_quantization(model) == f"gguf-{qtype}"
    quantized = {map_transformer_key(k).removesuffix(".weight") for k, v in kinds.items() if v == qtype}
    assert set(gguf_linear_names(model)) == quantized and len(quantized) >= 2 * 28
    params = dict(model.named_parameters()) | dict(model.named_buffers())
    for key, value in peer.items():
        target = map_transformer_key(key)
        module = model.get_submodule(target.rpartition(".")[0])
        if isinstance(module, GGUFLinear) and target.endswith(".weight"):
            got = dequantize_gguf_tensor(params[target]).float()
            assert ((got - value).abs() <= value.abs() * 2**-11 + 2**-24).all(), key
        else:
            torch.testing.assert_close(params[target].float(), value, rtol=0, atol=0, msg=key)
    if version == "2.0":
        gf.write_gguf(tmp_path / "prefixed.gguf", sd, qtype, prefix="model.diffusion_model.")
        again = load_gguf_transformer(tmp_path / "prefixed.gguf", tmp_path / "cfg", dtype=torch.float32)
        assert set(gguf_linear_names(again)) == quantized


def test_bad_gguf_files_are_refused_with_the_reason(tmp_path):
    sd = gf.official_transformer_state_dict()
    folder = _config_folder(tmp_path / "cfg", "2.0")
    with pytest.raises(FileNotFoundError):
        load_gguf_transformer(tmp_path / "missing.gguf", folder)
    (tmp_path / "x.gguf").write_bytes(b"not gguf at all")
    with pytest.raises(ValueError, match="not a GGUF file"):
        load_gguf_transformer(tmp_path / "x.gguf", folder)
    gf.write_gguf(tmp_path / "other.gguf", {k: v for k, v in sd.items() if not k.startswith("transformer_blocks.1.")})
    with pytest.raises(ValueError, match=r"does not fit.*parameters missing.*transformer_blocks\.1"):
        load_gguf_transformer(tmp_path / "other.gguf", folder)
    wide = gf.official_transformer_state_dict(gf.cc.CONFIGS["2.0"])  # the 16-wide model: other shapes
    gf.write_gguf(tmp_path / "wide.gguf", wide)
    with pytest.raises(ValueError, match="shape mismatches"):
        load_gguf_transformer(tmp_path / "wide.gguf", folder)


@pytest.fixture(scope="module")
def gguf_pipeline_files(tmp_path_factory):
    """A diffusers folder converted from an official checkpoint at the GGUF width, and a Q8_0 GGUF of the same
    transformer weights (connector tensors included, as the official DiT prefix holds them)."""
    from official_checkpoints import official_state_dict, write_official_checkpoint
    from test_conversion_pipeline import _consistent_config

    from diffusers_ltx2.conversion import convert_single_file

    root = tmp_path_factory.mktemp("gguf")
    config = _consistent_config("2.0")
    config["transformer"].update(attention_head_dim=16, cross_attention_dim=32, audio_attention_head_dim=16,
                                 audio_cross_attention_dim=32)
    write_official_checkpoint(root / "official.safetensors", "2.0", seed=3, config=config)
    folder = convert_single_file(root / "official.safetensors", root / "folder", progress=False)
    sd = official_state_dict(config, seed=3)
    prefix = "model.diffusion_model."
    dit = {k.removeprefix(prefix): v for k, v in sd.items() if k.startswith(prefix)}
    gf.write_gguf(root / "t.gguf", dit, "Q8_0", prefix=prefix)
    return folder, root / "t.gguf"


def _run(pipe, **kw):
    from test_conversion_pipeline import _embeddings

    from diffusers_ltx2.guiders import ClassifierFreeGuidance

    out = pipe(prompt_embeds=_embeddings(pipe), height=64, width=64, num_frames=9, num_inference_steps=2,
               output_type="latent", guider=ClassifierFreeGuidance(1.0, 1.0),
               generator=torch.Generator().manual_seed(0), **kw)
    return torch.cat([out.frames.float().flatten(), out.audio.float().flatten()])


def test_gguf_pipeline_with_a_lora(gguf_pipeline_files, tmp_path, caplog):
    """`from_pretrained(folder, gguf_file=...)`: the GGUF transformer replaces the folder's; it runs within Q8_0
    rounding of the folder's weights; a LoRA is an exact side path on the GGUFLinears, its effect within Q8_0
    rounding of the unquantized model's; fusion re-quantizes to Q8_0 with the gguf package; saving is refused
    before anything is written."""
    from diffusers_ltx2 import LTX2AudioVideoPipeline
    from diffusers_ltx2.quantization.lora import base_format
    from test_ic_lora_loading import write_lora

    folder, path = gguf_pipeline_files
    plain = LTX2AudioVideoPipeline.from_pretrained(folder, dtype=torch.float32)
    with caplog.at_level(logging.INFO, logger="diffusers_ltx2.quantization.gguf"):
        pipe = LTX2AudioVideoPipeline.from_pretrained(folder, gguf_file=str(path), dtype=torch.float32)
    assert "text-connector tensors ignored" in caplog.text
    assert transformer_quantization(pipe.transformer) == "gguf-Q8_0"
    for p in (plain, pipe):
        p.set_progress_bar_config(disable=True)
    ref, base = _run(plain), _run(pipe)
    # Q8_0: 8-bit steps of amax / 127 per block of 32 -> ~0.4% rms per weight; measured 0.0062 on the latents
    assert 0 < ((base - ref).norm() / ref.norm()).item() < 0.0125
    lora = tmp_path / "l.safetensors"
    write_lora(lora, plain.transformer, blocks=(0, 1))
    for p in (plain, pipe):
        p.load_lora_weights(str(lora), adapter_name="style", reference_downscale_factor=1)
    layer = pipe.transformer.transformer_blocks[1].attn1.to_q
    assert base_format(layer.base_layer) == "gguf" and type(layer.base_layer.weight).__name__ == "GGUFParameter"
    x = torch.randn(2, 3, layer.in_features)
    side = torch.nn.functional.linear(torch.nn.functional.linear(x, layer.lora_A["style"].weight),
                                      layer.lora_B["style"].weight)
    torch.testing.assert_close(layer(x), layer.base_layer(x) + side, rtol=0, atol=0)
    delta, ref_delta = _run(pipe) - base, _run(plain) - ref
    # measured 0.0103: the same side path on a base within Q8_0 rounding of the unquantized one
    assert ((delta - ref_delta).norm() / ref_delta.norm()).item() < 0.02
    unfused = _run(pipe)
    pipe.fuse_lora()
    assert type(layer.base_layer.weight).__name__ == "GGUFParameter"
    assert ((_run(pipe) - unfused).norm() / ref_delta.norm()).item() < 0.0085  # measured 0.0042: one Q8_0 rounding
    with pytest.raises(NotImplementedError, match="GGUF"):
        pipe.save_pretrained(tmp_path / "saved")
    assert not (tmp_path / "saved").exists()


def test_cli_transformer_gguf_generates_and_plans(gguf_pipeline_files, tmp_path, capsys):
    """`ltx2 generate --transformer-gguf FILE` (a saved conditioning instead of Gemma, which does not ship with
    official files); with `--vram-budget` the plan keeps the file's format and chooses the rest; a GGUF together
    with --quantize is refused with one line."""
    from test_conversion_pipeline import _embeddings

    from diffusers_ltx2 import LTX2AudioVideoPipeline
    from diffusers_ltx2.cli import main
    from diffusers_ltx2.loaders.conditioning_file import save_conditioning

    folder, path = gguf_pipeline_files
    pipe = LTX2AudioVideoPipeline.from_pretrained(folder, dtype=torch.float32)
    cond = save_conditioning(tmp_path / "c.safetensors", _embeddings(pipe))
    out = tmp_path / "o.mp4"
    base = ["generate", "--model", str(folder), "--conditioning", str(cond), "--negative-conditioning", str(cond),
            "--output", str(out), "--num-frames", "9", "--height", "64", "--width", "64", "--steps", "1", "--dtype",
            "fp32", "--device", "cpu", "--cfg", "1", "--stg", "0", "--modality-scale", "1", "--transformer-gguf",
            str(path)]
    capsys.readouterr()
    assert main(base + ["--vram-budget", "8GB"]) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "quantization: gguf-Q8_0" in printed and out.is_file()
    assert main(base + ["--quantize", "fp8-cast"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--transformer-gguf" in err[0]
