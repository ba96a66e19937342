"""Weight streaming for small GPUs: diffusers' model CPU offload and group (block) offloading, to RAM or disk.

`--offload model`: `DiffusionPipeline.enable_model_cpu_offload` - whole components move to the GPU when called
(text encoder -> connectors -> transformer -> VAEs -> vocoder); peak = the largest component + activations.
`--offload blocks`: diffusers' `enable_group_offload(offload_type="block_level", num_blocks_per_group=1)` on the
transformer and the text encoder - one transformer block at a time on the GPU, the next prefetched on a CUDA
stream; peak ~ two blocks + the transformer's top-level layers + activations + the small resident components
(VAEs, connectors, vocoder). Gemma (`Gemma3ForConditionalGeneration`) has no block list among its direct children,
so diffusers' block-level offloading makes it one group: it moves to the GPU whole for the prompt, then back
(`budget.estimate` counts it so).
`--offload disk`: block-level group offloading to safetensors files under a folder (the official `--offload disk`
streams blocks from disk likewise, ltx-core 1.2 `block_streaming/`), for machines short of RAM.

Every mode leaves the numbers unchanged: the same weights, the same kernels, only where they live differs.

LoRAs compose with every mode in either order (`OffloadMixin`, `weights_changing`): diffusers takes the hooks off
and puts them back around a LoRA load, but re-enables model offload without the device it had (on a CPU machine:
"requires accelerator") and re-applies disk offloading over the old files, whose `tensor_<i>` keys no longer match
the parameters once LoRA layers come or go (KeyError, size mismatch). Here model offload comes back on its own
device, and the disk files are re-keyed one group at a time (the base weights are read from the old file, the
LoRA factors from memory), so RAM never holds more than one group.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from contextlib import contextmanager

import torch

from ..memory_modes import OFFLOAD_MODES  # noqa: E402  (plain data, shared with the command line)

# Streamed in the block modes: the transformer and the Gemma text encoder (the bulk of the weights). The rest
# stays resident on the compute device: it is small, and the pipeline reads the VAEs' latent statistics
# (`latents_mean` / `latents_std` buffers) outside their forward, where group offloading has not loaded them
# (with `disk` they are empty placeholders then: decoded garbage, found by the tests).
RESIDENT_IN_BLOCK_MODES = ("vae", "audio_vae", "vocoder", "connectors")


def check_offload(mode: str | None, *, disk_path: str | None = None, transformer=None, text_encoder=None,
                  quantizations=()) -> str | None:
    """Validate an offload request before anything loads or moves (`quantizations`: the modes requested for
    models not loaded yet).

    Raises:
        ValueError: unknown mode; `disk` without a folder; `disk` with optimum-quanto / torchao / GGUF weights
            (transformer or text encoder: tensor subclasses cannot be written to safetensors files).
    """
    if mode is None:
        return None
    if mode not in OFFLOAD_MODES:
        raise ValueError(f"unknown offload mode {mode!r}; choose one of {', '.join(OFFLOAD_MODES)}")
    if mode == "disk":
        if not disk_path:
            raise ValueError("offload 'disk' needs a folder for the weight files (offload_folder=)")
        from ..quantization import transformer_quantization

        modes = list(quantizations)
        if transformer is not None:
            modes.append(transformer_quantization(transformer))
        if text_encoder is not None:
            modes.append(getattr(text_encoder, "_ltx2_quantization", None))
        quanto = [q for q in modes if q not in (None, "fp8-cast", "fp8-scaled-mm")]
        if quanto:
            backend = ("optimum-quanto" if quanto[0] in ("fp8", "int8", "int4") else
                       "GGUF" if str(quanto[0]).startswith("gguf") else "torchao")
            raise ValueError(f"offload 'disk' cannot store {backend} weights ({quanto[0]}): they are tensor "
                             "subclasses, not plain tensors; use 'blocks', or quantization='fp8-cast' / "
                             "'fp8-scaled-mm' (plain float8 tensors) with 'disk'")
    return mode


def apply_offload(pipe, mode: str | None, device: str | torch.device | None = None, *,
                  offload_folder: str | os.PathLike | None = None, num_blocks_per_group: int = 1) -> None:
    """Enable `mode` ("model", "blocks", "disk" or `None` = everything resident on `device`) on a pipeline.

    Args:
        device: the compute device (default: cuda when available, else cpu). On CPU the hooks run but the
            weights stay where they are (`model`, `blocks`) or really go through the disk files (`disk`).
        offload_folder: folder of the `disk` mode's group files (created if missing). The files go to a fresh
            `ltx2-offload-*` subfolder, removed when the offloaded modules are garbage-collected (or at exit): files
            left by another run or another pipeline are never read back as this one's weights.
        num_blocks_per_group: transformer blocks resident at a time in the block modes.
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    check_offload(mode, disk_path=offload_folder, transformer=getattr(pipe, "transformer", None),
                  text_encoder=getattr(pipe, "text_encoder", None))
    if mode is None:
        pipe.to(device)
    elif mode == "model":
        pipe.enable_model_cpu_offload(device=device)
    else:
        folder = None
        if mode == "disk":
            os.makedirs(offload_folder, exist_ok=True)
            folder = _OffloadFolder(tempfile.mkdtemp(prefix="ltx2-offload-", dir=os.fspath(offload_folder)))
        resident = [n for n in RESIDENT_IN_BLOCK_MODES if getattr(pipe, n, None) is not None]
        pipe.enable_group_offload(
            onload_device=device, offload_device=torch.device("cpu"), offload_type="block_level",
            num_blocks_per_group=num_blocks_per_group, use_stream=device.type == "cuda",
            offload_to_disk_path=folder.path if folder else None, exclude_modules=resident,
        )
        if folder is not None:  # every module reading the files keeps the folder alive
            for name, component in pipe.components.items():
                if isinstance(component, torch.nn.Module) and name not in resident:
                    component._ltx2_offload_folder = folder


class _OffloadFolder:
    """A disk-offload folder, deleted with the last module holding it (or at interpreter exit)."""

    def __init__(self, path: str):
        self.path = path
        weakref.finalize(self, shutil.rmtree, path, True)


class OffloadMixin:
    """Pipeline mixin: offload modes that survive diffusers' own hook removal / re-application."""

    def enable_model_cpu_offload(self, gpu_id: int | None = None, device: torch.device | str | None = None):
        """diffusers' `enable_model_cpu_offload`. Called again without a device - as diffusers' LoRA loading does
        after taking the hooks off - it keeps the device it was enabled with (diffusers' own rule in
        `maybe_free_model_hooks`) instead of requiring an accelerator."""
        if device is None and gpu_id is None and getattr(self, "_offload_device", None) is not None:
            device = self._offload_device
        return super().enable_model_cpu_offload(gpu_id=gpu_id, device=device)


def _group_hooks(module: torch.nn.Module):
    from diffusers.hooks.group_offloading import _GROUP_OFFLOADING

    for sub in module.modules():
        registry = getattr(sub, "_diffusers_hook", None)
        hook = registry.get_hook(_GROUP_OFFLOADING) if registry is not None else None
        if hook is not None:
            yield hook


def _remove_group_offloading(module: torch.nn.Module) -> None:
    from diffusers.hooks.group_offloading import (_GROUP_OFFLOADING, _LAYER_EXECUTION_TRACKER,
                                                  _LAZY_PREFETCH_GROUP_OFFLOADING)
    from diffusers.hooks.hooks import HookRegistry

    registry = HookRegistry.check_if_exists_or_initialize(module)
    for name in (_GROUP_OFFLOADING, _LAYER_EXECUTION_TRACKER, _LAZY_PREFETCH_GROUP_OFFLOADING):
        registry.remove_hook(name, recurse=True)


def _read(path: str, keys) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    with safe_open(path, framework="pt", device="cpu") as f:
        return {k: f.get_tensor(k) for k in keys}


@contextmanager
def weights_changing(pipe, *, materialize: bool = False):
    """Keep `disk` offloading correct across a change of the offloaded modules' parameters (LoRA layers added or
    removed, or - with `materialize=True` - base weights changed in place, as `fuse_lora` does).

    On entry the group-offloading hooks of every disk-offloaded component are taken off (the weights stay in
    their files; with `materialize` they are read back into the tensors first: RAM for the whole component).
    On exit - also after an error, so the pipeline stays offloaded - the hooks are applied again and each
    group's file is rewritten under the new keys: the base weights from the old files, new tensors (LoRA
    factors) and materialized ones from memory, one group at a time. Other modes need nothing here
    (`OffloadMixin` covers model offload; memory group offloading re-reads the tensors themselves).
    """
    from diffusers.hooks.group_offloading import _apply_group_offloading

    saved = []
    for module in {id(m): m for m in getattr(pipe, "components", {}).values()
                   if isinstance(m, torch.nn.Module)}.values():
        hooks = list(_group_hooks(module))
        if not hooks or not hooks[0].config.offload_to_disk_path:
            continue
        groups = {id(h.group): h.group for h in hooks}.values()
        source = {t: (g.safetensors_file_path, k) for g in groups for t, k in g.tensor_to_key.items()}
        if materialize:
            for g in groups:
                if os.path.exists(g.safetensors_file_path):
                    data = _read(g.safetensors_file_path, g.key_to_tensor)
                    for k, t in g.key_to_tensor.items():
                        t.data = data[k]
            source = {}
        saved.append((module, hooks[0].config, source))
        _remove_group_offloading(module)
    try:
        yield
    finally:
        for module, config, source in saved:
            _reapply_disk_offloading(module, config, source, _apply_group_offloading)


def _reapply_disk_offloading(module, config, source: dict, apply) -> None:
    """Re-apply disk group offloading on `module` and rewrite its files for the current parameters (`source`:
    tensor -> (old file, old key) of the tensors whose data is in the old files, not in memory)."""
    from safetensors.torch import save_file

    tensors = list(dict.fromkeys([*module.parameters(), *module.buffers()]))
    in_memory = {t: t.data for t in tensors if t not in source}  # applying replaces .data by placeholders
    apply(module, config)
    groups = list({id(h.group): h.group for h in _group_hooks(module)}.values())
    own = {g.safetensors_file_path for g in groups}
    # a tensor moving to another group's file: read before any file is rewritten
    elsewhere = {}
    for g in groups:
        for t in g.tensor_to_key:
            if t in source and source[t][0] != g.safetensors_file_path:
                elsewhere[t] = _read(source[t][0], [source[t][1]])[source[t][1]]
    for g in groups:
        path = g.safetensors_file_path
        keyed = {k: source[t] for t, k in g.tensor_to_key.items() if t in source and t not in elsewhere}
        old = _read(path, {old_key for _, old_key in keyed.values()}) if keyed else {}
        tensors = {k: (elsewhere[t] if t in elsewhere else in_memory[t] if t in in_memory else old[keyed[k][1]])
                   .to(config.offload_device).contiguous() for t, k in g.tensor_to_key.items()}
        tmp = f"{path}.tmp"
        save_file(tensors, tmp)
        os.replace(tmp, path)
        del old, tensors
    for path in {p for p, _ in source.values()} - own:  # groups that no longer exist
        if os.path.exists(path):
            os.remove(path)
