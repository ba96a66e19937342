"""`ltx2 foley`: video-to-audio - a soundtrack for an existing clip, whose video is held fixed (`FrozenVideo`)."""

from __future__ import annotations

import argparse

from .common import add_clip_arguments, check_clip_arguments
from .media_args import (
    add_source_clip_arguments, check_conditions_early, generate_and_write, resolve_source_clip, source_clip_defaults,
)


def add_parser(subparsers) -> None:
    """Register `ltx2 foley`."""
    p = subparsers.add_parser("foley", help="generate the sound of an existing clip (video-to-audio)",
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_source_clip_arguments(p)
    add_clip_arguments(p)
    source_clip_defaults(p)
    p.set_defaults(func=run)


def run(args) -> int:
    """Check the arguments and the clip, load the pipeline, generate the audio, write the MP4; returns the exit
    code. The output's frames are the input's (resized / centre-cropped to the generation size)."""
    from ..conditioning import FrozenVideo
    from ..media import load_video

    source = resolve_source_clip(args)
    check_clip_arguments(args)
    frames, _ = load_video(source.path, num_frames=source.num_frames)
    conditions = [FrozenVideo(frames)]
    check_conditions_early(conditions, args)
    print(f"foley for {source.path}: {source.num_frames} frames ({source.duration_s:.3g} s at "
          f"{source.frame_rate:g} fps), {args.width}x{args.height}")
    return generate_and_write(conditions, args)
