"""`ltx2 control`: IC-LoRA video-to-video (canny / depth / pose / union control) to an MP4 with audio; with
`--window N` a long clip in sliding windows following a control video that covers it (`cli.window_args`)."""

from __future__ import annotations

import os

from .clip_args import (
    check_clip, check_frames_and_size, clip_call, clip_options, clip_runner, load_pipeline, prepare_clip,
)
from .command import Command
from .common import check_video_file
from .lora_args import LORA_FORM, parse_lora_spec, read_lora_header
from .options import Option, number, text, whole
from .window_args import WINDOW_OPTIONS, check_window_arguments, prepare_windows, window_call

PREPROCESSORS = ("none", "canny", "depth", "pose")
GROUP = "control"

OPTIONS = (
    *(o for o in clip_options(size_help="a multiple of 32 x the reference downscale factor, at least 64")
      if o.dest != "lora"),
    Option("--lora", f"IC-LoRA (official or diffusers format), {LORA_FORM}; repeat for several (other LoRAs may "
                     "be added the same way)", parse_lora_spec, repeat=True, required=True,
           metavar="PATH[:STRENGTH]", group=GROUP),
    Option("--lora-strength", "replaced by --lora PATH:STRENGTH", hidden=True, repeat=True, group=GROUP),
    Option("--control-video", "control / reference video file", text, required=True, metavar="PATH", group=GROUP),
    Option("--preprocess", "turn the control video into edges / depth / pose first (none: it already is one)",
           choices=PREPROCESSORS, default="none", group=GROUP),
    Option("--preprocess-model", "local transformers model folder for depth / pose", text, metavar="PATH",
           group=GROUP),
    Option("--reference-downscale-factor", "reference downscale factor", whole(1),
           default_text="read from the IC-LoRA's metadata", group=GROUP),
    Option("--control-strength", "in [0, 1]", number(0, 1), default=1.0, group=GROUP),
    Option("--attention-strength", "conditioning attention strength, in [0, 1]", number(0, 1), default=1.0,
           group=GROUP),
    *WINDOW_OPTIONS,
)


def check(args) -> None:
    """Everything checkable without an import, so mistakes fail in a second with exit code 2."""
    if args.lora_strength:
        raise ValueError("--lora-strength was replaced by --lora PATH:STRENGTH (e.g. --lora ic.safetensors:0.8)")
    check_window_arguments(args)
    factor = args.reference_downscale_factor or 1
    check_clip(args, size_multiple=32 * factor,
               why=f" (32 x --reference-downscale-factor {factor})" if factor > 1 else "")
    if not os.path.isfile(args.control_video):
        raise FileNotFoundError(f"--control-video: video file not found: {args.control_video}")
    if args.preprocess in ("depth", "pose") and not args.preprocess_model:
        raise ValueError(f"--preprocess {args.preprocess} needs --preprocess-model (a local transformers model)")
    if args.preprocess_model and not os.path.isdir(args.preprocess_model):
        raise FileNotFoundError(f"--preprocess-model: model folder not found: {args.preprocess_model}")


def _reference_factor(args) -> int:
    """The factor the loaded LoRAs will give (`--reference-downscale-factor`, else their metadata), checked
    against the sizes before any model loads."""
    from ..conversion.lora import read_reference_factors

    if args.reference_downscale_factor is not None:
        return args.reference_downscale_factor
    factors = {}
    for spec in args.lora:
        try:
            factor = read_reference_factors(read_lora_header(spec.path))[0]
        except ValueError as err:
            raise ValueError(f"--lora {spec.text}: {err}") from None
        if factor not in (None, 1):
            factors[spec.path] = factor
    if len(set(factors.values())) > 1:
        raise ValueError(f"the --lora files have different reference downscale factors {factors}: they cannot be "
                         "combined")
    return next(iter(factors.values()), 1)


def prepare(args) -> None:
    """Checks needing torch / media, before loading: the control video, the LoRA files and their factor."""
    prepare_clip(args)
    check_video_file(args.control_video)
    if args.windows is not None:
        _check_control_covers_clip(args)
        prepare_windows(args, [])
    args.factor = _reference_factor(args)
    if args.factor > 1:
        check_frames_and_size(args, 32 * args.factor,
                              f" (32 x the IC-LoRA's reference downscale factor {args.factor})")
    args.preprocessor = None
    if args.preprocess != "none":
        from ..control import get_preprocessor

        args.preprocessor = get_preprocessor(args.preprocess, args.preprocess_model)


def _check_control_covers_clip(args) -> None:
    """`--window`: the control video must cover the whole clip (`long_video.routing`: each window takes the part
    under its frames); checked on the file's frame count before loading."""
    from ..media import probe_video
    from .media_args import largest_clip_length

    available = probe_video(args.control_video).num_frames
    if available < args.num_frames:
        raise ValueError(f"--control-video {args.control_video} has {available} frames, the clip {args.num_frames}: "
                         f"sliding windows need a control video covering the whole clip; use --num-frames "
                         f"{largest_clip_length(available)} or fewer")


def call(args) -> dict:
    kwargs = dict(clip_call(args), control_video=args.control_video, control_preprocessor=args.preprocessor,
                  control_strength=args.control_strength, conditioning_attention_strength=args.attention_strength)
    return kwargs if args.windows is None else window_call(kwargs, args)


def invoke(pipe, args, kwargs):
    """`--window`: the clip in sliding windows (`pipe.generate_long_video`); else `pipe(...)`."""
    return pipe(**kwargs) if args.windows is None else pipe.generate_long_video(**kwargs)


def load(args, timer):
    """The IC-LoRA pipeline with the `--lora` files loaded."""
    from ..pipelines import LTX2ICLoRAPipeline

    pipe = load_pipeline(LTX2ICLoRAPipeline, args, timer,
                         lora_kwargs=dict(reference_downscale_factor=args.reference_downscale_factor))
    print(f"reference downscale factor: {pipe.reference_downscale_factor}")
    return pipe


#: check the arguments, load the pipeline and the IC-LoRAs, generate, write the MP4; returns the exit code
run = clip_runner(prepare, call, load, invoke)

COMMAND = Command("control", "generate a clip that follows a control video through an IC-LoRA", OPTIONS, run,
                  check=check, prepare=prepare, call=call, load=load, invoke=invoke)
add_parser = COMMAND.add_to
