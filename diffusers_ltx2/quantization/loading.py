"""Quantization plumbing of the pipelines' `from_pretrained` / `from_single_file` / `save_pretrained`."""

from __future__ import annotations

import logging
import os

import torch

from . import (
    TORCHAO_FORMATS, check_quantization, check_quantization_machine, check_serializable, quantize_transformer_,
    transformer_quantization,
)
from .fp8_cast import apply_fp8_cast, fp8_linear_names

logger = logging.getLogger(__name__)


def _component_dtype(kwargs: dict, name: str):
    dtype = kwargs.get("torch_dtype", kwargs.get("dtype"))
    if isinstance(dtype, dict):
        dtype = dtype.get(name, dtype.get("default"))
    return dtype


def prepare_from_pretrained(path, kwargs: dict, quantization: str | None, text_encoder_quantization: str | None):
    """Add a quantized `transformer` (and text encoder) to the `from_pretrained` kwargs.

    Quanto and torchao modes quantize while loading (diffusers `QuantoConfig` / `TorchAoConfig`: the bf16
    transformer is never whole in memory); fp8-cast and fp8-scaled-mm load the transformer in its dtype and
    quantize the policy's linears. fp8-scaled-mm on an FP8 keep folder switches its float8 layers to the scaled
    matmul. `gguf_file=` (popped from `kwargs`) loads the transformer from a GGUF file with this folder's config.
    Everything is checked before loading.

    Raises:
        ValueError: unknown mode, a `transformer=` passed together with `quantization=` / `gguf_file=`, a folder
            whose transformer is already quantized (FP8 keep folder or quanto / torchao config), a torchao mode
            this machine cannot run (the message names the requirement).
    """
    from diffusers import LTX2VideoTransformer3DModel

    from ..conversion.fp8 import FP8_MANIFEST

    gguf_file = kwargs.pop("gguf_file", None)
    check_quantization(quantization)
    check_quantization(text_encoder_quantization, text_encoder=True)
    dtype = _component_dtype(kwargs, "transformer") or torch.bfloat16
    if gguf_file is not None:
        if "transformer" in kwargs or quantization is not None:
            raise ValueError("gguf_file= loads the transformer quantized: pass neither transformer= nor quantization=")
        from .gguf import load_gguf_transformer

        kwargs["transformer"] = load_gguf_transformer(gguf_file, path, dtype=dtype)
        return kwargs
    if quantization is not None:
        if "transformer" in kwargs:
            raise ValueError("pass either transformer= or quantization=, not both")
        check_quantization_machine(quantization, dtype)
        folder = os.path.join(str(path), "transformer")
        config = LTX2VideoTransformer3DModel.load_config(str(path), subfolder="transformer",
                                                         **_hub_kwargs(kwargs))
        keep_folder = os.path.isfile(os.path.join(folder, FP8_MANIFEST))
        if quantization == "fp8-scaled-mm" and keep_folder:
            transformer = load_fp8_folder(folder, dtype)
            quantize_transformer_(transformer, quantization)
        elif config.get("quantization_config") or keep_folder:
            raise ValueError(f"{path}: the transformer is already quantized; load it without quantization=")
        elif quantization in ("fp8-cast", "fp8-scaled-mm"):
            transformer = LTX2VideoTransformer3DModel.from_pretrained(
                str(path), subfolder="transformer", torch_dtype=dtype, **_hub_kwargs(kwargs))
            quantize_transformer_(transformer, quantization)
        else:
            if quantization in TORCHAO_FORMATS:
                from .torchao_backend import check_torchao_shapes, torchao_config

                check_torchao_shapes(quantization, _policy_shapes(config))
                qconfig = torchao_config(quantization)
            else:
                from .quanto import quanto_config

                qconfig = quanto_config(quantization)
            transformer = LTX2VideoTransformer3DModel.from_pretrained(
                str(path), subfolder="transformer", torch_dtype=dtype, quantization_config=qconfig,
                **_hub_kwargs(kwargs))
        kwargs["transformer"] = transformer
    return kwargs


#: the modes that take an FP8 file's float8 weights as they are (`fp8="keep"`)
_KEEPS_FLOAT8 = ("fp8-cast", "fp8-scaled-mm")


def single_file_fp8_mode(path, fp8: str | None, quantization: str | None) -> str:
    """The FP8 mode to read an official single file with, before anything loads.

    `fp8=None` (automatic): "dequantize", except for `quantization="fp8-cast"` / `"fp8-scaled-mm"` on a file that
    already holds float8 weights: "keep" (the file's float8 weights and their `weight_scale`, rather than
    dequantizing them to bf16 and quantizing them again, which would round twice), with a notice.

    Raises:
        ValueError: `fp8="keep"` with an optimum-quanto or torchao mode (they quantize bf16 weights).
    """
    if fp8 is None:
        fp8 = "dequantize"
        if quantization in _KEEPS_FLOAT8:
            from ..conversion.fp8 import is_float8
            from ..conversion.plan import inspect_checkpoint

            count = sum(is_float8(t.dtype) for t in inspect_checkpoint(path).tensors.values())
            if count:
                logger.warning(
                    "%s already holds %d float8 weights: quantization=%r keeps them with their weight_scale "
                    "(fp8='keep') instead of dequantizing and quantizing them again%s; pass fp8='dequantize' to "
                    "dequantize first", path, count, quantization,
                    ", and casts the policy's linears the file keeps in high precision" if quantization == "fp8-cast"
                    else " (ltx-core's policy for FP8 checkpoints: the file's float8 layers multiply in float8)")
                fp8 = "keep"
    if quantization not in (None, *_KEEPS_FLOAT8) and fp8 == "keep":
        raise ValueError("fp8='keep' already loads float8 weights; use fp8='dequantize' with quantization= "
                         "(or quantization='fp8-scaled-mm' to multiply the kept float8 weights in float8)")
    return fp8


def quantize_single_file_transformer(transformer, quantization: str | None, fp8: str) -> None:
    """Quantize a transformer read from a single file; with `fp8="keep"` and fp8-cast only the policy's linears
    the file did not hold in float8 are cast (the file's float8 layers are already what fp8-cast makes); with
    fp8-scaled-mm the file's float8 layers switch to the scaled matmul (`quantize_transformer_`)."""
    if quantization == "fp8-cast" and fp8 == "keep":
        apply_fp8_cast(transformer)
    elif quantization is not None:
        quantize_transformer_(transformer, quantization)


def _policy_shapes(config: dict) -> dict[str, tuple[int, int]]:
    """(out, in) of the policy's linears of a transformer config (built on the meta device)."""
    from accelerate import init_empty_weights
    from diffusers import LTX2VideoTransformer3DModel

    from .policy import quantized_linear_names

    config = {k: v for k, v in config.items() if k != "quantization_config"}
    with init_empty_weights():
        model = LTX2VideoTransformer3DModel.from_config(config)
    return {n: tuple(model.get_submodule(n).weight.shape) for n in quantized_linear_names(model)}


def load_fp8_folder(folder, dtype: torch.dtype):
    """Load an FP8 keep folder (`ltx2_fp8.json`): float8 linears, switched to the scaled matmul when the manifest
    says the folder was saved from an fp8-scaled-mm transformer."""
    from ..conversion.fp8 import FP8_MANIFEST
    from ..conversion.loading import load_fp8_transformer
    from ..json_files import read_json

    manifest = read_json(os.path.join(str(folder), FP8_MANIFEST))
    transformer = load_fp8_transformer(folder, dtype=dtype)
    if manifest.get("matmul") == "scaled_mm":
        from .fp8_scaled_mm import to_scaled_mm_

        to_scaled_mm_(transformer)
    return transformer


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
    """A float8 transformer (fp8-cast / fp8-scaled-mm) is saved as an FP8 keep folder: write its `ltx2_fp8.json`
    manifest (`"matmul": "scaled_mm"` for fp8-scaled-mm, so it reloads multiplying in float8)."""
    from ..conversion.fp8 import write_manifest
    from .fp8_cast import FP8_CAST_DTYPE

    transformer = pipe.transformer
    mode = transformer_quantization(transformer) if transformer is not None else None
    if mode in ("fp8-cast", "fp8-scaled-mm"):
        write_manifest(os.path.join(str(save_directory), "transformer"), fp8_linear_names(transformer),
                       FP8_CAST_DTYPE, matmul="scaled_mm" if mode == "fp8-scaled-mm" else None)
