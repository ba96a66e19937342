"""optimum-quanto weight quantization (qfloat8 / qint8 / qint4) of the LTX-2 transformer and the Gemma encoder.

Two entry points quantize the same layers (`policy.py`):

* at load, `quanto_config(mode)` for diffusers' `from_pretrained(quantization_config=...)`: each weight is
  quantized as it is read, so the bf16 transformer is never resident as a whole;
* in memory, `quantize_quanto_(model, mode)` for a model already built (`from_single_file`).

Either way the model carries diffusers' `QuantoConfig` and quantizer, so `save_pretrained` writes the quantized
weights (`weight._data`, `weight._scale`, ...) plus `quantization_config` in `config.json`, and `from_pretrained`
reloads them without re-quantizing. Weights only (activations stay in the compute dtype); on CPU quanto
dequantizes per matmul, on CUDA it uses its int8 / fp8 / int4 kernels where the GPU has them.
"""

from __future__ import annotations

import warnings

from torch import nn

from .policy import DIFFUSERS_KEEP_LEAF_NAMES, quantized_linear_names

# our mode name -> (QuantoConfig weights_dtype, optimum.quanto qtype name)
QUANTO_MODES: dict[str, tuple[str, str]] = {"fp8": ("float8", "qfloat8"), "int8": ("int8", "qint8"),
                                             "int4": ("int4", "qint4")}


def quanto_config(mode: str):
    """diffusers `QuantoConfig` for `mode` ("fp8", "int8", "int4") with the LTX-2 keep list."""
    from diffusers import QuantoConfig

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # diffusers marks QuantoConfig deprecated (removal in 1.0)
        return QuantoConfig(weights_dtype=QUANTO_MODES[mode][0], modules_to_not_convert=list(DIFFUSERS_KEEP_LEAF_NAMES))


def _qtype(mode: str):
    import optimum.quanto as q

    return getattr(q, QUANTO_MODES[mode][1])


def quantize_quanto_(model: nn.Module, mode: str) -> list[str]:
    """Quantize the policy's linears of an LTX-2 transformer in place and attach diffusers' quantizer so it saves
    and reloads; returns the quantized module names."""
    from diffusers.quantizers import DiffusersAutoQuantizer
    from optimum.quanto import freeze, quantize

    names = quantized_linear_names(model)
    quantize(model, weights=_qtype(mode), include=names)
    freeze(model)
    config = quanto_config(mode)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        model.register_to_config(quantization_config=config)
        model.hf_quantizer = DiffusersAutoQuantizer.from_config(config, pre_quantized=True)
    return names


def gemma_linear_names(text_encoder: nn.Module) -> list[str]:
    """Linears of Gemma-3's *language model* decoder layers (attention and MLP projections); the vision tower,
    the multimodal projector, embeddings and `lm_head` stay high precision (as 8-bit Gemma loading does)."""
    return [n for n, m in text_encoder.named_modules()
            if isinstance(m, nn.Linear) and ".layers." in n and "language_model" in n and "vision" not in n]


def quantize_text_encoder_(text_encoder: nn.Module, mode: str) -> list[str]:
    """Quantize the Gemma-3 text encoder's decoder linears in place with optimum-quanto; returns their names.

    Not serializable: a pipeline holding a quantized text encoder refuses `save_pretrained` (see
    `diffusers_ltx2.quantization.check_serializable`)."""
    from optimum.quanto import freeze, quantize

    names = gemma_linear_names(text_encoder)
    if not names:
        raise ValueError(f"{type(text_encoder).__name__} has no Gemma decoder linears to quantize")
    quantize(text_encoder, weights=_qtype(mode), include=names)
    freeze(text_encoder)
    text_encoder._ltx2_quantization = mode
    return names


def quanto_linear_names(model: nn.Module) -> list[str]:
    """Names of the optimum-quanto quantized modules of a model."""
    from optimum.quanto import QModuleMixin

    return [n for n, m in model.named_modules() if isinstance(m, QModuleMixin)]
