"""`ltx2 generate`: text to an MP4 with audio, conditioned on images / clips at any frame (first frame,
keyframes, first-last frame), on a sound (audio-to-video), or audio only, from a diffusers-layout LTX-2 folder;
with LoRAs, and one- or two-stage."""

from __future__ import annotations

import os

from .clip_args import check_clip, clip_call, clip_options, clip_runner, load_one_stage, load_pipeline, prepare_clip
from .command import Command
from .common import check_image_file, torch_dtype
from .dfr_args import DFR_OPTIONS, check_dfr_arguments, dfr_call, dfr_setup
from .media_args import (
    MEDIA_FORM, check_audio_output, check_conditions_early, check_file, check_spec_suffix, check_strength,
    largest_clip_length, parse_media_spec, resolve_frame,
)
from .options import Option, number, text, whole
from .parallel import PARALLEL_OPTIONS, check_parallel_arguments, layout_flags_set, uses_ranks
from .sampling_args import SAMPLING_OPTIONS, check_sampling_arguments, sampling_call
from .two_stage import (
    TWO_STAGE_MULTIPLE, TWO_STAGE_OPTIONS, apply_preset, check_two_stage_arguments, two_stage_call, two_stage_setup,
)
from .window_args import WINDOW_OPTIONS, check_window_arguments, prepare_windows, window_call

GROUP = "conditioning (images, clips and sound the clip must follow)"

OPTIONS = (
    *clip_options(),
    Option("--image", "image held at pixel FRAME (default 0; negative counts from the end, -1 = the last frame) "
                      "with STRENGTH (default --image-strength); repeat for keyframes / first-last frame", text,
           repeat=True, metavar="PATH[@FRAME[:STRENGTH]]", group=GROUP),
    Option("--image-strength", "strength of --image entries that give none, in [0, 1]", number(0, 1), default=1.0,
           group=GROUP),
    Option("--image-crf", "H.264 CRF applied to images before encoding, as the official loader (0 = off)",
           whole(0, 51), default_text="the model's: 18 for LTX-2.4+, 33 before", group=GROUP),
    Option("--video", "video clip placed from pixel FRAME (default 0): its first 8k+1 frames that fit; repeatable",
           text, repeat=True, metavar="PATH[@FRAME[:STRENGTH]]", group=GROUP),
    Option("--audio", "audio-to-video: generate the video to this sound (audio file or a video's soundtrack); the "
                      "output carries it unchanged", text, metavar="PATH", group=GROUP),
    Option("--audio-start", "seconds into --audio where the clip starts", number(minimum=0), default=0.0,
           group=GROUP),
    Option("--audio-only", "generate audio only (num_frames / frame_rate seconds); --output must be .wav or .flac",
           switch=True, group=GROUP),
    *TWO_STAGE_OPTIONS,
    *DFR_OPTIONS,
    *SAMPLING_OPTIONS,
    *PARALLEL_OPTIONS,
    *WINDOW_OPTIONS,
)


def check(args) -> None:
    """Every check that needs no import: flags, files, frames and sizes, the media specs' frames, the windows; with
    `--prompts` / `--parallel` also the prompt list and the launcher's ranks (`cli.parallel`)."""
    if uses_ranks(args):
        used = [flag for flag, value in (("--preset", args.preset), ("--window", args.window), ("--dfr", args.dfr))
                if value]
        if used:
            raise ValueError(f"{' / '.join(used)} runs in one process: it does not take --prompts / --parallel")
        check_parallel_arguments(args, _check_clip)
    else:
        stray = layout_flags_set(args)
        if stray:
            raise ValueError(f"{' / '.join(stray)} only apply to --prompts / --parallel jobs (one clip on one process "
                             "would ignore them)")
        _check_clip(args)


def _check_clip(args) -> None:
    """`check` of one clip."""
    check_dfr_arguments(args)
    check_window_arguments(args)
    if args.audio_only:
        check_audio_output(args.output)
        used = [flag for flag, value in (("--image", args.image), ("--video", args.video), ("--audio", args.audio))
                if value]
        if used:
            raise ValueError(f"--audio-only generates sound alone: it takes no {' / '.join(used)}")
        if args.two_stage:
            raise ValueError("--audio-only has no video to upsample: drop --two-stage")
    halved = args.two_stage or args.dfr
    multiple = TWO_STAGE_MULTIPLE if halved else 32
    if args.two_stage:
        apply_preset(args)
    check_clip(args, audio_output=args.audio_only, size_multiple=multiple,
               why=f" ({'--two-stage' if args.two_stage else '--dfr'} generates at half size)" if halved else "")
    check_two_stage_arguments(args)
    check_sampling_arguments(args)
    args.image_specs, args.video_specs = [], []
    for flag, entries, found in (("--image", args.image, args.image_specs), ("--video", args.video, args.video_specs)):
        for entry in entries:
            spec = parse_media_spec(entry, flag)
            check_spec_suffix(spec.path, flag, "@", "FRAME/STRENGTH", MEDIA_FORM)
            if not os.path.isfile(spec.path):
                what = "image file" if flag == "--image" else "file"
                raise FileNotFoundError(f"{flag}: {what} not found: {spec.path}")
            if spec.strength is not None:
                check_strength(f"{flag} {entry}: STRENGTH", spec.strength)
            if flag == "--video" and spec.frame is not None and spec.frame < 0:
                raise ValueError(f"--video {entry}: FRAME must be >= 0 for clips")
            resolve_frame(spec, flag, args.num_frames)
            found.append(spec)
    if args.audio is not None:
        check_file(args.audio, "--audio")
    elif args.audio_start:
        raise ValueError("--audio-start applies with --audio only")


def _audio_condition(args):
    """`AudioCondition(--audio, start_time=--audio-start)`, refused when the sound does not last the clip (the
    rest would be silence frozen into the clip), with the latest start or the longest clip that fits."""
    from ..conditioning import AudioCondition

    try:
        condition = AudioCondition(args.audio, start_time=args.audio_start)
    except ValueError as err:
        raise ValueError(f"--audio: {str(err).replace('start_time', '--audio-start')}") from None
    clip_s = args.num_frames / args.frame_rate
    have_s = condition.waveform.shape[-1] / condition.sample_rate
    if have_s + 1.0 / args.frame_rate < clip_s:  # more than a frame of silence
        total = args.audio_start + have_s
        if total >= clip_s:
            hint = f"use --audio-start {total - clip_s:.2f} or less"
        else:
            frames = largest_clip_length(int(total * args.frame_rate))
            hint = (f"the whole sound lasts {total:.2f} s: use --num-frames {frames} or fewer" if frames >= 9
                    else f"the whole sound lasts {total:.2f} s, less than the shortest clip")
        raise ValueError(f"--audio {args.audio} lasts {have_s:.2f} s from --audio-start {args.audio_start:g}, the "
                         f"clip {clip_s:.2f} s ({args.num_frames} frames at {args.frame_rate:g} fps): the rest would "
                         f"be silence; {hint}")
    return condition


def build_conditions(args) -> list:
    """The `conditions=` list described by `--image / --video / --audio` (files read, nothing encoded); raises
    ValueError / FileNotFoundError for unreadable media or media that does not fit the clip."""
    from ..conditioning import VideoCondition
    from ..media import load_video, probe_video

    conditions = []
    for spec in args.image_specs:
        check_image_file(spec.path)
        value = args.image_strength if spec.strength is None else spec.strength
        frame = resolve_frame(spec, "--image", args.num_frames)
        conditions.append(VideoCondition(spec.path, frame_index=frame, strength=value, crf=args.image_crf))
    for spec in args.video_specs:
        frame = resolve_frame(spec, "--video", args.num_frames)
        available = probe_video(spec.path).num_frames
        n = largest_clip_length(min(available, args.num_frames - frame))
        if n < 1:
            raise ValueError(f"--video {spec.path} has no frames")
        frames, fps = load_video(spec.path, num_frames=n)
        if n < available:
            print(f"--video {spec.path}: using its first {n} of {available} frames (8k+1 frames from frame {frame})")
        if abs(fps - args.frame_rate) > 1e-3:
            print(f"--video {spec.path}: {fps:g} fps placed frame by frame in a {args.frame_rate:g} fps clip")
        conditions.append(VideoCondition(frames, frame_index=frame, strength=1.0 if spec.strength is None
                                         else spec.strength))
    if args.audio is not None:
        conditions.append(_audio_condition(args))
    return conditions


def prepare(args) -> None:
    """Checks needing torch / media (device, conditioning files, media contents, conditions), before loading."""
    prepare_clip(args)
    args.conditions = build_conditions(args)
    args.modalities = ("audio",) if args.audio_only else ("video", "audio")
    check_conditions_early(args.conditions, args, output_modalities=args.modalities)
    if args.windows is not None:
        prepare_windows(args, args.conditions)


def call(args) -> dict:
    """The pipeline call's keyword arguments (one- or two-stage, windows, DFR)."""
    kwargs = clip_call(args)
    if args.dfr:
        return dfr_call(kwargs, args)
    kwargs.update(sampling_call(args))
    if args.conditions or args.audio_only:
        kwargs.update(conditions=args.conditions, output_modalities=args.modalities)
    if args.windows is not None:
        return window_call(kwargs, args)
    return two_stage_call(kwargs, args) if args.two_stage else kwargs


def load(args, timer):
    """The one- or two-stage (or DFR) pipeline, loaded as `args` say (LoRAs, memory settings, the upsamplers)."""
    if args.dfr:  # stage progress bars named by the pipeline ("DFR base ...", "DFR detailing ...")
        from ..dfr.pipeline import LTX2DFRPipeline

        dtype = torch_dtype(args.dtype)
        return load_pipeline(LTX2DFRPipeline, args, timer, setup=dfr_setup(args, dtype, two_stage_setup(args, dtype)))
    if args.two_stage:  # stage progress bars are named by the pipeline ("stage 1/2 ...", "stage 2/2 ...")
        from ..pipelines.two_stage import LTX2TwoStagePipeline

        return load_pipeline(LTX2TwoStagePipeline, args, timer, setup=two_stage_setup(args, torch_dtype(args.dtype)))
    return load_one_stage(args, timer)


def invoke(pipe, args, kwargs):
    """`--preset hq`: the official recipe's schedule, LoRA strengths and audio (flags given win); `--window`: the
    clip in sliding windows (one progress bar: windows and steps); else `pipe(...)`."""
    if args.preset:
        return pipe.generate_hq(**kwargs)
    if args.windows is not None:
        return pipe.generate_long_video(**kwargs)
    return pipe(**kwargs)


_run_one = clip_runner(prepare, call, load, invoke)


def run(args, timer) -> int:
    """Check, load the pipeline (and LoRAs), generate, write the MP4 (or WAV / FLAC); returns the exit code.
    A prompt list or a clip split over ranks goes through `cli.parallel.run_parallel`."""
    if uses_ranks(args):
        from .parallel import run_parallel

        return run_parallel(args, timer, prepare=prepare, call=call, load=load)
    return _run_one(args, timer)

COMMAND = Command("generate", "generate a clip with audio from a prompt (and images, clips, audio, LoRAs)", OPTIONS,
                  run, check=check, prepare=prepare, call=call, load=load, invoke=invoke)
add_parser = COMMAND.add_to
