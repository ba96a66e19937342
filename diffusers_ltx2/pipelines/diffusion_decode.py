"""Decoding with the LTX-2.5 diffusion video decoder, following ltx-core 1.2.0 exactly (untiled and tiled).

diffusers 0.42.1's `LTX2VideoDiffusionDecoderModel` holds the right modules and stage functions
(`forward_stages_1_to_3`, `forward_stage_4`, `forward_diffusion_step`), but its `decode` differs from the official
`DiffusionVideoDecoder._decode_pixels` where it matters: it raises on latents smaller than a neighborhood kernel
(single images, small clips), crops the NATTEN ghost frames entirely (official: down to the stage-5 temporal kernel)
and tiles with its own schedule. `diffusion_decode` drives diffusers' stages with the official geometry
(`diffusion_tiling`): size-floor padding and cropping, ghost frames, one stage-1..3 pass over the whole volume,
stage 4 + the stage-5 denoising loop per tile, noise drawn per tile for a one-step x0 decoder (else once for the
canvas), trapezoid blending, crop to the content.

Neighborhood attention: the installed ``natten`` on CUDA, a chunked masked-SDPA fallback on CPU, diffusers'
processors otherwise (`neighborhood_attention.neighborhood_backend`; official 1.2 prefers NATTEN and falls back to
Triton / eager tiled SDPA); all compute the same windows, equal within fp32 rounding.
"""

from __future__ import annotations

import torch

from . import diffusion_tiling as D
from .neighborhood_attention import neighborhood_backend

__all__ = ["diffusion_decode", "uses_diffusion_decoder"]


def uses_diffusion_decoder(choice: str, diffusion_decoder) -> bool:
    """Whether a pipeline decodes with its diffusion decoder: ``choice`` "auto" (when one is loaded, as the
    official 2.5 pipelines with the default VAE file), "diffusion" or "conv".

    Raises:
        ValueError: an unknown choice, or "diffusion" without a diffusion decoder.
    """
    if choice not in ("auto", "diffusion", "conv"):
        raise ValueError(f"video_decoder must be 'auto', 'diffusion' or 'conv', got {choice!r}")
    if choice == "diffusion" and diffusion_decoder is None:
        raise ValueError("video_decoder='diffusion' needs a diffusion_decoder component (LTX-2.5: convert the "
                         "ltx-2.5-video-vae file with the set)")
    return diffusion_decoder is not None and choice != "conv"


def _decode_tile(dec, feat: torch.Tensor, x_t: torch.Tensor, *, origin: bool, trailing: bool, ghost_frames: int,
                 stage5_kernel_t: int, timesteps: torch.Tensor) -> torch.Tensor:
    """Stage 4 and the stage-5 loop on one stage-4 tile (ltx-core `_decode_one_tile`)."""
    context = dec.forward_stage_4(feat, drop_leading_frame=origin, crop_trailing_ghost=False)
    if trailing:
        context = D.crop_trailing_context(context, ghost_frames, stage5_kernel_t)
    batch = feat.shape[0]
    x0_model = dec.model_output_type == "x0"

    def euler(x, out, t_now, t_next):  # float32 Euler on the velocity, back to the working dtype
        dt = (t_now - t_next).view(-1, *([1] * (x.ndim - 1))).float()
        v = out if not x0_model else (x.float() - out) / t_now.view(-1, *([1] * (x.ndim - 1))).float()
        return (x.float() - dt * v).to(x.dtype)

    for i in range(len(timesteps) - 1):
        t_now, t_next = timesteps[i].expand(batch), timesteps[i + 1].expand(batch)
        x_t = euler(x_t, dec.forward_diffusion_step(context, x_t, t_now).float(), t_now, t_next)
    t_now = timesteps[-1].expand(batch)
    out = dec.forward_diffusion_step(context, x_t, t_now)
    return out if x0_model else euler(x_t, out.float(), t_now, torch.zeros_like(t_now))


@torch.no_grad()
def diffusion_decode(model, latents: torch.Tensor, *, generator: torch.Generator | None = None,
                     tiling: D.DiffusionTiling | None = None, num_inference_steps: int | None = None,
                     attention: str = "auto", latent_statistics: tuple | None = None) -> torch.Tensor:
    """Decode denormalized latents ``(B, C, T, H, W)`` with `LTX2VideoDiffusionDecoderModel` into pixels
    ``(B, 3, (T - 1) * 8 + 1, 32 H, 32 W)`` in [-1, 1] (the model's dtype and device).

    Args:
        model: diffusers' `LTX2VideoDiffusionDecoderModel` (e.g. the pipeline's ``diffusion_decoder``).
        latents: in the VAE's space (the pipeline applies ``latents_mean`` / ``latents_std`` before), as diffusers'
            `decode` takes them.
        generator: the decoder denoises pixel noise: a generator makes decoding reproducible (CPU noise for a CPU
            generator, as the official decoder draws it).
        tiling: `DiffusionTiling` (frames / pixels; official semantics), or None for one tile.
        num_inference_steps: stage-5 steps (default: the checkpoint's ``decoder_num_inference_steps``).
        attention: neighborhood-attention backend (`neighborhood_attention.neighborhood_backend`: "auto",
            "natten", "sdpa", "diffusers").
        latent_statistics: ``(mean, std)`` the latents were denormalized with (e.g. the conv VAE's): they are
            re-expressed with the decoder's own statistics first, as the official decoder un-normalizes with its
            file's ``per_channel_statistics`` (the release's two VAE files carry the same ones: a no-op there).

    Raises:
        ValueError: a tiling whose overlaps are below the decoder's receptive field or off its grid, an unknown
            attention backend.
    """
    if latent_statistics is not None:
        mean, std = (x.to(latents.device, torch.float32).view(1, -1, 1, 1, 1) for x in latent_statistics)
        own_mean, own_std = (x.to(latents.device, torch.float32).view(1, -1, 1, 1, 1)
                             for x in (model.latents_mean, model.latents_std))
        latents = (latents.float() - mean) / std * own_std + own_mean
    with neighborhood_backend(model, attention):
        return _decode(model, latents, generator, tiling, num_inference_steps)


def _decode(model, latents, generator, tiling, num_inference_steps) -> torch.Tensor:
    dec, cfg = model.decoder, model.config
    dtype, device = model.dtype, latents.device
    latents = latents.to(dtype)
    strides = [tuple(s) for s in cfg.decoder_upsample_strides]
    kernels = [tuple(k) for k in cfg.decoder_stage_kernels]
    stage5_kernel, depths = tuple(cfg.decoder_stage5_kernel), tuple(cfg.decoder_stage_depths)
    t_ratio, s_ratio = model.temporal_compression_ratio, model.spatial_compression_ratio
    b, _, t, h, w = latents.shape
    content = ((t - 1) * t_ratio + 1, h * s_ratio, w * s_ratio)

    latent, (_, h_pad, w_pad) = D.ensure_min_latent_shape(
        latents, D.all_stages_min_tile_size(kernels, strides, stage5_kernel))
    work_t, work_h, work_w = latent.shape[2:]
    full = ((work_t - 1) * t_ratio + 1, work_h * s_ratio, work_w * s_ratio)
    s4 = D.stage4_thw_from_latent(strides, work_t, work_h, work_w)
    tiles = D.tile_schedule(s4, tiling, stride=strides[3], patch_size=cfg.patch_size,
                            min_sizes=D.tile_min_size(kernels[3], stage5_kernel, strides[3]),
                            halos=D.tile_halos(kernels[3], depths[3], stage5_kernel, depths[-1], strides[3]))

    feat = dec.forward_stages_1_to_3(latent)  # ghost frames appended inside (the same repeat-last pad)
    steps = num_inference_steps or dec.default_num_inference_steps
    timesteps = torch.linspace(1.0, 1.0 / steps, steps, device=device)
    single_x0 = steps == 1 and dec.model_output_type == "x0"
    noise_device = generator.device if generator is not None else device
    canvas = None
    if not single_x0:
        canvas = torch.randn((b, cfg.out_channels, *full), dtype=dtype, generator=generator,
                             device=noise_device).to(device)

    complementary = D.masks_are_complementary(tiles, full)
    accum = torch.float16 if dtype == torch.bfloat16 else dtype
    out = torch.zeros((b, cfg.out_channels, *full), dtype=accum, device=device)
    weights = None if complementary else torch.zeros_like(out)
    ghost_frames = dec.trailing_pad_latent_frames * t_ratio
    for tile in tiles:
        t0, t1, _ = tile.s4[0].indices(s4[0])
        origin, trailing = t0 == 0, t1 == s4[0]
        feat_tile = feat[:, t0:feat.shape[1] if trailing else t1, tile.s4[1], tile.s4[2]]
        content_t = t1 - t0
        ch, cw = feat_tile.shape[2], feat_tile.shape[3]
        frames = content_t * strides[3][0] - (1 if origin and strides[3][0] == 2 else 0)
        if trailing:
            frames = max(frames, stage5_kernel[0])
        shape5 = (frames, ch * strides[3][1] * cfg.patch_size, cw * strides[3][2] * cfg.patch_size)
        tile_px = D.pixel_shape(full, tile.out)
        if canvas is None:
            x_t = torch.randn((b, cfg.out_channels, *shape5), dtype=dtype, generator=generator,
                              device=noise_device).to(device)
        else:
            x_t = canvas[:, :, tile.out[0], tile.out[1], tile.out[2]]
            for dim, size, mode in zip((2, 3, 4), shape5, ("repeat_last", "symmetric", "symmetric")):
                x_t = D.resize_axis(x_t, dim, size, mode=mode)[0]
        pixels = _decode_tile(dec, feat_tile, x_t, origin=origin, trailing=trailing, ghost_frames=ghost_frames,
                              stage5_kernel_t=stage5_kernel[0], timesteps=timesteps)
        pixels = D.crop_pixels_to_content(pixels, *tile_px).to(accum)
        mask = (tile.masks[0].view(-1, 1, 1) * tile.masks[1].view(1, -1, 1) * tile.masks[2].view(1, 1, -1))
        mask = mask.to(device=device, dtype=torch.float32)
        out[:, :, tile.out[0], tile.out[1], tile.out[2]] += pixels * mask
        if weights is not None:
            weights[:, :, tile.out[0], tile.out[1], tile.out[2]] += mask.to(accum).expand_as(pixels)
    if weights is not None:
        out = out / weights.clamp(min=max(1e-8, torch.finfo(weights.dtype).tiny))
    return D.crop_pixels_to_content(out.to(dtype), *content, h_pad=h_pad, w_pad=w_pad, scale=(s_ratio, s_ratio))
