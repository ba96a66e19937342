"""Automatic video-VAE tiling: tiles chosen from the clip size and a memory budget (official `AUTO_TILING`).

Followed: ltx-core 1.0.0 `model/video_vae/tiling.py` `TilingConfig.default()` - spatial tiles of 512 px with
64 px overlap, temporal tiles of 64 frames with 24 frames overlap - which the official pipelines always decode
with. Here tiling switches on when the clip exceeds a tile (as the official splitting then produces more than one
tile) or when the untiled decode would not fit the budget; smaller tiles are picked until the estimate fits.
Tiles are decoded by `tiled_decode.streamed_decode` (diffusers' tiles and blend weights, each tile streamed into
a preallocated output) and encoded by diffusers' `AutoencoderKLLTX2Video` tiled encode.

Memory (upper bounds of the allocations measured with `measure.AllocationTracker`, tests/memory/test_vae_memory.py):
with W = the widest decoder level's values, (F + 1) x (H / patch) x (W / patch) x `decoder_block_out_channels[0]`
(F + 1: the last temporal upsampling makes one frame more, then drops it), an untiled decode peaks at
`DECODE_WIDEST_TENSORS` x W inside the levels, or at the end at `DECODE_FINAL_WIDEST` x W + `DECODE_OUTPUT_TENSORS`
full-resolution outputs (the last convolution's result and its unpatchified copy). Measured on random-weight VAEs
from the factory's widths to the real 256/512/1024, 1 to 17 frames: 2.8-3.2 W inside the levels, ~W + 2
outputs at the end; the bound is 8-31% above every measurement. A streamed tiled decode holds the output, one
tile's decode and the kept edge strips (`tiled_decode_bytes`).

Exactness: pixels farther from a tile border than the decoder's receptive field are identical to the untiled
decode; near the seams the result differs by what the cut-off context contributed (see the README / tests for
the measured figures).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .tiled_decode import tile_starts

# official TilingConfig.default()
DEFAULT_TILE_PX, DEFAULT_OVERLAP_PX = 512, 64
DEFAULT_TILE_FRAMES, DEFAULT_OVERLAP_FRAMES = 64, 24
_SMALLER_TILES = ((512, 64, 64, 24), (384, 64, 48, 16), (256, 64, 32, 16), (192, 64, 16, 8), (128, 32, 16, 8))
DECODE_WIDEST_TENSORS = 3.5
DECODE_FINAL_WIDEST, DECODE_OUTPUT_TENSORS = 1.25, 2
#: temporaries of one blend step (`a * w1`, `b * w2`, their sum) of one row / column / frame of a tile
BLEND_TEMPORARIES = 3


@dataclass(frozen=True)
class VaeTiling:
    """Tile sizes in pixels / pixel frames; `None` in a dimension = that dimension untiled."""

    tile_px: int | None
    overlap_px: int | None
    tile_frames: int | None
    overlap_frames: int | None

    def describe(self) -> str:
        s = f"{self.tile_px} px tiles (overlap {self.overlap_px})" if self.tile_px else "no spatial tiles"
        t = f"{self.tile_frames}-frame tiles (overlap {self.overlap_frames})" if self.tile_frames else "no temporal tiles"
        return f"{s}, {t}"


def needs_temporal_tiles(num_frames: int, tile_frames: int) -> bool:
    """Whether a clip is longer than one temporal tile. For valid frame counts (8k + 1) this is diffusers' rule
    (latent frames > `tile_frames / 8`) and the official one (more than `tile_frames` frames): 65 frames with
    64-frame tiles are tiled (one frame past the tile); a temporal tile then decodes `tile_frames + 1` frames."""
    return num_frames > tile_frames


def decode_bytes(num_frames: int, height: int, width: int, *, decoder_channels: int, patch_size: int = 4,
                 dtype_bytes: int = 2, batch_size: int = 1, out_channels: int = 3) -> int:
    """Upper bound of the peak bytes allocated by one untiled video-VAE decode (output included): see the module
    docstring (`decoder_channels`: `decoder_block_out_channels[0]`, 256 for the real VAE)."""
    pixels = batch_size * num_frames * height * width
    widest = batch_size * (num_frames + 1) * (height // patch_size) * (width // patch_size) * decoder_channels
    values = max(DECODE_WIDEST_TENSORS * widest,
                 DECODE_FINAL_WIDEST * widest + DECODE_OUTPUT_TENSORS * out_channels * pixels)
    return math.ceil(values) * dtype_bytes


def tiled_decode_bytes(num_frames: int, height: int, width: int, tiling: VaeTiling | None, *,
                       decoder_channels: int, patch_size: int = 4, dtype_bytes: int = 2, batch_size: int = 1,
                       out_channels: int = 3, spatial_ratio: int = 32) -> int:
    """Upper bound of the peak bytes of `tiled_decode.streamed_decode` with `tiling` (untiled: `decode_bytes`):
    the output, one tile's decode, the bottom strips of one row of tiles, the right strip of one tile and one
    blend step's temporaries."""
    spatial = tiling is not None and tiling.tile_px is not None and max(height, width) > tiling.tile_px
    temporal = tiling is not None and tiling.tile_frames is not None and needs_temporal_tiles(num_frames,
                                                                                                tiling.tile_frames)
    if not spatial and not temporal:
        return decode_bytes(num_frames, height, width, decoder_channels=decoder_channels, patch_size=patch_size,
                            dtype_bytes=dtype_bytes, batch_size=batch_size, out_channels=out_channels)
    frames = min(num_frames, tiling.tile_frames + 1) if temporal else num_frames
    th, tw = (min(height, tiling.tile_px), min(width, tiling.tile_px)) if spatial else (height, width)
    values = out_channels * batch_size * num_frames * height * width  # the output (previous frames kept in it)
    if spatial:
        def starts(size):
            return tile_starts(size // spatial_ratio, (tiling.tile_px - tiling.overlap_px) // spatial_ratio)

        rows, cols = starts(height), starts(width)
        tile_l = tiling.tile_px // spatial_ratio
        row = sum(min(tile_l, width // spatial_ratio - s) for s in cols) * spatial_ratio
        strip = out_channels * batch_size * frames * tiling.overlap_px
        if len(rows) > 1:  # bottom strips of a row of tiles (+ the one being replaced)
            values += strip * (row + tw)
        if len(cols) > 1:  # right strip of the tile before (+ the one replacing it)
            values += strip * 2 * th
    slice_ = max(frames * th, frames * tw, th * tw)
    values += BLEND_TEMPORARIES * out_channels * batch_size * slice_
    tile = decode_bytes(frames, th, tw, decoder_channels=decoder_channels, patch_size=patch_size,
                        dtype_bytes=dtype_bytes, batch_size=batch_size, out_channels=out_channels)
    return values * dtype_bytes + tile


def plan_vae_tiling(num_frames: int, height: int, width: int, *, decoder_channels: int, patch_size: int = 4,
                    dtype_bytes: int = 2, budget_bytes: int | None = None, batch_size: int = 1,
                    spatial_ratio: int = 32) -> VaeTiling | None:
    """Choose the decode tiling for a clip (pure function).

    Returns `None` (untiled) when the clip fits in one official tile (at most 512 px and 64 frames) and the
    untiled estimate fits `budget_bytes` (or no budget is given); else the largest tile set from `_SMALLER_TILES`
    whose streamed tiled estimate (`tiled_decode_bytes`) fits (the smallest one if none does). A dimension no
    larger than its tile stays untiled (`needs_temporal_tiles` for frames).
    """
    def estimate(tiling):
        return tiled_decode_bytes(num_frames, height, width, tiling, decoder_channels=decoder_channels,
                                  patch_size=patch_size, dtype_bytes=dtype_bytes, batch_size=batch_size,
                                  spatial_ratio=spatial_ratio)

    def fits(tiling):
        return budget_bytes is None or estimate(tiling) <= budget_bytes

    exceeds = max(height, width) > DEFAULT_TILE_PX or needs_temporal_tiles(num_frames, DEFAULT_TILE_FRAMES)
    if not exceeds and fits(None):
        return None
    for tile_px, overlap_px, tile_frames, overlap_frames in _SMALLER_TILES:
        spatial = max(height, width) > tile_px
        temporal = needs_temporal_tiles(num_frames, tile_frames)
        tiling = VaeTiling(tile_px if spatial else None, overlap_px if spatial else None,
                           tile_frames if temporal else None, overlap_frames if temporal else None)
        if (spatial or temporal) and fits(tiling):
            return tiling
    # over budget even in the smallest tiles: those (space split at least, so that tiling is on)
    spatial = spatial or not temporal
    return VaeTiling(tile_px if spatial else None, overlap_px if spatial else None,
                     tile_frames if temporal else None, overlap_frames if temporal else None)


def apply_vae_tiling(vae, tiling: VaeTiling | None) -> None:
    """Configure diffusers' `AutoencoderKLLTX2Video` tiling attributes for `tiling` (`None` turns it off); the
    decode reads them (`tiled_decode.streamed_decode`), as does diffusers' tiled encode."""
    if tiling is None:
        vae.use_tiling = False
        vae.use_framewise_decoding = vae.use_framewise_encoding = False
        return
    if tiling.tile_px is not None:
        vae.enable_tiling(tile_sample_min_height=tiling.tile_px, tile_sample_min_width=tiling.tile_px,
                          tile_sample_stride_height=tiling.tile_px - tiling.overlap_px,
                          tile_sample_stride_width=tiling.tile_px - tiling.overlap_px)
    else:
        vae.use_tiling = False
    framewise = tiling.tile_frames is not None
    vae.use_framewise_decoding = vae.use_framewise_encoding = framewise
    if framewise:
        vae.tile_sample_min_num_frames = tiling.tile_frames
        vae.tile_sample_stride_num_frames = tiling.tile_frames - tiling.overlap_frames


def auto_tile_vae(vae, num_frames: int, height: int, width: int, budget_bytes: int | None = None, *,
                  batch_size: int = 1) -> VaeTiling | None:
    """Plan and apply tiling for a clip of `batch_size` videos, unless the user configured tiling on this VAE by
    hand (`vae.enable_tiling()` before the call: then it is left alone and `None` returned)."""
    if getattr(vae, "use_tiling", False) and not getattr(vae, "_ltx2_auto_tiling", False):
        return None
    tiling = plan_vae_tiling(num_frames, height, width, decoder_channels=vae.config.decoder_block_out_channels[0],
                             patch_size=vae.config.patch_size, dtype_bytes=torch.finfo(vae.dtype).bits // 8,
                             budget_bytes=budget_bytes, batch_size=batch_size,
                             spatial_ratio=vae.spatial_compression_ratio)
    apply_vae_tiling(vae, tiling)
    vae._ltx2_auto_tiling = tiling is not None
    return tiling
