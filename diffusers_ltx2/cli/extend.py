"""`ltx2 extend`: continue an existing clip (video and its sound) by N frames, joined without a seam
(`LTX2AudioVideoPipeline.extend`: ComfyUI `LTXVExtendSampler` semantics, audio continued and cross-faded)."""

from __future__ import annotations

from .clip_args import (
    check_clip, check_frames_and_size, clip_call, clip_options, clip_runner, load_one_stage, prepare_clip,
)
from .command import Command
from .media_args import SOURCE_OPTION, check_source_paths, resolve_source_clip
from .options import Option, number, whole


def _multiple_of_8(raw) -> int:
    value = whole(8)(raw)
    if value % 8:
        lower, upper = value // 8 * 8, value // 8 * 8 + 8
        raise ValueError(f"must be a multiple of 8 (the VAE's 8-frame unit), got {value}; nearest valid values: "
                         f"{lower} or {upper}")
    return value


OPTIONS = (
    SOURCE_OPTION,
    Option("--frames", "frames to add (a multiple of 8)", _multiple_of_8, required=True),
    Option("--overlap", "frames of the clip's end that guide the continuation (a multiple of 8)", _multiple_of_8,
           default=16),
    Option("--overlap-strength", "strength of that guide, in [0, 1]", number(0, 1), default=0.5),
    *(o if o.dest != "num_frames" else Option("--num-frames", "not used: the result has the input's frames + "
                                                              "--frames", hidden=True)
      for o in clip_options(from_input=True)),
)


def check(args) -> None:
    """Checks needing no import (the sizes the input gives are checked once it is probed)."""
    if args.num_frames is not None:
        raise ValueError("ltx2 extend takes --frames (frames to add), not --num-frames")
    check_source_paths(args)
    check_clip(args)


def prepare(args) -> None:
    """Probe the clip, lay out the extension, check what needs torch."""
    from ..pipelines.extend import plan_extension

    source = resolve_source_clip(args)
    if args.overlap + 1 > source.available_frames:
        raise ValueError(f"--overlap {args.overlap} needs a clip of at least {args.overlap + 1} frames; --input "
                         f"{source.path} has {source.available_frames}")
    plan = plan_extension(source.available_frames, args.frames, args.overlap, args.overlap_strength)
    args.num_frames = plan.new_clip_frames  # the clip actually generated (8k+1), for the shared checks
    check_frames_and_size(args)
    prepare_clip(args)
    args.source, args.plan = source, plan
    print(f"extend {source.path} ({source.describe(frames_used=source.available_frames)}): {plan.old_frames} + "
          f"{args.frames} frames (generating {plan.new_clip_frames} frames whose first {plan.overlap} overlap the "
          f"clip's end), sound {'continued' if source.has_audio else 'new (the input has none)'}")


def call(args) -> dict:
    """`pipe.extend`'s keyword arguments (the frames come separately: `extend(frames, --frames, **call)`)."""
    kwargs = clip_call(args)
    for key in ("num_frames",):
        kwargs.pop(key)
    kwargs.update(overlap_frames=args.overlap, overlap_strength=args.overlap_strength,
                  audio=args.source.path if args.source.has_audio else None)
    return kwargs


load = load_one_stage


def invoke(pipe, args, kwargs):
    """`pipe.extend(the clip's frames, --frames, **call)`."""
    from ..media import load_video

    frames, _ = load_video(args.source.path)
    return pipe.extend(frames, args.frames, **kwargs)


#: check the arguments, load the pipeline, extend, write the MP4; returns the exit code
run = clip_runner(prepare, call, load, invoke)

COMMAND = Command("extend", "continue a clip (video + sound) by N frames", OPTIONS, run, check=check,
                  prepare=prepare, call=call, load=load, invoke=invoke)
add_parser = COMMAND.add_to
