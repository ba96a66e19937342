"""Official fp8-cast: bf16 linear weights (and biases) cast to float8_e4m3fn at load, upcast per matmul.

Followed: ltx-core 1.0.0 `quantization/fp8_cast.py` (`_naive_weight_or_bias_downcast`: a plain
`.to(torch.float8_e4m3fn)`, no scale; `_replace_fwd_with_upcast`: `F.linear(x, w.to(x.dtype), b.to(x.dtype))`,
without stochastic rounding, which needs triton/CUDA). The layers are the package's `FP8ScaledLinear` (the
layer FP8 checkpoints load into) with `weight_scale = 1`, so a cast transformer saves as an FP8 "keep" folder
(`ltx2_fp8.json`) and reloads with `from_pretrained`.
"""

from __future__ import annotations

import torch
from torch import nn

from ..conversion.fp8 import FP8ScaledLinear
from .policy import quantized_linear_names

FP8_CAST_DTYPE = torch.float8_e4m3fn


def fp8_cast_linear(linear: nn.Linear) -> FP8ScaledLinear:
    """An `FP8ScaledLinear` holding `linear`'s weight and bias cast to float8_e4m3fn (scale 1).

    Values beyond +-448 saturate to NaN-free float8 only if in range: as in ltx-core, no clamping is done
    (trained LTX-2 weights are far inside the range)."""
    new = FP8ScaledLinear(linear.in_features, linear.out_features, linear.bias is not None, FP8_CAST_DTYPE,
                          compute_dtype=linear.weight.dtype)
    new.to(linear.weight.device)
    with torch.no_grad():
        new.weight = nn.Parameter(linear.weight.detach().to(FP8_CAST_DTYPE), requires_grad=False)
        if linear.bias is not None:
            new.bias = nn.Parameter(linear.bias.detach().to(FP8_CAST_DTYPE), requires_grad=False)
    return new


def apply_fp8_cast(model: nn.Module) -> list[str]:
    """Replace the policy's linears of an LTX-2 transformer by float8 ones, in place; returns their names."""
    names = quantized_linear_names(model)
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, fp8_cast_linear(getattr(parent, child)))
    return names


def fp8_linear_names(model: nn.Module) -> list[str]:
    """Names of the float8 linears of a model (empty when it has none)."""
    return [n for n, m in model.named_modules() if isinstance(m, FP8ScaledLinear)]
