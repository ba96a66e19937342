"""Community GGUF LTX-2 transformer files (city96-style, the low-VRAM path of ComfyUI-GGUF / Wan2GP).

Such a file holds the LTX-2 DiT under its official key names (with or without `model.diffusion_model.`), the
block linears in a llama.cpp block type (Q8_0, Q4_0, Q4_K, ...), the rest in F16 / F32. It is read with
diffusers' GGUF support (`load_gguf_checkpoint`, `GGUFParameter`, `GGUFLinear`: weights stay in their block
type and are dequantized per matmul, with diffusers' CUDA kernels where installed), the keys mapped with this
package's official -> diffusers key map (`conversion.keymap`, LTX-2.0 and 2.3; diffusers' own single-file
converter misses 2.3's prompt AdaLN), and loaded by `LTX2VideoTransformer3DModel.from_single_file` with a
`GGUFQuantizationConfig`. The text connectors, which official files keep under the DiT prefix, come from the
pipeline folder: their keys in the GGUF file are ignored (and counted in the log).

LoRAs load onto the `GGUFLinear`s as on any linear (`quantization.lora`). Not saveable (`save_pretrained`
refuses): keep the GGUF file.
"""

from __future__ import annotations

import logging
import os

import torch
from torch import nn

logger = logging.getLogger(__name__)

GGUF_MAGIC = b"GGUF"
_CONNECTOR_PREFIXES = ("video_embeddings_connector.", "audio_embeddings_connector.")


def is_gguf_file(path: str | os.PathLike) -> bool:
    """True when `path` is a file starting with the GGUF magic."""
    try:
        with open(path, "rb") as f:
            return f.read(4) == GGUF_MAGIC
    except OSError:
        return False


def gguf_linear_names(model: nn.Module) -> list[str]:
    """Names of the modules holding GGUF-quantized weights."""
    return [n for n, m in model.named_modules()
            if isinstance(m, nn.Linear) and hasattr(getattr(m, "weight", None), "quant_type")]


def gguf_quantization_of(model: nn.Module) -> str | None:
    """"gguf-<type>" of a transformer loaded from a GGUF file (the most common block type, e.g. "gguf-Q8_0")."""
    names = gguf_linear_names(model)
    if not names:
        return None
    import gguf

    counts: dict[str, int] = {}
    for n in names:
        kind = gguf.GGMLQuantizationType(model.get_submodule(n).weight.quant_type).name
        counts[kind] = counts.get(kind, 0) + 1
    return "gguf-" + max(counts, key=counts.get)


def gguf_file_quantization(path: str | os.PathLike) -> str:
    """"gguf-<type>" of a GGUF file (the most common block type of its 2-D tensors), read from the header.

    Raises:
        FileNotFoundError / ValueError: missing file, not a GGUF file."""
    import gguf

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"GGUF file not found: {path}")
    if not is_gguf_file(path):
        raise ValueError(f"{path} is not a GGUF file (no GGUF magic)")
    counts: dict[str, int] = {}
    for tensor in gguf.GGUFReader(path).tensors:
        kind = gguf.GGMLQuantizationType(tensor.tensor_type).name
        if len(tensor.shape) == 2 and kind not in ("F32", "F16"):
            counts[kind] = counts.get(kind, 0) + 1
    if not counts:
        raise ValueError(f"{path} holds no quantized 2-D tensors")
    return "gguf-" + max(counts, key=counts.get)


def load_gguf_transformer(path: str | os.PathLike, config: str | os.PathLike, *, dtype: torch.dtype = torch.bfloat16,
                          subfolder: str | None = "transformer"):
    """Load an LTX-2 transformer from a city96-style GGUF file.

    Args:
        path: the `.gguf` file.
        config: a diffusers LTX-2 folder (or its `transformer/` folder with `subfolder=None`) whose transformer
            config matches the file (same version and size).
        dtype: compute dtype (`GGUFQuantizationConfig.compute_dtype`) and dtype of the unquantized tensors.

    Returns:
        `LTX2VideoTransformer3DModel` whose quantized linears are `GGUFLinear`.

    Raises:
        FileNotFoundError: `path` missing. ValueError: not a GGUF file, a block type diffusers cannot decode,
        or tensors that do not fit the configured model (the keys and the probable cause are named).
    """
    from diffusers import GGUFQuantizationConfig, LTX2VideoTransformer3DModel
    from diffusers.models.model_loading_utils import load_gguf_checkpoint

    from ..conversion.keymap import TRANSFORMER_PREFIX, map_transformer_key

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"GGUF file not found: {path}")
    if not is_gguf_file(path):
        raise ValueError(f"{path} is not a GGUF file (no GGUF magic)")
    raw = load_gguf_checkpoint(path)  # ValueError for block types diffusers cannot decode
    mapped, skipped = {}, 0
    for key, value in raw.items():
        local = key.removeprefix(TRANSFORMER_PREFIX)
        if local.startswith(_CONNECTOR_PREFIXES):
            skipped += 1
            continue
        mapped[map_transformer_key(local)] = value
    if skipped:
        logger.info("%s: %d text-connector tensors ignored (the connectors load from the pipeline folder)", path,
                    skipped)
    expected = LTX2VideoTransformer3DModel.load_config(os.fspath(config), subfolder=subfolder)
    _check_keys(path, mapped, expected)
    kwargs = {"subfolder": subfolder} if subfolder else {}
    model = LTX2VideoTransformer3DModel.from_single_file(
        mapped, quantization_config=GGUFQuantizationConfig(compute_dtype=dtype), config=os.fspath(config),
        local_files_only=True, torch_dtype=dtype, **kwargs)
    return model.eval()


def _check_keys(path: str, state_dict: dict, config: dict) -> None:
    """Every tensor of the file must be a parameter of the configured model, and every parameter present."""
    from accelerate import init_empty_weights
    from diffusers import LTX2VideoTransformer3DModel

    with init_empty_weights():
        model = LTX2VideoTransformer3DModel.from_config(config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    unknown = sorted(set(state_dict) - set(expected))
    missing = sorted(set(expected) - set(state_dict))
    wrong = []
    for key in sorted(set(state_dict) & set(expected)):
        value = state_dict[key]
        shape = tuple(getattr(value, "quant_shape", value.shape))
        if shape != expected[key]:
            wrong.append(f"{key} {shape} vs {expected[key]}")
    if unknown or missing or wrong:
        parts = []
        if unknown:
            parts.append(f"{len(unknown)} tensors this model does not have (e.g. {', '.join(unknown[:3])})")
        if missing:
            parts.append(f"{len(missing)} parameters missing from the file (e.g. {', '.join(missing[:3])})")
        if wrong:
            parts.append(f"{len(wrong)} shape mismatches (e.g. {'; '.join(wrong[:3])})")
        raise ValueError(f"{path} does not fit this LTX-2 transformer config: {'; '.join(parts)} - a GGUF of "
                         "another model version or size?")
