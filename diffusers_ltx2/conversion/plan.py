"""Inspect an official checkpoint (a single file, or an LTX-2.5 file set) and plan its conversion, before any
tensor is read.

The plan maps every source tensor to a component, a diffusers key and an output dtype, and checks the
result against the meta-initialised diffusers modules: unknown keys, missing keys and shape mismatches
are all reported together, so a conversion either has a complete plan or writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import configs as C
from .components import ComponentSpec, component_specs, expected_tensors
from .errors import ConversionError, KeyMismatchError, UnsupportedCheckpointError
from .files import CheckpointFile, inspect_set
from .fp8 import FP8_MODES, is_float8
from .keymap import DURATION_HEAD_PREFIX, PROJECTION_PREFIX, TRANSFORMER_PREFIX, KeyMapper
from .streaming import TensorInfo

DTYPES = {"keep": None, "bf16": torch.bfloat16, "fp32": torch.float32, "fp16": torch.float16}


@dataclass
class CheckpointInfo:
    """Header facts of an official checkpoint: tensors, raw metadata, parsed ``config`` and version.

    ``path`` is the file naming the model (the single file, or a set's transformer file); ``sources`` maps every
    tensor name (single-file naming) to the file and key it is read from; ``files`` lists the files of a set.
    """

    path: Path
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str]
    config: dict
    version: str
    sources: dict[str, tuple[Path, str]] = field(default_factory=dict)
    files: list[CheckpointFile] = field(default_factory=list)

    @property
    def is_set(self) -> bool:
        """Per-component files (LTX-2.5) rather than one single file."""
        return not any(f.role == "monolith" for f in self.files)

    def role_files(self) -> dict[str, Path]:
        return {f.role: f.path for f in self.files}


@dataclass
class TensorPlan:
    """How one output tensor is produced: read ``src`` (and ``scale`` for dequantization), take a row ``chunk``
    ``(index, count)`` of a fused tensor, fold a static ``gate`` in (rows scaled), cast to ``dtype``; ``fill``: no
    source, a constant tensor (a bias the checkpoint has switched off)."""

    src: str
    dst: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    scale: str | None = None  # source ``.weight_scale`` to multiply in (dequantize mode)
    chunk: tuple[int, int] | None = None
    gate: str | None = None
    fill: float | None = None

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


def inspect_checkpoint(path) -> CheckpointInfo:
    """Read the headers and metadata of an official LTX-2 checkpoint (no tensor data).

    ``path``: a single file (2.0 / 2.3), or an LTX-2.5 file set: a folder, or a list of files (see `files`).

    Raises :class:`CorruptCheckpointError` for unreadable files and :class:`UnsupportedCheckpointError` when
    the ``config`` metadata is missing or ``model_version`` is unknown.
    """
    ckpt = inspect_set(path)
    primary = ckpt.primary
    if primary.role in ("monolith", "transformer") and "config" not in primary.metadata:
        raise UnsupportedCheckpointError(
            f"{primary.path}: no 'config' metadata; this is not an official LTX-2 single-file checkpoint "
            "(or its metadata was stripped)."
        )
    config = ckpt.config
    if primary.role in ("monolith", "transformer") and "transformer" not in config:
        raise UnsupportedCheckpointError(f"{primary.path}: the 'config' metadata has no 'transformer' section.")
    if not any(f.role in ("monolith", "transformer", "video_vae", "video_vae_diffusion", "audio_vae",
                          "duration_head", "text_encoder") for f in ckpt.files):
        raise UnsupportedCheckpointError(
            "no model component among " + ", ".join(f.path.name for f in ckpt.files)
            + " (upscalers and LoRAs are converted next to a model, not alone: use `ltx2 convert` on the upscaler "
            "file, `ltx2 convert-lora` on the LoRA)"
        )
    from .metadata import expected_gemma_version

    try:  # read here, before any tensor: a corrupt declaration fails the inspection, not the end of a conversion
        expected_gemma_version(ckpt.metadata)
    except ValueError as exc:
        raise UnsupportedCheckpointError(f"{primary.path}: {exc}") from exc
    version = C.normalize_version(ckpt.metadata.get("model_version"), config)
    return CheckpointInfo(primary.path, ckpt.tensors, ckpt.metadata, config, version, ckpt.sources, ckpt.files)


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
    mapper = KeyMapper(info.config, has_key=info.tensors.__contains__)
    projection_shapes = {k: v.shape for k, v in info.tensors.items() if k.startswith(PROJECTION_PREFIX)}
    head_shapes = {k: v.shape for k, v in info.tensors.items() if k.startswith(DURATION_HEAD_PREFIX)}
    has_transformer = any(k.startswith(TRANSFORMER_PREFIX) and "_embeddings_connector." not in k for k in info.tensors)
    specs = component_specs(info.config, info.version, projection_shapes, head_shapes, has_transformer=has_transformer)
    # a set without the text encoder file has the connectors but not their input projection: they are skipped
    absent = {"connectors"} if info.is_set and "connectors" not in specs else set()
    expected = {name: expected_tensors(spec.build_meta()) for name, spec in specs.items()}

    float8 = [k for k, v in info.tensors.items() if is_float8(v.dtype)]
    if float8 and fp8 is None:
        raise ConversionError(
            f"{info.path.name} has {len(float8)} float8 tensors; choose fp8='dequantize' (bf16 weights) or "
            "fp8='keep' (float8 weights + scales for FP8 loading)."
        )

    plan = ConversionPlan(info, specs, {name: [] for name in specs})
    unknown, wrong_dtype, seen = [], [], {name: set() for name in specs}
    for key, ti in sorted(info.tensors.items(), key=lambda kv: (str(info.sources.get(kv[0], ("",))[0]), kv[1].start)):
        try:
            routes = mapper.routes(key)
        except KeyError:
            unknown.append(key)
            continue
        for component, route in routes:
            if component in absent:
                continue
            exp = expected.get(component, {}).get(route.key)
            new = route.key
            if exp is None:
                unknown.append(f"{key} (-> {component}: {new})")
                continue
            shape = ti.shape
            if route.chunk is not None:
                index, count = route.chunk
                if not shape or shape[0] % count:
                    unknown.append(f"{key} (shape {ti.shape} cannot be split in {count})")
                    continue
                shape = (shape[0] // count, *shape[1:])
            if route.gate is not None and info.tensors[route.gate].shape != (shape[0],):
                unknown.append(f"{route.gate} (shape {info.tensors[route.gate].shape}, gates {new} of {shape})")
                continue
            if exp[0] != shape:
                unknown.append(f"{key} (shape {ti.shape}, {component}.{new} expects {exp[0]})")
                continue
            seen[component].add(new)
            if route.chunk is not None or route.gate is not None:
                _check_dtype(key, ti.dtype, exp[1], component, new, wrong_dtype)
                out = _output_dtype(ti.dtype, target)
                if is_float8(ti.dtype):
                    out = target or torch.bfloat16
                plan.tensors[component].append(TensorPlan(key, new, shape, out, chunk=route.chunk, gate=route.gate))
                continue
            _plan_plain(plan, info, key, ti, component, new, exp, target, fp8, wrong_dtype)
    for component in specs:  # biases a checkpoint switched off (diffusers always has them): zeros, exactly
        for new in sorted(C.zero_filled_tensors(info.config, component) & (set(expected[component]) - seen[component])):
            shape, out = expected[component][new]
            out = target or next((t.dtype for t in plan.tensors[component] if t.dtype.is_floating_point), out)
            plan.tensors[component].append(TensorPlan("", new, shape, out, fill=0.0))
            seen[component].add(new)
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


#: components a pipeline folder cannot do without, and the 2.5 file that brings each
PIPELINE_COMPONENTS = {
    "transformer": "the transformer (ltx-2.5-22b-dev- or -distilled-transformer-*.safetensors)",
    "connectors": "the text encoder with the projection (gemma4-12b-with-proj-ltx-2.5-*.safetensors)",
    "vae": "the video VAE with the convolutional decoder (ltx-2.5-video-vae-conv-*.safetensors): diffusers' "
           "AutoencoderKLLTX2Video, the pipeline's image encoder and latent statistics, needs its decoder",
    "audio_vae": "the audio VAE (ltx-2.5-audio-vae-*.safetensors)",
    "vocoder": "the audio VAE file's vocoder (ltx-2.5-audio-vae-*.safetensors)",
}


def check_pipeline_components(plan: ConversionPlan) -> None:
    """Raise `ConversionError` naming the files a pipeline folder still needs (2.5 sets come in parts)."""
    missing = [what for name, what in PIPELINE_COMPONENTS.items() if name not in plan.specs]
    if missing:
        raise ConversionError("a pipeline needs " + "; ".join(missing) + ". Add the missing file(s) to the set "
                              "(a folder, or files named one by one)")


def _check_dtype(key, src: torch.dtype, exp: torch.dtype, component: str, new: str, wrong: list) -> None:
    if src.is_floating_point != exp.is_floating_point:
        wanted = "floating-point" if exp.is_floating_point else "integer/boolean"
        wrong.append(f"{key}: {_kind(src)}, but {component}.{new} is a {wanted} tensor")


def _plan_plain(plan: ConversionPlan, info: CheckpointInfo, key: str, ti: TensorInfo, component: str, new: str,
                exp, target, fp8, wrong_dtype: list) -> None:
    """Plan a one-to-one tensor (FP8 weights kept with their scale, or dequantized)."""
    scale_key = key.removesuffix(".weight") + ".weight_scale" if key.endswith(".weight") else None
    scale_key = scale_key if scale_key in info.tensors else None
    _check_dtype(key, ti.dtype, exp[1], component, new, wrong_dtype)
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
            TensorPlan(scale_key or "", module + ".weight_scale", scale_shape, torch.float32))
    elif is_float8(ti.dtype):
        out = target or torch.bfloat16
        plan.tensors[component].append(TensorPlan(key, new, ti.shape, out, scale=scale_key))
    else:
        plan.tensors[component].append(TensorPlan(key, new, ti.shape, _output_dtype(ti.dtype, target)))


def _kind(dtype: torch.dtype) -> str:
    """``"floating point"`` or e.g. ``"integer (int32)"`` for error messages."""
    if dtype.is_floating_point:
        return f"floating point ({str(dtype).removeprefix('torch.')})"
    return f"{'boolean' if dtype == torch.bool else 'integer'} ({str(dtype).removeprefix('torch.')})"
