"""Model plumbing for training: loading the transformer to train, quantizing its frozen base, runtime checks.

Kept apart from the loop (`training.trainer`) so the loop can be handed a pre-built transformer.
"""

from __future__ import annotations

import importlib.util
import os

import torch

from ..json_files import read_json
from .config import TrainingConfig

__all__ = ["check_runtime_options", "load_transformer", "quantize_frozen_base", "transformer_config"]


def check_runtime_options(config: TrainingConfig) -> None:
    """Options that depend on the machine, checked before any model loads (`ValueError` with the fix)."""
    if config.optimization.optimizer_type == "adamw8bit":
        if importlib.util.find_spec("bitsandbytes") is None:
            raise ValueError("optimizer_type 'adamw8bit' needs bitsandbytes (pip install bitsandbytes)")
        if not torch.cuda.is_available():
            raise ValueError("optimizer_type 'adamw8bit' needs a CUDA GPU (bitsandbytes' 8-bit AdamW is GPU-only)")
    mode = config.acceleration.quantization or ""
    if mode.endswith("-quanto") and importlib.util.find_spec("optimum.quanto") is None:
        raise ValueError(f"quantization {mode!r} needs optimum-quanto")
    if mode.endswith("-torchao") and importlib.util.find_spec("torchao") is None:
        raise ValueError(f"quantization {mode!r} needs torchao (pip install 'diffusers-ltx2[torchao]')")
    acc = config.acceleration
    if acc.quantization == "int8-quanto" and acc.mixed_precision_mode == "bf16":
        from ..quantization import check_quantized_runtime

        # accelerate trains on the GPU when there is one; on CPU, quanto's int8 x bf16 kernel fails or crashes
        try:
            check_quantized_runtime("int8", "cuda" if torch.cuda.is_available() else "cpu", torch.bfloat16)
        except ValueError as exc:
            raise ValueError(f"acceleration: quantization int8-quanto with mixed_precision_mode bf16: {exc}; "
                             "or quantization fp8-quanto") from None


def transformer_config(model_path: str) -> dict | None:
    """The transformer's config without loading its weights: a pipeline folder's `transformer/config.json`, a
    factory model's (built on the meta device); `None` for a single file or an unreadable config."""
    if model_path.startswith("factory:"):
        from ..factory import SMALL, TINY, _build_models

        with torch.device("meta"):
            return dict(_build_models({"tiny": TINY, "small": SMALL}[model_path.split(":")[1]])["transformer"]().config)
    path = os.path.join(model_path, "transformer", "config.json")
    if os.path.isdir(model_path) and os.path.isfile(path):
        try:
            config = read_json(path)
        except (OSError, ValueError):
            return None
        return config if isinstance(config, dict) and "in_channels" in config else None
    return None


def load_transformer(model_path: str):
    """`(LTX2VideoTransformer3DModel, model identity or None)` from a pipeline folder, an official single file,
    or `factory:tiny[:SEED]` / `factory:small[:SEED]` (random weights, tests and benchmarks)."""
    from diffusers import LTX2VideoTransformer3DModel

    if model_path.startswith("factory:"):
        from ..factory import SMALL, TINY, build_components

        parts = model_path.split(":")
        size = {"tiny": TINY, "small": SMALL}[parts[1]]
        seed = int(parts[2]) if len(parts) > 2 else 0
        return build_components(size, seed=seed)["transformer"], model_path
    if os.path.isdir(model_path):
        sub = os.path.join(model_path, "transformer")
        if not os.path.isdir(sub):
            raise ValueError(f"{model_path} is not an LTX-2 pipeline folder (no transformer/)")
        identity = None
        index = os.path.join(model_path, "model_index.json")
        if os.path.isfile(index):
            identity = read_json(index).get("model_identity")
        from ..conversion.fp8 import FP8_MANIFEST

        if os.path.isfile(os.path.join(sub, FP8_MANIFEST)):  # an FP8 keep folder: float8 base weights
            from ..quantization.loading import load_fp8_folder

            return load_fp8_folder(sub, torch.float32), identity
        return LTX2VideoTransformer3DModel.from_pretrained(sub), identity
    from ..conversion import load_components_from_single_file
    from ..loaders.identity import MODEL_ID_METADATA_KEY, read_safetensors_metadata

    components = load_components_from_single_file(model_path)
    return components["transformer"], read_safetensors_metadata(model_path).get(MODEL_ID_METADATA_KEY)


#: training quantization names (official trainer style) -> this package's inference modes (non-quanto ones)
_INFERENCE_MODES = {"fp8-cast": "fp8-cast", "int8-torchao": "torchao-int8", "fp8-torchao": "torchao-fp8-weight"}


def quantize_frozen_base(transformer, mode: str) -> None:
    """Quantize the frozen base: optimum-quanto on the transformer blocks' linear weights (`int8-quanto` ->
    qint8, `fp8-quanto` -> qfloat8; official trainer: `quantization: int8-quanto`), or the inference formats
    (`fp8-cast`, `int8-torchao`, `fp8-torchao`) on the policy's layers. The LoRA added afterwards trains in full
    precision on top (an unmerged side path, `diffusers_ltx2.quantization.lora`)."""
    if mode in _INFERENCE_MODES:
        from ..quantization import quantize_transformer_

        quantize_transformer_(transformer, _INFERENCE_MODES[mode])
        transformer.requires_grad_(False)
        return
    from optimum.quanto import freeze, qfloat8, qint8, quantize

    weights = {"int8-quanto": qint8, "fp8-quanto": qfloat8}[mode]
    quantize(transformer, weights=weights, include="transformer_blocks.*")
    freeze(transformer)
    transformer.requires_grad_(False)
