"""`Footprint` of an LTX-2 pipeline for the budget planner: from built modules, or from a diffusers-layout folder's
configs alone (models instantiated on the meta device: no weights read)."""

from __future__ import annotations

import os

from torch import nn

from ..json_files import check_json_files, read_json
from .budget import Footprint


def _count(module: nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def footprint_from_modules(transformer, text_encoder=None, others=(), vae=None) -> Footprint:
    """Footprint of built (or meta) modules; `others` = connectors, VAEs, vocoder."""
    from ..quantization.policy import quantized_linear_names

    names = set(quantized_linear_names(transformer))
    q = rows = block_q = block_rows = block_linears = 0
    for name, m in transformer.named_modules():
        if name in names:  # in x out, not weight.numel(): packed / quantized weights hold fewer elements
            q += m.in_features * m.out_features
            rows += m.out_features
            if name.startswith("transformer_blocks.0."):
                block_q += m.in_features * m.out_features
                block_rows += m.out_features
                block_linears += 1
    total = _count(transformer)
    te_layers = []
    if text_encoder is not None:
        lm = getattr(getattr(text_encoder, "model", text_encoder), "language_model", None)
        te_layers = list(lm.layers) if lm is not None else []
    cfg = transformer.config
    return Footprint(
        transformer_quantizable=q, transformer_quantizable_rows=rows, transformer_other=total - q - rows,
        transformer_quantizable_linears=len(names),
        transformer_block=_count(transformer.transformer_blocks[0]), num_layers=len(transformer.transformer_blocks),
        video_dim=cfg.num_attention_heads * cfg.attention_head_dim,
        audio_dim=cfg.audio_num_attention_heads * cfg.audio_attention_head_dim,
        text_encoder=_count(text_encoder), text_encoder_layer=_count(te_layers[0]) if te_layers else 0,
        text_encoder_layers=len(te_layers), others=sum(_count(m) for m in others),
        vae_decoder_channels=vae.config.decoder_block_out_channels[0] if vae is not None else 256,
        vae_patch_size=vae.config.patch_size if vae is not None else 4,
        spatial_ratio=getattr(vae, "spatial_compression_ratio", 32) if vae is not None else 32,
        temporal_ratio=getattr(vae, "temporal_compression_ratio", 8) if vae is not None else 8,
        block_quantizable=block_q, block_quantizable_rows=block_rows, block_quantizable_linears=block_linears,
    )


def footprint_from_pipeline(pipe) -> Footprint:
    """Footprint of a built pipeline."""
    others = [m for m in (pipe.connectors, pipe.vae, pipe.audio_vae, pipe.vocoder) if m is not None]
    return footprint_from_modules(pipe.transformer, pipe.text_encoder, others, pipe.vae)


def footprint_from_folder(path: str | os.PathLike) -> Footprint:
    """Footprint of a diffusers-layout LTX-2 folder from its component configs (meta device, nothing loaded).

    Raises:
        FileNotFoundError: a required component folder (transformer, vae) is missing.
        ValueError: a JSON file of the folder is unreadable (naming it).
    """
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKLLTX2Audio, AutoencoderKLLTX2Video, LTX2VideoTransformer3DModel
    from diffusers.pipelines.ltx2 import LTX2TextConnectors

    path = str(path)
    for required in ("transformer", "vae"):
        if not os.path.isfile(os.path.join(path, required, "config.json")):
            raise FileNotFoundError(f"{path}: no {required}/config.json")
    check_json_files(path)  # diffusers' load_config would turn a crafted config into a RecursionError

    def build(cls, sub):
        if not os.path.isfile(os.path.join(path, sub, "config.json")):
            return None
        config = cls.load_config(os.path.join(path, sub))
        config.pop("quantization_config", None)
        with init_empty_weights():
            return cls.from_config(config)

    transformer = build(LTX2VideoTransformer3DModel, "transformer")
    vae = build(AutoencoderKLLTX2Video, "vae")
    others = [vae, build(AutoencoderKLLTX2Audio, "audio_vae"), build(LTX2TextConnectors, "connectors")]
    vocoder_cfg = os.path.join(path, "vocoder", "config.json")
    if os.path.isfile(vocoder_cfg):
        from diffusers.pipelines.ltx2 import LTX2Vocoder, LTX2VocoderWithBWE

        name = read_json(vocoder_cfg).get("_class_name", "LTX2Vocoder")
        others.append(build(LTX2VocoderWithBWE if "BWE" in name else LTX2Vocoder, "vocoder"))
    text_encoder = None
    if os.path.isfile(os.path.join(path, "text_encoder", "config.json")):
        from transformers import AutoConfig, Gemma3ForConditionalGeneration

        with init_empty_weights():
            text_encoder = Gemma3ForConditionalGeneration(AutoConfig.from_pretrained(os.path.join(path, "text_encoder")))
        text_encoder.tie_weights()  # lm_head shares the embedding (parameters() counts it once)
    return footprint_from_modules(transformer, text_encoder, [m for m in others if m is not None], vae)


def lora_parameters_in_files(paths) -> int:
    """Values of the LoRA factors (`lora_A` / `lora_B` / `lora_down` / `lora_up` tensors) in safetensors files,
    read from their headers only (the planner's `lora_parameters`)."""
    from safetensors import safe_open

    total = 0
    for path in paths:
        with safe_open(str(path), "pt") as f:
            for key in f.keys():
                if any(marker in key for marker in ("lora_A", "lora_B", "lora_down", "lora_up")):
                    shape = f.get_slice(key).get_shape()
                    n = 1
                    for d in shape:
                        n *= d
                    total += n
    return total
