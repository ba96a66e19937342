"""The temporal x2 latent upscaler of DFR's temporal rounds (official `ltx-2.5-latent-temporal-upscaler-x2`).

The official file is an ltx-core `LatentUpsampler` with `temporal_upsample=True`, converted like the spatial one
(`conversion.upsampler.load_official_upsampler`; `ltx2 convert` writes it as the `temporal_latent_upsampler/` model
folder of a converted 2.5 set) into diffusers' `LTX2LatentUpsamplerModel`, whose temporal path (Conv3d to twice the
channels, a 1-D pixel shuffle, the first output frame dropped: it encodes one pixel frame) is ltx-core's. It runs
as official `upsample_video`: un-normalise with the video VAE statistics, upsample, re-normalise
(`pipelines.upsampling.upsample_latents`).
"""

from __future__ import annotations

import torch

from ..pipelines.upsampling import upsample_latents


def check_temporal_upsampler(upsampler) -> None:
    """Raise ValueError unless `upsampler` is an `LTX2LatentUpsamplerModel` that upsamples time only."""
    from ..conversion.upsampler import check_latent_upsampler

    check_latent_upsampler(upsampler)
    if upsampler is None:
        raise ValueError("temporal rounds need a temporal latent upsampler (the official "
                         "ltx-2.5-latent-temporal-upscaler-x2 file, loaded with load_official_upsampler)")
    config = upsampler.config
    if not config.temporal_upsample or config.spatial_upsample:
        raise ValueError("temporal_upsampler must upsample time only (temporal_upsample=True, spatial_upsample="
                         f"False), got spatial_upsample={config.spatial_upsample}, "
                         f"temporal_upsample={config.temporal_upsample}")


def temporal_upsample(
    latents: torch.Tensor, upsampler, latents_mean: torch.Tensor, latents_std: torch.Tensor,
) -> torch.Tensor:
    """Double the frame rate of normalized video latents.

    Args:
        latents: `(B, C, T, h, w)` video latents in the diffusion space (a clip of `8 (T - 1) + 1` pixel frames).
        upsampler: a temporal `LTX2LatentUpsamplerModel` (`check_temporal_upsampler`).
        latents_mean, latents_std: the video VAE's per-channel statistics `(C,)`.

    Returns:
        `(B, C, 2T - 1, h, w)` normalized latents (a clip of `2 (N - 1) + 1` pixel frames), in `latents.dtype`.

    Raises:
        ValueError: not a temporal upsampler, wrong rank or channels.
    """
    check_temporal_upsampler(upsampler)
    out = upsample_latents(latents, upsampler, latents_mean, latents_std)
    if out.shape[2] != 2 * latents.shape[2] - 1:  # the model's contract; a wrong file would break stitching later
        raise ValueError(f"temporal upsampler made {out.shape[2]} latent frames from {latents.shape[2]}, "
                         f"expected {2 * latents.shape[2] - 1}")
    return out
