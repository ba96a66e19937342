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


def gemma_states(pipe, seed: int, attended: int):
    """Random packed Gemma hidden states `(1, 128, D, layers)` for `pipe`'s connectors and their attention mask, the
    last `attended` of 128 tokens attended (a left-padded prompt)."""
    g = torch.Generator().manual_seed(seed)
    config = pipe.connectors.config
    states = torch.randn(1, 128, config.caption_channels, config.text_proj_in_factor, generator=g) * 3
    mask = torch.zeros(1, 128, dtype=torch.int64)
    mask[:, -attended:] = 1
    return states, mask


def official_contexts(pipe) -> PromptEmbeddings:
    """Connector-stage `PromptEmbeddings` the 1.2 reference runs take (`run_official_dfr`): `gemma_states` with the
    last 37 of 128 tokens attended."""
    states, mask = gemma_states(pipe, 1, 37)
    with torch.no_grad():
        v, a, m = pipe.connectors(states, mask)
    return PromptEmbeddings(v, a, m)


def run_official_dfr(pipe, ltx25_set, folder, embeds: PromptEmbeddings, *, height: int, width: int, frames: int,
                     fps: float, seed: int, **options) -> dict:
    """ltx-pipelines 1.2 `DFRPipeline`'s stages on the tiny set in a child process (`ltx12_dfr_reference`) from
    `embeds`' video / audio contexts; `options`: `dfr_stages`' (`stage_loras`, `detailing_lora`, `rounds`,
    `reference`). Returns its latents (`s1_*`, `s2_*`, `r1_*`, normalized, unpacked)."""
    import ltx12_dfr_reference as DR

    torch.save({"v_pos": embeds.video_context, "a_pos": embeds.audio_context}, folder / "ctx.pt")
    a_ch = pipe.audio_vae.config.latent_channels
    DR.run(files={k: str(p) for k, p in ltx25_set.items()}, inputs=str(folder / "ctx.pt"), out=str(folder / "out.pt"),
           height=height, width=width, frames=frames, fps=fps, seed=seed,
           video_channels=pipe.vae.config.latent_channels, audio_channels=a_ch,
           audio_mel_bins=pipe.audio_latent_shape(1, frames, fps)[0][2] // a_ch, **options)
    return torch.load(folder / "out.pt")
