"""Weight quantization of the LTX-2 transformer (and the Gemma text encoder) at load.

One argument, `quantization=`, on `LTX2AudioVideoPipeline.from_pretrained` / `from_single_file` and
`--quantize` on the CLI:

==================== ============================================= ================ ===========================
mode                 weights of the quantized linears               backend          saves / reloads
==================== ============================================= ================ ===========================
fp8-cast             float8_e4m3fn, no scale, upcast per matmul     official         yes (FP8 keep folder)
fp8-scaled-mm        float8 per-tensor scale, float8 activations,   official         yes (FP8 keep folder)
                     `torch._scaled_mm` (`fp8_scaled_mm.py`)
fp8 / int8 / int4    quanto qfloat8 / qint8 / qint4                 optimum-quanto   yes (quanto config)
torchao-*            int8, float8, NVFP4 weight-only; int4, float8  torchao          yes (TorchAoConfig)
                     / NVFP4 / MX dynamic (`torchao_backend.py`)
==================== ============================================= ================ ===========================

The layers quantized and kept are listed once, in `policy.py` (fp8-scaled-mm also keeps blocks 0 and 43-47, as
ltx-core does). LoRAs load onto every format as an unmerged side path (`lora.py`). GGUF files load with
`gguf.py`. The text encoder (`text_encoder_quantization=`) takes the quanto modes; it is not serializable.
"""

from __future__ import annotations

import torch
from torch import nn

from .fp8_cast import apply_fp8_cast, fp8_linear_names
from .policy import KEEP_HIGH_PRECISION, is_quantized_linear, quantized_linear_names
from .quanto import QUANTO_MODES, quanto_config, quantize_quanto_, quantize_text_encoder_
from .torchao_backend import TORCHAO_FORMATS

__all__ = [
    "QUANTIZATION_MODES", "TEXT_ENCODER_QUANTIZATION_MODES", "KEEP_HIGH_PRECISION", "apply_fp8_cast",
    "TORCHAO_FORMATS", "check_quantization", "check_quantization_machine", "check_quantized_runtime",
    "check_serializable",
    "check_transformer_runtime", "is_quantized_linear", "quantize_transformer_",
    "quantized_linear_names", "quanto_config", "quantize_text_encoder_", "transformer_quantization", "weight_bytes",
]

from ..memory_modes import QUANTIZATION_MODES, TEXT_ENCODER_QUANTIZATION_MODES, TORCHAO_MODES  # noqa: E402

assert tuple(QUANTO_MODES) == TEXT_ENCODER_QUANTIZATION_MODES, "memory_modes lists every quanto mode"
assert tuple(TORCHAO_FORMATS) == TORCHAO_MODES, "memory_modes lists every torchao mode"


def check_quantization(mode: str | None, *, text_encoder: bool = False) -> str | None:
    """Validate a quantization mode name (`None` = no quantization) before any model loads; returns it.

    Raises:
        ValueError: unknown mode (the message lists the choices).
        ImportError: a quanto mode without optimum-quanto, a torchao mode without torchao installed.
    """
    if mode is None:
        return None
    choices = TEXT_ENCODER_QUANTIZATION_MODES if text_encoder else QUANTIZATION_MODES
    if mode not in choices:
        what = "text encoder quantization" if text_encoder else "quantization"
        raise ValueError(f"unknown {what} {mode!r}; choose one of {', '.join(choices)}")
    if mode in QUANTO_MODES:
        try:
            import optimum.quanto  # noqa: F401
        except ImportError as e:
            raise ImportError(f"quantization {mode!r} needs optimum-quanto: pip install optimum-quanto") from e
    if mode in TORCHAO_FORMATS:
        from .torchao_backend import check_torchao_installed

        check_torchao_installed(mode)
    return mode


def check_quantization_machine(mode: str | None, dtype: torch.dtype | None = None) -> None:
    """Refuse, before anything loads, a mode this machine / torch build cannot run with `dtype` (torchao's GPU
    formats: `ValueError` naming the hardware requirement). Other modes run everywhere."""
    if mode in TORCHAO_FORMATS:
        from .torchao_backend import check_torchao_machine

        check_torchao_machine(mode, dtype)


def check_quantized_runtime(mode: str | None, device, dtype) -> None:
    """Refuse a quantization that cannot run on `device` with `dtype` activations, before anything loads or runs.

    optimum-quanto computes int8 weights x bfloat16 activations on CPU with `torch._weight_int8pack_mm`, which
    crashes the process (segfault) or raises "expected scalar type BFloat16 but found Float" on the LTX-2
    transformer. float32 (and float16) activations take quanto's dequantizing path; int4 / fp8 and GPUs work.

    Args:
        mode: the transformer's quantization ("int8", ...) or `None`.
        device: the device the transformer computes on (`torch.device` or a name such as "cpu").
        dtype: the activations' (the transformer's compute) dtype.

    Raises:
        ValueError: int8 (optimum-quanto) with bfloat16 on CPU; the message names the working alternatives. A
            torchao mode whose hardware requirement (CUDA, compute capability, bfloat16) `device` / this machine
            does not meet; the message names the requirement.
    """
    if mode in TORCHAO_FORMATS:
        from .torchao_backend import check_torchao_runtime

        check_torchao_runtime(mode, device, dtype)
    if mode == "int8" and dtype == torch.bfloat16 and torch.device(device).type == "cpu":
        raise ValueError(
            "int8 quantization (optimum-quanto) cannot run bfloat16 activations on CPU: its int8 x bf16 CPU "
            "kernel crashes. Use float32 on CPU (--dtype fp32 / dtype=torch.float32; mixed_precision_mode: no "
            "for training), int4 or fp8 quantization, or a CUDA GPU")


def check_transformer_runtime(transformer: nn.Module | None, device) -> None:
    """`check_quantized_runtime` for a loaded transformer about to run on `device` (its quantization and dtype);
    pipelines call it at the start of `__call__`. Raises `ValueError` as that function does."""
    if transformer is not None:
        check_quantized_runtime(transformer_quantization(transformer), device, transformer.dtype)


def transformer_quantization(model: nn.Module) -> str | None:
    """The quantization a transformer carries: float8 linears ("fp8-scaled-mm" when they multiply in float8, else
    "fp8-cast", which FP8 keep folders load as), a quanto config ("fp8" / "int8" / "int4"), a torchao config
    ("torchao-..."), GGUF weights ("gguf-<type>", e.g. "gguf-Q8_0"), or `None`."""
    config = getattr(getattr(model, "config", None), "quantization_config", None)
    if config is not None:
        method = config.get("quant_method") if isinstance(config, dict) else getattr(config, "quant_method", None)
        method = getattr(method, "value", method)
        if method == "torchao":
            from .torchao_backend import torchao_mode_of

            return torchao_mode_of(config) or "torchao"
        dtype = config.get("weights_dtype") if isinstance(config, dict) else getattr(config, "weights_dtype", None)
        return {v[0]: k for k, v in QUANTO_MODES.items()}.get(dtype, str(dtype))
    from .fp8_scaled_mm import scaled_mm_names
    from .gguf import gguf_quantization_of

    gguf = gguf_quantization_of(model)
    if gguf is not None:
        return gguf
    if scaled_mm_names(model):
        return "fp8-scaled-mm"
    return "fp8-cast" if fp8_linear_names(model) else None


def quantize_transformer_(model: nn.Module, mode: str) -> list[str]:
    """Quantize an already-built LTX-2 transformer in place with `mode`; returns the quantized module names.
    "fp8-scaled-mm" on a transformer loaded from an FP8 checkpoint (`fp8="keep"`, FP8 keep folders) switches its
    float8 layers to the scaled matmul instead (ltx-core's policy for FP8 checkpoints).

    Raises:
        ValueError: unknown mode, the model is already quantized, a torchao mode this machine cannot run (the
            message names the hardware requirement) or whose row widths the format cannot hold.
        ImportError: the mode's package (optimum-quanto, torchao) is missing.
    """
    check_quantization(mode)
    current = transformer_quantization(model)
    if mode == "fp8-scaled-mm" and current == "fp8-cast" and not _is_cast(model):
        from .fp8_scaled_mm import to_scaled_mm_  # an FP8 checkpoint: its float8 layers multiply in float8

        return to_scaled_mm_(model)
    if current is not None:
        raise ValueError(f"the transformer is already quantized ({current}); load the bf16 weights to quantize")
    if mode == "fp8-cast":
        return apply_fp8_cast(model)
    if mode == "fp8-scaled-mm":
        from .fp8_scaled_mm import apply_fp8_scaled_mm

        return apply_fp8_scaled_mm(model)
    if mode in TORCHAO_FORMATS:
        from .torchao_backend import check_torchao_machine, quantize_torchao_

        check_torchao_machine(mode, model.dtype)
        return quantize_torchao_(model, mode)
    return quantize_quanto_(model, mode)


def _is_cast(model: nn.Module) -> bool:
    """True when every float8 linear has scale 1 and a float8 bias (made by fp8-cast, not an FP8 checkpoint)."""
    from .fp8_cast import FP8_CAST_DTYPE

    layers = [model.get_submodule(n) for n in fp8_linear_names(model)]
    return bool(layers) and all(m.bias is not None and m.bias.dtype == FP8_CAST_DTYPE for m in layers)


def check_serializable(components: dict) -> None:
    """Raise `NotImplementedError` (before anything is written) when a component cannot be saved: a text encoder
    quantized in memory with optimum-quanto, a transformer loaded from a GGUF file."""
    transformer = components.get("transformer")
    if transformer is not None:
        from .gguf import gguf_quantization_of

        if gguf_quantization_of(transformer):
            raise NotImplementedError("the transformer was loaded from a GGUF file, which diffusers cannot save; "
                                      "keep the GGUF file and load it again with gguf_file=")
    te = components.get("text_encoder")
    if te is not None and getattr(te, "_ltx2_quantization", None):
        raise NotImplementedError(
            f"the text encoder is quantized in memory ({te._ltx2_quantization}, optimum-quanto) and cannot be "
            "saved; save the pipeline without text_encoder_quantization and quantize it again at load")


def _tensor_bytes(t) -> int:
    """Bytes of a tensor; a tensor subclass (quanto's QTensors) is the sum of its inner tensors."""
    if hasattr(t, "__tensor_flatten__"):
        names, _ = t.__tensor_flatten__()
        return sum(_tensor_bytes(getattr(t, n)) for n in names)
    return t.numel() * t.element_size()


def weight_bytes(module: nn.Module) -> int:
    """Bytes of a module's parameters and buffers as stored (quantized data, scales and shifts included)."""
    tensors = {id(t): t for t in (*module.parameters(), *module.buffers())}
    return sum(_tensor_bytes(t) for t in tensors.values())
