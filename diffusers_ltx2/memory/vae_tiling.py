"""Automatic video-VAE tiling: tiles chosen from the clip size and a memory budget (official `AUTO_TILING`).

Followed: ltx-core 1.0.0 `model/video_vae/tiling.py` `TilingConfig.default()` - spatial tiles of 512 px with
64 px overlap, temporal tiles of 64 frames with 24 frames overlap - which the official pipelines always decode
with. Here tiling switches on when the clip exceeds a tile (as the official splitting then produces more than one
tile) or when the untiled decode would not fit the budget; smaller tiles are picked until the estimate fits.
Tiles are executed by diffusers' `AutoencoderKLLTX2Video` tiled decode / encode (linear blending in the overlap).

Exactness: pixels farther from a tile border than the decoder's receptive field are identical to the untiled
decode; near the seams the result differs by what the cut-off context contributed (see the README / tests for
the measured figures).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# official TilingConfig.default()
DEFAULT_TILE_PX, DEFAULT_OVERLAP_PX = 512, 64
DEFAULT_TILE_FRAMES, DEFAULT_OVERLAP_FRAMES = 64, 24
_SMALLER_TILES = ((512, 64, 64, 24), (384, 64, 48, 16), (256, 64, 32, 16), (192, 64, 16, 8), (128, 32, 16, 8))
# Live tensors of the widest decoder level at the peak (block input, conv output, residual, norm temporary);
# calibrated against the measured decode peak of the SMALL VAE (benchmarks/bench_memory.py).
DECODE_LIVE_TENSORS = 4


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


def decode_bytes(num_frames: int, height: int, width: int, *, decoder_channels: int, patch_size: int = 4,
                 dtype_bytes: int = 2, batch_size: int = 1) -> int:
    """Estimated peak activation bytes of one untiled video-VAE decode.

    The widest level of the LTX-2 decoder runs at (F, H / patch, W / patch) with `decoder_block_out_channels[0]`
    channels (256 for the real VAE); `DECODE_LIVE_TENSORS` such tensors are alive at its peak."""
    elems = batch_size * num_frames * (height // patch_size) * (width // patch_size) * decoder_channels
    return DECODE_LIVE_TENSORS * elems * dtype_bytes


def plan_vae_tiling(num_frames: int, height: int, width: int, *, decoder_channels: int, patch_size: int = 4,
                    dtype_bytes: int = 2, budget_bytes: int | None = None) -> VaeTiling | None:
    """Choose the decode tiling for a clip (pure function).

    Returns `None` (untiled) when the clip fits in one official tile and the untiled estimate fits `budget_bytes`
    (or no budget is given); else the largest tile set from `_SMALLER_TILES` whose per-tile estimate fits
    (the smallest one if none does). A dimension no larger than its tile stays untiled.
    """
    def fits(frames, h, w):
        return budget_bytes is None or decode_bytes(frames, h, w, decoder_channels=decoder_channels,
                                                    patch_size=patch_size, dtype_bytes=dtype_bytes) <= budget_bytes

    if max(height, width) <= DEFAULT_TILE_PX and num_frames <= DEFAULT_TILE_FRAMES and fits(num_frames, height, width):
        return None
    for tile_px, overlap_px, tile_frames, overlap_frames in _SMALLER_TILES:
        if fits(min(num_frames, tile_frames + 1), min(height, tile_px), min(width, tile_px)):
            break
    spatial = max(height, width) > tile_px
    temporal = num_frames > tile_frames + 1
    if not spatial and not temporal:  # over budget yet a single tile: split space at least
        spatial = True
    return VaeTiling(tile_px if spatial else None, overlap_px if spatial else None,
                     tile_frames if temporal else None, overlap_frames if temporal else None)


def apply_vae_tiling(vae, tiling: VaeTiling | None) -> None:
    """Configure diffusers' `AutoencoderKLLTX2Video` tiled decode / encode for `tiling` (`None` turns it off)."""
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


def auto_tile_vae(vae, num_frames: int, height: int, width: int, budget_bytes: int | None = None) -> VaeTiling | None:
    """Plan and apply tiling for a clip, unless the user configured tiling on this VAE by hand
    (`vae.enable_tiling()` before the call: then it is left alone and `None` returned)."""
    if getattr(vae, "use_tiling", False) and not getattr(vae, "_ltx2_auto_tiling", False):
        return None
    tiling = plan_vae_tiling(num_frames, height, width, decoder_channels=vae.config.decoder_block_out_channels[0],
                             patch_size=vae.config.patch_size,
                             dtype_bytes=torch.finfo(vae.dtype).bits // 8, budget_bytes=budget_bytes)
    apply_vae_tiling(vae, tiling)
    vae._ltx2_auto_tiling = tiling is not None
    return tiling
