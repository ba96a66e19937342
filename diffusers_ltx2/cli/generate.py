"""`ltx2 generate`: text to an MP4 with audio, conditioned on images / clips at any frame (first frame,
keyframes, first-last frame), on a sound (audio-to-video), or audio only, from a diffusers-layout LTX-2 folder."""

from __future__ import annotations

import argparse
import os

from .common import (
    StageTimer, add_clip_arguments, check_clip_arguments, check_image_file, clip_call_arguments, load_pipeline,
    non_negative_int, parse_dtype, strength,
)
from .two_stage import add_two_stage_arguments, check_two_stage_arguments, two_stage_call, two_stage_setup
from .media_args import (
    MEDIA_FORM, check_audio_output, check_conditions_early, check_file, check_spec_suffix, check_strength,
    largest_clip_length, parse_media_spec, resolve_frame, write_output,
)


def add_parser(subparsers) -> None:
    """Register `ltx2 generate`."""
    p = subparsers.add_parser("generate", help="generate a clip with audio from a prompt (and images, clips, audio)",
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_clip_arguments(p)
    g = p.add_argument_group("conditioning", "images, clips and sound the clip must follow")
    g.add_argument("--image", action="append", default=[], metavar="PATH[@FRAME[:STRENGTH]]",
                   help="image held at pixel FRAME (default 0; negative counts from the end, -1 = the last frame) "
                        "with STRENGTH (default --image-strength); repeat for keyframes / first-last frame")
    g.add_argument("--image-strength", type=strength, default=1.0, help="strength of --image entries that give none")
    g.add_argument("--image-crf", type=non_negative_int, default=33,
                   help="H.264 CRF applied to images before encoding, as the official loader (0 = off)")
    g.add_argument("--video", action="append", default=[], metavar="PATH[@FRAME[:STRENGTH]]",
                   help="video clip placed from pixel FRAME (default 0): its first 8k+1 frames that fit; repeatable")
    g.add_argument("--audio", metavar="PATH",
                   help="audio-to-video: generate the video to this sound (audio file or a video's soundtrack); "
                        "the output carries it unchanged")
    g.add_argument("--audio-start", type=float, default=0.0, help="seconds into --audio where the clip starts")
    g.add_argument("--audio-only", action="store_true",
                   help="generate audio only (num_frames / frame_rate seconds); --output must be .wav or .flac")
    add_two_stage_arguments(p)
    from .parallel import add_parallel_arguments

    add_parallel_arguments(p)
    p.set_defaults(func=run)


def build_conditions(args) -> list:
    """The `conditions=` list described by `--image / --video / --audio` (files read, nothing encoded);
    raises ValueError / FileNotFoundError for bad specs, missing files or media that does not fit the clip."""
    from ..conditioning import AudioCondition, VideoCondition
    from ..media import load_video, probe_video

    check_strength("--image-strength", args.image_strength)
    conditions = []
    for text in args.image:
        spec = parse_media_spec(text, "--image")
        check_spec_suffix(spec.path, "--image", "@", "FRAME/STRENGTH", MEDIA_FORM)
        check_image_file(spec.path)
        value = args.image_strength if spec.strength is None else spec.strength
        value = check_strength(f"--image {text}: STRENGTH", value)
        frame = resolve_frame(spec, "--image", args.num_frames)
        conditions.append(VideoCondition(spec.path, frame_index=frame, strength=value, crf=args.image_crf))
    for text in args.video:
        spec = parse_media_spec(text, "--video")
        check_spec_suffix(spec.path, "--video", "@", "FRAME/STRENGTH", MEDIA_FORM)
        check_file(spec.path, "--video")
        value = check_strength(f"--video {text}: STRENGTH", 1.0 if spec.strength is None else spec.strength)
        if spec.frame is not None and spec.frame < 0:
            raise ValueError(f"--video {text}: FRAME must be >= 0 for clips")
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
        conditions.append(VideoCondition(frames, frame_index=frame, strength=value))
    if args.audio is not None:
        check_file(args.audio, "--audio")
        conditions.append(AudioCondition(args.audio, start_time=args.audio_start))
    return conditions


def _check_args(args) -> tuple[list, tuple[str, ...]]:
    """Every check that needs no model; returns the conditions and the output modalities."""
    if args.audio_only:
        check_audio_output(args.output)
        used = [flag for flag, value in (("--image", args.image), ("--video", args.video), ("--audio", args.audio))
                if value]
        if used:
            raise ValueError(f"--audio-only generates sound alone: it takes no {' / '.join(used)}")
    check_clip_arguments(args, audio_output=args.audio_only)
    check_two_stage_arguments(args)
    if args.two_stage and args.audio_only:
        raise ValueError("--audio-only has no video to upsample: drop --two-stage")
    conditions = build_conditions(args)
    modalities = ("audio",) if args.audio_only else ("video", "audio")
    check_conditions_early(conditions, args, output_modalities=modalities)
    return conditions, modalities


def run(args) -> int:
    """Check the arguments, load the pipeline, generate, write the MP4 (or WAV / FLAC); returns the exit code."""
    from ..pipelines import LTX2AudioVideoPipeline

    if args.prompts is not None or args.parallel is not None:  # several ranks or a prompt list
        from .parallel import run_parallel

        return run_parallel(args, _check_args)
    conditions, modalities = _check_args(args)
    call = clip_call_arguments(args)  # builds the guider: bad guidance flags fail here, before loading
    timer = StageTimer()
    if args.two_stage:  # stage progress bars are named by the pipeline ("stage 1/2 ...", "stage 2/2 ...")
        from ..pipelines.two_stage import LTX2TwoStagePipeline

        call = two_stage_call(call, args)
        pipe = load_pipeline(LTX2TwoStagePipeline, args, timer, setup=two_stage_setup(args, parse_dtype(args.dtype)))
    else:
        pipe = load_pipeline(LTX2AudioVideoPipeline, args, timer)
    if conditions or args.audio_only:
        call.update(conditions=conditions, output_modalities=modalities)
    with timer.stage("generate"):
        out = pipe(**call)
    with timer.stage("write"):
        write_output(out, args)
    print(f"wrote {os.path.abspath(args.output)} ({timer.summary()})")
    return 0
