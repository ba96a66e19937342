"""torchao backend: the same `quantization=` argument, the policy's layers, save / reload, and clear refusals of
the formats this machine cannot run (measured on torch 2.13 CPU + torchao 0.18: int4, float8 dynamic, NVFP4 /
MX dynamic need CUDA). The GPU formats run in the tests marked for CUDA when a GPU is present."""

from __future__ import annotations

import pytest
import torch

from diffusers_ltx2.factory import TINY_CLIP
from diffusers_ltx2.memory_modes import TORCHAO_MODES
from diffusers_ltx2.quantization import (
    check_quantized_runtime, quantize_transformer_, quantized_linear_names, transformer_quantization,
)
from diffusers_ltx2.quantization.torchao_backend import TORCHAO_FORMATS, torchao_linear_names

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")

GPU_ONLY = [m for m, spec in TORCHAO_FORMATS.items() if spec.cuda_only]
CPU_OK = [m for m, spec in TORCHAO_FORMATS.items() if not spec.cuda_only]


def _pipe(components):
    from diffusers_ltx2 import ClassifierFreeGuidance, LTX2AudioVideoPipeline, LTX2Scheduler

    return LTX2AudioVideoPipeline(scheduler=LTX2Scheduler(), guider=ClassifierFreeGuidance(1.0, 1.0), **components)


def _latents(pipe, device="cpu"):
    out = pipe("a cat", num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="latent",
               **TINY_CLIP)
    return out.frames.float().cpu(), out.audio.float().cpu()


def test_modes_are_the_cli_names_and_each_gpu_mode_names_its_requirement():
    assert tuple(TORCHAO_FORMATS) == TORCHAO_MODES
    assert GPU_ONLY == ["torchao-int4", "torchao-fp8", "torchao-nvfp4", "torchao-mxfp8"]
    assert all(TORCHAO_FORMATS[m].requirement for m in GPU_ONLY)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without a CUDA GPU")
@pytest.mark.parametrize("mode", GPU_ONLY)
def test_gpu_formats_are_refused_before_anything_loads(mode, tmp_path):
    from diffusers_ltx2 import LTX2AudioVideoPipeline

    requirement = TORCHAO_FORMATS[mode].requirement.split(" (")[0]
    with pytest.raises(ValueError, match=rf"{mode}.*needs {requirement}.*no CUDA GPU"):
        LTX2AudioVideoPipeline.from_pretrained(tmp_path / "missing", quantization=mode)  # the folder is never read
    with pytest.raises(ValueError, match="needs"):
        check_quantized_runtime(mode, "cpu", torch.bfloat16)


def test_cli_refuses_a_gpu_format_with_one_line(tiny_pipe, tmp_path, capsys):
    from diffusers_ltx2.cli import main

    if torch.cuda.is_available():
        pytest.skip("the refusal is for machines without a CUDA GPU")
    tiny_pipe.save_pretrained(tmp_path / "m")
    capsys.readouterr()
    rc = main(["generate", "--model", str(tmp_path / "m"), "--prompt", "a cat", "--output",
               str(tmp_path / "o.mp4"), "--quantize", "torchao-fp8", "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "compute capability >= 8.9" in err[0]


@pytest.mark.parametrize("mode", ["torchao-int8", "torchao-fp8-weight"])
def test_quantize_at_load_saves_and_reloads(mode, tiny_components, tmp_path):
    """Quantize-at-load (diffusers TorchAoConfig, tensor by tensor) quantizes the policy's layers exactly like the
    in-memory path; the folder saves torchao tensors to safetensors and reloads them bit for bit."""
    from diffusers_ltx2 import LTX2AudioVideoPipeline

    _pipe(tiny_components).save_pretrained(tmp_path / "bf16")
    pipe = LTX2AudioVideoPipeline.from_pretrained(tmp_path / "bf16", quantization=mode, dtype=torch.float32)
    t = pipe.transformer
    assert transformer_quantization(t) == mode
    assert torchao_linear_names(t) == quantized_linear_names(tiny_components["transformer"])
    mem = tiny_components["transformer"]
    quantize_transformer_(mem, mode)
    for n in torchao_linear_names(t):
        torch.testing.assert_close(t.get_submodule(n).weight.dequantize(), mem.get_submodule(n).weight.dequantize(),
                                   rtol=0, atol=0)
    before = _latents(pipe)
    pipe.save_pretrained(tmp_path / "q")
    back = LTX2AudioVideoPipeline.from_pretrained(tmp_path / "q", dtype=torch.float32)
    assert transformer_quantization(back.transformer) == mode
    for n in torchao_linear_names(t):
        a, b = t.get_submodule(n).weight, back.transformer.get_submodule(n).weight
        assert type(a) is type(b)
        torch.testing.assert_close(a.dequantize(), b.dequantize(), rtol=0, atol=0)
    for a, b in zip(_latents(back), before):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="already quantized"):
        LTX2AudioVideoPipeline.from_pretrained(tmp_path / "q", quantization="torchao-int8")


def test_nvfp4_weight_only_needs_rows_of_16():
    """NVFP4 blocks are 16 values: the tiny model's 8-wide audio stream is refused before quantizing (torchao
    would raise half-way); a model 16 wide everywhere quantizes, within e2m1 rounding of the weights."""
    from diffusers import LTX2VideoTransformer3DModel

    from diffusers_ltx2.factory import TINY, build_components

    tiny = build_components(TINY, seed=0)["transformer"]
    with pytest.raises(ValueError, match=r"torchao-nvfp4-weight.*multiples of 16.*audio"):
        quantize_transformer_(tiny, "torchao-nvfp4-weight")
    assert transformer_quantization(tiny) is None  # nothing was quantized
    torch.manual_seed(0)
    model = LTX2VideoTransformer3DModel(num_layers=1, num_attention_heads=2, attention_head_dim=16,
                                        cross_attention_dim=32, audio_num_attention_heads=2,
                                        audio_attention_head_dim=16, audio_cross_attention_dim=32, caption_channels=32,
                                        in_channels=16, out_channels=16, audio_in_channels=16, audio_out_channels=16)
    ref = {n: model.get_submodule(n).weight.detach().clone() for n in quantized_linear_names(model)}
    quantize_transformer_(model, "torchao-nvfp4-weight")
    assert transformer_quantization(model) == "torchao-nvfp4-weight"
    for n, w in ref.items():
        # e2m1 has 1 mantissa bit, one e4m3 scale per block of 16 (measured 9.5% - 10.5% relative L2 per layer)
        rel = ((model.get_submodule(n).weight.dequantize() - w).norm() / w.norm()).item()
        assert 0 < rel < 0.2, (n, rel)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="GPU formats: need CUDA")
@pytest.mark.parametrize("mode", GPU_ONLY)
def test_gpu_formats_run_on_a_capable_gpu(mode):
    from diffusers import LTX2VideoTransformer3DModel

    from diffusers_ltx2.quantization.torchao_backend import check_torchao_machine

    try:
        check_torchao_machine(mode, torch.bfloat16)
    except ValueError as err:
        pytest.skip(str(err))
    torch.manual_seed(0)
    model = LTX2VideoTransformer3DModel(num_layers=1, num_attention_heads=2, attention_head_dim=64,
                                        cross_attention_dim=128, audio_num_attention_heads=2,
                                        audio_attention_head_dim=64, audio_cross_attention_dim=128,
                                        caption_channels=128).to("cuda", torch.bfloat16)
    lin = model.get_submodule(quantized_linear_names(model)[0])
    x = torch.randn(64, lin.in_features, device="cuda", dtype=torch.bfloat16)
    ref = lin(x).float()
    quantize_transformer_(model, mode)
    assert transformer_quantization(model) == mode
    rel = ((lin(x).float() - ref).norm() / ref.norm()).item()
    assert rel < 0.2, rel
