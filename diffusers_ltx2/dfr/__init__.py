"""DFR for LTX-2.5 (official ltx-pipelines 1.2 `DFRPipeline`): keyframe slots generated with the base pass, a
spatial detailing pass, tiled temporal x2 rounds. One concept per module: `layout` (canvas, keyframe grid, temporal
tiles, stitching; plain math), `temporal` (the temporal latent upscaler: `check_temporal_upsampler`,
`temporal_upsample`, imported from `diffusers_ltx2.dfr.temporal`), `images` (image conditioning as 1.2's `images=`,
placed at `frame * 2**round` in the temporal rounds).

`layout` is importable without torch for the command line's checks only through its functions that do not take
tensors; `stitch_tiles` imports torch on use.
"""

from .layout import (
    SEGMENT_LENGTHS,
    TILE_LEAD_SEGMENTS,
    TemporalTile,
    choose_segment_length,
    pixel_to_latent_index,
    resolve_canvas,
    stitch_tiles,
    temporal_tiles,
    to_tile_local,
)

__all__ = [
    "SEGMENT_LENGTHS", "TILE_LEAD_SEGMENTS", "TemporalTile", "choose_segment_length", "pixel_to_latent_index",
    "resolve_canvas", "stitch_tiles", "temporal_tiles", "to_tile_local",
]


def __getattr__(name):
    if name == "LTX2DFRPipeline":
        from .pipeline import LTX2DFRPipeline

        return LTX2DFRPipeline
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
