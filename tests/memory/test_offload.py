"""Weight streaming: each offload mode gives the resident result exactly (fp32, CPU), alone and composed with
quantization, LoRA and the guidance attention control (STG / modality isolation run through hooked modules).

Honest scope on a CPU-only machine: `model` (enable_model_cpu_offload with device="cpu") and `blocks` (group
offloading cpu -> cpu) install and run all their hooks, but no tensor changes device, so these tests check the
plumbing and composition, not transfers; `disk` really writes every block's weights to safetensors files and
reads them back per forward. GPU transfers (CUDA streams, prefetch) are untested here.
"""

from __future__ import annotations

import copy
import os

import pytest
import torch

from diffusers_ltx2.factory import TINY_CLIP
from diffusers_ltx2.memory import apply_offload, check_offload
from diffusers_ltx2.quantization import quantize_transformer_

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


def _pipe(components):
    from diffusers_ltx2 import LTX2AudioVideoPipeline, LTX2Scheduler, MultimodalGuider

    # the recommended guider: cfg + STG (block 1 of the tiny model) + modality isolation = 4 passes per step
    return LTX2AudioVideoPipeline(scheduler=LTX2Scheduler(), guider=MultimodalGuider(), **components)


def _latents(pipe):
    out = pipe("a cat", negative_prompt="dark", num_inference_steps=2, generator=torch.Generator().manual_seed(0),
               output_type="latent", **TINY_CLIP)
    return out.frames, out.audio


def _add_lora(pipe):
    from peft import LoraConfig

    torch.manual_seed(1)
    pipe.transformer.add_adapter(LoraConfig(r=2, lora_alpha=2, init_lora_weights=False,
                                            target_modules=["to_q", "to_k", "to_v", "to_out.0"]))


SETUPS = {
    "plain": lambda pipe: None,
    "int8": lambda pipe: quantize_transformer_(pipe.transformer, "int8"),
    "fp8-cast": lambda pipe: quantize_transformer_(pipe.transformer, "fp8-cast"),
    "lora": _add_lora,
}
CASES = [(m, s) for m in ("model", "blocks", "disk") for s in SETUPS if not (m == "disk" and s == "int8")]


@pytest.mark.parametrize("mode,setup", CASES)
def test_offload_equals_resident(tiny_components_master, mode, setup, tmp_path):
    resident = _pipe(copy.deepcopy(tiny_components_master))
    SETUPS[setup](resident)
    ref = _latents(resident)
    pipe = _pipe(copy.deepcopy(tiny_components_master))
    SETUPS[setup](pipe)
    apply_offload(pipe, mode, "cpu", offload_folder=tmp_path / "offload")
    if mode == "model":
        assert pipe._offload_device.type == "cpu" and hasattr(pipe.transformer, "_hf_hook")
    else:
        from diffusers.hooks.group_offloading import _is_group_offload_enabled

        assert _is_group_offload_enabled(pipe.transformer) and _is_group_offload_enabled(pipe.text_encoder)
        assert not _is_group_offload_enabled(pipe.vae)  # read outside its forward: kept resident
    got = _latents(pipe)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    if mode == "disk":  # the weights really went through files (in the pipeline's own subfolder)
        (sub,) = os.listdir(tmp_path / "offload")
        files = os.listdir(tmp_path / "offload" / sub)
        assert files and all(f.endswith(".safetensors") for f in files)
    else:
        assert not (tmp_path / "offload").exists()


def test_offload_errors_before_anything_moves(tiny_components, tmp_path):
    pipe = _pipe(tiny_components)
    with pytest.raises(ValueError, match="choose one of model, blocks, disk"):
        apply_offload(pipe, "gpu", "cpu")
    with pytest.raises(ValueError, match="needs a folder"):
        check_offload("disk")
    quantize_transformer_(pipe.transformer, "int8")
    with pytest.raises(ValueError, match="cannot store optimum-quanto weights"):
        apply_offload(pipe, "disk", "cpu", offload_folder=tmp_path / "d")
    assert not (tmp_path / "d").exists()


@pytest.mark.slow
@pytest.mark.parametrize("mode,quantization", [("model", None), ("blocks", None), ("disk", None), ("blocks", "int8")])
def test_offload_composes_with_two_stage_and_lora_switching(tiny_components_master, mode, quantization, tmp_path):
    """A two-stage run (guided stage 1 with a user LoRA, upsampler, stage 2 with the distilled LoRA switched on as
    a PEFT adapter) under each offload mode (and on an int8 transformer) equals the resident run exactly, and the
    adapters end as they began. (fp8-cast + LoRA + offload: tests/conversion/test_quantized_lora.py.)"""
    from diffusers.pipelines.ltx2.latent_upsampler import LTX2LatentUpsamplerModel

    from diffusers_ltx2 import LTX2Scheduler, LTX2TwoStagePipeline, MultimodalGuider
    from diffusers_ltx2.loaders.adapter_state import lora_layers
    from two_stage_files import write_official_lora

    def build():
        comps = copy.deepcopy(tiny_components_master)
        torch.manual_seed(0)
        up = LTX2LatentUpsamplerModel(in_channels=comps["vae"].config.latent_channels, mid_channels=32,
                                      num_blocks_per_stage=1, use_rational_resampler=False).eval()
        pipe = LTX2TwoStagePipeline(scheduler=LTX2Scheduler(), guider=MultimodalGuider(), latent_upsampler=up,
                                    **comps)
        pipe.set_progress_bar_config(disable=True)
        if quantization is not None:
            quantize_transformer_(pipe.transformer, quantization)
        write_official_lora(tmp_path / "style.safetensors", pipe.transformer, seed=1, blocks=(1,))
        write_official_lora(tmp_path / "distilled.safetensors", pipe.transformer, seed=2)
        pipe.load_lora_weights(str(tmp_path / "style.safetensors"), adapter_name="style",
                               reference_downscale_factor=1)
        pipe.load_distilled_lora(str(tmp_path / "distilled.safetensors"), strength=0.8)
        return pipe

    def run(pipe):
        out = pipe("a cat", negative_prompt="dark", height=128, width=128, num_frames=17, frame_rate=24.0,
                   num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="latent")
        return out.frames, out.audio

    ref = run(build())
    pipe = build()
    before = [(list(m.active_adapters), dict(m.scaling)) for m in lora_layers(pipe.transformer)]
    apply_offload(pipe, mode, "cpu", offload_folder=tmp_path / "offload")
    got = run(pipe)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert [(list(m.active_adapters), dict(m.scaling)) for m in lora_layers(pipe.transformer)] == before
