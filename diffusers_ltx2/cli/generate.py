"""`ltx2 generate`: text (or image) to an MP4 with audio from a diffusers-layout LTX-2 folder."""

from __future__ import annotations

import argparse
import os

from .common import (
    StageTimer, add_clip_arguments, check_clip_arguments, check_image_file, clip_call_arguments, load_pipeline,
    strength, write_clip,
)


def add_parser(subparsers) -> None:
    """Register `ltx2 generate`."""
    p = subparsers.add_parser("generate", help="generate a clip with audio from a prompt",
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_clip_arguments(p)
    p.add_argument("--image", help="first-frame image file")
    p.add_argument("--image-strength", type=strength, default=1.0, help="in [0, 1]")
    p.set_defaults(func=run)


def run(args) -> int:
    """Check the arguments, load the pipeline, generate, write the MP4; returns the exit code."""
    from ..pipelines import LTX2AudioVideoPipeline
    from ..pipelines import validation as V

    check_clip_arguments(args)  # also builds the guider: bad guidance flags fail here, before loading
    if args.image is not None:
        check_image_file(args.image)
    V.check_strength("--image-strength", args.image_strength)
    call = clip_call_arguments(args)
    timer = StageTimer()
    pipe = load_pipeline(LTX2AudioVideoPipeline, args, timer)
    image = None
    if args.image:
        from PIL import Image

        image = Image.open(args.image).convert("RGB")
    with timer.stage("generate"):
        out = pipe(image=image, image_strength=args.image_strength, **call)
    with timer.stage("write"):
        write_clip(out, args.output, args.frame_rate)
    print(f"wrote {os.path.abspath(args.output)} ({timer.summary()})")
    return 0
