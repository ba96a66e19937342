"""Tiny official latent upsampler files, built with ltx-core's own configurator and saved in the official format
(tensors named as ltx-core's `LatentUpsampler`, its config JSON in the `config` metadata)."""

from __future__ import annotations

import json

import ltx_reference  # noqa: F401  (torchaudio stub before ltx_core)
import torch
from ltx_core.model.upsampler import LatentUpsamplerConfigurator
from safetensors.torch import save_file


def tiny_upsampler_config(in_channels: int, *, rational: bool = False, scale: float = 2.0) -> dict:
    return {"in_channels": in_channels, "mid_channels": 32, "num_blocks_per_stage": 1, "dims": 3,
            "spatial_upsample": True, "temporal_upsample": False, "spatial_scale": scale,
            "rational_resampler": rational}


def write_official_upsampler(path, config: dict, seed: int = 0, scale: float = 0.1):
    """Random official upsampler (ltx-core `LatentUpsampler`) saved as the released files are; returns the model."""
    model = LatentUpsamplerConfigurator.from_config(config)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    sd = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    save_file(sd, str(path), metadata={"config": json.dumps(config)})
    return model.eval()
