"""`ltx2 retake`: regenerate a time window of an existing clip (video, audio or both), keep the rest
(official `retake.py`; `TemporalRegion` over `FrozenVideo` + `AudioCondition` sources)."""

from __future__ import annotations

import argparse

from .common import add_clip_arguments, check_clip_arguments
from .media_args import (
    add_source_clip_arguments, check_conditions_early, generate_and_write, resolve_source_clip, source_clip_defaults,
)


def add_parser(subparsers) -> None:
    """Register `ltx2 retake`."""
    p = subparsers.add_parser("retake", help="regenerate seconds START..END of a clip, keeping the rest",
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_source_clip_arguments(p)
    p.add_argument("--start", type=float, required=True, help="window start, seconds")
    p.add_argument("--end", type=float, required=True, help="window end, seconds")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--no-video", action="store_true", help="keep the whole video; regenerate only the audio")
    which.add_argument("--no-audio", action="store_true", help="keep the whole audio; regenerate only the video")
    p.add_argument("--ramp", type=float, default=0.0,
                   help="soft window edges in seconds (tokens this close to the window are partly regenerated)")
    add_clip_arguments(p)
    source_clip_defaults(p)
    p.set_defaults(func=run)


def build_conditions(args, source) -> list:
    """`[FrozenVideo(source frames), AudioCondition(source audio), TemporalRegion(start, end, ...)]`."""
    from ..conditioning import AudioCondition, FrozenVideo, TemporalRegion
    from ..media import load_video

    frames, _ = load_video(source.path, num_frames=source.num_frames)
    if not source.has_audio:
        if args.no_video:
            raise ValueError(f"--input {source.path} has no audio track to retake (generate one with `ltx2 foley`)")
        print(f"--input {source.path} has no audio track: the sound of the whole clip is generated")
        return [FrozenVideo(frames), TemporalRegion(args.start, args.end, audio=False, ramp_s=args.ramp)]
    region = TemporalRegion(args.start, args.end, video=not args.no_video, audio=not args.no_audio,
                            ramp_s=args.ramp)
    return [FrozenVideo(frames), AudioCondition(source.path), region]


def run(args) -> int:
    """Check the arguments and the source clip, load the pipeline, retake, write the MP4; returns the exit code."""
    source = resolve_source_clip(args)
    check_clip_arguments(args)
    conditions = build_conditions(args, source)
    check_conditions_early(conditions, args)
    print(f"retake {args.start:g}-{args.end:g} s of {source.path}: {source.num_frames} frames "
          f"({source.duration_s:.3g} s at {source.frame_rate:g} fps), {args.width}x{args.height}")
    return generate_and_write(conditions, args)
