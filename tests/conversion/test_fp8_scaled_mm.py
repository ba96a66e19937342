"""Official fp8-scaled-mm: float8 weights and activations through `torch._scaled_mm`, equal to ltx-core's ops.

ltx-core 1.0.0 (installed) gives the weight quantization and the layers kept in bf16; its forward calls
TensorRT-LLM ops that do not exist here. ltx-core 1.2.0 (`../shared`, run in a subprocess) gives the forward
through `torch._scaled_mm`, which the CPU build of torch 2.13 has: the layer is compared with it bit for bit.
The CUDA kernel (compute capability >= 8.9) is compared with the float32 reference when a GPU is present.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from diffusers_ltx2.factory import TINY_CLIP
from diffusers_ltx2.quantization import quantize_transformer_, transformer_quantization
from diffusers_ltx2.quantization.fp8_scaled_mm import (
    SCALED_MM_EXCLUDED_BLOCKS, FP8ScaledMMLinear, dynamic_input_scale, quantize_input, quantize_weight_per_tensor,
    scaled_mm_linear, scaled_mm_linear_names, scaled_mm_names, scaled_mm_reference,
)
from official_12 import requires_official_12, run_official_12

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


def _layer(in_f=64, out_f=48, seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    return scaled_mm_linear(nn.Linear(in_f, out_f).to(dtype))


def test_weight_quantization_equals_ltx_core():
    import tests.ltx_reference  # noqa: F401
    import ltx_core.loader  # noqa: F401
    from ltx_core.quantization.fp8_scaled_mm import quantize_weight_to_fp8_per_tensor

    w = torch.randn(48, 64) * 0.3
    q, scale = quantize_weight_per_tensor(w)
    q_off, scale_off = quantize_weight_to_fp8_per_tensor(w)  # 1.0.0 returns the (in, out) cuBLAS layout
    assert torch.equal(q.view(torch.uint8), q_off.t().contiguous().view(torch.uint8))
    assert torch.equal(scale, scale_off)


def test_kept_blocks_are_ltx_core_1_0s(tiny_components):
    import tests.ltx_reference  # noqa: F401
    import ltx_core.loader  # noqa: F401
    from ltx_core.quantization.fp8_scaled_mm import EXCLUDED_LAYER_SUBSTRINGS

    blocks = {int(s.split(".")[1]) for s in EXCLUDED_LAYER_SUBSTRINGS if s.startswith("transformer_blocks.")}
    assert blocks == SCALED_MM_EXCLUDED_BLOCKS
    names = scaled_mm_linear_names(tiny_components["transformer"])
    assert names and all(n.startswith("transformer_blocks.1.") for n in names)  # block 0 stays high precision


@requires_official_12
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_forward_equals_ltx_core_1_2_fp8_linear(dtype, tmp_path):
    """Same float8 weight, weight_scale, static input_scale and bias: ltx-core 1.2's `FP8Linear.forward` and ours
    give identical outputs; the dynamic scale is the static path with `amax(|x|) / 448`."""
    layer = _layer(dtype=dtype)
    assert layer.uses_scaled_mm  # the CPU build's torch._scaled_mm, as ltx-core 1.2 calls it
    x = (torch.randn(2, 7, 64) * 2).to(dtype)
    static = torch.tensor(0.01, dtype=torch.float32)
    off = run_official_12("""
        from ltx_core.quantization.fp8_scaled_mm import FP8Linear
        m = FP8Linear(64, 48, bias=True)
        m.weight.data = IN["weight"]; m.weight_scale.data = IN["weight_scale"]
        m.input_scale.data = IN["input_scale"]; m.bias.data = IN["bias"]
        OUT["static"] = m(IN["x"])
        m.input_scale.data = IN["dynamic"]
        OUT["dynamic"] = m(IN["x"])
    """, {"weight": layer.weight.data, "weight_scale": layer.weight_scale, "input_scale": static,
          "bias": layer.bias.data, "x": x, "dynamic": dynamic_input_scale(x.reshape(-1, 64))}, tmp_path)
    assert off["static"].dtype == dtype
    ours_dynamic = layer(x)
    layer.set_input_scale(static)
    torch.testing.assert_close(layer(x), off["static"], rtol=0, atol=0)
    torch.testing.assert_close(ours_dynamic, off["dynamic"], rtol=0, atol=0)


def test_reference_fallback_matches_scaled_mm_on_cpu():
    """Where `torch._scaled_mm` cannot run, the same quantized operands are multiplied in float32: equal to the
    kernel up to float32 summation order (float32 out) / one bfloat16 rounding (bf16 out); the layer takes that
    path when its kernel flag is off."""
    layer = _layer(96, 80)
    x3 = torch.randn(2, 5, 96)
    kernel_out = layer(x3)
    layer.uses_scaled_mm = False
    torch.testing.assert_close(layer(x3), kernel_out, rtol=1e-5, atol=1e-5)
    layer.uses_scaled_mm = True
    x = torch.randn(33, 96)
    scale = dynamic_input_scale(x)
    qx = quantize_input(x, scale)
    for out_dtype, tol in ((torch.float32, 1e-5), (torch.bfloat16, 2**-7)):
        kernel = torch._scaled_mm(qx, layer.weight.t(), scale_a=scale, scale_b=layer.weight_scale,
                                  out_dtype=out_dtype, use_fast_accum=True)
        ref = scaled_mm_reference(qx, layer.weight, scale, layer.weight_scale, out_dtype)
        rel = ((kernel.float() - ref.float()).abs() / ref.float().abs().clamp_min(1e-3)).max().item()
        assert rel <= tol, (out_dtype, rel)


def test_layer_approximates_the_bf16_linear():
    """Per-tensor e4m3 weights and activations: each operand within 2^-4 relative (normal range; rms 3.6%
    for uniform rounding), so the product is within a few percent (measured 3.7% relative L2 on Gaussian data;
    bound twice that)."""
    torch.manual_seed(0)
    lin = nn.Linear(256, 128)
    x = torch.randn(64, 256)
    ref = lin(x)
    rel = ((scaled_mm_linear(lin)(x) - ref).norm() / ref.norm()).item()
    assert 0 < rel < 0.075


# Relative L2 deviation of 3-step latents from the unquantized tiny model, measured (seed 0): video 0.013,
# audio 0.0089 - less than fp8-cast's 0.047 / 0.023 because block 0 stays high precision (ltx-core's list), though
# activations are rounded to e4m3 as well. Bound: about twice the measurement.
DEVIATION_BOUND = 0.03


def test_pipeline_runs_saves_and_reloads(tiny_components, tmp_path):
    from diffusers_ltx2 import ClassifierFreeGuidance, LTX2AudioVideoPipeline, LTX2Scheduler

    def latents(pipe):
        out = pipe("a cat", num_inference_steps=3, generator=torch.Generator().manual_seed(0), output_type="latent",
                   **TINY_CLIP)
        return out.frames.float(), out.audio.float()

    pipe = LTX2AudioVideoPipeline(scheduler=LTX2Scheduler(), guider=ClassifierFreeGuidance(1.0, 1.0),
                                  **tiny_components)
    pipe.save_pretrained(tmp_path / "bf16")
    ref = latents(pipe)
    q = LTX2AudioVideoPipeline.from_pretrained(tmp_path / "bf16", quantization="fp8-scaled-mm", dtype=torch.float32)
    assert transformer_quantization(q.transformer) == "fp8-scaled-mm"
    names = scaled_mm_names(q.transformer)
    assert names == scaled_mm_linear_names(tiny_components["transformer"])
    got = latents(q)
    for a, b in zip(got, ref):
        assert 0 < ((a - b).norm() / b.norm()).item() < DEVIATION_BOUND
    q.save_pretrained(tmp_path / "q")
    manifest = json.loads((tmp_path / "q" / "transformer" / "ltx2_fp8.json").read_text())
    assert manifest["matmul"] == "scaled_mm" and manifest["modules"] == sorted(names)
    back = LTX2AudioVideoPipeline.from_pretrained(tmp_path / "q", dtype=torch.float32)
    assert transformer_quantization(back.transformer) == "fp8-scaled-mm" and scaled_mm_names(back.transformer) == names
    for n in names:
        a, b = q.transformer.get_submodule(n), back.transformer.get_submodule(n)
        assert torch.equal(a.weight.view(torch.uint8), b.weight.view(torch.uint8))
        assert torch.equal(a.weight_scale, b.weight_scale)
    for a, b in zip(latents(back), got):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_fp8_checkpoint_switches_to_scaled_mm(tmp_path):
    """An FP8 keep folder with quantization='fp8-scaled-mm': the file's float8 layers keep their tensors and now
    multiply in float8 (ltx-core 1.2 swaps exactly the float8 + weight_scale layers); other modes are refused."""
    from official_checkpoints import official_state_dict
    from safetensors.torch import save_file
    from test_conversion_pipeline import _consistent_config

    from diffusers_ltx2 import LTX2AudioVideoPipeline
    from diffusers_ltx2.conversion import convert_single_file

    config = _consistent_config("2.0")
    sd = official_state_dict(config, seed=3)
    for key in list(sd):
        if key.startswith("model.diffusion_model.transformer_blocks.0.") and key.endswith(".weight") \
                and sd[key].ndim == 2:
            q, scale = quantize_weight_per_tensor(sd[key])
            sd[key], sd[key.removesuffix(".weight") + ".weight_scale"] = q, scale
    src = tmp_path / "fp8.safetensors"
    save_file(sd, str(src), metadata={"config": json.dumps(config), "model_version": "2.0.0"})
    folder = convert_single_file(src, tmp_path / "keep", fp8="keep", progress=False)
    kept = LTX2AudioVideoPipeline.from_pretrained(folder, dtype=torch.float32)
    assert transformer_quantization(kept.transformer) == "fp8-cast"
    mm = LTX2AudioVideoPipeline.from_pretrained(folder, dtype=torch.float32, quantization="fp8-scaled-mm")
    names = scaled_mm_names(mm.transformer)
    assert names and all(n.startswith("transformer_blocks.0.") for n in names)
    for n in names:
        assert isinstance(mm.transformer.get_submodule(n), FP8ScaledMMLinear)
        assert torch.equal(mm.transformer.get_submodule(n).weight.view(torch.uint8),
                           kept.transformer.get_submodule(n).weight.view(torch.uint8))
    single = LTX2AudioVideoPipeline.from_single_file(src, fp8="keep", quantization="fp8-scaled-mm", progress=False,
                                                     dtype=torch.float32)
    assert scaled_mm_names(single.transformer) == names
    with pytest.raises(ValueError, match="already quantized"):
        LTX2AudioVideoPipeline.from_pretrained(folder, quantization="fp8-cast")


def test_dtype_cast_keeps_float8_and_scales(tiny_components):
    t = tiny_components["transformer"]
    quantize_transformer_(t, "fp8-scaled-mm")
    layer = t.get_submodule(scaled_mm_names(t)[0])
    before = layer.weight.view(torch.uint8).clone(), layer.weight_scale.clone()
    t.to(torch.bfloat16)
    assert layer.weight.dtype == torch.float8_e4m3fn and layer.weight_scale.dtype == torch.float32
    assert layer.compute_dtype == torch.bfloat16 and layer.bias.dtype == torch.bfloat16
    assert torch.equal(layer.weight.view(torch.uint8), before[0]) and torch.equal(layer.weight_scale, before[1])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA kernel path: needs a GPU")
def test_cuda_scaled_mm_matches_reference():
    layer = _layer(256, 128).cuda()
    x = torch.randn(64, 256, device="cuda", dtype=torch.bfloat16)
    from diffusers_ltx2.quantization.fp8_scaled_mm import scaled_mm_available

    if not scaled_mm_available(x.device, 256, 128):
        pytest.skip("GPU below compute capability 8.9: the reference path runs (tested on CPU)")
    scale = dynamic_input_scale(x)
    ref = scaled_mm_reference(quantize_input(x, scale), layer.weight, scale, layer.weight_scale, torch.float32)
    out = layer(x).float() - layer.bias.float()
    assert ((out - ref).norm() / ref.norm()).item() < 2**-7


def test_float8_layers_are_not_listed_for_quantization_again(tiny_components):
    """FP8 layers are `nn.Linear`s (for PEFT) but the policy's list leaves them out: a cast over a transformer
    holding some (an FP8 file's high-precision layers cast by fp8-cast) keeps their weights and scales."""
    from diffusers_ltx2.quantization import apply_fp8_cast, quantized_linear_names

    t = tiny_components["transformer"]
    quantize_transformer_(t, "fp8-scaled-mm")
    fp8 = scaled_mm_names(t)
    names = quantized_linear_names(t)
    assert names and not set(names) & set(fp8) and all(n.startswith("transformer_blocks.0.") for n in names)
    kept = {n: (t.get_submodule(n).weight.view(torch.uint8).clone(), t.get_submodule(n).weight_scale.clone())
            for n in fp8}
    apply_fp8_cast(t)
    for n, (w, s) in kept.items():
        assert isinstance(t.get_submodule(n), FP8ScaledMMLinear)
        layer = t.get_submodule(n)
        assert torch.equal(layer.weight.view(torch.uint8), w) and torch.equal(layer.weight_scale, s)
