"""LoRA with weight streaming: every offload mode composes with loading, re-weighting, deleting, unloading and
fusing LoRAs, before or after the offload is applied, and gives the resident result exactly (fp32, CPU).

Before the fix: `model` then `load_lora_weights` raised "enable_model_cpu_offload requires accelerator" on CPU
(diffusers re-enables the hooks without the device), and `disk` then a LoRA gave `KeyError: 'tensor_72'` (or a
size mismatch after an unload): the group files kept the keys of the old parameter set. On CPU, `model` and
`blocks` run their hooks without moving a tensor; `disk` really writes and reads the group files.
"""

from __future__ import annotations

import copy
import gc
import os

import pytest
import torch

from diffusers_ltx2.factory import TINY_CLIP
from diffusers_ltx2.memory import apply_offload
from two_stage_files import write_official_lora

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")

MODES = ("model", "blocks", "disk")


def _pipe(components):
    from diffusers_ltx2 import ClassifierFreeGuidance, LTX2AudioVideoPipeline, LTX2Scheduler

    pipe = LTX2AudioVideoPipeline(scheduler=LTX2Scheduler(), guider=ClassifierFreeGuidance(2.0, 1.0),
                                  **copy.deepcopy(components))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _latents(pipe):
    out = pipe("a cat", negative_prompt="dark", num_inference_steps=2, generator=torch.Generator().manual_seed(0),
               output_type="latent", **TINY_CLIP)
    return out.frames, out.audio


@pytest.fixture(scope="module")
def loras(tiny_components_master, tmp_path_factory):
    folder = tmp_path_factory.mktemp("loras")
    t = tiny_components_master["transformer"]
    write_official_lora(folder / "style.safetensors", t, seed=1, blocks=(0, 1))
    write_official_lora(folder / "detail.safetensors", t, seed=2, blocks=(1,), rank=2)
    return {name: str(folder / f"{name}.safetensors") for name in ("style", "detail")}


def _load(name):
    return lambda pipe, loras: pipe.load_lora_weights(loras[name], adapter_name=name, reference_downscale_factor=1)


# each scenario: its LoRA operations, in order; the offload is applied before the first one or after the first load
SCENARIOS = {
    "load": [_load("style")],
    "set_adapters": [_load("style"), _load("detail"),
                     lambda pipe, loras: pipe.set_adapters(["style", "detail"], [0.5, 1.5])],
    "delete": [_load("style"), _load("detail"), lambda pipe, loras: pipe.delete_adapters("detail")],
    "unload": [_load("style"), _load("detail"), lambda pipe, loras: pipe.unload_lora_weights()],
    # diffusers' way to bake a LoRA in: fuse, then unload the (now unused) factors
    "fuse": [_load("style"), lambda pipe, loras: pipe.fuse_lora(), lambda pipe, loras: pipe.unload_lora_weights()],
    "fuse_unfuse": [_load("style"), lambda pipe, loras: pipe.fuse_lora(lora_scale=0.5),
                    lambda pipe, loras: pipe.unfuse_lora()],
}


@pytest.fixture(scope="module")
def resident(tiny_components_master, loras):
    """Resident results per scenario, and without any LoRA."""
    out = {"none": _latents(_pipe(tiny_components_master))}
    for name, steps in SCENARIOS.items():
        pipe = _pipe(tiny_components_master)
        for step in steps:
            step(pipe, loras)
        out[name] = _latents(pipe)
    return out


def test_scenarios_change_the_result(resident):
    """The LoRAs matter (so equality below is not trivial); unload comes back to the plain model, a fused LoRA
    stays after its factors are unloaded (fp32 rounding apart)."""
    for name in ("load", "set_adapters", "delete", "fuse", "fuse_unfuse"):
        assert (resident[name][0] - resident["none"][0]).abs().max() > 1e-3, name
    assert (resident["set_adapters"][0] - resident["load"][0]).abs().max() > 1e-3
    torch.testing.assert_close(resident["unload"][0], resident["none"][0], rtol=0, atol=0)
    torch.testing.assert_close(resident["fuse"][0], resident["load"][0], rtol=0, atol=1e-4)


@pytest.mark.parametrize("order", ["offload_first", "offload_after_load"])
@pytest.mark.parametrize("scenario", list(SCENARIOS))
@pytest.mark.parametrize("mode", MODES)
def test_lora_operations_under_offload_equal_resident(tiny_components_master, loras, resident, mode, scenario,
                                                      order, tmp_path):
    pipe = _pipe(tiny_components_master)
    steps = SCENARIOS[scenario]
    at = 0 if order == "offload_first" else 1
    for i, step in enumerate(steps):
        if i == at:
            apply_offload(pipe, mode, "cpu", offload_folder=tmp_path / "offload")
        step(pipe, loras)
    if at == len(steps):
        apply_offload(pipe, mode, "cpu", offload_folder=tmp_path / "offload")
    got = _latents(pipe)
    for a, b in zip(got, resident[scenario]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # the offload is still in place after the LoRA operations
    if mode == "model":
        assert hasattr(pipe.transformer, "_hf_hook") and pipe._offload_device.type == "cpu"
    else:
        from diffusers.hooks.group_offloading import _is_group_offload_enabled

        assert _is_group_offload_enabled(pipe.transformer)


def test_disk_files_follow_the_parameters(tiny_components_master, loras, tmp_path):
    """After a LoRA load / unload the group files hold exactly the current tensors (names and shapes)."""
    from diffusers.hooks.group_offloading import _GROUP_OFFLOADING
    from safetensors import safe_open

    pipe = _pipe(tiny_components_master)
    apply_offload(pipe, "disk", "cpu", offload_folder=tmp_path)

    def check():
        groups = {id(h.group): h.group for m in pipe.transformer.modules()
                  if (h := getattr(m, "_diffusers_hook", None) and m._diffusers_hook.get_hook(_GROUP_OFFLOADING))}
        n = 0
        for g in groups.values():
            with safe_open(g.safetensors_file_path, "pt") as f:
                assert sorted(f.keys()) == sorted(g.key_to_tensor)
                for k, t in g.key_to_tensor.items():
                    assert tuple(f.get_slice(k).get_shape()) == tuple(t.shape)
            n += len(g.key_to_tensor)
        return n

    base = check()
    _load("style")(pipe, loras)
    assert check() == base + 2 * 10  # 5 modules x 2 blocks, lora_A + lora_B
    pipe.unload_lora_weights()
    assert check() == base


def test_disk_folder_is_private_and_removed(tiny_components_master, tmp_path):
    """Each offloaded pipeline writes into its own subfolder (a file left in the folder by another run is never
    read as its weights) and the subfolder goes with the pipeline."""
    stale = tmp_path / "group_0123456789abcdef.safetensors"
    stale.write_bytes(b"not ours")
    pipe = _pipe(tiny_components_master)
    ref = _latents(_pipe(tiny_components_master))
    apply_offload(pipe, "disk", "cpu", offload_folder=tmp_path)
    (sub,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert sub.name.startswith("ltx2-offload-") and all(f.endswith(".safetensors") for f in os.listdir(sub))
    torch.testing.assert_close(_latents(pipe)[0], ref[0], rtol=0, atol=0)
    del pipe
    gc.collect()
    assert not sub.exists() and stale.read_bytes() == b"not ours"


def test_model_offload_reenabled_on_its_device_after_lora_load(tiny_components_master, loras):
    """diffusers re-enables model offload without a device after a LoRA load: it keeps the one it had."""
    pipe = _pipe(tiny_components_master)
    pipe.enable_model_cpu_offload(device="cpu")
    _load("style")(pipe, loras)
    assert pipe._offload_device == torch.device("cpu:0") and hasattr(pipe.transformer, "_hf_hook")
    assert "style" in pipe.transformer.peft_config
