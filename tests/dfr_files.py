"""The tiny official LTX-2.5 set as an `LTX2DFRPipeline` (spatial and temporal upscalers from the set's official
files) and random connector-stage prompt contexts for it: shared by the DFR pipeline tests."""

from __future__ import annotations

import torch

from diffusers_ltx2 import LTX2DFRPipeline, LTX2TwoStagePipeline
from diffusers_ltx2.conversion.upsampler import load_official_upsampler
from diffusers_ltx2.loaders.prompt_embeddings import PromptEmbeddings


def build_dfr_pipeline(ltx25_set) -> LTX2DFRPipeline:
    """`LTX2DFRPipeline` of the tiny official 2.5 set (`conftest.ltx25_set`), fp32, progress bars off."""
    base = LTX2TwoStagePipeline.from_single_file(ltx25_set["folder"], dtype=torch.float32, progress=False)
    pipe = LTX2DFRPipeline(
        **{k: v for k, v in base.components.items() if k != "latent_upsampler"},
        latent_upsampler=load_official_upsampler(ltx25_set["spatial_upsampler"], dtype=torch.float32),
        temporal_latent_upsampler=load_official_upsampler(ltx25_set["temporal_upsampler"], dtype=torch.float32))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def random_embeds(pipe, seed: int = 1) -> PromptEmbeddings:
    """Connector-stage `PromptEmbeddings` of random Gemma-width hidden states (128 tokens, all attended)."""
    g = torch.Generator().manual_seed(seed)
    config = pipe.connectors.config
    states = torch.randn(1, 128, config.caption_channels, config.text_proj_in_factor, generator=g) * 3
    mask = torch.ones(1, 128, dtype=torch.int64)
    with torch.no_grad():
        v, a, m = pipe.connectors(states, mask)
    return PromptEmbeddings(v, a, m)
