"""`ltx2 retake`: regenerate a time window of an existing clip (video, audio or both), keep the rest
(official `retake.py`; `TemporalRegion` over `FrozenVideo` + `AudioCondition` sources)."""

from __future__ import annotations

from .clip_args import (
    check_clip, check_frames_and_size, clip_options, clip_runner, conditioned_call, load_one_stage, prepare_clip,
)
from .command import Command
from .media_args import SOURCE_OPTION, check_conditions_early, check_source_paths, resolve_source_clip
from .options import Option, number

OPTIONS = (
    SOURCE_OPTION,
    Option("--start", "window start, seconds", number(minimum=0), required=True),
    Option("--end", "window end, seconds", number(above=0), required=True),
    Option("--no-video", "keep the whole video; regenerate only the audio", switch=True),
    Option("--no-audio", "keep the whole audio; regenerate only the video (a silent input stays silent)",
           switch=True),
    Option("--ramp", "soft window edges in seconds (tokens this close to the window are partly regenerated)",
           number(minimum=0), default=0.0),
    *clip_options(from_input=True),
)


def check(args) -> None:
    """Checks needing no import: the window, the switches, the paths and the explicitly given sizes."""
    if args.no_video and args.no_audio:
        raise ValueError("pass at most one of --no-video / --no-audio (with both there is nothing to retake)")
    if not args.start < args.end:
        raise ValueError(f"--start {args.start:g} must be before --end {args.end:g}")
    check_source_paths(args)
    check_clip(args)  # sizes the user left to the input are checked once it is probed


def check_window_in_clip(args, source) -> None:
    """`--end` within the part of the clip the retake uses (`source`: `media_args.resolve_source_clip`'s, its
    `8k + 1` frames); raises `ValueError` naming `--end`. `ltx2 ui`'s window preview runs it too."""
    if args.end > source.duration_s + 1e-9:
        raise ValueError(f"--end {args.end:g} is past the end of the clip, which lasts {source.duration_s:.4g} s "
                         f"({source.num_frames} frames at {source.frame_rate:g} fps)")


def build_conditions(args, source) -> list:
    """`[FrozenVideo(source frames), AudioCondition(source audio), TemporalRegion(start, end, ...)]`."""
    from ..conditioning import AudioCondition, FrozenVideo, TemporalRegion
    from ..media import load_video

    check_window_in_clip(args, source)
    frames, _ = load_video(source.path, num_frames=source.num_frames)
    if not source.has_audio:
        if args.no_video:
            raise ValueError(f"--input {source.path} has no audio track to retake (generate one with `ltx2 foley`)")
        if args.no_audio:
            print(f"--input {source.path} has no audio track: --no-audio keeps it silent (the output has no sound)")
            args.write_audio = False
        else:
            print(f"--input {source.path} has no audio track: the sound of the whole clip is generated")
        return [FrozenVideo(frames), TemporalRegion(args.start, args.end, audio=False, ramp_s=args.ramp)]
    region = TemporalRegion(args.start, args.end, video=not args.no_video, audio=not args.no_audio,
                            ramp_s=args.ramp)
    return [FrozenVideo(frames), AudioCondition(source.path), region]


def prepare(args) -> None:
    """Probe the source clip (sizes from it), then the checks needing torch; build the conditions."""
    source = resolve_source_clip(args)
    check_frames_and_size(args)
    prepare_clip(args)
    args.conditions = build_conditions(args, source)
    check_conditions_early(args.conditions, args)
    print(f"retake {args.start:g}-{args.end:g} s of {source.path}: {source.describe()}")


call = conditioned_call
load = load_one_stage


#: check the arguments and the source clip, load the pipeline, retake, write the MP4; returns the exit code
run = clip_runner(prepare, call, load)

COMMAND = Command("retake", "regenerate seconds START..END of a clip, keeping the rest", OPTIONS, run, check=check,
                  prepare=prepare, call=call, load=load)
add_parser = COMMAND.add_to
