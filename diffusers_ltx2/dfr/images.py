"""Image conditioning of DFR: ltx-pipelines 1.2 `DFRPipeline(images=)` (`utils.helpers.
combined_image_conditionings` in every stage), with one deliberate deviation in the temporal rounds.

- `DFRImage`: one image, re-compressed once at its CRF (1.2 `ImageConditioner.resolve_crf`: the model's, 18 for
  LTX-2.4+), at a pixel frame of the requested clip, with a strength.
- `ImageAtFrame`: the condition a stage gets per image, encoded at the stage's size (base: half, detailing and
  rounds: full). Frame 0 sets the clean tokens of the first latent frame (1.2 `VideoConditionByLatentIndex`);
  any other frame appends one latent frame of tokens at the RoPE time of a single pixel frame `[f, f + 1) / fps`,
  unmarked (1.2 `VideoConditionByKeyframeIndex(num_pixel_frames=1)`: `KeyframeAnchors`). Both are noised by the
  core noiser under the LTX-2.4+ rule (`latents.noiser`, ltx-core 1.2's `lerp(clean, lerp(start, noise, s),
  mask)`): the state keeps the stage's start latent under a frame-0 image and starts appended tokens at 0.
- `tile_images`: the images of a temporal round's tile. A round doubles the clip (`n -> 2(n - 1) + 1`), so an image
  at pixel frame `f` of the requested clip is at `f * 2**round` in round `round`; it attaches to every tile whose
  window `[pixel_start, pixel_end]` holds that frame, at `f * 2**round - pixel_start` (diffusers 0.42.1
  `LTX2DFRTemporalRefinePipeline`). 1.2 re-bases the unscaled `f` (and gives the first tile every image), which
  pins an image at frame `f > 0` to frame `f` of the upsampled clip, i.e. to `f / 2**round` of the original
  time: an upstream defect. Frame 0 lands on the first tile's frame 0 either way.
"""

from __future__ import annotations

from typing import NamedTuple

from ..conditioning.base import ClipGeometry, ConditioningState
from ..conditioning.frames import to_vae_pixels
from ..latents import layout as L
from .conditions import KeyframeAnchors
from .layout import TemporalTile


class DFRImage(NamedTuple):
    """An image of a DFR call: `frames` `(1, H, W, 3)` already re-compressed (uint8 array or float tensor in
    [0, 1]), `frame` a pixel frame of the requested clip, `strength` in [0, 1]."""

    frames: object
    frame: int
    strength: float


class ImageAtFrame(KeyframeAnchors):
    """One `DFRImage` in a stage, at the stage-local pixel `frame` (see module). Raises ValueError from `check` for
    a frame outside the stage's clip."""

    def __init__(self, frames, frame: int, strength: float = 1.0):
        super().__init__([frame], None, strength)
        self.frames = frames

    def replaces_first_frame(self, geometry: ClipGeometry) -> bool:
        return self.pixel_frames[0] == 0

    def apply_to(self, state: ConditioningState, encoder, geometry: ClipGeometry) -> None:
        g = geometry
        latents = encoder.encode_video(to_vae_pixels(self.frames, g.height, g.width, crf=0), 1).float()
        if self.pixel_frames[0] != 0:
            self._append(state, g, latents, 1.0 - self.strength)
            return
        tokens = L.pack_video(latents).to(state.video.latent.device).expand(g.batch_size, -1, -1)
        state.replace_first_frames(tokens, self.strength, "a DFR image at frame 0")


def stage_images(images, *, scale: int = 1, start: int = 0, end: int | None = None) -> list[ImageAtFrame]:
    """`ImageAtFrame`s of `images` (`DFRImage`s) in a stage whose pixel frames `[start, end]` (both inclusive;
    `end=None`: open) are those of the requested clip scaled by `scale`, at `frame * scale - start`."""
    out = []
    for image in images:
        at = image.frame * scale
        if at >= start and (end is None or at <= end):
            out.append(ImageAtFrame(image.frames, at - start, image.strength))
    return out


def tile_images(images, round_index: int, tile: TemporalTile) -> list[ImageAtFrame]:
    """The images attached to `tile` of temporal round `round_index` (1-based), tile-local (see module)."""
    return stage_images(images, scale=2 ** round_index, start=tile.pixel_start, end=tile.pixel_end)
