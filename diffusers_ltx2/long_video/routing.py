"""Conditions given for the whole long clip, routed to the window that holds them (in that window's frames).

- `VideoCondition` (image / keyframe / clip at a pixel frame of the whole clip; negative indices count from the
  clip's end): the window that first generates its first frame (`layout.window_of_frame`; a keyframe inside an
  overlap belongs to the earlier window, as in ComfyUI's `_calculate_keyframe_per_tile_indices`, and reaches the
  next window through its guide), at `frame - window.first_frame`. Media running past that window's end is
  refused (split the clip, or use a longer window).
- `AudioCondition` (audio-to-video for the whole clip): every window gets the part of the sound under its frames
  (frozen there), so the video follows the sound across windows; the output carries the whole sound.
- `pipe(image=...)` is the frame-0 shorthand: the first window's.

Retake windows (`TemporalRegion`), `FrozenVideo` (video-to-audio) and the guide (`LatentGuide`, which the windows
place themselves) are refused: they describe a single call's clip.
"""

from __future__ import annotations

import copy

import torch

from ..conditioning.audio import AudioCondition
from ..conditioning.base import ClipGeometry, Condition
from ..conditioning.video import VideoCondition
from .layout import Window, window_of_frame


def route_conditions(conditions, windows: list[Window], geometry: ClipGeometry) -> list[list[Condition]]:
    """Per window, the conditions it applies (copies with window-local frames / sound). `geometry` is the whole
    clip's. Raises ValueError before any model runs."""
    from ..conditioning.apply import check_conditions

    per_window: list[list[Condition]] = [[] for _ in windows]
    if not conditions:
        return per_window
    if isinstance(conditions, Condition):
        conditions = [conditions]
    other = [type(c).__name__ for c in conditions if not isinstance(c, (VideoCondition, AudioCondition))]
    if other:
        raise ValueError(f"sliding windows take VideoCondition and AudioCondition for the whole clip, not "
                         f"{', '.join(other)} (retake / video-to-audio / guides describe one call's clip)")
    for c in check_conditions(conditions, geometry):  # whole-clip checks: frames inside the clip, one source
        if isinstance(c, VideoCondition):
            _route_video(c, windows, geometry, per_window)
        else:
            _route_audio(c, windows, geometry, per_window)
    return per_window


def _route_video(c: VideoCondition, windows, geometry, per_window) -> None:
    start = c.start_frame(geometry)
    w = window_of_frame(windows, start)
    local = start - w.first_frame
    last = local + c.num_frames - 1
    if last > w.num_frames - 1:
        raise ValueError(f"VideoCondition at frame {start} with {c.num_frames} frame(s) runs past window {w.index} "
                         f"(global frames {w.first_frame}..{w.first_frame + w.num_frames - 1}), which holds its first "
                         f"frame: use a longer window or split the clip")
    routed = copy.copy(c)
    routed.frame_index = local
    per_window[w.index].append(routed)


def _route_audio(c: AudioCondition, windows, geometry, per_window) -> None:
    whole = c.clip_waveform(geometry)  # cut / silence-padded to the clip's duration
    rate = c.sample_rate
    for w in windows:
        first = round(w.first_frame / geometry.frame_rate * rate)
        n = round(w.num_frames / geometry.frame_rate * rate)
        part = whole[:, first:first + n]
        if part.shape[-1] < n:
            part = torch.nn.functional.pad(part, (0, n - part.shape[-1]))
        per_window[w.index].append(AudioCondition(part, rate))
