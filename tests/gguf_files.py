"""Tiny city96-style GGUF LTX-2 transformer files, written with the `gguf` package (llama.cpp's own writer).

The transformer is ltx-core's own `LTXModel` (official key names, no `model.diffusion_model.` prefix, as the
community GGUF files store the DiT) at a width the GGUF block types can hold (rows of 32 values): video 2 heads x
16, audio 2 x 16, 2 blocks. Like city96's converter, the 2-D linear weights of the transformer blocks are
quantized (Q8_0 / Q4_0, blocks of 32 along a row), everything else stays F32 / F16.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

import official_checkpoints as cc

#: official 2.0 config at a GGUF-friendly width
GGUF_CONFIG = copy.deepcopy(cc.CONFIGS["2.0"])
GGUF_CONFIG["transformer"].update(attention_head_dim=16, cross_attention_dim=32, audio_attention_head_dim=16,
                                  audio_cross_attention_dim=32)


def official_transformer_state_dict(config: dict = GGUF_CONFIG, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights of ltx-core's transformer for `config`, official key names (float32)."""
    gen = torch.Generator().manual_seed(seed)
    model = cc.LTXModelConfigurator.from_config(config)
    cc._randomize(model, gen, 0.2)
    return {k: v.detach().float().contiguous() for k, v in model.state_dict().items()}


def is_block_linear_weight(key: str, value: torch.Tensor) -> bool:
    return key.startswith("transformer_blocks.") and key.endswith(".weight") and value.ndim == 2 \
        and value.shape[1] % 32 == 0


def write_gguf(path, state_dict: dict[str, torch.Tensor], qtype: str = "Q8_0", prefix: str = "") -> dict:
    """Write `state_dict` as a GGUF file: block linear weights in `qtype`, the rest F32 (1-D) / F16 (2-D+).

    Returns {key: GGML type name} of what was written."""
    import gguf

    writer = gguf.GGUFWriter(str(path), arch="ltxv")
    kinds = {}
    for key, value in state_dict.items():
        array = value.numpy()
        if is_block_linear_weight(key, value):
            qt = getattr(gguf.GGMLQuantizationType, qtype)
            data = gguf.quants.quantize(array.astype(np.float32), qt)
            writer.add_tensor(prefix + key, data, raw_dtype=qt)
            kinds[key] = qtype
        elif array.ndim >= 2:
            writer.add_tensor(prefix + key, array.astype(np.float16))
            kinds[key] = "F16"
        else:
            writer.add_tensor(prefix + key, array.astype(np.float32))
            kinds[key] = "F32"
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return kinds


def dequantized_state_dict(path) -> dict[str, torch.Tensor]:
    """Every tensor of a GGUF file dequantized to float32 by the gguf package's own (numpy) decoder."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    out = {}
    for t in reader.tensors:
        values = gguf.quants.dequantize(t.data, t.tensor_type)
        out[t.name] = torch.from_numpy(np.array(values, dtype=np.float32)).reshape(
            tuple(int(d) for d in reversed(t.shape)))
    return out
