"""LoRA on quantized weights (fp8-cast, fp8-scaled-mm, optimum-quanto, torchao): an unmerged low-rank side path
over untouched quantized weights, with strengths, unload, fusion (re-quantizing, official float8 rules), offload,
IC-LoRA / `ltx2 control`, the two-stage distilled LoRA and training. GGUF: `test_gguf.py`."""

from __future__ import annotations

import copy
import logging

import pytest
import torch
import torch.nn.functional as F

from diffusers_ltx2 import ClassifierFreeGuidance, LTX2AudioVideoPipeline, LTX2ICLoRAPipeline, LTX2Scheduler
from diffusers_ltx2.factory import TINY_CLIP
from diffusers_ltx2.quantization import quantize_transformer_, transformer_quantization, weight_bytes
from diffusers_ltx2.quantization.lora import (
    base_format, dequantize_weight, fuse_fp8_cast, fuse_fp8_scaled, quantized_lora_linear_class,
)
from official_12 import requires_official_12, run_official_12
from test_ic_lora_loading import write_lora

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")

#: formats that run on this CPU (int8 = quanto: fp32 compute, its bf16 CPU kernel is refused)
FORMATS = ["fp8-cast", "fp8-scaled-mm", "fp8", "int8", "int4", "torchao-int8", "torchao-fp8-weight"]
#: layers of the tiny model checked one by one (block 1: fp8-scaled-mm keeps block 0 in bf16)
LAYERS = ["transformer_blocks.1.attn1.to_q", "transformer_blocks.1.attn1.to_v", "transformer_blocks.1.ff.net.0.proj"]


def _pipe(components, mode, cls=LTX2AudioVideoPipeline):
    comps = {k: copy.deepcopy(v) for k, v in components.items()}
    if mode is not None:
        quantize_transformer_(comps["transformer"], mode)
    pipe = cls(scheduler=LTX2Scheduler(), guider=ClassifierFreeGuidance(1.0, 1.0), **comps)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _latents(pipe):
    out = pipe("a cat", num_inference_steps=2, output_type="latent", generator=torch.Generator().manual_seed(0),
               **TINY_CLIP)
    return torch.cat([out.frames.float().flatten(), out.audio.float().flatten()])


@pytest.fixture(scope="module")
def lora_file(tmp_path_factory, tiny_components_master):
    path = tmp_path_factory.mktemp("lora") / "style.safetensors"
    write_lora(path, tiny_components_master["transformer"], blocks=(0, 1))
    return path


@pytest.fixture(scope="module")
def reference_delta(tiny_components_master, lora_file):
    """The unquantized model's LoRA effect on the latents."""
    pipe = _pipe(tiny_components_master, None)
    base = _latents(pipe)
    pipe.load_lora_weights(str(lora_file), adapter_name="style", reference_downscale_factor=1)
    return _latents(pipe) - base


def _load(pipe, lora_file, **kw):
    return pipe.load_lora_weights(str(lora_file), adapter_name="style", reference_downscale_factor=1, **kw)


def _stored(layer) -> dict:
    """The quantized tensors of a base layer as stored (bytes of plain tensors, inner tensors of subclasses)."""
    out = {}
    for name, t in [*layer.named_parameters(recurse=False), *layer.named_buffers(recurse=False)]:
        inner = [getattr(t, n) for n in t.__tensor_flatten__()[0]] if hasattr(t, "__tensor_flatten__") else [t]
        out[name] = [(i.data_ptr(), i.detach().clone()) for i in inner]
    return out


@pytest.mark.parametrize("mode", FORMATS)
def test_lora_is_an_exact_side_path_over_untouched_quantized_weights(mode, tiny_components_master, lora_file):
    """Each adapted layer computes `base(x) + strength * B(A(x))` bit for bit, the base keeps its quantized
    tensors (same storage, same values: nothing dequantized or copied), strengths scale the side path, and
    deleting the adapter gives the quantized model back exactly."""
    pipe = _pipe(tiny_components_master, mode)
    t = pipe.transformer
    stored = {n: _stored(t.get_submodule(n)) for n in LAYERS}
    before = _latents(pipe)
    _load(pipe, lora_file)
    cls = quantized_lora_linear_class()
    gen = torch.Generator().manual_seed(1)
    for name in LAYERS:
        layer = t.get_submodule(name)
        assert isinstance(layer, cls) and base_format(layer.base_layer) is not None
        assert layer.lora_A["style"].weight.dtype == torch.float32  # the compute dtype, never float8
        for key, inner in _stored(layer.base_layer).items():  # untouched storage
            for (ptr, value), (ptr0, value0) in zip(inner, stored[name][key]):
                assert ptr == ptr0
                assert torch.equal(value.reshape(-1).view(torch.uint8), value0.reshape(-1).view(torch.uint8))
        xi = torch.randn(3, 5, layer.base_layer.in_features, generator=gen)
        side = F.linear(F.linear(xi, layer.lora_A["style"].weight), layer.lora_B["style"].weight)
        torch.testing.assert_close(layer(xi), layer.base_layer(xi) + side * 1.0, rtol=0, atol=0)
        pipe.set_adapters("style", 0.25)
        torch.testing.assert_close(layer(xi), layer.base_layer(xi) + side * 0.25, rtol=0, atol=0)
        pipe.set_adapters("style", 1.0)
    pipe.delete_adapters("style")
    torch.testing.assert_close(_latents(pipe), before, rtol=0, atol=0)


# Relative L2 distance between the LoRA's effect on a quantized model (latents with - without, 2 steps) and its
# effect on the unquantized model, divided by the latter, measured (seed 0): fp8-cast 0.060, fp8-scaled-mm
# 0.128 (activations in e4m3 too), quanto fp8 0.061, int8 0.0076, int4 0.083, torchao int8 0.017, torchao float8
# weight-only 0.061. The side path itself is exact (test above); the difference is the quantized base the LoRA
# acts on: the same order as the format's deviation from bf16 (test_quantization.py). Bounds: about twice that.
DELTA_BOUND = {"fp8-cast": 0.12, "fp8-scaled-mm": 0.25, "fp8": 0.12, "int8": 0.015, "int4": 0.16,
               "torchao-int8": 0.035, "torchao-fp8-weight": 0.12}


@pytest.mark.parametrize("mode", FORMATS)
def test_lora_effect_equals_the_unquantized_delta_within_rounding(mode, tiny_components_master, lora_file,
                                                                   reference_delta):
    pipe = _pipe(tiny_components_master, mode)
    base = _latents(pipe)
    _load(pipe, lora_file)
    delta = _latents(pipe) - base
    rel = ((delta - reference_delta).norm() / reference_delta.norm()).item()
    assert rel <= DELTA_BOUND[mode], rel


@pytest.mark.parametrize("mode", ["fp8-cast", "int4", "torchao-int8"])
def test_memory_grows_by_the_lora_bytes_only(mode, tiny_components_master, lora_file):
    """Stored bytes of the transformer grow by exactly the LoRA factors' bytes, and loading allocates less than
    one more copy of those (AllocationTracker: measured 1,792 bytes for 4,608 bytes of factors): no quantized
    weight is dequantized into a resident copy. `unload_lora_weights` gives the quantized layers back."""
    from diffusers_ltx2.memory.measure import AllocationTracker

    pipe = _pipe(tiny_components_master, mode)
    before = weight_bytes(pipe.transformer)
    with AllocationTracker() as tracker:
        _load(pipe, lora_file)
    lora = sum(p.numel() * p.element_size() for n, p in pipe.transformer.named_parameters() if "lora_" in n)
    assert lora > 0 and weight_bytes(pipe.transformer) - before == lora
    assert tracker.peak <= lora
    pipe.unload_lora_weights()  # the quantized layers themselves come back, bytes as before
    assert weight_bytes(pipe.transformer) == before
    assert base_format(pipe.transformer.get_submodule(LAYERS[0])) is not None


@requires_official_12
def test_fusion_rules_equal_ltx_core_1_2(tmp_path):
    """fp8-cast fusion = ltx-core 1.2 `fuse_cast_fp8_weight` (CPU path), fp8 scaled fusion = its
    `_fp8_scaled_mm_fuse`: bit for bit on the same weight and bf16 delta."""
    torch.manual_seed(0)
    weight = (torch.randn(48, 64) * 0.2).to(torch.float8_e4m3fn)
    scaled, scale = (torch.randn(48, 64) * 40).to(torch.float8_e4m3fn), torch.tensor(0.003)
    delta = (torch.randn(48, 64) * 0.01).to(torch.bfloat16)
    off = run_official_12("""
        from ltx_core.quantization.fp8_cast import fuse_cast_fp8_weight
        from ltx_core.quantization.fp8_scaled_mm import _fp8_scaled_mm_fuse
        from ltx_core.loader.primitives import StateDict
        OUT["cast"] = fuse_cast_fp8_weight(IN["delta"].clone(), IN["weight"])
        sd = StateDict(sd={"w.weight": IN["scaled"], "w.weight_scale": IN["scale"]}, device="cpu", size=0,
                       dtype=set())
        res = _fp8_scaled_mm_fuse("w.weight", IN["scaled"], IN["delta"].clone(), sd)
        OUT["scaled"], OUT["scale"] = res["w.weight"], res["w.weight_scale"]
    """, {"weight": weight, "scaled": scaled, "scale": scale, "delta": delta}, tmp_path)
    assert torch.equal(fuse_fp8_cast(weight, delta).view(torch.uint8), off["cast"].view(torch.uint8))
    q, s = fuse_fp8_scaled(scaled, scale, delta)
    assert torch.equal(q.view(torch.uint8), off["scaled"].view(torch.uint8)) and torch.equal(s, off["scale"])


# fuse_lora re-quantizes W + dW. Measured (relative to the LoRA's effect, 2 steps): fused vs unfused output
# fp8-cast 0.031, fp8-scaled-mm 0.049, quanto fp8 0.032, int8 0.0059, int4 0.098, torchao int8 0.0056, torchao
# float8 0.032; weights after fuse + unfuse vs before (relative L2, worst of LAYERS): fp8-cast 0.032,
# fp8-scaled-mm 0.042, fp8 0.035, int8 0.0066, int4 0.099, torchao int8 0.0080, float8 0.035. Bounds: ~2x
# (`python benchmarks/bench_quantized_lora.py` prints these figures).
FUSE_BOUND = {"fp8-cast": 0.06, "fp8-scaled-mm": 0.1, "fp8": 0.065, "int8": 0.012, "int4": 0.2,
              "torchao-int8": 0.012, "torchao-fp8-weight": 0.065}
UNFUSE_BOUND = {"fp8-cast": 0.065, "fp8-scaled-mm": 0.085, "fp8": 0.07, "int8": 0.014, "int4": 0.2,
                "torchao-int8": 0.016, "torchao-fp8-weight": 0.07}


@pytest.mark.parametrize("mode", FORMATS)
def test_fuse_requantizes_in_the_format_and_states_its_cost(mode, tiny_components_master, lora_file,
                                                           reference_delta, caplog):
    pipe = _pipe(tiny_components_master, mode)
    weights = {n: dequantize_weight(pipe.transformer.get_submodule(n)) for n in LAYERS}
    kinds = {n: type(pipe.transformer.get_submodule(n).weight) for n in LAYERS}
    _load(pipe, lora_file)
    unfused = _latents(pipe)
    with caplog.at_level(logging.WARNING, logger="diffusers_ltx2.quantization.lora"):
        from diffusers_ltx2.quantization import lora as qlora

        qlora._WARNED.clear()
        pipe.fuse_lora()
    assert "re-quantizes W + dW" in caplog.text and "unfuse_lora gives W back only to that precision" in caplog.text
    for n in LAYERS:  # still quantized, in the same format
        base = pipe.transformer.get_submodule(n).base_layer
        assert type(base.weight) is kinds[n] and base_format(base) is not None
    assert transformer_quantization(pipe.transformer) == mode
    fused = _latents(pipe)
    assert ((fused - unfused).norm() / reference_delta.norm()).item() <= FUSE_BOUND[mode]
    pipe.unfuse_lora()
    torch.testing.assert_close(_latents(pipe), fused, rtol=0, atol=FUSE_BOUND[mode] * reference_delta.abs().max())
    worst = max(((dequantize_weight(pipe.transformer.get_submodule(n).base_layer) - w).norm() / w.norm()).item()
                for n, w in weights.items())
    assert worst <= UNFUSE_BOUND[mode], worst


def test_peft_merge_on_quanto_is_what_we_fix():
    """PEFT 0.21's own `merge()` on a quanto QLinear changes the output by ~50% relative instead of matching the
    unmerged LoRA (it adds the delta to the quantized storage); ours matches within int8 rounding."""
    from optimum.quanto import freeze, qint8, quantize
    from peft import LoraConfig, inject_adapter_in_model

    from diffusers_ltx2.quantization.lora import adopt_quantized_lora_layers

    def model():
        torch.manual_seed(0)
        m = torch.nn.Sequential(torch.nn.Linear(256, 128))
        quantize(m, weights=qint8)
        freeze(m)
        inject_adapter_in_model(LoraConfig(r=4, lora_alpha=4, target_modules=["0"], init_lora_weights=False), m)
        return m

    x = torch.randn(4, 256)
    peft_model, ours = model(), model()
    adopt_quantized_lora_layers(ours)
    unmerged = peft_model(x)
    peft_model[0].merge()
    ours[0].merge()
    assert ((peft_model(x) - unmerged).norm() / unmerged.norm()).item() > 0.1
    assert ((ours(x) - unmerged).norm() / unmerged.norm()).item() < 0.01


@pytest.mark.parametrize("offload", ["model", "blocks"])
def test_offload_composes_with_lora_on_quantized_weights(offload, tiny_components_master, lora_file):
    from diffusers_ltx2.memory import apply_offload

    resident = _pipe(tiny_components_master, "fp8-cast")
    _load(resident, lora_file)
    pipe = _pipe(tiny_components_master, "fp8-cast")
    _load(pipe, lora_file)
    apply_offload(pipe, offload, "cpu")
    torch.testing.assert_close(_latents(pipe), _latents(resident), rtol=0, atol=0)


def test_vram_budget_plan_with_fp8_cast_loads_a_lora(tiny_components_master, lora_file):
    """The planner may choose fp8-cast for a LoRA run: that pipeline now loads and runs the LoRA."""
    pipe = _pipe(tiny_components_master, "fp8-cast")
    _load(pipe, lora_file)
    assert torch.isfinite(_latents(pipe)).all()


def test_ic_lora_on_fp8_cast_through_the_pipeline_and_cli(tiny_components, tmp_path, capsys):
    """fp8-cast + an IC-LoRA with reference downscale 2 (union-style control) through `LTX2ICLoRAPipeline` and
    `ltx2 control --quantize fp8-cast`."""
    import av

    from diffusers_ltx2.cli import main
    from test_ic_lora_pipeline import moving_square, write_video

    lora = tmp_path / "ic.safetensors"
    write_lora(lora, tiny_components["transformer"], metadata={"reference_downscale_factor": "2"})
    pipe = _pipe(tiny_components, "fp8-cast", cls=LTX2ICLoRAPipeline)
    pipe.load_lora_weights(str(lora), adapter_name="union")
    assert pipe.reference_downscale_factor == 2
    control = tmp_path / "control.mp4"
    write_video(control, moving_square(frames=9, size=64))
    out = pipe("a cat", control_video=str(control), num_inference_steps=1, output_type="latent",
               generator=torch.Generator().manual_seed(0), **TINY_CLIP)
    assert torch.isfinite(out.frames).all()
    model = tmp_path / "model"
    LTX2ICLoRAPipeline(scheduler=LTX2Scheduler(), **tiny_components).save_pretrained(model)
    result = tmp_path / "out.mp4"
    rc = main(["control", "--model", str(model), "--lora", str(lora), "--control-video", str(control),
               "--prompt", "a cat", "--output", str(result), "--num-frames", "9", "--height", "64", "--width", "64",
               "--steps", "1", "--dtype", "fp32", "--device", "cpu", "--quantize", "fp8-cast", "--preprocess",
               "canny", "--cfg", "1", "--stg", "0", "--modality-scale", "1"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    with av.open(str(result)) as f:
        assert len(f.streams.video) == 1


@pytest.mark.slow
def test_two_stage_distilled_lora_on_fp8_cast(tiny_components_master, tmp_path):
    """The two-stage pipeline's stage-2 distilled LoRA (switched on as a PEFT adapter) and a user LoRA on an
    fp8-cast transformer: runs, and the adapters end as they began."""
    from diffusers.pipelines.ltx2.latent_upsampler import LTX2LatentUpsamplerModel

    from diffusers_ltx2 import LTX2TwoStagePipeline, MultimodalGuider
    from diffusers_ltx2.loaders.adapter_state import lora_layers
    from two_stage_files import write_official_lora

    comps = copy.deepcopy(tiny_components_master)
    torch.manual_seed(0)
    up = LTX2LatentUpsamplerModel(in_channels=comps["vae"].config.latent_channels, mid_channels=32,
                                  num_blocks_per_stage=1, use_rational_resampler=False).eval()
    pipe = LTX2TwoStagePipeline(scheduler=LTX2Scheduler(), guider=MultimodalGuider(), latent_upsampler=up, **comps)
    pipe.set_progress_bar_config(disable=True)
    quantize_transformer_(pipe.transformer, "fp8-cast")
    write_official_lora(tmp_path / "style.safetensors", pipe.transformer, seed=1, blocks=(1,))
    write_official_lora(tmp_path / "distilled.safetensors", pipe.transformer, seed=2)
    pipe.load_lora_weights(str(tmp_path / "style.safetensors"), adapter_name="style", reference_downscale_factor=1)
    pipe.load_distilled_lora(str(tmp_path / "distilled.safetensors"), strength=0.8)
    before = [(list(m.active_adapters), dict(m.scaling)) for m in lora_layers(pipe.transformer)]
    out = pipe("a cat", negative_prompt="dark", height=128, width=128, num_frames=17, frame_rate=24.0,
               num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="latent")
    assert torch.isfinite(out.frames).all()
    assert [(list(m.active_adapters), dict(m.scaling)) for m in lora_layers(pipe.transformer)] == before


@pytest.mark.parametrize("mode", ["fp8-scaled-mm", "torchao-int8"])
def test_disk_offload_takes_plain_float8_and_refuses_tensor_subclasses(mode, tiny_components_master, lora_file,
                                                                       tmp_path):
    from diffusers_ltx2.memory import apply_offload

    pipe = _pipe(tiny_components_master, mode)
    _load(pipe, lora_file)
    if mode == "torchao-int8":
        with pytest.raises(ValueError, match=r"cannot store torchao weights \(torchao-int8\)"):
            apply_offload(pipe, "disk", "cpu", offload_folder=tmp_path / "d")
        assert not (tmp_path / "d").exists()
        return
    resident = _pipe(tiny_components_master, mode)
    _load(resident, lora_file)
    apply_offload(pipe, "disk", "cpu", offload_folder=tmp_path / "d")
    torch.testing.assert_close(_latents(pipe), _latents(resident), rtol=0, atol=0)
