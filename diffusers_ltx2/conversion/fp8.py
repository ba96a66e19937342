"""FP8 checkpoints: dequantize on conversion, or keep float8 weights with their scales.

Official FP8 files store the linear weights of the transformer blocks as ``float8_e4m3fn``; prequantized
files add ``<linear>.weight_scale`` (and ``<linear>.input_scale``, the activation scale of ltx-core's
TensorRT kernel, which a dequantizing matmul does not need). Dequantized value = ``weight * weight_scale``.

``keep`` mode writes the float8 weights and their ``weight_scale`` under the diffusers names plus a
``ltx2_fp8.json`` manifest; `conversion.loading.load_fp8_transformer` loads such a folder with
:class:`FP8ScaledLinear` layers that dequantize on the fly (memory of the FP8 file, compute in the activation dtype).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn


FP8_MODES = ("dequantize", "keep")
FP8_MANIFEST = "ltx2_fp8.json"
_FLOAT8 = (torch.float8_e4m3fn, torch.float8_e5m2)


def is_float8(dtype: torch.dtype) -> bool:
    """True for the float8 dtypes official FP8 checkpoints use."""
    return dtype in _FLOAT8


def scale_for(weight_shape: tuple[int, ...], scale: torch.Tensor) -> torch.Tensor:
    """Reshape a per-tensor or per-output-channel scale so it broadcasts over ``weight_shape``."""
    scale = scale.to(torch.float32)
    if scale.numel() == 1:
        return scale.reshape(())
    if scale.numel() == weight_shape[0]:
        return scale.reshape(weight_shape[0], *([1] * (len(weight_shape) - 1)))
    raise ValueError(f"weight_scale of shape {tuple(scale.shape)} does not fit a weight of shape {weight_shape}")


def dequantize(weight: torch.Tensor, scale: torch.Tensor | None, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """``weight * weight_scale`` computed in float32, returned in ``dtype`` (scale ``None`` means 1)."""
    w = weight.to(torch.float32)
    if scale is not None:
        w = w * scale_for(tuple(weight.shape), scale)
    return w.to(dtype)


class FP8ScaledLinear(nn.Linear):
    """``nn.Linear`` whose weight stays float8 in memory and is dequantized per call.

    A subclass of ``nn.Linear`` (without its float weight allocation) so that PEFT adapts it as any linear layer:
    a LoRA on it is an unmerged low-rank side path (`diffusers_ltx2.quantization.lora`). ``compute_dtype`` is
    the dtype the layer computes in outside a call (the model dtype it was built for; PEFT reads it to give
    LoRA factors that dtype rather than float8); a ``.to(dtype)`` updates it and leaves the float8 tensors.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, weight_dtype=torch.float8_e4m3fn,
                 compute_dtype: torch.dtype = torch.bfloat16):
        nn.Module.__init__(self)
        self.in_features, self.out_features = in_features, out_features
        self.compute_dtype = compute_dtype
        self.weight = nn.Parameter(torch.empty(out_features, in_features, dtype=weight_dtype), requires_grad=False)
        self.register_buffer("weight_scale", torch.ones((), dtype=torch.float32))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None

    def _apply(self, fn, recurse=True):
        """`.to(device)` moves the float8 tensors and the float32 scales; a dtype change (`pipe.to(torch.bfloat16)`)
        leaves them as they are (torch would upcast the float8 weights, silently dropping the memory saving, and
        round the scales) and becomes the ``compute_dtype``. float8 -> wider -> float8 is exact."""
        probe = fn(torch.empty(0, dtype=self.compute_dtype, device=self.weight.device))
        if probe.is_floating_point() and not is_float8(probe.dtype):
            self.compute_dtype = probe.dtype
        kept = {name: t.dtype for name, t in self.named_parameters(recurse=False) if is_float8(t.dtype)}
        scales = {name: t for name, t in self.named_buffers(recurse=False) if name.endswith("scale")}
        super()._apply(fn, recurse)
        for name, dtype in kept.items():
            param = getattr(self, name)
            if param.dtype != dtype:
                setattr(self, name, nn.Parameter(param.data.to(dtype), requires_grad=False))
        for name, t in scales.items():
            self._buffers[name] = t.to(probe.device)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = dequantize(self.weight, self.weight_scale, x.dtype)
        b = self.bias.to(x.dtype) if self.bias is not None else None
        return nn.functional.linear(x, w, b)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, weight_dtype={self.weight.dtype}"


def swap_linears(model: nn.Module, names: list[str], weight_dtype=torch.float8_e4m3fn,
                 compute_dtype: torch.dtype = torch.bfloat16, cls: type[FP8ScaledLinear] = FP8ScaledLinear) -> None:
    """Replace the ``nn.Linear`` submodules called ``names`` by :class:`FP8ScaledLinear` (or ``cls``, a subclass;
    meta-safe)."""
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        old = getattr(parent, child)
        if not isinstance(old, nn.Linear):
            raise TypeError(f"{name} is {type(old).__name__}, not nn.Linear")
        with torch.device("meta"):
            new = cls(old.in_features, old.out_features, old.bias is not None, weight_dtype, compute_dtype)
        setattr(parent, child, new)


def write_manifest(folder: str | os.PathLike, modules: list[str], weight_dtype: torch.dtype,
                   matmul: str | None = None) -> None:
    """Record which linears of a component folder hold float8 weights (`matmul="scaled_mm"`: they multiply in
    float8, `diffusers_ltx2.quantization.fp8_scaled_mm`)."""
    manifest = {"format": "ltx2-fp8-scaled", "weight_dtype": str(weight_dtype).removeprefix("torch."),
                "modules": sorted(modules)}
    if matmul is not None:
        manifest["matmul"] = matmul
    with open(Path(folder) / FP8_MANIFEST, "w") as f:
        json.dump(manifest, f, indent=2)


def check_fp8_manifest(folder: str | os.PathLike) -> None:
    """A local `transformer/` folder whose weights hold float8 linears (`weight_scale` tensors) must carry its
    `ltx2_fp8.json` manifest: without it diffusers would load the float8 weights into plain linears that fail at
    the first matmul (an incomplete copy of a `--fp8 keep` / fp8-cast folder). Reads the headers only.

    Raises:
        OSError: the manifest is missing (or a weight file is unreadable).
    """
    from .errors import ConversionError
    from .streaming import read_header

    folder = Path(folder)
    if not folder.is_dir() or (folder / FP8_MANIFEST).is_file():
        return
    for path in sorted(folder.glob("*.safetensors")):
        try:
            tensors, _ = read_header(path)
        except ConversionError as err:
            raise OSError(str(err)) from err
        if any(k.endswith(".weight_scale") for k in tensors):
            raise OSError(f"{folder}: float8 weights (weight_scale tensors in {path.name}) but no {FP8_MANIFEST}: "
                          f"an incomplete copy of an FP8 / fp8-cast folder; copy {FP8_MANIFEST} from the source")
