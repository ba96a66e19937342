"""Extension: continue a clip (video + its audio) from its last frames, joined without a seam.

Semantics follow ComfyUI's `LTXVExtendSampler` in pixel space: the last frames of the clip are placed as a guide
at the start of a new clip with strength `overlap_strength` (0.5), the new clip is generated, and the overlap is
blended linearly into the old clip before the two are concatenated. In pixel frames: the guide is the clip's last
`overlap_frames + 1` frames (an `8k + 1` count, as the causal VAE needs: `overlap_frames` is a multiple of 8 like
ComfyUI's `frame_overlap`), so the new clip has `overlap_frames + 1 + num_new_frames` frames and its first
`overlap_frames + 1` frames line up one to one with the old tail.

Audio (our addition; ComfyUI's sampler is video-only): the supplied sound (`audio=`, starting with the clip) is
kept wherever it exists. In the new clip it is frozen (`AudioCondition`) over the span it covers - the overlap
when it ends with the clip, longer when it runs past the clip's end (a soundtrack for the extended result) - and
a `TemporalRegion` regenerates the audio only after its end, so the new sound continues it. In the output the
supplied waveform itself is returned up to its end, cross-faded over its last `overlap_frames + 1` frames'
worth of samples (at most the span it covers in the new clip) into the new clip's decoded audio (there the
VAE round trip of the same sound), which then continues; past the end of the result it is dropped.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np
import torch

from ..conditioning import AudioCondition, TemporalRegion, VideoCondition
from ..conditioning.frames import num_frames_of
from ..media.audio import load_audio, resample_audio, to_channels
from ..long_video.seams import blend_weights, join_audio, join_frames  # noqa: F401  (re-exported)
from ..media.frames import as_frames
from ..media.image import resize_center_crop
from .pipeline_output import LTX2AudioVideoPipelineOutput


@dataclass(frozen=True)
class ExtensionPlan:
    """Frame bookkeeping of an extension.

    Attributes:
        old_frames: frames of the clip being extended.
        overlap: frames shared by the old tail and the new clip's head (`overlap_frames + 1`).
        new_clip_frames: frames generated in the new clip (`overlap + num_new_frames`, `8k + 1`).
        total_frames: frames of the result (`old_frames + num_new_frames`).
    """

    old_frames: int
    overlap: int
    new_clip_frames: int
    total_frames: int

    @property
    def join_frame(self) -> int:
        """Index in the result (and the old clip) where the overlap starts."""
        return self.old_frames - self.overlap


def plan_extension(old_frames: int, num_new_frames: int, overlap_frames: int, overlap_strength: float) -> ExtensionPlan:
    """Check the extension's numbers (before any model runs) and lay out the frames.

    Raises:
        ValueError: `num_new_frames` or `overlap_frames` not a positive multiple of 8, an overlap longer than the
        clip, a strength outside [0, 1].
    """
    for name, value in (("num_new_frames", num_new_frames), ("overlap_frames", overlap_frames)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 8 or value % 8:
            raise ValueError(f"{name} must be a positive multiple of 8 (the VAE's 8-frame unit), got {value!r}")
    if isinstance(overlap_strength, bool) or not isinstance(overlap_strength, (int, float)) \
            or not 0 <= overlap_strength <= 1:
        raise ValueError(f"overlap_strength must be a number in [0, 1], got {overlap_strength!r}")
    overlap = overlap_frames + 1
    if overlap > old_frames:
        raise ValueError(f"overlap_frames={overlap_frames} needs a clip of at least {overlap} frames, the clip has "
                         f"{old_frames}")
    return ExtensionPlan(old_frames, overlap, overlap + num_new_frames, old_frames + num_new_frames)


def extend(
    pipe, clip, num_new_frames: int, *, overlap_frames: int = 16, overlap_strength: float = 0.5, audio=None,
    sample_rate: int | None = None, frame_rate: float = 24.0, height: int | None = None, width: int | None = None,
    output_type: str = "np", **call_kwargs,
):
    """Continue `clip` by `num_new_frames` frames (video and, given `audio`, sound).

    Args:
        pipe: an `LTX2AudioVideoPipeline`.
        clip: the clip to extend: a video path or `(F, H, W, 3)` uint8 / float-in-[0, 1] frames.
        num_new_frames: frames to add, a multiple of 8.
        overlap_frames: frames of the clip's end that guide the new clip (multiple of 8; the guide is the last
            `overlap_frames + 1` frames).
        overlap_strength: strength of that guide (ComfyUI 0.5: the overlap may change so it can be blended).
        audio: the clip's audio (path, or waveform `(C, N)` with `sample_rate`), starting with the clip; `None`:
            no sound is continued (the result's audio is the new clip's, silent before it). It is kept wherever
            it exists: a sound longer than the clip (a soundtrack for the result) stays frozen in the new clip
            too and is returned as given; audio is generated only past its end, continuing it (faded in over
            `overlap_frames + 1` frames' worth of samples before that end). A sound ending before the overlap
            is returned up to its end, then silence until the new clip's sound starts.
        frame_rate: the clip's frame rate (a finite number > 0).
        height, width: size of the result (default: the clip's, which must then be multiples of 32).
        output_type: "np" (`(1, F, H, W, 3)` float32 in [0, 1]) or "pt" (`(1, F, 3, H, W)`).
        call_kwargs: forwarded to the pipeline call (prompt, guider, num_inference_steps, generator, ...).

    Returns:
        `LTX2AudioVideoPipelineOutput` with `old_frames + num_new_frames` frames and the joined audio at the
        vocoder rate (`(1, C, N)` float32 CPU tensor whatever `output_type`, as the pipeline's).

    Raises:
        ValueError / FileNotFoundError before any model runs (see `plan_extension`, the media loaders; a
        `frame_rate` that is not a finite number > 0).
    """
    if output_type not in ("np", "pt"):
        raise ValueError(f"extend returns pixels: output_type must be 'np' or 'pt', got {output_type!r}")
    for key in ("num_frames", "conditions", "image", "output_modalities", "return_dict"):
        if key in call_kwargs:
            raise ValueError(f"extend sets {key} itself; do not pass it")
    if isinstance(frame_rate, bool) or not isinstance(frame_rate, numbers.Real) or not math.isfinite(frame_rate) \
            or frame_rate <= 0:
        raise ValueError(f"frame_rate must be a finite number of frames per second > 0, got {frame_rate!r}")
    frame_rate = float(frame_rate)
    frames = as_frames(clip, "extend")
    plan = plan_extension(num_frames_of(frames), num_new_frames, overlap_frames, overlap_strength)
    height = int(frames.shape[1]) if height is None else height
    width = int(frames.shape[2]) if width is None else width
    old = resize_center_crop(frames, height, width)
    old = old / 255.0 if isinstance(frames, np.ndarray) and frames.dtype == np.uint8 else old  # (F, H, W, 3) [0, 1]
    conditions = [VideoCondition(old[plan.join_frame:], 0, overlap_strength)]
    out_rate = pipe.audio_sample_rate
    start = round(plan.join_frame / frame_rate * out_rate)  # where the new clip starts, in output samples
    overlap_n = round(plan.overlap / frame_rate * out_rate)
    kept_n = 0  # output samples of the new clip the supplied sound covers
    old_audio = None
    if audio is not None:
        waveform, rate = load_audio(audio, sample_rate)
        old_audio = to_channels(resample_audio(waveform, rate, out_rate), 2)
        start_s, new_s = plan.join_frame / frame_rate, plan.new_clip_frames / frame_rate
        kept_s = min(max(waveform.shape[-1] / rate - start_s, 0.0), new_s)
        kept_n = round(kept_s * out_rate)
        if kept_n > 0:
            conditions.append(AudioCondition(waveform, rate, start_time=start_s))
            if kept_s < new_s:
                conditions.append(TemporalRegion(kept_s, new_s, video=False))
    out = pipe(num_frames=plan.new_clip_frames, height=height, width=width, frame_rate=frame_rate,
               conditions=conditions, output_type="pt", return_dict=True, **call_kwargs)
    if out.frames.shape[0] != 1:
        raise ValueError("extend continues one clip: pass one prompt and num_videos_per_prompt=1")
    new = out.frames[0].permute(0, 2, 3, 1).float()  # (F, H, W, 3)
    video = join_frames(old, new, plan.overlap)
    new_audio = out.audio[0].float()
    if kept_n > 0:  # the supplied sound up to its end, faded into the new clip's audio over its last samples
        fade = min(overlap_n, kept_n)
        fade_start = start + kept_n - fade
        sound = join_audio(old_audio, new_audio[:, fade_start - start:], fade_start, fade)
    else:  # no sound under the new clip: what was supplied (if any), silence up to the new clip, its sound
        kept = old_audio[:, :start] if old_audio is not None else torch.zeros(new_audio.shape[0], 0)
        silence = torch.zeros(new_audio.shape[0], start - kept.shape[-1])
        sound = torch.cat([kept, silence, new_audio], dim=-1)
    video, sound = video[None], sound[None]
    if output_type == "pt":
        return LTX2AudioVideoPipelineOutput(frames=video.permute(0, 1, 4, 2, 3), audio=sound, sample_rate=out_rate)
    return LTX2AudioVideoPipelineOutput(frames=video.numpy(), audio=sound.float(), sample_rate=out_rate)
