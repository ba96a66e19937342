"""Official LTX-2 single-file checkpoints and LoRAs -> diffusers layout (streaming, atomic, verified keys).

Public entry points:

- :func:`convert_single_file` - official ``.safetensors`` -> diffusers pipeline folder (``ltx2 convert``).
- :func:`load_components_from_single_file` - modules straight from the official file (``from_single_file``).
- :func:`convert_lora_file` / :func:`convert_lora_state_dict` - official LoRA -> diffusers/PEFT keys.
- :func:`load_fp8_transformer` - load a transformer folder converted with ``fp8="keep"``.
"""

from .convert import convert_single_file
from .errors import (
    ConversionError,
    CorruptCheckpointError,
    KeyMismatchError,
    UnsupportedCheckpointError,
)
from .fp8 import FP8ScaledLinear, load_fp8_transformer
from .loading import load_components_from_single_file
from .lora import convert_lora_file, convert_lora_state_dict, reference_downscale_factor
from .plan import inspect_checkpoint, plan_conversion

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
