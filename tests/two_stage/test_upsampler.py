"""Latent upsampler: conversion of official files to diffusers' `LTX2LatentUpsamplerModel` and
`upsample_latents` against ltx-core's `upsample_video` (un-normalise, upsample, re-normalise)."""

from __future__ import annotations

import ltx_reference  # noqa: F401
import pytest
import torch
from ltx_core.model.upsampler import upsample_video
from ltx_core.model.video_vae.ops import PerChannelStatistics
from safetensors.torch import save_file
from upsampler_files import tiny_upsampler_config, write_official_upsampler

from diffusers_ltx2.conversion.errors import KeyMismatchError, UnsupportedCheckpointError
from diffusers_ltx2.conversion.upsampler import convert_upsampler_file, load_official_upsampler
from diffusers_ltx2.pipelines.upsampling import upsample_latents

C = 32


class _Encoder:
    """What `upsample_video` reads of a video encoder: its per-channel statistics."""

    def __init__(self, mean, std):
        self.per_channel_statistics = PerChannelStatistics(C)
        self.per_channel_statistics.get_buffer("mean-of-means").copy_(mean)
        self.per_channel_statistics.get_buffer("std-of-means").copy_(std)


@pytest.mark.parametrize("rational,scale", [(False, 2.0), (True, 2.0), (True, 1.5)], ids=["x2", "rational-x2", "x1.5"])
@torch.no_grad()
def test_converted_upsampler_matches_ltx_core(tmp_path, rational, scale):
    src = tmp_path / "ltx-2-spatial-upscaler.safetensors"
    official = write_official_upsampler(src, tiny_upsampler_config(C, rational=rational, scale=scale), seed=3)
    folder = convert_upsampler_file(src, tmp_path / "latent_upsampler")
    from diffusers.pipelines.ltx2.latent_upsampler import LTX2LatentUpsamplerModel

    ours = LTX2LatentUpsamplerModel.from_pretrained(folder).eval()
    g = torch.Generator().manual_seed(1)
    mean, std = torch.randn(C, generator=g) * 0.1, torch.rand(C, generator=g) + 0.5
    latents = torch.randn(1, C, 3, 4, 6, generator=g)
    ref = upsample_video(latents, _Encoder(mean, std), official)
    out = upsample_latents(latents, ours, mean, std)
    assert out.shape == ref.shape == (1, C, 3, int(4 * scale), int(6 * scale))
    # identical modules and op order in fp32: observed 0 to ~1e-6
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)


def test_bad_upsampler_files_are_refused(tmp_path):
    src = tmp_path / "up.safetensors"
    write_official_upsampler(src, tiny_upsampler_config(C))
    from safetensors import safe_open

    with safe_open(str(src), "pt") as f:
        sd = {k: f.get_tensor(k) for k in f.keys()}
        meta = f.metadata()
    broken = tmp_path / "missing.safetensors"
    save_file({k: v for k, v in sd.items() if not k.startswith("res_blocks.0.conv1")}, str(broken), metadata=meta)
    with pytest.raises(KeyMismatchError, match="res_blocks.0.conv1"):
        load_official_upsampler(broken)
    assert not (tmp_path / "out").exists()
    with pytest.raises(KeyMismatchError):
        convert_upsampler_file(broken, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    odd = tmp_path / "odd.safetensors"
    save_file(sd, str(odd), metadata={"config": meta["config"].replace('"spatial_scale": 2.0', '"spatial_scale": 3.0')
                                      .replace('"rational_resampler": false', '"rational_resampler": true')})
    with pytest.raises(UnsupportedCheckpointError, match="scale 3.0"):
        load_official_upsampler(odd)
    with pytest.raises(UnsupportedCheckpointError, match="not an LTX-2 latent upsampler"):
        save_file({"x": torch.zeros(1)}, str(tmp_path / "x.safetensors"))
        load_official_upsampler(tmp_path / "x.safetensors")
