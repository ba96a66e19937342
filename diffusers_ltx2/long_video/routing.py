"""Conditions given for the whole long clip, routed to the window that holds them (in that window's frames).

- `VideoCondition` (image / keyframe / clip at a pixel frame of the whole clip; negative indices count from the
  clip's end): the window that first generates its first frame (`layout.window_of_frame`; a keyframe inside an
  overlap belongs to the earlier window, as in ComfyUI's `_calculate_keyframe_per_tile_indices`, and reaches the
  next window through its guide), at `frame - window.first_frame`. Media running past that window's end is
  refused (split the clip, or use a longer window).
- `AudioCondition` (audio-to-video for the whole clip): every window gets the part of the sound under its frames
  (frozen there), so the video follows the sound across windows; the output carries the whole sound.
- `ReferenceVideo` (an IC-LoRA control video - canny / depth / pose - for the whole clip): every window gets the
  reference's pixel frames under its own frames (global frames `first_frame .. first_frame + num_frames - 1`,
  overlap frames included), a copy fitted, preprocessed and encoded per window exactly as a one-call IC-LoRA run
  on that window's frames takes its control video (same downscale / temporal scale factors, strengths,
  preprocessor; a multi-frame `attention_mask` cut to the same frames, a one-frame mask kept). ComfyUI's
  `LTXVLoopingSampler` cuts its `optional_guiding_latents` per tile the same way (tile `[start, end)` of the
  whole guide); it cuts encoded latents, we cut pixels so that every window's reference starts with a one-frame
  latent as the IC-LoRA was trained (a latent slice would start on an eight-frame one), and it places a later
  tile's guide after the overlap only, because its guides sit at the target's latent index, while LTX-2's
  reference tokens take their positions from the window's own frame 0 (official `VideoConditionByReferenceLatent`)
  and so cover the whole window. A reference shorter than the clip is refused, as ComfyUI refuses guiding latents
  with fewer frames than the clip (a one-call run would condition only the frames it covers, leaving every later
  window without control); a longer one is trimmed to the clip, as a one-call run trims it. Reference latents
  (`ReferenceVideo(latents=...)`) are refused: a latent clip cannot be cut at a window's first frame.
- `pipe(image=...)` is the frame-0 shorthand: the first window's.

Retake windows (`TemporalRegion`), `FrozenVideo` (video-to-audio) and the guide (`LatentGuide`, which the windows
place themselves) are refused: they describe a single call's clip.
"""

from __future__ import annotations

import copy

import torch

from ..conditioning.audio import AudioCondition
from ..conditioning.base import ClipGeometry, Condition
from ..conditioning.reference import ReferenceVideo
from ..conditioning.video import VideoCondition
from .layout import Window, window_of_frame


def route_conditions(conditions, windows: list[Window], geometry: ClipGeometry) -> list[list[Condition]]:
    """Per window, the conditions it applies (copies with window-local frames / sound / reference frames), in
    application order (`conditioning.check_conditions`). `geometry` is the whole clip's.

    Raises:
        ValueError: before any model runs: a condition of another kind, one that fails the whole clip's checks
        (`conditioning.check_conditions`), media running past its window, a reference shorter than the clip (see
        the module notes)."""
    from ..conditioning.apply import check_conditions

    per_window: list[list[Condition]] = [[] for _ in windows]
    if not conditions:
        return per_window
    if isinstance(conditions, Condition):
        conditions = [conditions]
    routes = ((VideoCondition, _route_video), (AudioCondition, _route_audio), (ReferenceVideo, _route_reference))
    other = [type(c).__name__ for c in conditions if not isinstance(c, tuple(kind for kind, _ in routes))]
    if other:
        raise ValueError(f"sliding windows take VideoCondition, AudioCondition and ReferenceVideo for the whole "
                         f"clip, not {', '.join(other)} (retake / video-to-audio / guides describe one call's clip)")
    for c in check_conditions(conditions, geometry):  # whole-clip checks: frames inside the clip, one source
        route = next(route for kind, route in routes if isinstance(c, kind))
        route(c, windows, geometry, per_window)
    return per_window


def _route_video(c: VideoCondition, windows, geometry, per_window) -> None:
    start = c.start_frame(geometry)
    w = window_of_frame(windows, start)
    local = start - w.first_frame
    last = local + c.num_frames - 1
    if last > w.num_frames - 1:
        raise ValueError(f"the clip condition (VideoCondition / --video) at frame {start} with {c.num_frames} frame(s) "
                         f"runs past window {w.index} "
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


def _route_reference(c: ReferenceVideo, windows, geometry, per_window) -> None:
    if c.frames is None:
        raise ValueError("sliding windows cut a ReferenceVideo per window in pixel frames: pass the control video, "
                         "not its latents")
    have, need = c.frames.shape[0], geometry.num_frames
    if have < need:
        fits = (have - 1) // geometry.temporal_ratio * geometry.temporal_ratio + 1
        raise ValueError(f"the reference (control) video has {have} frame(s), the clip {need}: sliding windows need "
                         f"a reference covering the whole clip (each window takes the part under its frames); "
                         f"use num_frames {fits} or fewer, or a longer reference")
    mask, step = c.attention_mask, c.temporal_scale_factor
    for w in windows:
        routed = copy.copy(c)
        routed.frames = c.frames[w.first_frame:w.first_frame + w.num_frames]
        if mask is not None and mask.shape[-3] > 1:
            routed.attention_mask = _window_mask(mask, w, step)
        per_window[w.index].append(routed)


def _window_mask(mask: torch.Tensor, w: Window, step: int) -> torch.Tensor:
    """The frames of a whole-clip reference attention mask (over the reference's frames, every `step`-th) under
    window `w`: the mask frames of the source frames `w.first_frame, w.first_frame + step, ...`."""
    if w.first_frame % step:
        raise ValueError(f"a multi-frame conditioning_attention_mask with reference_temporal_scale_factor {step} "
                         f"cannot be cut at window {w.index}'s first frame {w.first_frame}: pass a one-frame mask")
    first, count = w.first_frame // step, (w.num_frames - 1) // step + 1
    if mask.shape[-3] < first + count:
        raise ValueError(f"conditioning_attention_mask has {mask.shape[-3]} frame(s): window {w.index} needs its "
                         f"frames {first}..{first + count - 1} (one per reference frame of the clip, or a single "
                         f"frame for all)")
    return mask[..., first:first + count, :, :]
