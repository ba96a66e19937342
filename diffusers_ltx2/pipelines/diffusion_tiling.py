"""Geometry of the LTX-2.5 diffusion video decoder: size floors, padding/cropping, tile schedule and blend masks.

Pure functions on shapes and small tensors, following ltx-core 1.2.0 `model/video_vae/diffusion_tiling.py` and the
parts of `ltx_core/tiling.py` it uses (same names where they exist there); `diffusion_decode.py` runs the decoder on
them. Units: "latent" = the VAE latent grid, "stage-4" = the grid entering the decoder's last deterministic stage
(tiles live there), "pixel" = output frames / pixels.

Official semantics kept on purpose, unlike diffusers 0.42.1's `LTX2VideoDiffusionDecoderModel.decode`:

- latents smaller than every stage's neighborhood kernel are edge-padded first (`ensure_min_latent_shape`) and the
  pixels cropped back, so single images and small clips decode (diffusers raises);
- the NATTEN trailing ghost frames are cropped from the context only down to the stage-5 temporal kernel
  (`crop_trailing_context`), not entirely;
- tiles are cut on the stage-4 grid with halo-sized overlaps, propagated through the last upsample (the origin tile
  drops the duplicate leading frame) and blended with symmetric trapezoid masks that sum to one.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

__all__ = [
    "AxisPad", "DiffusionTiling", "Interval", "Tile", "all_stages_min_tile_size", "crop_pixels_to_content",
    "crop_trailing_context", "ensure_min_latent_shape", "masks_are_complementary", "recommended_pixel_overlaps",
    "resize_axis", "stage4_thw_from_latent", "tile_halos", "tile_min_size", "tile_schedule", "trapezoid_mask",
]


@dataclass(frozen=True)
class AxisPad:
    """Elements added (pad) or removed (crop) on each side of one axis."""

    before: int
    after: int


def resize_axis(x: torch.Tensor, dim: int, size: int, *, mode: str) -> tuple[torch.Tensor, AxisPad]:
    """Pad or crop axis ``dim`` to ``size``: ``"repeat_last"`` pads/crops at the end (last slice repeated),
    ``"symmetric"`` on both sides (edge slices repeated; the odd element goes to the end)."""
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    dim = dim % x.ndim
    length = x.shape[dim]
    if length == size:
        return x, AxisPad(0, 0)
    need = abs(size - length)
    before = 0 if mode == "repeat_last" else need // 2
    after = need - before
    if length > size:
        return x.narrow(dim, before, size).contiguous(), AxisPad(before, after)
    parts = []
    if before:
        parts.append(x.narrow(dim, 0, 1).expand(*[before if i == dim else s for i, s in enumerate(x.shape)]))
    parts.append(x)
    if after:
        parts.append(x.narrow(dim, length - 1, 1).expand(*[after if i == dim else s for i, s in enumerate(x.shape)]))
    return torch.cat(parts, dim=dim), AxisPad(before, after)


def all_stages_min_tile_size(stage_kernels, upsample_strides, stage5_kernel) -> tuple[int, int, int]:
    """Latent-grid ``(T, H, W)`` floor so every stage's neighborhood attention sees dims >= its kernel."""
    mins, cumulative = [1, 1, 1], (1, 1, 1)
    for kernel, stride in zip(stage_kernels, upsample_strides):
        mins = [max(m, -(-k // c)) for m, k, c in zip(mins, kernel, cumulative)]
        cumulative = tuple(c * s for c, s in zip(cumulative, stride))
    return tuple(max(m, -(-k // c)) for m, k, c in zip(mins, stage5_kernel, cumulative))


def ensure_min_latent_shape(latent: torch.Tensor, min_sizes) -> tuple[torch.Tensor, tuple[AxisPad, AxisPad, AxisPad]]:
    """Pad a ``(B, C, T, H, W)`` latent up to ``min_sizes`` (time at the end, space symmetrically)."""
    pads = []
    for dim, minimum, mode in zip((2, 3, 4), min_sizes, ("repeat_last", "symmetric", "symmetric")):
        if latent.shape[dim] < minimum:
            latent, pad = resize_axis(latent, dim, minimum, mode=mode)
        else:
            pad = AxisPad(0, 0)
        pads.append(pad)
    return latent, tuple(pads)


def crop_pixels_to_content(pixels: torch.Tensor, frames: int, height: int, width: int, *,
                           h_pad: AxisPad | None = None, w_pad: AxisPad | None = None,
                           scale: tuple[int, int] = (1, 1)) -> torch.Tensor:
    """Crop a padded ``(B, C, F, H, W)`` decode to the content: frames from the end, space at the recorded latent
    pads (scaled to pixels) or symmetrically."""
    x, _ = resize_axis(pixels, 2, frames, mode="repeat_last")
    for dim, size, pad, s in ((3, height, h_pad, scale[0]), (4, width, w_pad, scale[1])):
        if pad is not None:
            x = x.narrow(dim, pad.before * s, size).contiguous()
        else:
            x, _ = resize_axis(x, dim, size, mode="symmetric")
    return x


def crop_trailing_context(context: torch.Tensor, ghost_frames: int, stage5_kernel_t: int) -> torch.Tensor:
    """Drop the trailing ghost frames of a channels-last context ``(B, T, H, W, C)``, keeping at least
    ``stage5_kernel_t`` frames (ltx-core `crop_trailing_context_natten_pad`)."""
    if ghost_frames <= 0:
        return context
    keep = min(context.shape[1], max(max(context.shape[1] - ghost_frames, 1), stage5_kernel_t))
    return resize_axis(context, 1, keep, mode="repeat_last")[0]


def stage4_thw_from_latent(upsample_strides, t: int, h: int, w: int) -> tuple[int, int, int]:
    """Stage-4 input ``(T, H, W)`` after the first three upsamples (each temporal x2 drops its duplicate frame)."""
    for st, sh, sw in upsample_strides[:3]:
        t, h, w = t * st - (1 if st == 2 else 0), h * sh, w * sw
    return t, h, w


def tile_min_size(stage4_kernel, stage5_kernel, stride) -> tuple[int, int, int]:
    """Smallest stage-4 tile so stages 4 and 5 each see at least their kernel."""
    return tuple(max(k4, -(-k5 // s)) for k4, k5, s in zip(stage4_kernel, stage5_kernel, stride))


def tile_halos(stage4_kernel, stage4_depth: int, stage5_kernel, stage5_depth: int, stride):
    """One-sided receptive-field halos (stage-4 units) of stages 4 and 5."""
    halo4 = tuple(stage4_depth * (k // 2) for k in stage4_kernel)
    halo5 = tuple(-(-(stage5_depth * (k // 2)) // s) for k, s in zip(stage5_kernel, stride))
    return halo4, halo5


def recommended_pixel_overlaps(halos, pixel_scale: tuple[int, int, int]) -> tuple[int, int]:
    """Smallest safe ``(temporal frames, spatial pixels)`` tile overlaps (rounded to 8 frames / 32 pixels)."""
    dominant = [max(h[axis] for h in halos) for axis in range(3)]
    overlap_t = -(-dominant[0] * pixel_scale[0] // 8) * 8
    overlap_hw = -(-max(dominant[1], dominant[2]) * pixel_scale[1] // 32) * 32
    return overlap_t, overlap_hw


def trapezoid_mask(length: int, ramp_left: int, ramp_right: int) -> torch.Tensor:
    """1-D blend weights with symmetric linear ramps (ltx-core `compute_trapezoidal_mask_1d`,
    ``left_starts_from_0=False``): overlapping ramps of two tiles sum to one."""
    mask = torch.ones(length)
    ramp_left, ramp_right = max(0, min(ramp_left, length)), max(0, min(ramp_right, length))
    if ramp_left:
        mask[:ramp_left] *= torch.linspace(0.0, 1.0, ramp_left + 2)[1:-1]
    if ramp_right:
        mask[-ramp_right:] *= torch.linspace(1.0, 0.0, ramp_right + 2)[1:-1]
    return mask.clamp_(0, 1)


@dataclass(frozen=True)
class Interval:
    start: int
    end: int
    left_ramp: int
    right_ramp: int


def split_by_size(length: int, size: int, overlap: int, min_size: int) -> list[Interval]:
    """Overlapping intervals of ``size`` covering ``[0, length)``; a short last tile grows left to ``min_size``
    (ltx-core `split_by_size` with `_grow_last_tile_to_min`)."""
    if length < min_size or length <= size:
        return [Interval(0, length, 0, 0)]
    step = size - overlap
    count = (length + size - 2 * overlap - 1) // step
    out = [Interval(0, size, 0, overlap)]
    out += [Interval(i * step, i * step + size, overlap, overlap) for i in range(1, count - 1)]
    out.append(Interval((count - 1) * step, length, overlap, 0))
    last = out[-1]
    if len(out) > 1 and last.end - last.start < min_size:
        start = last.end - min_size
        grown = out[-2].end - start
        out[-2:] = [Interval(out[-2].start, out[-2].end, out[-2].left_ramp, grown),
                    Interval(start, last.end, grown, 0)]
    return out


def propagate(interval: Interval, stride: int, causal: bool) -> Interval:
    """An interval through one pixel-shuffle upsample (temporal x2 drops the duplicate frame; non-origin tiles
    keep it, starting one frame earlier)."""
    start, end = interval.start * stride, interval.end * stride
    if causal and stride == 2:
        end -= 1
        start -= 1 if interval.start != 0 else 0
    return Interval(start, end, interval.left_ramp * stride, interval.right_ramp * stride)


@dataclass(frozen=True)
class Tile:
    """One tile: its stage-4 input slices ``(t, h, w)``, output pixel slices ``(t, h, w)`` and 1-D masks."""

    s4: tuple[slice, slice, slice]
    out: tuple[slice, slice, slice]
    masks: tuple[torch.Tensor, torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class DiffusionTiling:
    """Tile sizes and overlaps of a tiled diffusion decode, in output frames / pixels (ltx-core `TileSizeConfig`;
    0 = that axis is not tiled). Sizes must be multiples of the stage-4 cell (``(2, 8, 8)`` frames/pixels for the
    released decoder) and overlaps at least `recommended_pixel_overlaps`.
    """

    frames: tuple[int, int] = (0, 0)
    height: tuple[int, int] = (0, 0)
    width: tuple[int, int] = (0, 0)

    def __post_init__(self):
        for name, (size, overlap) in (("frames", self.frames), ("height", self.height), ("width", self.width)):
            if size < 0 or overlap < 0 or (size == 0 and overlap) or (size and overlap >= size):
                raise ValueError(f"tiling {name}: need 0 <= overlap < tile size (0, 0 = untiled), got "
                                 f"tile {size}, overlap {overlap}")


def tile_schedule(s4_shape: tuple[int, int, int], tiling: DiffusionTiling | None, *, stride, patch_size: int,
                  min_sizes, halos) -> list[Tile]:
    """Tiles over the stage-4 grid (ltx-core `prepare_tile_schedule`); one full tile when ``tiling`` is None."""
    full = (slice(None), slice(None), slice(None))
    ones = (torch.ones(1), torch.ones(1), torch.ones(1))
    if tiling is None:
        return [Tile(full, full, ones)]
    scale = (stride[0], stride[1] * patch_size, stride[2] * patch_size)
    overlap_t, overlap_hw = recommended_pixel_overlaps(halos, scale)
    specs = []
    for axis, ((size, overlap), unit, minimum) in enumerate(zip((tiling.frames, tiling.height, tiling.width),
                                                                scale, min_sizes)):
        if size == 0:
            specs.append([(slice(None), slice(None), torch.ones(1))])
            continue
        floor = overlap_t if axis == 0 else overlap_hw
        if overlap < floor:
            raise ValueError(f"tiling {('frames', 'height', 'width')[axis]} overlap {overlap} is below the required "
                             f"{floor} ({'frames' if axis == 0 else 'px'}) for this decoder's receptive field")
        if size % unit or overlap % unit:
            raise ValueError(f"tiling {('frames', 'height', 'width')[axis]} tile/overlap must be multiples of {unit}")
        tile, ov = max(max(2, overlap // unit + 1), size // unit), overlap // unit
        axis_specs = []
        for iv in split_by_size(s4_shape[axis], tile, ov, minimum):
            px = propagate(iv, stride[axis], causal=axis == 0)
            if axis:
                px = propagate(px, patch_size, causal=False)
            axis_specs.append((slice(iv.start, iv.end), slice(px.start, px.end),
                               trapezoid_mask(px.end - px.start, px.left_ramp, px.right_ramp)))
        specs.append(axis_specs)
    return [Tile((t[0], h[0], w[0]), (t[1], h[1], w[1]), (t[2], h[2], w[2]))
            for t, h, w in itertools.product(*specs)]


def masks_are_complementary(tiles: list[Tile], shape: tuple[int, int, int], atol: float = 1e-5) -> bool:
    """Whether the per-axis masks sum to one over each output axis (then no weight buffer is needed)."""
    for axis, length in enumerate(shape):
        acc, seen = torch.zeros(length), set()
        for tile in tiles:
            sl = tile.out[axis]
            if (sl.start, sl.stop) in seen:
                continue
            seen.add((sl.start, sl.stop))
            acc[sl] += tile.masks[axis]
        if not torch.allclose(acc, torch.ones(length), atol=atol, rtol=0.0):
            return False
    return True


def n_frames(frames_slice: slice, total: int) -> int:
    start, stop, _ = frames_slice.indices(total)
    return stop - start


def pixel_shape(total: tuple[int, int, int], out: tuple[slice, slice, slice]) -> tuple[int, int, int]:
    return tuple(n_frames(sl, n) for sl, n in zip(out, total))

