"""Inspect an official single file and plan its conversion, before any tensor is read.

The plan maps every source tensor to a component, a diffusers key and an output dtype, and checks the
result against the meta-initialised diffusers modules: unknown keys, missing keys and shape mismatches
are all reported together, so a conversion either has a complete plan or writes nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import configs as C
from .components import ComponentSpec, component_specs, expected_tensors
from ..json_files import parse_json
from .errors import ConversionError, KeyMismatchError, UnsupportedCheckpointError
from .fp8 import FP8_MODES, is_float8
from .keymap import PROJECTION_PREFIX, KeyMapper
from .streaming import TensorInfo, read_header

DTYPES = {"keep": None, "bf16": torch.bfloat16, "fp32": torch.float32, "fp16": torch.float16}


@dataclass
class CheckpointInfo:
    """Header facts of an official checkpoint: tensors, raw metadata, parsed ``config`` and version."""

    path: Path
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str]
    config: dict
    version: str


@dataclass
class TensorPlan:
    """How one output tensor is produced: read ``src`` (and ``scale`` for dequantization), cast to ``dtype``."""

    src: str
    dst: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    scale: str | None = None  # source ``.weight_scale`` to multiply in (dequantize mode)

    @property
    def nbytes(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n * torch.empty((), dtype=self.dtype).element_size()


@dataclass
class ConversionPlan:
    """Components (class + config) and, per component, the ordered tensors to produce."""

    info: CheckpointInfo
    specs: dict[str, ComponentSpec]
    tensors: dict[str, list[TensorPlan]] = field(default_factory=dict)
    fp8_modules: dict[str, list[str]] = field(default_factory=dict)
    fp8_weight_dtype: torch.dtype | None = None

    @property
    def total_bytes(self) -> int:
        return sum(t.nbytes for ts in self.tensors.values() for t in ts)


def inspect_checkpoint(path: str | os.PathLike) -> CheckpointInfo:
    """Read the header and metadata of an official LTX-2 single file (no tensor data).

    Raises :class:`CorruptCheckpointError` for unreadable files and :class:`UnsupportedCheckpointError` when
    the ``config`` metadata is missing or ``model_version`` is unknown.
    """
    path = Path(path)
    tensors, metadata = read_header(path)
    if "config" not in metadata:
        raise UnsupportedCheckpointError(
            f"{path}: no 'config' metadata; this is not an official LTX-2 single-file checkpoint "
            "(or its metadata was stripped)."
        )
    try:
        config = parse_json(metadata["config"], f"{path}: 'config' metadata")
    except ValueError as exc:
        raise UnsupportedCheckpointError(str(exc)) from exc
    if not isinstance(config, dict) or "transformer" not in config:
        raise UnsupportedCheckpointError(f"{path}: the 'config' metadata has no 'transformer' section.")
    version = C.normalize_version(metadata.get("model_version"), config)
    return CheckpointInfo(path, tensors, metadata, config, version)


def _output_dtype(src: torch.dtype, dtype: torch.dtype | None) -> torch.dtype:
    if not src.is_floating_point:
        return src
    return src if dtype is None else dtype


def plan_conversion(info: CheckpointInfo, dtype: str = "keep", fp8: str | None = None) -> ConversionPlan:
    """Map every tensor of ``info`` and validate the mapping against the diffusers modules.

    Args:
        info: from :func:`inspect_checkpoint`.
        dtype: ``"keep"`` (source dtypes), ``"bf16"``, ``"fp32"`` or ``"fp16"`` for floating tensors.
        fp8: for float8 weights, ``"dequantize"`` (``weight * weight_scale``, bf16 unless ``dtype`` says
            otherwise) or ``"keep"`` (float8 weights plus their scales). Required when the file has float8
            tensors.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    if fp8 is not None and fp8 not in FP8_MODES:
        raise ValueError(f"fp8 must be one of {FP8_MODES} or None, got {fp8!r}")
    target = DTYPES[dtype]
    mapper = KeyMapper(info.config)
    projection_shapes = {k: v.shape for k, v in info.tensors.items() if k.startswith(PROJECTION_PREFIX)}
    specs = component_specs(info.config, info.version, projection_shapes)
    expected = {name: expected_tensors(spec.build_meta()) for name, spec in specs.items()}

    float8 = [k for k, v in info.tensors.items() if is_float8(v.dtype)]
    if float8 and fp8 is None:
        raise ConversionError(
            f"{info.path.name} has {len(float8)} float8 tensors; choose fp8='dequantize' (bf16 weights) or "
            "fp8='keep' (float8 weights + scales for FP8 loading)."
        )

    plan = ConversionPlan(info, specs, {name: [] for name in specs})
    unknown, wrong_dtype, seen = [], [], {name: set() for name in specs}
    for key, ti in sorted(info.tensors.items(), key=lambda kv: kv[1].start):
        try:
            routed = mapper.map(key)
        except KeyError:
            unknown.append(key)
            continue
        if routed is None:
            continue
        component, new = routed
        exp = expected.get(component, {}).get(new)
        if exp is None:
            unknown.append(f"{key} (-> {component}: {new})")
            continue
        if exp[0] != ti.shape:
            unknown.append(f"{key} (shape {ti.shape}, {component}.{new} expects {exp[0]})")
            continue
        seen[component].add(new)
        scale_key = key.removesuffix(".weight") + ".weight_scale" if key.endswith(".weight") else None
        scale_key = scale_key if scale_key in info.tensors else None
        if ti.dtype.is_floating_point != exp[1].is_floating_point:
            wanted = "floating-point" if exp[1].is_floating_point else "integer/boolean"
            wrong_dtype.append(f"{key}: {_kind(ti.dtype)}, but {component}.{new} is a {wanted} tensor")
        if scale_key and not info.tensors[scale_key].dtype.is_floating_point:
            wrong_dtype.append(f"{scale_key}: {_kind(info.tensors[scale_key].dtype)}, but a weight scale is "
                               "floating point")
        if is_float8(ti.dtype) and fp8 == "keep" and component == "transformer" and len(ti.shape) == 2:
            plan.fp8_weight_dtype = ti.dtype
            module = new.removesuffix(".weight")
            plan.fp8_modules.setdefault(component, []).append(module)
            plan.tensors[component].append(TensorPlan(key, new, ti.shape, ti.dtype))
            scale_shape = info.tensors[scale_key].shape if scale_key else ()
            plan.tensors[component].append(
                TensorPlan(scale_key or "", module + ".weight_scale", scale_shape, torch.float32)
            )
        elif is_float8(ti.dtype):
            out = target or torch.bfloat16
            plan.tensors[component].append(TensorPlan(key, new, ti.shape, out, scale=scale_key))
        else:
            plan.tensors[component].append(TensorPlan(key, new, ti.shape, _output_dtype(ti.dtype, target)))
    missing = [f"{name}: {k}" for name in specs for k in sorted(set(expected[name]) - seen[name])]
    if unknown or missing:
        raise KeyMismatchError(unknown=unknown, missing=missing)
    if wrong_dtype:
        raise ConversionError(
            f"{info.path.name}: {len(wrong_dtype)} tensor(s) have a dtype that does not fit their role "
            "(the file is damaged or not an LTX-2 checkpoint):\n  " + "\n  ".join(wrong_dtype[:20])
            + (f"\n  ... and {len(wrong_dtype) - 20} more" if len(wrong_dtype) > 20 else "")
        )
    return plan


def _kind(dtype: torch.dtype) -> str:
    """``"floating point"`` or e.g. ``"integer (int32)"`` for error messages."""
    if dtype.is_floating_point:
        return f"floating point ({str(dtype).removeprefix('torch.')})"
    return f"{'boolean' if dtype == torch.bool else 'integer'} ({str(dtype).removeprefix('torch.')})"
