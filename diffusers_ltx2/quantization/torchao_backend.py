"""torchao quantization of the LTX-2 transformer (the backend diffusers recommends over optimum-quanto).

Modes (`quantization="torchao-..."`, `--quantize torchao-...`); the layers are the policy's (`policy.py`), passed to
torchao as one `FqnToConfig` regex, so quantize-at-load (diffusers' `TorchAoConfig`, tensor by tensor) and
in-memory quantization (`quantize_torchao_`) quantize exactly the same linears:

==================== ===================================================== ======================================
mode                 torchao config                                         runs on
==================== ===================================================== ======================================
torchao-int8         `Int8WeightOnlyConfig` (int8, per-row scale)           CPU and GPU
torchao-fp8-weight   `Float8WeightOnlyConfig` (e4m3, per-row scale)         CPU and GPU (dequantized per matmul)
torchao-nvfp4-weight `NVFP4WeightOnlyConfig` (e2m1, e4m3 scale / 16)        CPU and GPU (dequantized per matmul)
torchao-int4         `Int4WeightOnlyConfig` (groups of 128, tinygemm)       CUDA, bfloat16
torchao-fp8          `Float8DynamicActivationFloat8WeightConfig`            CUDA compute capability >= 8.9 (Ada,
                     (fp8 activations and weights, scaled matmul)           Hopper, Blackwell)
torchao-nvfp4        `NVFP4DynamicActivationNVFP4WeightConfig`              CUDA compute capability >= 10.0
                     (fp4 activations and weights)                          (Blackwell), bfloat16
torchao-mxfp8        `MXDynamicActivationMXWeightConfig` (mxfp8, blocks     CUDA compute capability >= 10.0
                     of 32)                                                 (Blackwell), bfloat16
==================== ===================================================== ======================================

Measured with torch 2.13 (CPU build) and torchao 0.18: `Int4WeightOnlyConfig` has no CPU kernel ("plain" needs
the `mslk` CUDA package, "tile_packed_to_4d" needs CUDA and bf16, "plain_int32" says "does not support device
'cpu'"); the float8 dynamic config asserts "compute capability >= 8.9"; NVFP4 / MX dynamic configs assert
sm100. Those modes are refused with a `ValueError` naming the requirement before anything loads
(`check_torchao_machine`) and before a call on the wrong device (`check_torchao_runtime`).

Serialisation: the model carries diffusers' `TorchAoConfig` and quantizer, so `save_pretrained` writes the
torchao tensors to safetensors (torchao >= 0.16) and `from_pretrained` reloads them without re-quantizing.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import nn

from .policy import QUANTIZED_LINEAR_PATTERN, quantized_linear_names


@dataclass(frozen=True)
class TorchaoMode:
    """One torchao format: the config class (module, name, keyword arguments) and what it needs to run."""

    config_module: str
    config_name: str
    kwargs: tuple = ()
    cuda_capability: tuple[int, int] | None = None  # None: runs without a GPU
    cuda_only: bool = False
    bfloat16_only: bool = False
    dim_multiple: int = 1  # in / out features must be multiples of this
    requirement: str = ""  # the hardware / build requirement, as the error message says it

    def config(self):
        import importlib

        module = importlib.import_module(self.config_module)
        kwargs = dict(self.kwargs)
        if self.config_name == "Int4WeightOnlyConfig":
            from torchao.quantization.quantize_.workflows.int4.int4_packing_format import Int4PackingFormat

            kwargs["int4_packing_format"] = Int4PackingFormat.TILE_PACKED_TO_4D
        return getattr(module, self.config_name)(**kwargs)


_Q = "torchao.quantization"
_MX = "torchao.prototype.mx_formats"
TORCHAO_FORMATS: dict[str, TorchaoMode] = {
    "torchao-int8": TorchaoMode(_Q, "Int8WeightOnlyConfig"),
    "torchao-fp8-weight": TorchaoMode(_Q, "Float8WeightOnlyConfig"),
    "torchao-nvfp4-weight": TorchaoMode(_MX, "NVFP4WeightOnlyConfig", dim_multiple=16),
    "torchao-int4": TorchaoMode(_Q, "Int4WeightOnlyConfig", (("group_size", 128),), cuda_only=True,
                                bfloat16_only=True, dim_multiple=128,
                                requirement="a CUDA GPU and bfloat16 (torchao's int4 kernels are CUDA-only)"),
    "torchao-fp8": TorchaoMode(_Q, "Float8DynamicActivationFloat8WeightConfig", cuda_capability=(8, 9),
                               cuda_only=True, dim_multiple=16,
                               requirement="an NVIDIA GPU of compute capability >= 8.9 (Ada, Hopper, Blackwell)"),
    "torchao-nvfp4": TorchaoMode(_MX, "NVFP4DynamicActivationNVFP4WeightConfig", (("use_triton_kernel", False),),
                                 cuda_capability=(10, 0), cuda_only=True, bfloat16_only=True, dim_multiple=16,
                                 requirement="an NVIDIA GPU of compute capability >= 10.0 (Blackwell) and bfloat16"),
    "torchao-mxfp8": TorchaoMode(_MX, "MXDynamicActivationMXWeightConfig", cuda_capability=(10, 0), cuda_only=True,
                                 bfloat16_only=True, dim_multiple=32,
                                 requirement="an NVIDIA GPU of compute capability >= 10.0 (Blackwell) and bfloat16"),
}
for _name, _mode in TORCHAO_FORMATS.items():
    if _mode.cuda_only and not _mode.requirement:
        raise AssertionError(f"{_name}: a GPU-only mode states its requirement")


def check_torchao_installed(mode: str) -> None:
    """Raise `ImportError` (with the install command) when torchao is missing."""
    try:
        import torchao  # noqa: F401
    except ImportError as e:
        raise ImportError(f"quantization {mode!r} needs torchao: pip install 'diffusers-ltx2[torchao]'") from e


def _cuda_capability() -> tuple[int, int] | None:
    return torch.cuda.get_device_capability() if torch.cuda.is_available() else None


def _refuse(mode: str, spec: TorchaoMode, found: str) -> ValueError:
    return ValueError(f"quantization {mode!r} needs {spec.requirement}; {found}. Formats that run here: "
                      "torchao-int8, torchao-fp8-weight, torchao-nvfp4-weight, fp8-cast, fp8-scaled-mm, int8, int4")


def check_torchao_machine(mode: str, dtype: torch.dtype | None = None) -> None:
    """Refuse, before anything loads, a torchao mode this machine / torch build cannot run (its config asserts it
    at quantization time, or its kernels do not exist): a `ValueError` naming the hardware requirement."""
    spec = TORCHAO_FORMATS[mode]
    if spec.cuda_only:
        capability = _cuda_capability()
        if capability is None:
            raise _refuse(mode, spec, f"this torch build / machine has no CUDA GPU (torch {torch.__version__})")
        if spec.cuda_capability is not None and capability < spec.cuda_capability:
            raise _refuse(mode, spec, f"{torch.cuda.get_device_name()} has compute capability "
                                      f"{capability[0]}.{capability[1]}")
    if spec.bfloat16_only and dtype is not None and dtype != torch.bfloat16:
        raise ValueError(f"quantization {mode!r} computes in bfloat16 only, got {dtype}; load with "
                         "dtype=torch.bfloat16 (--dtype bf16)")


def check_torchao_runtime(mode: str, device, dtype: torch.dtype) -> None:
    """Refuse running a GPU-only torchao mode on another device (or the wrong dtype): `ValueError`."""
    spec = TORCHAO_FORMATS[mode]
    if spec.cuda_only and torch.device(device).type != "cuda":
        raise _refuse(mode, spec, f"the transformer runs on {torch.device(device).type}")
    check_torchao_machine(mode, dtype)


def check_torchao_shapes(mode: str, shapes: dict[str, tuple[int, int]]) -> None:
    """Refuse a model whose quantized linears the format cannot hold (NVFP4: features multiples of 16; MX: 32;
    int4: in-features multiples of its group of 128; torchao would raise mid-load or silently skip the layer).

    Args:
        shapes: module name -> (out_features, in_features) of the policy's linears.
    """
    m = TORCHAO_FORMATS[mode].dim_multiple
    bad = [f"{n} ({o}x{i})" for n, (o, i) in shapes.items() if o % m or i % m]
    if bad:
        raise ValueError(f"quantization {mode!r} needs in/out features that are multiples of {m}; "
                         f"{len(bad)} layers are not: {', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}")


def fqn_config(mode: str):
    """torchao `FqnToConfig` quantizing exactly the policy's linears (one regex) with `mode`'s config."""
    from torchao.quantization import FqnToConfig

    return FqnToConfig({"re:" + QUANTIZED_LINEAR_PATTERN: TORCHAO_FORMATS[mode].config()})


def torchao_config(mode: str):
    """diffusers `TorchAoConfig` for `from_pretrained(quantization_config=...)` (quantize while loading)."""
    from diffusers import TorchAoConfig

    return TorchAoConfig(fqn_config(mode))


def quantize_torchao_(model: nn.Module, mode: str) -> list[str]:
    """Quantize the policy's linears of a built LTX-2 transformer in place with `mode` and attach diffusers'
    quantizer (so it saves and reloads, and PEFT can re-quantize on LoRA fusion); returns their names."""
    from diffusers.quantizers import DiffusersAutoQuantizer
    from torchao.quantization import quantize_

    names = quantized_linear_names(model)
    check_torchao_shapes(mode, {n: tuple(model.get_submodule(n).weight.shape) for n in names})
    quantize_(model, fqn_config(mode), filter_fn=None)
    config = torchao_config(mode)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.register_to_config(quantization_config=config)
        model.hf_quantizer = DiffusersAutoQuantizer.from_config(config, pre_quantized=True)
    return names


def torchao_mode_of(config) -> str | None:
    """The mode name of a torchao `TorchAoConfig` (object or its `to_dict`), or None if it is not one of ours."""
    quant_type = config.get("quant_type") if isinstance(config, dict) else getattr(config, "quant_type", None)
    if isinstance(quant_type, dict):  # serialized: {"default": {"_type": "FqnToConfig", "_data": {...}}}
        inner = quant_type.get("default", quant_type)
        configs = inner.get("_data", {}).get("module_fqn_to_config") or inner.get("_data", {}).get("fqn_to_config")
        names = {v.get("_type") for v in (configs or {}).values() if isinstance(v, dict)} or {inner.get("_type")}
    else:
        table = getattr(quant_type, "fqn_to_config", None) or getattr(quant_type, "module_fqn_to_config", None)
        names = {type(c).__name__ for c in table.values() if c is not None} if table else {type(quant_type).__name__}
    for mode, spec in TORCHAO_FORMATS.items():
        if names == {spec.config_name}:
            return mode
    return None


def is_torchao_tensor(t) -> bool:
    """True for a torchao quantized tensor subclass."""
    try:
        from torchao.utils import TorchAOBaseTensor
    except ImportError:
        return False
    return isinstance(t, TorchAOBaseTensor)


def torchao_linear_names(model: nn.Module) -> list[str]:
    """Names of the linears of a model whose weight is a torchao quantized tensor."""
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and is_torchao_tensor(m.weight)]
