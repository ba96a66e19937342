"""Model files at their edges (issue 19 E, G): an FP8 single file loaded with fp8-cast keeps its own float8 weights;
float8 LoRA factors, a truncated or incomplete fp8-cast folder, a VAE passed as the latent upsampler, an upsampler
with NaN weights and an absurd IC-LoRA reference factor are refused with ValueError / OSError (exit 2 on the
command line) naming the problem, instead of NotImplementedError, SafetensorError, AttributeError or acceptance;
and a plain LoRA in the plain pipeline gets no IC-LoRA notice."""

from __future__ import annotations

import copy
import json
import logging
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from diffusers_ltx2 import ClassifierFreeGuidance, LTX2AudioVideoPipeline, LTX2Scheduler
from diffusers_ltx2.cli import main

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


# ---- E: an FP8 single file with quantization="fp8-cast" ---------------------------------------------------


def _fp8_single_file(path):
    """Tiny official 2.0 file (fp32) whose block-0 linear weights are float8_e4m3fn with per-tensor scales, as the
    official FP8 checkpoints are; returns {official key: (float8 weight, scale)}."""
    from official_checkpoints import official_state_dict
    from test_conversion_pipeline import _consistent_config

    config = _consistent_config("2.0")
    sd = official_state_dict(config, seed=3)
    quantized = {}
    for key in list(sd):
        if key.startswith("model.diffusion_model.transformer_blocks.0.") and key.endswith(".weight") \
                and sd[key].ndim == 2:
            w = sd[key].float()
            scale = w.abs().max() / torch.finfo(torch.float8_e4m3fn).max
            sd[key] = (w / scale).to(torch.float8_e4m3fn)
            sd[key.removesuffix(".weight") + ".weight_scale"] = scale.reshape(())
            quantized[key] = (sd[key], scale)
    save_file(sd, str(path), metadata={"config": json.dumps(config), "model_version": "2.0.0"})
    return quantized


def test_fp8_file_with_fp8_cast_keeps_the_files_float8_weights(tmp_path, caplog):
    from diffusers_ltx2.conversion.fp8 import FP8ScaledLinear
    from diffusers_ltx2.quantization import transformer_quantization

    src = tmp_path / "ltx-2-fp8.safetensors"
    quantized = _fp8_single_file(src)
    with caplog.at_level(logging.WARNING, logger="diffusers_ltx2.quantization.loading"):
        pipe = LTX2AudioVideoPipeline.from_single_file(src, quantization="fp8-cast", dtype=torch.float32,
                                                       progress=False)
    assert "already holds" in caplog.text and "float8" in caplog.text
    kept = pipe.transformer.transformer_blocks[0].attn1.to_q
    w8, scale = quantized["model.diffusion_model.transformer_blocks.0.attn1.to_q.weight"]
    assert isinstance(kept, FP8ScaledLinear)
    assert torch.equal(kept.weight.view(torch.uint8), w8.view(torch.uint8))  # the file's bytes, not a re-cast
    assert kept.weight_scale.item() == scale.item()
    cast = pipe.transformer.transformer_blocks[1].attn1.to_q  # high precision in the file: cast by fp8-cast
    assert isinstance(cast, FP8ScaledLinear) and cast.weight.dtype == torch.float8_e4m3fn
    assert cast.weight_scale.item() == 1.0
    assert transformer_quantization(pipe.transformer) == "fp8-cast"

    # the kept layer computes with the file's dequantized weights exactly; dequantize-then-cast rounds twice
    x = torch.randn(3, kept.in_features, generator=torch.Generator().manual_seed(0))
    exact = torch.nn.functional.linear(x, w8.float() * scale, kept.bias)
    torch.testing.assert_close(kept(x), exact, rtol=0, atol=0)
    twice = LTX2AudioVideoPipeline.from_single_file(src, quantization="fp8-cast", fp8="dequantize",
                                                    dtype=torch.float32, progress=False)
    recast = twice.transformer.transformer_blocks[0].attn1.to_q
    assert recast.weight_scale.item() == 1.0 and not torch.equal(recast(x), exact)


def test_fp8_keep_is_refused_with_quanto_modes(tmp_path):
    src = tmp_path / "ltx-2-fp8.safetensors"
    _fp8_single_file(src)
    with pytest.raises(ValueError, match="fp8='keep' already loads float8"):
        LTX2AudioVideoPipeline.from_single_file(src, quantization="int8", fp8="keep", progress=False)


# ---- G: float8 LoRA factors ---------------------------------------------------------------------------


@pytest.fixture()
def plain_pipe(tiny_components):
    return LTX2AudioVideoPipeline(scheduler=LTX2Scheduler(), guider=ClassifierFreeGuidance(1.0, 1.0),
                                  **tiny_components)


def test_float8_lora_factors_are_refused(plain_pipe, tmp_path):
    from two_stage_files import write_official_lora

    sd = write_official_lora(tmp_path / "lora.safetensors", plain_pipe.transformer, seed=1)
    f8 = tmp_path / "lora-fp8.safetensors"
    save_file({k: v.to(torch.float8_e4m3fn) for k, v in sd.items()}, str(f8))
    with pytest.raises(ValueError, match="float8_e4m3fn.*must be float16, bfloat16 or float32"):
        plain_pipe.load_lora_weights(str(f8), adapter_name="f8")
    assert not getattr(plain_pipe.transformer, "peft_config", None)  # nothing was loaded
    assert main(["convert-lora", str(f8), str(tmp_path / "out.safetensors")]) == 2
    assert not (tmp_path / "out.safetensors").exists()


# ---- G: IC-LoRA reference factors ----------------------------------------------------------------------


@pytest.mark.parametrize("value,message", [("1e9", "whole-number notation"), ("128", "no larger than 64"),
                                           ("0", "positive integer"), ("2.5", "whole-number notation")])
def test_absurd_reference_factors_in_metadata_are_refused(plain_pipe, tmp_path, value, message):
    from two_stage_files import write_official_lora

    sd = write_official_lora(tmp_path / "lora.safetensors", plain_pipe.transformer, seed=1)
    path = tmp_path / "ic.safetensors"
    save_file(sd, str(path), metadata={"reference_downscale_factor": value})
    with pytest.raises(ValueError, match=message):
        plain_pipe.load_lora_weights(str(path), adapter_name="ic")
    with pytest.raises(ValueError, match="no larger than 64"):
        plain_pipe.load_lora_weights(sd, adapter_name="ic", reference_downscale_factor=10**9)
    assert not getattr(plain_pipe.transformer, "peft_config", None)


def test_reference_factors_in_range_load(plain_pipe, tmp_path):
    from two_stage_files import write_official_lora

    sd = write_official_lora(tmp_path / "lora.safetensors", plain_pipe.transformer, seed=1)
    path = tmp_path / "ic.safetensors"
    save_file(sd, str(path), metadata={"reference_downscale_factor": "2", "reference_temporal_scale_factor": "1.0"})
    plain_pipe.load_lora_weights(str(path), adapter_name="ic")
    assert plain_pipe.reference_downscale_factor == 2 and plain_pipe.reference_temporal_scale_factor == 1


def test_plain_lora_gets_the_ic_lora_notice_only_in_ic_lora_pipelines(tiny_components, tmp_path, caplog):
    from two_stage_files import write_official_lora

    from diffusers_ltx2 import LTX2ICLoRAPipeline

    plain = LTX2AudioVideoPipeline(scheduler=LTX2Scheduler(), guider=ClassifierFreeGuidance(1.0, 1.0),
                                   **copy.deepcopy(tiny_components))
    path = tmp_path / "style.safetensors"
    write_official_lora(path, plain.transformer, seed=1)
    with caplog.at_level(logging.WARNING, logger="diffusers_ltx2.loaders.lora"):
        plain.load_lora_weights(str(path), adapter_name="style")
    assert "reference_downscale_factor" not in caplog.text
    ic = LTX2ICLoRAPipeline(scheduler=LTX2Scheduler(), guider=ClassifierFreeGuidance(1.0, 1.0), **tiny_components)
    with caplog.at_level(logging.WARNING, logger="diffusers_ltx2.loaders.lora"):
        ic.load_lora_weights(str(path), adapter_name="style")
    assert "no reference_downscale_factor" in caplog.text


# ---- G: a truncated / incomplete fp8-cast folder ------------------------------------------------------------


@pytest.fixture()
def fp8_folder(plain_pipe, tmp_path):
    from diffusers_ltx2.quantization import quantize_transformer_

    quantize_transformer_(plain_pipe.transformer, "fp8-cast")
    folder = tmp_path / "fp8-cast"
    plain_pipe.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("damage", ["truncated", "header", "no_manifest"])
def test_damaged_fp8_cast_folder_is_an_oserror_naming_the_file(fp8_folder, damage, capsys):
    weights = fp8_folder / "transformer" / "diffusion_pytorch_model.safetensors"
    if damage == "truncated":
        os.truncate(weights, os.path.getsize(weights) // 2)
        match = "diffusion_pytorch_model.safetensors: not a readable safetensors file"
    elif damage == "header":
        os.truncate(weights, 5)
        match = "diffusion_pytorch_model.safetensors: not a readable safetensors file"
    else:
        (fp8_folder / "transformer" / "ltx2_fp8.json").unlink()
        match = "no ltx2_fp8.json"
    with pytest.raises(OSError, match=match):
        LTX2AudioVideoPipeline.from_pretrained(fp8_folder)
    code = main(["generate", "--model", str(fp8_folder), "--prompt", "a cat", "--output",
                 str(fp8_folder.parent / "out.mp4"), "--num-frames", "9", "--height", "64", "--width", "64",
                 "--steps", "1", "--dtype", "fp32", "--device", "cpu", "--max-sequence-length", "128"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "error:" in err[0]
    assert not (fp8_folder.parent / "out.mp4").exists()


# ---- G: the latent upsampler -------------------------------------------------------------------------------


def _two_stage(components, upsampler):
    from diffusers_ltx2 import LTX2TwoStagePipeline

    return LTX2TwoStagePipeline(scheduler=LTX2Scheduler(), guider=ClassifierFreeGuidance(1.0, 1.0),
                                latent_upsampler=upsampler, **components)


def test_a_vae_is_not_a_latent_upsampler(tiny_components):
    vae = copy.deepcopy(tiny_components["vae"])
    with pytest.raises(ValueError, match="must be diffusers' LTX2LatentUpsamplerModel.*got AutoencoderKLLTX2Video"):
        _two_stage(tiny_components, vae)


def test_upsampler_for_other_latents_or_with_nan_weights_is_refused(tiny_components, tmp_path):
    from diffusers.pipelines.ltx2.latent_upsampler import LTX2LatentUpsamplerModel
    from upsampler_files import tiny_upsampler_config, write_official_upsampler

    from diffusers_ltx2.conversion.upsampler import load_official_upsampler

    channels = tiny_components["vae"].config.latent_channels
    other = LTX2LatentUpsamplerModel(in_channels=channels * 2, mid_channels=32, num_blocks_per_stage=1)
    with pytest.raises(ValueError, match=f"takes {2 * channels}-channel latents"):
        _two_stage(tiny_components, other)
    good = LTX2LatentUpsamplerModel(in_channels=channels, mid_channels=32, num_blocks_per_stage=1)
    with torch.no_grad():
        good.final_conv.bias[0] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf values in 1 tensors.*final_conv.bias"):
        _two_stage(tiny_components, good)
    # the same from an official file
    config = tiny_upsampler_config(channels)
    write_official_upsampler(tmp_path / "up.safetensors", config, seed=1)
    sd = load_file(str(tmp_path / "up.safetensors"))
    key = sorted(sd)[0]
    sd[key] = torch.full_like(sd[key], float("inf"))
    save_file(sd, str(tmp_path / "inf.safetensors"), metadata={"config": json.dumps(config)})
    with pytest.raises(ValueError, match="NaN or inf"):
        load_official_upsampler(tmp_path / "inf.safetensors")


@pytest.mark.parametrize("which", ["vae_folder", "nan_file"])
def test_cli_refuses_a_bad_upsampler_with_exit_2(tiny_pipe, tmp_path, capsys, which):
    from two_stage_files import write_official_lora
    from upsampler_files import tiny_upsampler_config, write_official_upsampler

    folder = tmp_path / "model"
    tiny_pipe.save_pretrained(folder)
    lora = tmp_path / "distilled.safetensors"
    write_official_lora(lora, tiny_pipe.transformer, seed=3)
    if which == "vae_folder":
        upsampler, message = folder / "vae", "AutoencoderKLLTX2Video folder, not a latent upsampler"
    else:
        config = tiny_upsampler_config(tiny_pipe.vae.config.latent_channels)
        write_official_upsampler(tmp_path / "up.safetensors", config, seed=1)
        sd = load_file(str(tmp_path / "up.safetensors"))
        sd["final_conv.bias"] = sd["final_conv.bias"] * float("nan")
        upsampler, message = tmp_path / "nan.safetensors", "NaN or inf values"
        save_file(sd, str(upsampler), metadata={"config": json.dumps(config)})
    out = tmp_path / "out.mp4"
    code = main(["generate", "--model", str(folder), "--prompt", "a cat", "--output", str(out), "--num-frames", "9",
                 "--height", "128", "--width", "128", "--steps", "1", "--dtype", "fp32", "--device", "cpu",
                 "--max-sequence-length", "128", "--two-stage", "--upsampler", str(upsampler),
                 "--distilled-lora", str(lora)])
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # after the loading progress bars: one error line, no traceback
    assert code == 2 and "Traceback" not in err
    assert last.startswith("ltx2 generate: error:") and message in last
    assert not out.exists()
