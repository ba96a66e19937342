"""DFR canvas layout (official ltx-pipelines 1.2 `dfr_layout.py` semantics), plain functions in pixel / latent frames.

- **Canvas and keyframe grid** (`resolve_canvas`): the clip's content `num_frames - 1` is padded up to a whole
  number of keyframe segments (24 or 32 pixel frames, whichever pads less, 32 on a tie); one generated keyframe slot
  sits at the end of every segment (`S, 2S, ..., canvas - 1`; frame 0 is already a one-pixel-frame latent).
- **Temporal tiles** (`temporal_tiles`): a temporal round splits the canvas into `num_tiles` runs of whole segments
  (larger runs first). Every tile after the first starts `lead_segments` segments early (its latent 0 is a
  one-pixel-frame image latent and its latent 1 was denoised against it: neither may reach the stitched stream) and
  drops that lead-in plus the seam latent the previous tile keeps. A tile's anchors are the seam keyframes inside
  its window (its own frame 0 included, except the first tile's); its slots are the segment midpoints.
- **Stitching** (`stitch_tiles`): tile latents concatenated along time, each without its dropped prefix.

All frame numbers are pixel frames on the `temporal_ratio` latent border (`8k`), except where named latent.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

#: keyframe segment lengths in pixel frames, as ltx-pipelines 1.2 `dfr_layout.SEGMENT_CANDIDATES`
SEGMENT_LENGTHS = (24, 32)
#: segments of lead-in before the region a non-first tile owns (1.2 `TILE_LEAD_SEGMENTS`)
TILE_LEAD_SEGMENTS = 1
TEMPORAL_RATIO = 8


class TemporalTile(NamedTuple):
    """One temporal tile of a DFR round, in global frames of the round's canvas.

    Attributes:
        pixel_start, pixel_end: first and last pixel frame of the tile's window (both inclusive).
        latent_start, latent_end: the window's latent frames `[latent_start, latent_end)`.
        anchors: seam keyframe pixel frames inside the window (held with anchor strength in the round).
        slots: pixel frames of the keyframe slots the tile generates (segment midpoints).
        drop_latents: leading latent frames of the tile's result that the stitched stream leaves out.
    """

    pixel_start: int
    pixel_end: int
    latent_start: int
    latent_end: int
    anchors: tuple[int, ...]
    slots: tuple[int, ...]
    drop_latents: int

    @property
    def num_frames(self) -> int:
        """Pixel frames of the tile's window (`8k + 1`)."""
        return self.pixel_end - self.pixel_start + 1


def _padding(content: int, segment: int) -> int:
    return -content % segment


def choose_segment_length(content_frames: int) -> int:
    """Keyframe segment length (pixel frames) for `content_frames = num_frames - 1`: the one of `SEGMENT_LENGTHS`
    that pads least, the longer on a tie. Raises ValueError below 1."""
    if content_frames < 1:
        raise ValueError(f"content_frames must be >= 1, got {content_frames}")
    return min(SEGMENT_LENGTHS, key=lambda s: (_padding(content_frames, s), -s))


def resolve_canvas(num_frames: int, temporal_ratio: int = TEMPORAL_RATIO) -> tuple[int, int, list[int]]:
    """The DFR canvas of a `num_frames` request.

    Returns:
        `(canvas_frames, segment, keyframe_positions)`: the padded pixel frame count (`>= num_frames`, `8k + 1`),
        the segment length and the generated keyframe slots' pixel frames `[S, 2S, ..., canvas_frames - 1]`.

    Raises:
        ValueError: `num_frames` < 2 or not `8k + 1`.
    """
    if num_frames < 2:
        raise ValueError(f"DFR needs at least 2 pixel frames (8k + 1, k >= 1), got {num_frames}")
    if (num_frames - 1) % temporal_ratio:
        from ..rules import frame_count_problem

        raise ValueError(f"num_frames {frame_count_problem(num_frames, temporal_ratio)}")
    content = num_frames - 1
    segment = choose_segment_length(content)
    padded = content + _padding(content, segment)
    return padded + 1, segment, list(range(segment, padded + 1, segment))


def pixel_to_latent_index(pixel_frame: int, temporal_ratio: int = TEMPORAL_RATIO) -> int:
    """Latent frame of a pixel frame on the latent border (0 or a multiple of `temporal_ratio`)."""
    if pixel_frame < 0 or pixel_frame % temporal_ratio:
        raise ValueError(f"pixel frame {pixel_frame} is not on the x{temporal_ratio} latent border")
    return pixel_frame // temporal_ratio


def _owned_runs(num_segments: int, num_tiles: int) -> list[tuple[int, int]]:
    """`num_tiles` contiguous `[lo, hi)` segment runs covering `num_segments`, the larger runs first."""
    base, extra = divmod(num_segments, num_tiles)
    runs, lo = [], 0
    for i in range(num_tiles):
        hi = lo + base + (i < extra)
        runs.append((lo, hi))
        lo = hi
    return runs


def temporal_tiles(
    seam_positions: Sequence[int], num_frames: int, num_tiles: int, *, temporal_ratio: int = TEMPORAL_RATIO,
    lead_segments: int = TILE_LEAD_SEGMENTS,
) -> list[TemporalTile]:
    """Split a round's canvas of `num_frames` pixel frames at its seam keyframes into `num_tiles` tiles (at most
    one per segment).

    Args:
        seam_positions: increasing pixel frames of the seams (the carried keyframes), the last one `num_frames - 1`;
            consecutive seams at least `2 * temporal_ratio` frames apart, on the latent border.
        num_frames: the round's canvas pixel frames.
        num_tiles: tiles wanted (`2 ** round` in DFR).
        lead_segments: segments of lead-in of the non-first tiles (>= 1).

    Raises:
        ValueError: for any of the conditions above.
    """
    if num_frames < 2:
        raise ValueError(f"num_frames must be >= 2, got {num_frames}")
    if num_tiles < 1:
        raise ValueError(f"num_tiles must be >= 1, got {num_tiles}")
    if lead_segments < 1:
        raise ValueError(f"lead_segments must be >= 1, got {lead_segments}")
    seams = [int(p) for p in seam_positions]
    if not seams:
        raise ValueError("seam_positions must not be empty")
    if seams[-1] != num_frames - 1:
        raise ValueError(f"the last seam must be the canvas' last frame {num_frames - 1}, got {seams[-1]}")
    bounds = [0, *seams]
    for a, b in zip(bounds, bounds[1:]):
        span = b - a
        if span <= 0:
            raise ValueError(f"seam_positions must be strictly increasing, got {seams}")
        if span % temporal_ratio or span < 2 * temporal_ratio:
            raise ValueError(f"segment {a}..{b} must span a multiple of {temporal_ratio} pixel frames and at least "
                             f"2 latent frames (a tile's lead-in)")
    tiles = []
    for i, (lo, hi) in enumerate(_owned_runs(len(seams), min(num_tiles, len(seams)))):
        first = max(0, lo - lead_segments) if i else lo
        pixel_start, pixel_end = bounds[first], bounds[hi]
        latent_start = pixel_to_latent_index(pixel_start, temporal_ratio)
        drop = pixel_to_latent_index(bounds[lo], temporal_ratio) - latent_start + (1 if lo else 0)
        tiles.append(TemporalTile(
            pixel_start=pixel_start, pixel_end=pixel_end, latent_start=latent_start,
            latent_end=pixel_to_latent_index(pixel_end, temporal_ratio) + 1,
            anchors=tuple(p for p in bounds[first: hi + 1] if p),
            slots=tuple((bounds[k] + bounds[k + 1]) // 2 for k in range(first, hi)),
            drop_latents=drop,
        ))
    return tiles


def stitch_tiles(tile_latents: Sequence, tiles: Sequence[TemporalTile]):
    """Concatenate `(B, C, T, H, W)` tile latents along T, each without its `drop_latents` prefix.

    Raises:
        ValueError: counts differ, a latent is not 5-D or its T is not its tile's `latent_end - latent_start`.
    """
    import torch

    if not tiles or len(tile_latents) != len(tiles):
        raise ValueError(f"need one latent per tile (got {len(tile_latents)} for {len(tiles)} tiles)")
    pieces = []
    for latent, tile in zip(tile_latents, tiles):
        want = tile.latent_end - tile.latent_start
        if latent.ndim != 5 or latent.shape[2] != want:
            raise ValueError(f"tile latent {tuple(latent.shape)} is not (B, C, {want}, H, W) for latent frames "
                             f"[{tile.latent_start}, {tile.latent_end})")
        pieces.append(latent[:, :, tile.drop_latents:])
    return torch.cat(pieces, dim=2)


def to_tile_local(positions: Sequence[int], pixel_start: int) -> list[int]:
    """Global pixel frames -> frames of a tile starting at `pixel_start`."""
    return [int(p) - pixel_start for p in positions]
