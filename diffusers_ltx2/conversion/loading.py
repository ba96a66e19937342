"""Streaming tensors into meta-initialised diffusers modules (``from_single_file`` without a state dict)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from .errors import ConversionError
from ..json_files import read_json
from .fp8 import FP8_MANIFEST, dequantize, swap_linears
from .plan import ConversionPlan, TensorPlan, inspect_checkpoint, plan_conversion
from .streaming import SetReader


def materialize(reader: SetReader, tp: TensorPlan) -> torch.Tensor:
    """Produce one planned output tensor from the source (read, split, fold a gate, dequantize, cast)."""
    if tp.fill is not None:  # a bias the checkpoint switched off
        return torch.full(tp.shape, tp.fill, dtype=tp.dtype)
    if not tp.src:  # an FP8 weight without a stored scale: scale 1
        return torch.ones(tp.shape, dtype=tp.dtype)
    t = reader.get(tp.src)
    if tp.chunk is not None:
        index, count = tp.chunk
        t = t.chunk(count, dim=0)[index].clone()
    if tp.gate is not None:  # a static AdaLN gate folded into its Linear (ltx-core `_fold_gate_into_linear`)
        gate = reader.get(tp.gate).to(torch.float32)
        folded = (gate.unsqueeze(1) if t.ndim == 2 else gate) * t.to(torch.float32)
        return folded.to(t.dtype).to(tp.dtype)
    if tp.scale is not None or (t.dtype != tp.dtype and t.dtype in (torch.float8_e4m3fn, torch.float8_e5m2)):
        scale = reader.get(tp.scale) if tp.scale else None
        return dequantize(t, scale, tp.dtype)
    return t if t.dtype == tp.dtype else t.to(tp.dtype)


def has_nonfinite(t: torch.Tensor) -> bool:
    """True when a floating tensor holds NaN or inf (float8 checked on its bit patterns); False for integers."""
    if t.dtype == torch.float8_e4m3fn:  # no inf; NaN is S.1111.111
        return bool(((t.view(torch.uint8) & 0x7F) == 0x7F).any())
    if t.dtype == torch.float8_e5m2:  # exponent all ones: inf or NaN
        return bool(((t.view(torch.uint8) & 0x7F) >= 0x7C).any())
    if not t.is_floating_point() or t.numel() == 0:
        return False
    # Fast path: one reduction, ~40x cheaper than isfinite() on CPU. A NaN or inf element always makes the sum
    # NaN or inf (IEEE), so a finite sum proves the tensor finite; a non-finite sum (which a large finite fp16
    # tensor can also give, by overflow) is settled by the exact element-wise check.
    if bool(torch.isfinite(t.sum())):
        return False
    return not bool(torch.isfinite(t).all())


class NonFiniteWeights:
    """Collects the names of tensors with NaN/inf as they stream past, then warns once naming them.

    The check rides on the conversion's single read of each tensor (no second pass over the file).
    """

    def __init__(self, source: str | os.PathLike):
        self.source = str(source)
        self.names: list[str] = []

    def check(self, name: str, tensor: torch.Tensor) -> None:
        """Record ``name`` if ``tensor`` holds NaN or inf."""
        if has_nonfinite(tensor):
            self.names.append(name)

    def warn(self) -> None:
        """One ``RuntimeWarning`` listing the recorded tensors (nothing when all were finite)."""
        if self.names:
            shown = ", ".join(self.names[:10]) + (f" and {len(self.names) - 10} more" if len(self.names) > 10 else "")
            warnings.warn(f"{self.source}: {len(self.names)} tensor(s) contain NaN or inf values: {shown}; "
                          "a model with these weights produces NaN", RuntimeWarning, stacklevel=3)


def assign_tensor(root: nn.Module, key: str, tensor: torch.Tensor) -> None:
    """Replace the parameter or buffer ``key`` of ``root`` by ``tensor`` (no copy, no full state dict)."""
    module_name, _, leaf = key.rpartition(".")
    module = root.get_submodule(module_name) if module_name else root
    if leaf in module._parameters:
        old = module._parameters[leaf]
        module._parameters[leaf] = nn.Parameter(tensor, requires_grad=bool(old is not None and old.requires_grad))
    elif leaf in module._buffers:
        module._buffers[leaf] = tensor
    else:
        raise ConversionError(f"{type(root).__name__} has no parameter or buffer {key!r}")


def check_materialized(module: nn.Module, name: str) -> None:
    """Raise if any parameter or buffer of ``module`` is still on the meta device."""
    left = [k for k, v in list(module.named_parameters()) + list(module.named_buffers()) if v.device.type == "meta"]
    if left:
        raise ConversionError(f"{name}: {len(left)} tensors were not loaded, e.g. {left[:5]}")


def iter_folder_tensors(folder: str | os.PathLike) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield ``(key, tensor)`` from a diffusers component folder (single file or sharded), one at a time.

    Raises:
        OSError: a missing, truncated or corrupt weight file (named).
    """
    folder = Path(folder)
    index = folder / "diffusion_pytorch_model.safetensors.index.json"
    files = (
        sorted(set(read_json(index)["weight_map"].values()))
        if index.exists()
        else ["diffusion_pytorch_model.safetensors"]
    )
    from safetensors import SafetensorError, safe_open

    for name in files:
        path = folder / name
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                for key in f.keys():
                    tensor = f.get_tensor(key)
                    yield key, tensor
        except SafetensorError as err:  # truncated or corrupt: an OSError naming the file, as diffusers' loader
            raise OSError(f"{path}: not a readable safetensors file (truncated or corrupt?): {err}") from err


def _empty_module(spec) -> nn.Module:
    from accelerate import init_empty_weights

    # Parameters on meta, buffers real: non-persistent buffers (filters, RoPE tables) are computed at init.
    with init_empty_weights(include_buffers=False):
        return spec.model_class().from_config(spec.config)


def load_components_from_single_file(
    path,
    dtype: torch.dtype | None = None,
    *,
    fp8: str | None = "dequantize",
    components: list[str] | None = None,
    progress: bool = False,
    plan: ConversionPlan | None = None,
) -> dict[str, nn.Module]:
    """Build the diffusers components of an official LTX-2 checkpoint, streaming its tensors.

    Modules are created with parameters on the meta device, then each tensor is read with ``safe_open``,
    renamed, cast to ``dtype`` (``None`` keeps the file's dtypes; float8 weights become bf16) and assigned
    in place, so no state dict of the whole file is ever held. This backs
    ``LTX2AudioVideoPipeline.from_single_file``.

    Args:
        path: official ``.safetensors`` file (``config`` / ``model_version`` metadata required), or an LTX-2.5
            file set: a folder or a list of files (see `conversion.files`).
        dtype: target dtype of floating tensors, or ``None``.
        fp8: ``"dequantize"`` (default) or ``"keep"`` (transformer linears become :class:`FP8ScaledLinear`).
        components: subset of ``transformer``, ``connectors``, ``vae``, ``audio_vae``, ``vocoder`` (2.5 sets:
            also ``diffusion_decoder``, ``duration_head``).
        progress: show a tqdm bar.
        plan: a plan already made for ``path`` (skips inspecting it again).

    Returns:
        ``{"transformer": ..., "connectors": ..., "vae": ..., "audio_vae": ..., "vocoder": ...}`` (the components
        the checkpoint has) in eval mode.
    """
    name = {None: "keep", torch.bfloat16: "bf16", torch.float32: "fp32", torch.float16: "fp16"}.get(dtype)
    if name is None:
        raise ValueError(f"unsupported dtype {dtype}")
    plan = plan or plan_conversion(inspect_checkpoint(path), dtype=name, fp8=fp8)
    wanted = list(plan.specs) if components is None else components
    unknown = set(wanted) - set(plan.specs)
    if unknown:
        raise ValueError(f"unknown components {sorted(unknown)}; available: {list(plan.specs)}")
    from tqdm.auto import tqdm

    total = sum(t.nbytes for c in wanted for t in plan.tensors[c])
    modules: dict[str, nn.Module] = {}
    nonfinite = NonFiniteWeights(path if isinstance(path, (str, os.PathLike)) else plan.info.path)
    with SetReader(plan.info.sources) as reader, tqdm(total=total, unit="B", unit_scale=True,
                                                      disable=not progress) as bar:
        for comp in wanted:
            module = _empty_module(plan.specs[comp])
            if plan.fp8_modules.get(comp):
                swap_linears(module, plan.fp8_modules[comp], plan.fp8_weight_dtype)
            for tp in plan.tensors[comp]:
                tensor = materialize(reader, tp)
                nonfinite.check(tp.src or tp.dst, tensor)
                assign_tensor(module, tp.dst, tensor)
                bar.update(tp.nbytes)
            if dtype is not None:
                for key, buf in list(module.named_buffers()):  # init-time buffers (filters) follow dtype too
                    if buf.is_floating_point() and buf.dtype != dtype and not key.endswith("weight_scale"):
                        assign_tensor(module, key, buf.to(dtype))
            check_materialized(module, comp)
            modules[comp] = module.eval()
    nonfinite.warn()
    return modules


def load_fp8_transformer(folder: str | os.PathLike, dtype: torch.dtype = torch.bfloat16):
    """Load a ``transformer`` folder written with ``fp8="keep"``.

    Float8 linears become :class:`FP8ScaledLinear`; every other tensor is cast to ``dtype``. Tensors are
    assigned one at a time from the shards into a meta-initialised model.

    Raises:
        OSError: a missing, truncated or corrupt weight file (named).
        ValueError: an unreadable manifest.
    """
    from accelerate import init_empty_weights
    from diffusers import LTX2VideoTransformer3DModel

    folder = Path(folder)
    manifest = read_json(folder / FP8_MANIFEST)
    weight_dtype = getattr(torch, manifest["weight_dtype"])
    config = LTX2VideoTransformer3DModel.load_config(folder)
    with init_empty_weights(include_buffers=False):
        model = LTX2VideoTransformer3DModel.from_config(config)
    swap_linears(model, manifest["modules"], weight_dtype, compute_dtype=dtype)
    fp8_modules = set(manifest["modules"])
    for key, tensor in iter_folder_tensors(folder):
        module_name = key.rpartition(".")[0]
        keep = module_name in fp8_modules and key.endswith((".weight", ".weight_scale"))
        if not keep and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        assign_tensor(model, key, tensor)
    check_materialized(model, "transformer")
    return model.eval()
