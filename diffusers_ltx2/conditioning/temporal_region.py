"""`TemporalRegion`: retake - regenerate a time window of a given clip, keep the rest.

Official `retake.py` `TemporalRegionMask(start_time, end_time, fps)`: a target token is regenerated (mask 1) when
its time span `[t_start, t_end)` (its positions: seconds) overlaps the window, else kept at the source (mask 0); a
modality not regenerated is frozen whole (official: a `(0, 0)` window). Soft edges (`ramp_s`, our version of
ComfyUI's `slope_len`): a token within `ramp_s` seconds of the window gets mask `1 - gap / ramp_s` instead of 0.
"""

from __future__ import annotations

import math

import torch

from .base import AUDIO, VIDEO, ClipGeometry, Condition, ConditioningState, LatentEncoder


def region_mask(spans: torch.Tensor, start_s: float, end_s: float, ramp_s: float = 0.0) -> torch.Tensor:
    """Denoise mask `(N,)` float32 of tokens with time spans `spans` `(N, 2)` (`[start, end)` seconds).

    1 where the span overlaps `[start_s, end_s)` (official `TemporalRegionMask`), else
    `max(0, 1 - gap / ramp_s)` with `gap` the distance from the span to the window (0 without a ramp).
    """
    t0, t1 = spans[..., 0].float(), spans[..., 1].float()
    inside = (t1 > start_s) & (t0 < end_s)
    mask = inside.float()
    if ramp_s > 0:
        gap = torch.clamp(torch.maximum(start_s - t1, t0 - end_s), min=0.0)
        mask = torch.where(inside, mask, torch.clamp(1.0 - gap / ramp_s, min=0.0))
    return mask


class TemporalRegion(Condition):
    """Regenerate a window of the source clip given by `FrozenVideo` (video) / `AudioCondition` (audio).

    The window is given in seconds, `[start_s, end_s)`, or in pixel frames, `[start_frame, end_frame)` (the frames
    `start_frame .. end_frame - 1`; seconds = frames / the call's `frame_rate`, as the official
    `TemporalRegionMask(start_time, end_time, fps)` takes them).

    Args:
        start_s, end_s: the window in seconds, `0 <= start_s < end_s <= num_frames / frame_rate`.
        video: regenerate the video inside the window (False: the source video stays whole).
        audio: regenerate the audio inside the window (False: the source audio stays whole).
        ramp_s: soft edges in seconds (0 = the official hard window).
        start_frame, end_frame: the window in pixel frames instead (integers, `0 <= start_frame < end_frame <=
            num_frames`); not with `start_s` / `end_s`.

    Example (retake seconds 1.5-3.0 of a clip, video and audio; `TemporalRegion(start_frame=36, end_frame=72)`: its
    frames 36-71):
        >>> conditions = [FrozenVideo("clip.mp4"), AudioCondition("clip.mp4"), TemporalRegion(1.5, 3.0)]

    Raises (before any model runs):
        ValueError: a window that is empty or outside the clip, seconds and frames both (or neither) given, a bound
        or ramp that is not a finite number, both modalities off, a negative ramp, or a regenerated modality
        without its source condition.
    """

    order = 1

    def __init__(self, start_s: float | None = None, end_s: float | None = None, *, video: bool = True,
                 audio: bool = True, ramp_s: float = 0.0, start_frame: int | None = None,
                 end_frame: int | None = None):
        in_frames = start_frame is not None or end_frame is not None
        if in_frames == (start_s is not None or end_s is not None):
            raise ValueError("TemporalRegion: give the window in seconds (start_s, end_s) or in frames "
                             "(start_frame=, end_frame=), not both")
        if in_frames:
            for name, value in (("start_frame", start_frame), ("end_frame", end_frame)):
                if isinstance(value, bool) or not isinstance(value, int):
                    raise ValueError(f"TemporalRegion: {name} must be an integer pixel frame, got {value!r}")
            if not 0 <= start_frame < end_frame:
                raise ValueError(f"TemporalRegion: need 0 <= start_frame < end_frame, got start_frame={start_frame}, "
                                 f"end_frame={end_frame}")
        for name, value in (("start_s", start_s), ("end_s", end_s), ("ramp_s", ramp_s)):
            if value is None and in_frames and name != "ramp_s":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"TemporalRegion: {name} must be a number of seconds (finite), got {value!r}")
        if not in_frames and not 0 <= start_s < end_s:
            raise ValueError(f"TemporalRegion: need 0 <= start_s < end_s, got start_s={start_s}, end_s={end_s}")
        if ramp_s < 0:
            raise ValueError(f"TemporalRegion: ramp_s must be >= 0, got {ramp_s}")
        if not (video or audio):
            raise ValueError("TemporalRegion: video=False and audio=False regenerates nothing; drop the region")
        self.frames = (start_frame, end_frame) if in_frames else None
        self.start_s = None if in_frames else float(start_s)
        self.end_s = None if in_frames else float(end_s)
        self.ramp_s = float(ramp_s)
        self.video, self.audio = bool(video), bool(audio)

    @property
    def regenerates(self) -> tuple[str, ...]:
        return tuple(m for m, on in ((VIDEO, self.video), (AUDIO, self.audio)) if on)

    def window_s(self, geometry: ClipGeometry) -> tuple[float, float]:
        """The window in seconds for this clip (frames divided by its frame rate)."""
        if self.frames is None:
            return self.start_s, self.end_s
        return self.frames[0] / geometry.frame_rate, self.frames[1] / geometry.frame_rate

    def check(self, geometry: ClipGeometry) -> None:
        if self.frames is not None:
            if self.frames[1] > geometry.num_frames:
                raise ValueError(f"TemporalRegion frames [{self.frames[0]}, {self.frames[1]}) end outside the clip, "
                                 f"which has {geometry.num_frames} frames")
            return
        duration = geometry.duration_s
        if self.end_s > duration + 1e-9:
            raise ValueError(
                f"TemporalRegion [{self.start_s}, {self.end_s}) s ends outside the clip, which lasts {duration:.4g} s "
                f"({geometry.num_frames} frames at {geometry.frame_rate} fps)"
            )

    def apply_to(self, state: ConditioningState, encoder: LatentEncoder, geometry: ClipGeometry) -> None:
        start_s, end_s = self.window_s(geometry)
        for name in self.regenerates:
            modality = state.modality(name)
            n = modality.num_target_tokens
            spans = modality.coords[:, 0, :n]  # (B, N, 2) seconds
            modality.denoise_mask[:, :n] = region_mask(spans, start_s, end_s, self.ramp_s)
