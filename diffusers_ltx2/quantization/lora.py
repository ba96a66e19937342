"""LoRA on quantized weights: PEFT's unmerged low-rank side path, and fusion that re-quantizes.

Every quantized linear of this package is an `nn.Linear` (fp8-cast / FP8-keep `FP8ScaledLinear`, fp8-scaled-mm
`FP8ScaledMMLinear`, optimum-quanto `QLinear`, torchao tensor subclasses, diffusers' `GGUFLinear`), so PEFT
wraps it in its own `lora.Linear` (`TorchaoLoraLinear` for torchao): the forward is `base(x) + scale * B(A(x))`,
the base stays quantized and untouched, the factors stay in the compute dtype (`compute_dtype` of the float8
layers, read by PEFT), `set_adapters` strengths, `delete_adapters`, `unload_lora_weights` and offload hooks work
as on a bf16 model. PEFT 0.21 gets *fusion* wrong or refuses it on these bases (measured): on a quanto `QLinear`
`merge()` adds the delta to the quantized tensor's storage (the output changes by 50% relative instead of
matching the unmerged LoRA); on float8 it adds in float8 and ignores the scale; on torchao it needs the model's
`TorchAoConfig` and re-quantizes once per adapter. `adopt_quantized_lora_layers` therefore gives the LoRA layers
on quantized bases `QuantizedLoraLinear`'s `merge` / `unmerge`: dequantize, add the summed delta of the adapters
in float32, re-quantize in the base's own format (with the official rules for the float8 formats, ltx-core 1.2
`fp8_cast.fuse_cast_fp8_weight` and `fp8_scaled_mm._fp8_scaled_mm_fuse`).

Precision cost of fusing (what `fuse_lora` warns): the fused weight `W + dW` is rounded to the format again -
float8 e4m3: up to 2^-4 relative per weight; int8 per row: half a step, amax(row) / 254; int4 per group:
range / 30; NVFP4: e2m1 in blocks of 16; GGUF Q8_0: amax(block of 32) / 254, Q4_0: amax / 16 - and
`unfuse_lora` subtracts `dW` from that rounded weight, so `W` comes back only to the same precision (bounds
measured in `tests/conversion/test_quantized_lora.py`). Unfused, a LoRA costs no precision.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from ..conversion.fp8 import FP8ScaledLinear
from .fp8_scaled_mm import FP8ScaledMMLinear, quantize_weight_per_tensor

logger = logging.getLogger(__name__)

#: what re-quantizing a fused weight costs, per base format (the `fuse_lora` warning)
FUSE_PRECISION = {
    "fp8-cast": "float8 e4m3, no scale: up to 2^-4 relative per weight (ltx-core's fp8-cast fuse, bf16 add)",
    "fp8-scaled": "float8 e4m3 with a fresh scale: up to 2^-4 relative per weight",
    "fp8-scaled-mm": "float8 e4m3 with a fresh per-tensor scale: up to 2^-4 relative per weight (ltx-core's "
                     "fp8-scaled-mm fuse)",
    "quanto": "the quanto type again (int8 per row: amax/254 per weight; int4: range/30 per group; qfloat8: "
              "2^-4 relative)",
    "torchao": "the torchao format again (int8 per row: amax/254; float8: 2^-4 relative; NVFP4: e2m1 blocks)",
    "gguf": "the GGUF block type again (Q8_0: amax/254 per block of 32; Q4_0: amax/16)",
}


def base_format(base: nn.Module) -> str | None:
    """The quantized format of a linear layer (a key of `FUSE_PRECISION`), `None` for a plain one."""
    if isinstance(base, FP8ScaledMMLinear):
        return "fp8-scaled-mm"
    if isinstance(base, FP8ScaledLinear):
        scale = base.weight_scale
        return "fp8-cast" if scale.numel() == 1 and float(scale) == 1.0 else "fp8-scaled"
    if type(base).__name__ == "QLinear" and hasattr(base, "weight_qtype"):
        return "quanto"
    weight = getattr(base, "weight", None)
    if weight is not None and hasattr(weight, "quant_type") and hasattr(weight, "as_tensor"):
        return "gguf"
    from .torchao_backend import is_torchao_tensor

    return "torchao" if is_torchao_tensor(weight) else None


# -- the pure math: float8 fusion rules (official) ---------------------------------------------------------------
def fuse_fp8_cast(weight: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """ltx-core 1.2 `fuse_cast_fp8_weight` (deterministic path): `(bf16(delta) + bf16(weight)).to(weight.dtype)`."""
    return (delta.to(torch.bfloat16) + weight.to(torch.bfloat16)).to(weight.dtype)


def fuse_fp8_scaled(weight: torch.Tensor, scale: torch.Tensor, delta: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """ltx-core 1.2 `_fp8_scaled_mm_fuse`: `weight * scale + delta` in float32, re-quantized with a fresh
    per-tensor scale; a per-row `scale` (FP8 keep folders may carry one) gets fresh per-row scales."""
    w = weight.to(torch.float32) * (scale.reshape(-1, 1) if scale.numel() > 1 else scale) + delta.to(torch.float32)
    if scale.numel() == 1:
        q, new_scale = quantize_weight_per_tensor(w)
        return q, new_scale.reshape(scale.shape)
    rows = [quantize_weight_per_tensor(r) for r in w]
    return torch.stack([q for q, _ in rows]), torch.stack([s for _, s in rows]).reshape(scale.shape)


# -- dequantize / re-quantize a base -----------------------------------------------------------------------------
def dequantize_weight(base: nn.Module) -> torch.Tensor:
    """The base layer's weight as a float32 `(out, in)` tensor (a transient full-size copy: fusion only)."""
    fmt = base_format(base)
    if fmt in ("fp8-cast", "fp8-scaled", "fp8-scaled-mm"):
        from ..conversion.fp8 import dequantize

        return dequantize(base.weight, base.weight_scale, torch.float32)
    if fmt == "quanto":
        return base.weight.dequantize().to(torch.float32)
    if fmt == "gguf":
        from diffusers.quantizers.gguf.utils import dequantize_gguf_tensor

        return dequantize_gguf_tensor(base.weight).to(torch.float32)
    if fmt == "torchao":
        return base.weight.dequantize().to(torch.float32)
    return base.weight.detach().to(torch.float32)


def _torchao_leaf_config(layer) -> object:
    getter = getattr(layer, "get_apply_tensor_subclass", None)
    config = getter() if getter is not None else None
    if config is None:
        raise ValueError("fusing a LoRA into torchao weights needs the model's TorchAoConfig (quantize with "
                         "quantization='torchao-...' so the transformer carries it)")
    table = getattr(config, "fqn_to_config", None)
    if table is not None:  # the policy's one-regex FqnToConfig: its single config applies to this layer
        leaves = [c for c in table.values() if c is not None]
        if len({type(c) for c in leaves}) != 1:
            raise ValueError("fusing into torchao weights quantized with several configs is not supported")
        config = leaves[0]
    return config


def requantize_weight_(base: nn.Module, weight: torch.Tensor, fuse: str, layer=None, delta=None) -> None:
    """Store `weight` (float32, `(out, in)`) in `base` in its own quantized format.

    `fuse` = the base's `base_format`. For fp8-cast the official rule rounds `bf16(W) + bf16(delta)` (pass the
    original float8 weight's `delta`, `weight` is then ignored) - the official rules work on the stored weight."""
    if fuse == "fp8-cast":
        base.weight = nn.Parameter(fuse_fp8_cast(base.weight, delta), requires_grad=False)
    elif fuse in ("fp8-scaled", "fp8-scaled-mm"):
        q, scale = fuse_fp8_scaled(base.weight, base.weight_scale, delta)
        base.weight = nn.Parameter(q, requires_grad=False)
        base.weight_scale = scale.to(base.weight_scale.device)
    elif fuse == "quanto":
        dtype = base.weight.dtype
        base.weight = nn.Parameter(weight.to(dtype), requires_grad=False)
        base.freeze()  # QModuleMixin: re-quantizes `weight` with the layer's qtype (and group size / optimizer)
    elif fuse == "torchao":
        from torchao.quantization import quantize_

        config = _torchao_leaf_config(layer)
        dtype = base.weight.dtype
        del base.weight
        base.weight = nn.Parameter(weight.to(dtype), requires_grad=False)
        quantize_(base, config)
    elif fuse == "gguf":
        import gguf
        from diffusers.quantizers.gguf.utils import GGUFParameter

        qtype = base.weight.quant_type
        try:
            data = gguf.quants.quantize(weight.detach().cpu().numpy(), gguf.GGMLQuantizationType(qtype))
        except NotImplementedError as e:
            raise ValueError(f"fusing a LoRA into GGUF {gguf.GGMLQuantizationType(qtype).name} weights: the gguf "
                             "package cannot quantize that type; keep the LoRA unfused") from e
        base.weight = GGUFParameter(torch.from_numpy(data).to(base.weight.device), quant_type=qtype)
    else:
        raise ValueError(f"not a quantized layer: {type(base).__name__}")


def _peft_linear():
    from peft.tuners.lora.layer import Linear

    return Linear


class _Loader:
    """Builds `QuantizedLoraLinear` on first use (PEFT is imported lazily, as elsewhere in the package)."""

    cls = None

    @classmethod
    def get(cls):
        if cls.cls is None:
            cls.cls = _make_quantized_lora_linear(_peft_linear())
        return cls.cls


def _make_quantized_lora_linear(base_cls):
    from peft.tuners.tuners_utils import check_adapters_to_merge

    class QuantizedLoraLinear(base_cls):
        """PEFT `lora.Linear` on a quantized base: unmerged forward as PEFT's; `merge` / `unmerge` re-quantize
        in the base's format (see the module docstring for the precision it costs)."""

        def _summed_delta(self, names: list[str]) -> torch.Tensor:
            for name in names:
                if self.use_dora.get(name) or self.lora_variant.get(name) is not None:
                    raise NotImplementedError("fusing DoRA / LoRA variants into quantized weights is not supported")
            return sum(self.get_delta_weight(a).to(torch.float32) for a in names)

        def _apply_delta(self, delta: torch.Tensor, safe_merge: bool) -> None:
            base = self.get_base_layer()
            fmt = base_format(base)
            weight = None if fmt in ("fp8-cast", "fp8-scaled", "fp8-scaled-mm") else dequantize_weight(base) + delta
            if safe_merge:
                check = weight if weight is not None else dequantize_weight(base) + delta
                if not torch.isfinite(check).all():
                    raise ValueError("NaNs detected in the merged weights; the adapter seems to be broken")
            requantize_weight_(base, weight, fmt, layer=self, delta=delta)
            _warn_once(fmt)

        @torch.no_grad()
        def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
            names = [a for a in check_adapters_to_merge(self, adapter_names) if a in self.lora_A]
            if not names:
                return
            self._apply_delta(self._summed_delta(names), safe_merge)
            self.merged_adapters.extend(names)

        @torch.no_grad()
        def unmerge(self) -> None:
            if not self.merged:
                return
            names = [a for a in self.merged_adapters if a in self.lora_A]
            self.merged_adapters.clear()
            if names:
                self._apply_delta(-self._summed_delta(names), False)

        def __repr__(self) -> str:
            return super().__repr__().replace("lora.Linear", "lora.QuantizedLoraLinear", 1)

    return QuantizedLoraLinear


_WARNED: set[str] = set()


def _warn_once(fmt: str) -> None:
    if fmt not in _WARNED:
        _WARNED.add(fmt)
        logger.warning("fusing LoRA weights into %s weights re-quantizes W + dW (%s); unfuse_lora gives W back only "
                       "to that precision. Unfused, the LoRA runs as an exact low-rank side path.", fmt,
                       FUSE_PRECISION[fmt])


def quantized_lora_linear_class():
    """The `QuantizedLoraLinear` class (a subclass of PEFT's `lora.Linear`)."""
    return _Loader.get()


def adopt_quantized_lora_layers(model: nn.Module) -> list[str]:
    """Give PEFT's LoRA linears on quantized bases the re-quantizing `merge` / `unmerge` (in place; PEFT creates
    them through its dispatch, which has no entry for these formats' fusion); returns their names. Idempotent."""
    linear = _peft_linear()
    cls = quantized_lora_linear_class()
    adopted = []
    for name, module in model.named_modules():
        if isinstance(module, linear) and not isinstance(module, cls) and base_format(module.get_base_layer()):
            if getattr(module, "merged_adapters", None):
                raise ValueError(f"{name}: LoRA already fused into quantized weights by PEFT's own merge")
            module.__class__ = cls
            adopted.append(name)
    return adopted
