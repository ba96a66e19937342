"""`ltx2 foley`: video-to-audio - a soundtrack for an existing clip, whose video is held fixed (`FrozenVideo`)."""

from __future__ import annotations

from .clip_args import (
    check_clip, check_frames_and_size, clip_options, clip_runner, conditioned_call, load_one_stage, prepare_clip,
)
from .command import Command
from .media_args import SOURCE_OPTION, check_conditions_early, check_source_paths, resolve_source_clip

OPTIONS = (SOURCE_OPTION, *clip_options(from_input=True))


def check(args) -> None:
    """Checks needing no import (the sizes the input gives are checked once it is probed)."""
    check_source_paths(args)
    check_clip(args)


def prepare(args) -> None:
    """Probe the clip, check what needs torch, read the frames (resized / centre-cropped to the generation size)."""
    from ..conditioning import FrozenVideo
    from ..media import load_video

    source = resolve_source_clip(args)
    check_frames_and_size(args)
    prepare_clip(args)
    frames, _ = load_video(source.path, num_frames=source.num_frames)
    args.conditions = [FrozenVideo(frames)]
    check_conditions_early(args.conditions, args)
    print(f"foley for {source.path}: {source.describe()}")


call = conditioned_call
load = load_one_stage


#: check the arguments and the clip, load the pipeline, generate the audio, write the MP4; returns the exit code.
#: The output's frames are the input's (resized / centre-cropped to the generation size).
run = clip_runner(prepare, call, load)

COMMAND = Command("foley", "generate the sound of an existing clip (video-to-audio)", OPTIONS, run, check=check,
                  prepare=prepare, call=call, load=load)
add_parser = COMMAND.add_to
