"""Tiled video-VAE decode that streams each tile into a preallocated output.

diffusers' `AutoencoderKLLTX2Video.tiled_decode` / `_temporal_tiled_decode` decode every tile, keep them all, blend
them, then concatenate rows and frames: its peak holds every tile plus the blended copies - more than an untiled
decode of the same clip (measured 70.9 MiB against 49.5 MiB untiled in issue 19). Here each tile is decoded,
blended with the kept edge strips of its upper and left neighbours and with the previous temporal tile's last
frames (kept in the output itself, where the next tile overwrites them) (diffusers' own `blend_v`,
`blend_h`, `blend_t`, in diffusers' order: the same weights and arithmetic, so the result equals diffusers' tiled
decode to float rounding), written into the output and freed. Peak = the output + one tile's decode + the spatial edge
strips (`vae_tiling.tiled_decode_bytes`). With `output_device` (e.g. the CPU for a long clip decoded on a GPU) the
output lives there instead: each tile is copied out as it is finished and the device holds one tile's decode, the
edge strips and the previous temporal tile's blend frames, whatever the clip's length.

The tile sizes are the VAE's own attributes (`tile_sample_min_*`, `tile_sample_stride_*`, set by
`vae_tiling.apply_vae_tiling` or by `vae.enable_tiling(...)`), and the dispatch is diffusers' `_decode`: temporal
tiles when `use_framewise_decoding` and the clip is longer than a tile, spatial tiles when `use_tiling` and the
latents are larger than a tile. diffusers' quirks are kept as they are (a temporal tile after the first drops its
last frame; the blends of an edge tile shorter than the overlap align from the end).
"""

from __future__ import annotations

import torch
from diffusers.utils.accelerate_utils import apply_forward_hook


def tile_starts(size: int, stride: int) -> list[int]:
    """diffusers' spatial tile starts (latent pixels), less a last tile 1 latent wide: the decoder's reflect padding
    cannot pad it (diffusers fails there); the tile before it already reaches the edge and extends to it."""
    starts = list(range(0, size, stride))
    if len(starts) > 1 and size - starts[-1] < 2:
        starts.pop()
    return starts


def uses_tiles(vae, latents: torch.Tensor) -> bool:
    """Whether diffusers' `_decode` would tile these latents `(B, C, F, H, W)` with the VAE's current settings."""
    _, _, frames, height, width = latents.shape
    temporal = vae.use_framewise_decoding and frames > vae.tile_sample_min_num_frames // vae.temporal_compression_ratio
    r = vae.spatial_compression_ratio
    spatial = vae.use_tiling and (width > vae.tile_sample_min_width // r or height > vae.tile_sample_min_height // r)
    return temporal or spatial


#: attribute of a VAE holding `runner(decode)`, which runs `decode()` (a function calling `vae.decoder` once per
#: tile, each tile's input depending on the latents only) its own way: `distributed.vae.ParallelTiledDecode`
#: deals the tiles over ranks
TILE_RUNNER = "_ltx2_tile_runner"


@apply_forward_hook  # onloads the VAE under model CPU offload, as `vae.decode` does
def streamed_decode(vae, latents: torch.Tensor, temb: torch.Tensor | None = None,
                    causal: bool | None = None, output_device: torch.device | str | None = None) -> torch.Tensor:
    """Decode `latents` `(B, C, F, H, W)` to `(B, 3, (F - 1) * r_t + 1, H * r_s, W * r_s)` in the VAE's dtype,
    tile by tile as `vae.decode` would (untiled when the VAE's settings do not tile these latents), through the
    VAE's `TILE_RUNNER` when it has one.

    `output_device`: where the decoded video is assembled (default: the latents' device); tiles are copied there
    as they are finished, so the decoding device never holds the whole clip (an untiled decode is moved there
    whole). With `vae.use_slicing` the videos of a batch are decoded one at a time, as diffusers does."""
    out_device = torch.device(output_device) if output_device is not None else None
    runner = vae.__dict__.get(TILE_RUNNER)
    if runner is not None:
        return runner(lambda: _decode(vae, latents, temb, causal, out_device))
    return _decode(vae, latents, temb, causal, out_device)


def _decode(vae, latents, temb, causal, out_device=None) -> torch.Tensor:
    if vae.use_slicing and latents.shape[0] > 1:
        parts = [_decode(vae, z, None if temb is None else t, causal, out_device)
                 for z, t in zip(latents.split(1), temb.split(1) if temb is not None else [None] * len(latents))]
        return torch.cat(parts)
    if not uses_tiles(vae, latents):
        video = vae.decoder(latents, temb, causal=causal)
        return video if out_device is None else video.to(out_device)
    return _Stream(vae, latents, temb, causal, out_device).run()


class _Stream:
    """One streamed decode (state: the output and the kept edge strips)."""

    def __init__(self, vae, latents, temb, causal, out_device=None):
        self.vae, self.z, self.temb, self.causal, self.out_device = vae, latents, temb, causal, out_device
        r_s, r_t = vae.spatial_compression_ratio, vae.temporal_compression_ratio
        _, _, frames, height, width = latents.shape
        self.frames_out = (frames - 1) * r_t + 1
        self.height_out, self.width_out = height * r_s, width * r_s
        self.temporal = vae.use_framewise_decoding and frames > vae.tile_sample_min_num_frames // r_t
        # diffusers' temporal tiles: latent frames [i, i + min + 1) every `stride` latent frames
        self.t_min = vae.tile_sample_min_num_frames // r_t
        self.t_stride = vae.tile_sample_stride_num_frames // r_t
        self.t_blend = vae.tile_sample_min_num_frames - vae.tile_sample_stride_num_frames
        self.t_stride_px = vae.tile_sample_stride_num_frames
        self.h_min, self.w_min = vae.tile_sample_min_height // r_s, vae.tile_sample_min_width // r_s
        self.h_stride, self.w_stride = vae.tile_sample_stride_height // r_s, vae.tile_sample_stride_width // r_s
        self.h_blend = vae.tile_sample_min_height - vae.tile_sample_stride_height
        self.w_blend = vae.tile_sample_min_width - vae.tile_sample_stride_width
        self.out = None
        self.previous_first = self.previous_frames = 0  # where the previous temporal tile's frames were written

    def run(self) -> torch.Tensor:
        frames = self.z.shape[2]
        starts = list(range(0, frames, self.t_stride)) if self.temporal else [0]
        for k, start in enumerate(starts):
            z = self.z[:, :, start:start + self.t_min + 1] if self.temporal else self.z
            self._temporal_tile(k, z)
        return self.out

    def _temporal_tile(self, k: int, z: torch.Tensor) -> None:
        vae = self.vae
        height, width = z.shape[-2:]
        spatial = vae.use_tiling and (width > self.w_min or height > self.h_min)
        rows = tile_starts(height, self.h_stride) if spatial else [0]
        cols = tile_starts(width, self.w_stride) if spatial else [0]
        above: dict[int, torch.Tensor] = {}  # column -> bottom strip of the tile above (blended)
        for i, y in enumerate(rows):
            left = None
            for j, x in enumerate(cols):
                tile = z[:, :, :, y:y + self.h_min, x:x + self.w_min] if spatial else z
                dec = vae.decoder(tile, self.temb, causal=self.causal)
                if self.temporal and k > 0:
                    dec = dec[:, :, :-1]
                if spatial:
                    if i > 0:
                        dec = vae.blend_v(above[j], dec, self.h_blend)
                    if j > 0:
                        dec = vae.blend_h(left, dec, self.w_blend)
                    if i + 1 < len(rows):
                        above[j] = dec[:, :, :, -self.h_blend:].clone()
                    left = dec[..., -self.w_blend:].clone() if j + 1 < len(cols) else None
                    # diffusers keeps `stride` pixels of each tile; a last tile is never wider than that, except
                    # when it absorbed a 1-latent tail (see `tile_starts`): it then reaches the edge
                    piece = dec[:, :, :, :None if i + 1 == len(rows) else vae.tile_sample_stride_height,
                                :None if j + 1 == len(cols) else vae.tile_sample_stride_width]
                    py, px = y * vae.spatial_compression_ratio, x * vae.spatial_compression_ratio
                else:
                    piece, py, px = dec, 0, 0
                del dec
                self._place(k, piece, py, px)
                del piece
        self.previous_first, self.previous_frames = self.written

    def _place(self, k: int, piece: torch.Tensor, py: int, px: int) -> None:
        """Blend `piece` (all frames of temporal tile `k` at pixel `(py, px)`) with the previous temporal tile and
        write it into the output. A tile's frames past its share are written too: they are the previous frames
        the next tile blends with (diffusers' `a[:, :, -e + x]`), read back from the output, then overwritten."""
        h = min(piece.shape[-2], self.height_out - py)
        w = min(piece.shape[-1], self.width_out - px)
        piece = piece[..., :h, :w]
        if self.out is None:
            b, c = piece.shape[:2]
            self.out = torch.empty((b, c, self.frames_out, self.height_out, self.width_out), dtype=piece.dtype,
                                   device=self.out_device or piece.device)
        first = 0 if k == 0 else k * self.t_stride_px + 1  # diffusers' concatenation: stride + 1, then stride
        if k > 0:
            end = self.previous_first + self.previous_frames
            e = min(self.previous_frames, piece.shape[2], self.t_blend)
            previous = self.out[:, :, end - e:end, py:py + h, px:px + w].to(piece.device)
            piece = self.vae.blend_t(previous, piece, self.t_blend)
        count = min(piece.shape[2], self.frames_out - first)
        self.out[:, :, first:first + count, py:py + h, px:px + w] = piece[:, :, :count]
        self.written = (first, piece.shape[2])
