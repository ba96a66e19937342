"""`ltx2 control`: IC-LoRA video-to-video (canny / depth / pose / union control) to an MP4 with audio."""

from __future__ import annotations

import argparse
import os

from .common import (
    StageTimer, add_clip_arguments, check_clip_arguments, check_lora_file, check_video_file, clip_call_arguments,
    finite_float, load_pipeline, positive_int, strength, write_clip,
)

PREPROCESSORS = ("none", "canny", "depth", "pose")


def add_parser(subparsers) -> None:
    """Register `ltx2 control`."""
    p = subparsers.add_parser("control", help="generate a clip that follows a control video through an IC-LoRA",
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--lora", required=True, action="append",
                   help="IC-LoRA .safetensors (official or diffusers format); repeat for several")
    p.add_argument("--lora-strength", type=finite_float, action="append", default=None,
                   help="strength per --lora (default 1.0 each)")
    p.add_argument("--control-video", required=True, help="control / reference video file")
    p.add_argument("--preprocess", choices=PREPROCESSORS, default="none",
                   help="turn the control video into edges / depth / pose first (none: it already is one)")
    p.add_argument("--preprocess-model", default=None, help="local transformers model folder for depth / pose")
    p.add_argument("--reference-downscale-factor", type=positive_int, default=None,
                   help="override the factor read from the LoRA metadata")
    p.add_argument("--control-strength", type=strength, default=1.0, help="in [0, 1]")
    p.add_argument("--attention-strength", type=strength, default=1.0,
                   help="conditioning attention strength, in [0, 1]")
    add_clip_arguments(p, height_help="multiple of 32 * the reference downscale factor")
    p.set_defaults(func=run)


def _check_args(args) -> None:
    """Everything checkable without a model, so mistakes fail in a second with exit code 2."""
    from ..pipelines import validation as V

    check_clip_arguments(args)
    check_video_file(args.control_video)
    for path in args.lora:
        check_lora_file(path)
    if args.lora_strength is not None and len(args.lora_strength) != len(args.lora):
        raise ValueError(f"got {len(args.lora_strength)} --lora-strength values for {len(args.lora)} --lora files")
    if args.preprocess in ("depth", "pose") and not args.preprocess_model:
        raise ValueError(f"--preprocess {args.preprocess} needs --preprocess-model (a local transformers model)")
    if args.preprocess_model and not os.path.isdir(args.preprocess_model):
        raise FileNotFoundError(f"preprocessor model folder not found: {args.preprocess_model}")
    V.check_strength("--control-strength", args.control_strength)
    V.check_strength("--attention-strength", args.attention_strength)


def run(args) -> int:
    """Check the arguments, load the pipeline and the IC-LoRAs, generate, write the MP4; returns the exit code."""
    from ..control import get_preprocessor
    from ..pipelines import LTX2ICLoRAPipeline

    _check_args(args)
    call = clip_call_arguments(args)
    preprocessor = None
    if args.preprocess != "none":
        preprocessor = get_preprocessor(args.preprocess, args.preprocess_model)

    def load_loras(pipe):
        strengths = args.lora_strength or [1.0] * len(args.lora)
        for i, (path, strength) in enumerate(zip(args.lora, strengths)):
            pipe.load_lora_weights(path, adapter_name=f"control_{i}", strength=strength,
                                   reference_downscale_factor=args.reference_downscale_factor)

    timer = StageTimer()
    pipe = load_pipeline(LTX2ICLoRAPipeline, args, timer, setup=load_loras)
    print(f"reference downscale factor: {pipe.reference_downscale_factor}")
    with timer.stage("generate"):
        out = pipe(
            control_video=args.control_video, control_preprocessor=preprocessor,
            control_strength=args.control_strength, conditioning_attention_strength=args.attention_strength,
            **call,
        )
    with timer.stage("write"):
        write_clip(out, args.output, args.frame_rate)
    print(f"wrote {os.path.abspath(args.output)} ({timer.summary()})")
    return 0
