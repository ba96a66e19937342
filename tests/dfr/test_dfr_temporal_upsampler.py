"""The temporal x2 latent upscaler: the official tiny 2.5 file converted (`load_official_upsampler`, and the
`temporal_latent_upsampler/` folder `ltx2 convert` writes) equals ltx-core 1.2's `LatentUpsampler` built by its own
builder, module output and the whole `upsample_video` (VAE statistics round trip), fp32."""

from __future__ import annotations

import pytest
import torch
from official_12 import requires_official_12, run_official_12

from diffusers_ltx2.conversion.upsampler import load_official_upsampler
from diffusers_ltx2.dfr.temporal import check_temporal_upsampler, temporal_upsample

TOL = 1e-5


@requires_official_12
def test_temporal_upsampler_equals_ltx_core_12(ltx25_set, tmp_path):
    from diffusers_ltx2 import LTX2AudioVideoPipeline

    ours = load_official_upsampler(ltx25_set["temporal_upsampler"], dtype=torch.float32)
    vae = LTX2AudioVideoPipeline.from_single_file(ltx25_set["folder"], dtype=torch.float32, progress=False).vae
    x = torch.randn(1, ours.config.in_channels, 4, 3, 5, generator=torch.Generator().manual_seed(0))
    off = run_official_12("""
        from ltx_core.loader import SingleGPUModelBuilder
        from ltx_core.model.upsampler import LatentUpsamplerConfigurator, upsample_video
        from ltx_core.model.video_vae import VAE_ENCODER_COMFY_KEYS_FILTER, VideoEncoderConfigurator
        def build(path, configurator, ops=None):
            kw = {} if ops is None else {"model_sd_ops": ops}
            return SingleGPUModelBuilder(model_class_configurator=configurator, model_path=path, **kw).build(
                device=torch.device("cpu"), dtype=torch.float32).eval()
        up = build(IN["up"], LatentUpsamplerConfigurator)
        enc = build(IN["vae"], VideoEncoderConfigurator, VAE_ENCODER_COMFY_KEYS_FILTER)
        with torch.no_grad():
            OUT["module"] = up(IN["x"])
            OUT["video"] = upsample_video(latent=IN["x"], video_encoder=enc, upsampler=up)
    """, {"up": str(ltx25_set["temporal_upsampler"]), "vae": str(ltx25_set["video_vae_conv"]), "x": x}, tmp_path)
    with torch.no_grad():
        module = ours(x)
    assert module.shape == (1, x.shape[1], 7, 3, 5) == off["module"].shape
    assert (module - off["module"]).abs().max() <= TOL
    video = temporal_upsample(x, ours, vae.latents_mean, vae.latents_std)
    assert video.shape == off["video"].shape
    assert (video - off["video"]).abs().max() <= TOL


def test_converted_folder_loads_the_same(ltx25_set, tmp_path):
    from diffusers.pipelines.ltx2.latent_upsampler import LTX2LatentUpsamplerModel

    from diffusers_ltx2.conversion.upsampler import convert_upsampler_file

    dst = convert_upsampler_file(ltx25_set["temporal_upsampler"], tmp_path / "temporal_latent_upsampler")
    a = LTX2LatentUpsamplerModel.from_pretrained(dst)
    b = load_official_upsampler(ltx25_set["temporal_upsampler"])
    assert a.config.temporal_upsample and not a.config.spatial_upsample
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_spatial_upsampler_refused_as_temporal(ltx25_set):
    spatial = load_official_upsampler(ltx25_set["spatial_upsampler"])
    with pytest.raises(ValueError, match="time only"):
        check_temporal_upsampler(spatial)
    with pytest.raises(ValueError, match="temporal latent upsampler"):
        check_temporal_upsampler(None)
    with pytest.raises(ValueError, match="channels"):
        temporal_upsample(torch.zeros(1, 3, 2, 2, 2), load_official_upsampler(ltx25_set["temporal_upsampler"]),
                          torch.zeros(3), torch.ones(3))
