"""Official `fp8-scaled-mm`: float8 weights *and* activations multiplied by `torch._scaled_mm`.

Followed: ltx-core `quantization/fp8_scaled_mm.py`, 1.2.0 (`../shared/ltx2-official-1.2.0`) for the forward -
`qinput = clamp(x * input_scale.reciprocal(), fp8_min, fp8_max).to(float8_e4m3fn)` then `torch._scaled_mm(qinput,
weight.t(), scale_a=input_scale, scale_b=weight_scale, out_dtype=x.dtype, use_fast_accum=True) + bias` - and
`quantize_weight_to_fp8_per_tensor` (`scale = 448 / amax(|W|)`, `clamp(W * scale).to(e4m3)`, `weight_scale =
1 / scale`); 1.0.0 for the layers (`EXCLUDED_LAYER_SUBSTRINGS`: the policy's kept modules plus blocks 0 and
43-47, literally). ltx-core 1.0.0 calls TensorRT-LLM's ops for the same math; 1.2.0 calls `torch._scaled_mm`.

Two ways in:

* an FP8 checkpoint (`ltx2 convert --fp8 keep` folder or `from_single_file(..., fp8="keep")`): its float8 layers
  switch to the scaled matmul as they are (`to_scaled_mm_`), as ltx-core 1.2 swaps exactly the layers the file
  stores in float8 with a `weight_scale`;
* bf16 weights (`quantization="fp8-scaled-mm"`): the layers above are quantized per tensor with the official rule.
  ltx-core refuses bf16 checkpoints for this policy; here it is the same rule applied at load.

Activation scale: an FP8 file's static `input_scale` (ltx-core) where the layer has one; otherwise (our
conversion keeps only `weight_scale`, and bf16 weights have none) it is computed per call, `amax(|x|) / 448`
(dynamic per-tensor scaling, torchao's default for float8). Where `torch._scaled_mm` cannot run - CUDA below
compute capability 8.9, shapes that are not multiples of 16 on CUDA, a build without it - the same quantized
operands are multiplied in float32 (`scaled_mm_reference`): same quantization, exact products, no speed-up.
The CPU build of torch 2.13 has `torch._scaled_mm`; the two paths are tested equal there.
"""

from __future__ import annotations

import torch
from torch import nn

from ..conversion.fp8 import FP8ScaledLinear, is_float8
from .policy import quantized_linear_names

FP8_DTYPE = torch.float8_e4m3fn
FP8_MAX = torch.finfo(FP8_DTYPE).max  # 448
#: ltx-core 1.0.0 keeps these blocks in bf16 for fp8-scaled-mm (`transformer_blocks.0.`, `transformer_blocks.43.`
#: ... `.47.` in `EXCLUDED_LAYER_SUBSTRINGS`: the first and the last five of the 48-block model)
SCALED_MM_EXCLUDED_BLOCKS = frozenset({0, *range(43, 48)})


def quantize_weight_per_tensor(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ltx-core's `quantize_weight_to_fp8_per_tensor`: `(float8 weight, float32 weight_scale)` with
    `weight ~= fp8 * weight_scale`. An all-zero weight gets scale 1 (ltx-core would divide by zero)."""
    w = weight.to(torch.float32)
    amax = w.abs().amax()
    scale = FP8_MAX / amax if amax > 0 else torch.ones((), dtype=torch.float32, device=w.device)
    q = torch.clamp(w * scale, min=-FP8_MAX, max=FP8_MAX).to(FP8_DTYPE)
    return q, scale.reciprocal()


def dynamic_input_scale(x: torch.Tensor) -> torch.Tensor:
    """Per-tensor activation scale `amax(|x|) / 448` (float32, 1 for an all-zero input)."""
    amax = x.detach().abs().amax().to(torch.float32)
    return torch.where(amax > 0, amax / FP8_MAX, torch.ones_like(amax))


def quantize_input(x: torch.Tensor, input_scale: torch.Tensor) -> torch.Tensor:
    """ltx-core 1.2: `clamp(x * input_scale.reciprocal(), fp8_min, fp8_max).to(float8_e4m3fn)`."""
    return torch.clamp(x * input_scale.reciprocal(), -FP8_MAX, FP8_MAX).to(FP8_DTYPE)


def scaled_mm_reference(qx: torch.Tensor, weight: torch.Tensor, input_scale: torch.Tensor,
                        weight_scale: torch.Tensor, out_dtype: torch.dtype) -> torch.Tensor:
    """What `torch._scaled_mm(qx, weight.t(), input_scale, weight_scale)` computes, in float32: `(qx * sa) @
    (weight * sb).T` (2-D `qx`; `weight_scale` per tensor or per output row)."""
    w = weight.to(torch.float32) * (weight_scale.reshape(-1, 1) if weight_scale.numel() > 1 else weight_scale)
    return ((qx.to(torch.float32) * input_scale) @ w.t()).to(out_dtype)


_HAS_SCALED_MM: dict[tuple[str, int | None], bool] = {}  # a plain dict: torch.compile traces through it


def _probe_scaled_mm(device_type: str, index: int | None) -> bool:
    if not hasattr(torch, "_scaled_mm"):
        return False
    if device_type == "cuda":
        return torch.cuda.get_device_capability(index) >= (8, 9)
    if device_type != "cpu":
        return False
    try:  # the CPU kernel exists in recent builds
        a = torch.ones(16, 16, dtype=FP8_DTYPE)
        one = torch.ones((), dtype=torch.float32)
        torch._scaled_mm(a, a.t(), scale_a=one, scale_b=one, out_dtype=torch.float32)
        return True
    except (RuntimeError, NotImplementedError):
        return False


def _device_has_scaled_mm(device_type: str, index: int | None) -> bool:
    key = (device_type, index)
    if key not in _HAS_SCALED_MM:
        _HAS_SCALED_MM[key] = _probe_scaled_mm(device_type, index)
    return _HAS_SCALED_MM[key]


def scaled_mm_available(device: torch.device, k: int, n: int, per_tensor: bool = True) -> bool:
    """True when `torch._scaled_mm` runs a `(m, k) x (k, n)` float8 product with tensor-wise scales on `device`
    (CUDA: compute capability >= 8.9 and `k`, `n` multiples of 16)."""
    if not per_tensor or not _device_has_scaled_mm(device.type, device.index):
        return False
    return device.type != "cuda" or (k % 16 == 0 and n % 16 == 0)


class FP8ScaledMMLinear(FP8ScaledLinear):
    """A float8 linear whose matmul runs in float8 (`torch._scaled_mm`), ltx-core's `FP8Linear`.

    Storage as `FP8ScaledLinear` (weight `(out, in)` float8, float32 `weight_scale`, bias in the compute dtype),
    plus an optional static `input_scale` buffer (NaN: computed per call; not part of the state dict). Input
    `(..., in)` in any float dtype;
    output `(..., out)` in the input's dtype.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, weight_dtype=FP8_DTYPE,
                 compute_dtype: torch.dtype = torch.bfloat16):
        super().__init__(in_features, out_features, bias, weight_dtype, compute_dtype)
        # not saved: FP8 keep folders carry weight_scale only (the conversion drops an FP8 file's input_scale)
        self.register_buffer("input_scale", torch.full((), float("nan"), dtype=torch.float32), persistent=False)
        self.static_input_scale = False  # a Python flag, so the forward never syncs to read the buffer
        self._refresh_kernel()

    def _refresh_kernel(self) -> None:
        """Whether `torch._scaled_mm` runs for this layer where its weight lives (a Python flag, decided when
        the layer is built or moved, so a compiled forward does not probe the device)."""
        device = self.weight.device
        self.uses_scaled_mm = device.type != "meta" and scaled_mm_available(
            device, self.in_features, self.out_features, self.weight_scale.numel() == 1)

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        self._refresh_kernel()
        return self

    def set_input_scale(self, scale: torch.Tensor | float | None) -> None:
        """Use a static activation scale (an FP8 file's `input_scale`); `None` = computed per call."""
        value = float("nan") if scale is None else float(scale)
        self.input_scale = torch.full((), value, dtype=torch.float32, device=self.weight.device)
        self.static_input_scale = scale is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        input_scale = self.input_scale if self.static_input_scale else dynamic_input_scale(x2)
        qx = quantize_input(x2, input_scale)
        if self.uses_scaled_mm:
            out = torch._scaled_mm(qx, self.weight.t(), scale_a=input_scale, scale_b=self.weight_scale.reshape(()),
                                   out_dtype=x.dtype, use_fast_accum=True)
        else:
            out = scaled_mm_reference(qx, self.weight, input_scale, self.weight_scale, x.dtype)
        if self.bias is not None:
            out = out + self.bias.to(out.dtype)
        return out.reshape(*shape[:-1], self.out_features)


def scaled_mm_linear_names(model: nn.Module) -> list[str]:
    """The linears fp8-scaled-mm quantizes in a bf16 transformer: the policy's, outside blocks 0 and 43-47."""
    return [n for n in quantized_linear_names(model) if int(n.split(".")[1]) not in SCALED_MM_EXCLUDED_BLOCKS]


def scaled_mm_linear(linear: nn.Linear) -> FP8ScaledMMLinear:
    """An `FP8ScaledMMLinear` holding `linear`'s weight quantized per tensor (official rule); bias kept."""
    new = FP8ScaledMMLinear(linear.in_features, linear.out_features, linear.bias is not None,
                            compute_dtype=linear.weight.dtype).to(linear.weight.device)
    q, scale = quantize_weight_per_tensor(linear.weight.detach())
    with torch.no_grad():
        new.weight = nn.Parameter(q, requires_grad=False)
        new.weight_scale = scale.reshape(())
        if linear.bias is not None:
            new.bias = nn.Parameter(linear.bias.detach().clone(), requires_grad=False)
    new._refresh_kernel()
    return new


def apply_fp8_scaled_mm(model: nn.Module) -> list[str]:
    """Quantize a bf16 (or fp32) LTX-2 transformer in place for fp8-scaled-mm; returns the layers' names."""
    names = scaled_mm_linear_names(model)
    for name in names:
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, scaled_mm_linear(model.get_submodule(name)))
    return names


def to_scaled_mm_(model: nn.Module) -> list[str]:
    """Switch the float8 layers of an FP8-checkpoint transformer (`FP8ScaledLinear`) to the scaled matmul, in
    place, keeping their tensors (and a static `input_scale` if they carry one); returns their names."""
    names = []
    for name, module in list(model.named_modules()):
        if type(module) is FP8ScaledLinear and is_float8(module.weight.dtype):
            new = FP8ScaledMMLinear(module.in_features, module.out_features, module.bias is not None,
                                    module.weight.dtype, module.compute_dtype)
            new.weight, new.bias = module.weight, module.bias
            new.weight_scale = module.weight_scale
            new.set_input_scale(getattr(module, "input_scale", None))
            new._refresh_kernel()
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, new)
            names.append(name)
    if not names:
        raise ValueError("fp8-scaled-mm on an FP8 checkpoint: the transformer has no float8 layers")
    return names


def scaled_mm_names(model: nn.Module) -> list[str]:
    """Names of the `FP8ScaledMMLinear` layers of a model."""
    return [n for n, m in model.named_modules() if isinstance(m, FP8ScaledMMLinear)]
