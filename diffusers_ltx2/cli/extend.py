"""`ltx2 extend`: continue an existing clip (video and its sound) by N frames, joined without a seam
(`LTX2AudioVideoPipeline.extend`: ComfyUI `LTXVExtendSampler` semantics, audio continued and cross-faded)."""

from __future__ import annotations

import argparse
import os

from .common import StageTimer, add_clip_arguments, check_clip_arguments, clip_call_arguments, load_pipeline
from .media_args import add_source_clip_arguments, resolve_source_clip, source_clip_defaults, write_output


def add_parser(subparsers) -> None:
    """Register `ltx2 extend`."""
    p = subparsers.add_parser("extend", help="continue a clip (video + sound) by N frames",
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_source_clip_arguments(p)
    p.add_argument("--frames", type=int, required=True, help="frames to add (a multiple of 8)")
    p.add_argument("--overlap", type=int, default=16,
                   help="frames of the clip's end that guide the continuation (a multiple of 8)")
    p.add_argument("--overlap-strength", type=float, default=0.5, help="strength of that guide, in [0, 1]")
    add_clip_arguments(p)
    source_clip_defaults(p)
    for action in p._actions:
        if action.dest == "num_frames":
            action.help = "not used: the result has the input's frames + --frames"
    p.set_defaults(func=run)


def _check_args(args):
    """Checks needing no model: the source clip, the extension's numbers and the generated clip's size."""
    from ..pipelines.extend import plan_extension

    if args.num_frames is not None:
        raise ValueError("ltx2 extend takes --frames (frames to add), not --num-frames")
    source = resolve_source_clip(args)
    plan = plan_extension(source.available_frames, args.frames, args.overlap, args.overlap_strength)
    args.num_frames = plan.new_clip_frames  # the clip actually generated (8k+1), for the shared checks
    check_clip_arguments(args)
    return source, plan


def run(args) -> int:
    """Check the arguments, load the pipeline, extend, write the MP4; returns the exit code."""
    from ..media import load_video
    from ..pipelines import LTX2AudioVideoPipeline

    source, plan = _check_args(args)
    frames, _ = load_video(source.path)
    print(f"extend {source.path}: {plan.old_frames} + {args.frames} frames at {source.frame_rate:g} fps "
          f"(generating {plan.new_clip_frames} frames whose first {plan.overlap} overlap the clip's end), "
          f"{args.width}x{args.height}, sound {'continued' if source.has_audio else 'new (the input has none)'}")
    call = clip_call_arguments(args)
    for key in ("num_frames", "height", "width", "frame_rate"):
        call.pop(key)
    timer = StageTimer()
    pipe = load_pipeline(LTX2AudioVideoPipeline, args, timer)
    with timer.stage("generate"):
        out = pipe.extend(frames, args.frames, overlap_frames=args.overlap, overlap_strength=args.overlap_strength,
                          audio=source.path if source.has_audio else None, frame_rate=args.frame_rate,
                          height=args.height, width=args.width, **call)
    with timer.stage("write"):
        write_output(out, args)
    print(f"wrote {os.path.abspath(args.output)} ({timer.summary()})")
    return 0
