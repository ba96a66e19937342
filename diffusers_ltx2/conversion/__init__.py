"""Official LTX-2 single-file checkpoints and LoRAs -> diffusers layout (streaming, atomic, verified keys).

Public entry points:

- :func:`convert_single_file` - official ``.safetensors`` -> diffusers pipeline folder (``ltx2 convert``).
- :func:`load_components_from_single_file` - modules straight from the official file (``from_single_file``).
- :func:`convert_lora_file` / :func:`convert_lora_state_dict` - official LoRA -> diffusers/PEFT keys.
- :func:`load_fp8_transformer` - load a transformer folder converted with ``fp8="keep"``.

Names are imported on first use (PEP 562), so ``diffusers_ltx2.conversion.errors`` costs no torch/diffusers import.
"""

from __future__ import annotations

import importlib

from .errors import (
    ConversionError,
    CorruptCheckpointError,
    KeyMismatchError,
    UnsupportedCheckpointError,
)

_LAZY = {
    "FP8ScaledLinear": ".fp8",
    "load_fp8_transformer": ".loading",
    "convert_single_file": ".convert",
    "load_components_from_single_file": ".loading",
    "convert_lora_file": ".lora",
    "convert_lora_state_dict": ".lora",
    "reference_downscale_factor": ".lora",
    "inspect_checkpoint": ".plan",
    "plan_conversion": ".plan",
}

__all__ = [
    "ConversionError",
    "CorruptCheckpointError",
    "FP8ScaledLinear",
    "KeyMismatchError",
    "UnsupportedCheckpointError",
    "convert_lora_file",
    "convert_lora_state_dict",
    "convert_single_file",
    "inspect_checkpoint",
    "load_components_from_single_file",
    "load_fp8_transformer",
    "plan_conversion",
    "reference_downscale_factor",
]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
