"""Tiny LoRA files in the official format for two-stage tests (the distilled LoRA stand-in)."""

from __future__ import annotations

import torch
from safetensors.torch import save_file

#: modules of the first blocks a stand-in distilled LoRA touches; same names in ltx-core and diffusers.
TARGETS = ("attn1.to_q", "attn1.to_v", "audio_attn1.to_k", "ff.net.0.proj", "audio_to_video_attn.to_v")


def write_official_lora(path, transformer, *, blocks=(0, 1), rank=4, seed=0, scale=0.3) -> dict:
    """Random official-format LoRA (`diffusion_model.<module>.lora_A/lora_B.weight`) for `transformer`'s
    `TARGETS` in `blocks`; returns the state dict written."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for i in blocks:
        for t in TARGETS:
            w = transformer.get_submodule(f"transformer_blocks.{i}.{t}")
            w = getattr(w, "base_layer", w).weight
            key = f"diffusion_model.transformer_blocks.{i}.{t}"
            sd[f"{key}.lora_A.weight"] = torch.randn(rank, w.shape[1], generator=g) * scale
            sd[f"{key}.lora_B.weight"] = torch.randn(w.shape[0], rank, generator=g) * scale
    save_file(sd, str(path))
    return sd
