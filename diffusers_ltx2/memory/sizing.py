"""Stored bytes of a full-width LTX-2 transformer block per quantization format, without materializing it.

The block (video 32 heads x 128, audio 32 x 64: 386 M parameters, LTX-2 19B) is built on the meta device;
each distinct linear shape the policy quantizes is quantized once for real (a format stores the same bytes for
every weight of a shape), everything kept counts at bf16. Quantizing all 386 M weights with qint4 on CPU takes
minutes; this takes seconds and gives the same total.
"""

from __future__ import annotations

import torch
from torch import nn

from ..quantization import weight_bytes
from ..quantization.policy import quantized_linear_names
from .budget import _linear_bytes

BF16_BYTES = 2


def full_width_block(**overrides) -> nn.Module:
    """`nn.Module` with `transformer_blocks.0` = one LTX-2 19B block on the meta device (diffusers naming)."""
    from diffusers.models.transformers.transformer_ltx2 import LTX2VideoTransformerBlock

    dims = dict(dim=4096, num_attention_heads=32, attention_head_dim=128, cross_attention_dim=4096, audio_dim=2048,
                audio_num_attention_heads=32, audio_attention_head_dim=64, audio_cross_attention_dim=2048,
                rope_type="split")
    with torch.device("meta"):
        block = LTX2VideoTransformerBlock(**{**dims, **overrides})
    model = nn.Module()
    model.transformer_blocks = nn.ModuleList([block])
    return model


def can_quantize_here(mode: str | None) -> bool:
    """True when `mode` quantizes on this machine (torchao's GPU formats need CUDA; GGUF has no in-memory
    quantizer here: `quantized_linear_bytes` uses the planner's format formula for those)."""
    from ..quantization import TORCHAO_FORMATS

    if mode is None or mode.startswith("gguf-"):
        return mode is None
    spec = TORCHAO_FORMATS.get(mode)
    return spec is None or not spec.cuda_only or torch.cuda.is_available()


def quantized_linear_bytes(in_features: int, out_features: int, bias: bool, mode: str | None) -> int:
    """Stored bytes of one bf16 `nn.Linear` of that shape after `mode` (None = bf16): quantized for real where
    `can_quantize_here`, else the VRAM planner's formula for the format (`memory.budget`)."""
    from ..quantization.fp8_cast import fp8_cast_linear

    if mode is None:
        return (in_features * out_features + (out_features if bias else 0)) * BF16_BYTES
    if not can_quantize_here(mode):
        return _linear_bytes(in_features * out_features, out_features if bias else 0, 1, mode, BF16_BYTES)
    lin = nn.Linear(in_features, out_features, bias=bias, dtype=torch.bfloat16)
    if mode == "fp8-cast":
        return weight_bytes(fp8_cast_linear(lin))
    if mode == "fp8-scaled-mm":
        from ..quantization.fp8_scaled_mm import scaled_mm_linear

        return weight_bytes(scaled_mm_linear(lin))
    from ..quantization import TORCHAO_FORMATS

    if mode in TORCHAO_FORMATS:
        from torchao.quantization import quantize_

        quantize_(lin, TORCHAO_FORMATS[mode].config())
        return weight_bytes(lin)
    from optimum.quanto import freeze, quantize

    from ..quantization.quanto import _qtype

    holder = nn.Sequential(lin)
    quantize(holder, weights=_qtype(mode))
    freeze(holder)
    return weight_bytes(holder)


def model_bytes(model: nn.Module, mode: str | None) -> int:
    """Stored bytes of a (meta) LTX-2 transformer or block holder after quantizing it with `mode`."""
    quantized = set(quantized_linear_names(model))
    cache: dict = {}
    total = 0
    for name, module in model.named_modules():
        if name in quantized:
            key = (module.in_features, module.out_features, module.bias is not None)
            if key not in cache:
                cache[key] = quantized_linear_bytes(*key, mode)
            total += cache[key]
        elif not any(name.startswith(q + ".") for q in quantized):
            own = [*module.parameters(recurse=False), *module.buffers(recurse=False)]
            total += sum(t.numel() * BF16_BYTES for t in own)
    return total
