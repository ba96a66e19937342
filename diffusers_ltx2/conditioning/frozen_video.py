"""`FrozenVideo`: a given clip's video, held fixed (video-to-audio / Foley), or the source of a video retake.

The clip is resized / centre-cropped per frame (official `load_video_conditioning`), VAE-encoded as a whole
(official `retake.py` `_encode_video_for_retake`) and frozen: denoise mask 0 on every target token, so no noise,
per-token timestep 0 and x0 = the encoded latent; its token stream still runs in every pass so the audio
attends to it. While it stays frozen the output frames are the given (resized) pixels, not a VAE round trip.
"""

from __future__ import annotations

from ..latents import layout as L
from .base import VIDEO, ClipGeometry, Condition, ConditioningState, LatentEncoder
from .frames import as_frames, num_frames_of, to_vae_pixels


class FrozenVideo(Condition):
    """Hold the generated clip's video at a given clip.

    Args:
        frames: a video path (decoded with PyAV) or `(F, H, W, 3)` uint8 / float-in-[0, 1] frames; exactly
            `num_frames` frames (an `8k + 1` count), any size (resized to cover and centre-cropped).

    Raises:
        ValueError (from `check`, before any model runs): a frame count other than the clip's.
    """

    order = 0
    modality = VIDEO
    provides = (VIDEO,)

    def __init__(self, frames):
        self.frames = as_frames(frames, "FrozenVideo")

    def check(self, geometry: ClipGeometry) -> None:
        n = num_frames_of(self.frames)
        if n != geometry.num_frames:
            raise ValueError(
                f"FrozenVideo has {n} frames but the clip has num_frames={geometry.num_frames}: pass "
                f"num_frames={n} (if it is 8k+1) or trim the video (media.load_video(path, num_frames=...))"
            )

    def apply_to(self, state: ConditioningState, encoder: LatentEncoder, geometry: ClipGeometry) -> None:
        g = geometry
        pixels = to_vae_pixels(self.frames, g.height, g.width, crf=0)
        latents = encoder.encode_video(pixels, g.batch_size)
        state.replace_clean(VIDEO, L.pack_video(latents.float()), 0.0)
        state.video_pixels = pixels.expand(g.batch_size, -1, -1, -1, -1)
