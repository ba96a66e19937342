"""Quantization plumbing of the pipelines' `from_pretrained` / `from_single_file` / `save_pretrained`."""

from __future__ import annotations

import logging
import os

import torch

from . import check_quantization, check_serializable, quantize_transformer_, transformer_quantization
from .fp8_cast import apply_fp8_cast, fp8_linear_names

logger = logging.getLogger(__name__)


def _component_dtype(kwargs: dict, name: str):
    dtype = kwargs.get("torch_dtype", kwargs.get("dtype"))
    if isinstance(dtype, dict):
        dtype = dtype.get(name, dtype.get("default"))
    return dtype


def prepare_from_pretrained(path, kwargs: dict, quantization: str | None, text_encoder_quantization: str | None):
    """Add a quantized `transformer` (and text encoder) to the `from_pretrained` kwargs.

    Quanto modes quantize while loading (diffusers `QuantoConfig`: the bf16 transformer is never whole in memory);
    fp8-cast loads the transformer in its dtype and casts the policy's linears. Both are checked before loading.

    Raises:
        ValueError: unknown mode, a `transformer=` passed together with `quantization=`, or a folder whose
            transformer is already quantized (FP8 keep folder or quanto config).
    """
    from diffusers import LTX2VideoTransformer3DModel

    from ..conversion.fp8 import FP8_MANIFEST

    check_quantization(quantization)
    check_quantization(text_encoder_quantization, text_encoder=True)
    if quantization is not None:
        if "transformer" in kwargs:
            raise ValueError("pass either transformer= or quantization=, not both")
        folder = os.path.join(str(path), "transformer")
        config = LTX2VideoTransformer3DModel.load_config(str(path), subfolder="transformer",
                                                         **_hub_kwargs(kwargs))
        if config.get("quantization_config") or os.path.isfile(os.path.join(folder, FP8_MANIFEST)):
            raise ValueError(f"{path}: the transformer is already quantized; load it without quantization=")
        dtype = _component_dtype(kwargs, "transformer") or torch.bfloat16
        if quantization == "fp8-cast":
            transformer = LTX2VideoTransformer3DModel.from_pretrained(
                str(path), subfolder="transformer", torch_dtype=dtype, **_hub_kwargs(kwargs))
            quantize_transformer_(transformer, quantization)
        else:
            from .quanto import quanto_config

            transformer = LTX2VideoTransformer3DModel.from_pretrained(
                str(path), subfolder="transformer", torch_dtype=dtype,
                quantization_config=quanto_config(quantization), **_hub_kwargs(kwargs))
        kwargs["transformer"] = transformer
    return kwargs


def single_file_fp8_mode(path, fp8: str | None, quantization: str | None) -> str:
    """The FP8 mode to read an official single file with, before anything loads.

    `fp8=None` (automatic): "dequantize", except for `quantization="fp8-cast"` on a file that already holds
    float8 weights: "keep" (the file's float8 weights and their `weight_scale`, rather than dequantizing them to
    bf16 and casting them again, which would round twice), with a notice.

    Raises:
        ValueError: `fp8="keep"` with an optimum-quanto mode (quanto quantizes bf16 weights).
    """
    if fp8 is None:
        fp8 = "dequantize"
        if quantization == "fp8-cast":
            from ..conversion.fp8 import is_float8
            from ..conversion.plan import inspect_checkpoint

            count = sum(is_float8(t.dtype) for t in inspect_checkpoint(path).tensors.values())
            if count:
                logger.warning(
                    "%s already holds %d float8 weights: quantization='fp8-cast' keeps them with their weight_scale "
                    "(fp8='keep') instead of dequantizing and casting them again, and casts the policy's linears the "
                    "file keeps in high precision; pass fp8='dequantize' to dequantize first", path, count)
                fp8 = "keep"
    if quantization not in (None, "fp8-cast") and fp8 == "keep":
        raise ValueError("fp8='keep' already loads float8 weights; use fp8='dequantize' with quantization=")
    return fp8


def quantize_single_file_transformer(transformer, quantization: str | None, fp8: str) -> None:
    """Quantize a transformer read from a single file; with `fp8="keep"` and fp8-cast only the policy's linears
    the file did not hold in float8 are cast (the file's float8 layers are already what fp8-cast makes)."""
    if quantization == "fp8-cast" and fp8 == "keep":
        apply_fp8_cast(transformer)
    elif quantization is not None:
        quantize_transformer_(transformer, quantization)


def _hub_kwargs(kwargs: dict) -> dict:
    return {k: kwargs[k] for k in ("cache_dir", "local_files_only", "revision", "token") if k in kwargs}


def quantize_text_encoder_of(pipe, mode: str | None) -> None:
    """Quantize `pipe.text_encoder` in place (quanto modes); error when the pipeline has none."""
    if mode is None:
        return
    if pipe.text_encoder is None:
        raise ValueError("text_encoder_quantization= needs a pipeline with a local text_encoder")
    from .quanto import quantize_text_encoder_

    quantize_text_encoder_(pipe.text_encoder, mode)


def before_save(pipe) -> None:
    """Checks run before `save_pretrained` writes anything."""
    check_serializable(pipe.components)


def after_save(pipe, save_directory) -> None:
    """An fp8-cast transformer is saved as an FP8 keep folder: write its `ltx2_fp8.json` manifest."""
    from ..conversion.fp8 import write_manifest
    from .fp8_cast import FP8_CAST_DTYPE

    transformer = pipe.transformer
    if transformer is not None and transformer_quantization(transformer) == "fp8-cast":
        write_manifest(os.path.join(str(save_directory), "transformer"), fp8_linear_names(transformer),
                       FP8_CAST_DTYPE)
