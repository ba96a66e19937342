"""The two conditions DFR adds to the conditioning core, and the ltx-core 1.2 rules that come with them (the
detailing stage's reference is the core's `conditioning.ReferenceVideo` with the base latents).

- `GeneratedKeyframeSlots` (ltx-core 1.2 `VideoGeneratedKeyframeSlots`): one latent frame of tokens per slot,
  appended after the target, generated freely (denoise mask 1) from zeros or given initial latents, at the RoPE
  time of a single pixel frame `[f, f + 1) / fps`, marked for LTX-2.5's keyframe embedding. After denoising
  `slot_latents` reads them back as `(B, C, K, h, w)`.
- `KeyframeAnchors` (ltx-core 1.2 `VideoConditionByKeyframeIndex(num_pixel_frames=1)` per anchor): one-latent
  keyframes held at `strength` at single-pixel-frame times, unmarked.

ltx-core 1.2 noises a state as `lerp(clean, lerp(latent, noise, noise_scale), mask)` where the appended keyframe
tokens start from `latent = 0`: the core's noiser follows that rule on LTX-2.4+ models (`latents.noiser`, keyed by
`ClipGeometry.conditioning_rule`), which matters for DFR's temporal anchors (`0 < mask < 1` under `noise_scale < 1`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..conditioning.base import VIDEO, ClipGeometry, Condition, ConditioningState
from ..conditioning.video import keyframe_positions
from ..latents import layout as L


def single_frame_positions(batch_size: int, pixel_frame: int, latent_height: int, latent_width: int, *,
                           frame_rate: float, spatial_ratio: int = 32, device=None) -> torch.Tensor:
    """`(B, 3, h*w, 2)` positions of one latent frame standing for the single pixel frame `pixel_frame`: the
    spatial pixel boxes of a latent frame, time `[f, f + 1) / frame_rate` (ltx-core 1.2 `_slot_positions`)."""
    pos = keyframe_positions(batch_size, 1, latent_height, latent_width, frame_index=0, frame_rate=1.0,
                             spatial_ratio=spatial_ratio, device=device)
    pos[:, 0, :, 0] = pixel_frame / frame_rate
    pos[:, 0, :, 1] = (pixel_frame + 1) / frame_rate
    return pos


def _check_frames(name: str, frames: Sequence[int], geometry: ClipGeometry, *, increasing: bool) -> None:
    if not frames:
        raise ValueError(f"{name}: no pixel frames given")
    if any(f < 0 or f >= geometry.num_frames for f in frames):
        raise ValueError(f"{name}: pixel frames {list(frames)} outside the clip's {geometry.num_frames} frames")
    if increasing and any(b <= a for a, b in zip(frames, frames[1:])):
        raise ValueError(f"{name}: pixel frames must be strictly increasing, got {list(frames)}")


def _check_latents(name: str, latents: torch.Tensor | None, count: int, geometry: ClipGeometry) -> None:
    if latents is None:
        return
    want = (count, geometry.latent_height, geometry.latent_width)
    if latents.ndim != 5 or tuple(latents.shape[2:]) != want or latents.shape[0] not in (1, geometry.batch_size):
        raise ValueError(f"{name}: latents {tuple(latents.shape)} are not (B, C, {count}, "
                         f"{geometry.latent_height}, {geometry.latent_width}) for this clip")


class _AppendsFrames(Condition):
    """Appends one latent frame of tokens per pixel frame; records where they landed (`first_token`)."""

    order = 2
    modality = VIDEO
    marked = False

    def __init__(self, pixel_frames: Sequence[int], latents: torch.Tensor | None):
        self.pixel_frames = tuple(int(f) for f in pixel_frames)
        self.latents = latents
        self.first_token: int | None = None
        self.tokens_per_frame: int | None = None

    def _append(self, state: ConditioningState, g: ClipGeometry, latents: torch.Tensor, mask_value: float) -> None:
        device = state.video.latent.device
        latents = latents.to(device, torch.float32).expand(g.batch_size, -1, -1, -1, -1)
        coords = torch.cat([
            single_frame_positions(g.batch_size, f, g.latent_height, g.latent_width, frame_rate=g.frame_rate,
                                   spatial_ratio=g.spatial_ratio, device=device)
            for f in self.pixel_frames], dim=2)
        self.first_token = state.video.latent.shape[1]
        self.tokens_per_frame = g.tokens_per_latent_frame
        tokens = L.pack_video(latents)
        # generated slots start from their initial latents (ltx-core 1.2 `VideoGeneratedKeyframeSlots`: `latent`
        # = the slots), anchors from 0 (`VideoConditionByKeyframeIndex`: `torch.zeros_like(tokens)`)
        state.append(VIDEO, tokens, coords, mask_value, marked=self.marked, start=tokens if self.marked else None)

    @property
    def token_slice(self) -> slice:
        if self.first_token is None:
            raise RuntimeError(f"{type(self).__name__} was not applied to a state")
        return slice(self.first_token, self.first_token + len(self.pixel_frames) * self.tokens_per_frame)


class GeneratedKeyframeSlots(_AppendsFrames):
    """Generate one-pixel-frame keyframes at `pixel_frames` with the clip (LTX-2.5 checkpoints only: their
    transformer has `use_keyframes_abs_pos_embedding`).

    Args:
        pixel_frames: strictly increasing pixel frames inside the clip.
        initial_latents: optional normalized `(B or 1, C, K, h, w)` latents the slots start from (re-noised to the
            stage's `noise_scale`); zeros when omitted.

    Raises:
        ValueError: from `check`, for frames outside the clip or latents of another size.
    """

    marked = True

    def __init__(self, pixel_frames: Sequence[int], initial_latents: torch.Tensor | None = None):
        super().__init__(pixel_frames, initial_latents)

    def check(self, geometry: ClipGeometry) -> None:
        _check_frames("GeneratedKeyframeSlots", self.pixel_frames, geometry, increasing=True)
        _check_latents("GeneratedKeyframeSlots", self.latents, len(self.pixel_frames), geometry)

    def apply_to(self, state: ConditioningState, encoder, geometry: ClipGeometry) -> None:
        g = geometry
        latents = self.latents
        if latents is None:
            latents = torch.zeros(1, state.video.clean.shape[2], len(self.pixel_frames), g.latent_height,
                                  g.latent_width)
        self._append(state, g, latents, 1.0)

    def slot_latents(self, latent_tokens: torch.Tensor, latent_height: int, latent_width: int) -> torch.Tensor:
        """The slots' `(B, C, K, h, w)` latents out of a denoised `(B, N, C)` token state."""
        tokens = latent_tokens[:, self.token_slice]
        return L.unpack_video(tokens, len(self.pixel_frames), latent_height, latent_width)


class KeyframeAnchors(_AppendsFrames):
    """Hold one-latent keyframes at `pixel_frames` with `strength` (ltx-core 1.2 `VideoConditionByKeyframeIndex`
    with `num_pixel_frames=1`, one per frame).

    Args:
        pixel_frames: pixel frames inside the clip (0 allowed).
        latents: normalized `(B or 1, C, K, h, w)` keyframe latents, one per frame.
        strength: in [0, 1]; the tokens' denoise mask is `1 - strength`.
    """

    def __init__(self, pixel_frames: Sequence[int], latents: torch.Tensor, strength: float = 1.0):
        if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0.0 <= strength <= 1.0:
            raise ValueError(f"KeyframeAnchors: strength must be a number in [0, 1], got {strength!r}")
        super().__init__(pixel_frames, latents)
        self.strength = float(strength)

    def check(self, geometry: ClipGeometry) -> None:
        _check_frames("KeyframeAnchors", self.pixel_frames, geometry, increasing=False)
        _check_latents("KeyframeAnchors", self.latents, len(self.pixel_frames), geometry)

    def apply_to(self, state: ConditioningState, encoder, geometry: ClipGeometry) -> None:
        self._append(state, geometry, self.latents, 1.0 - self.strength)
