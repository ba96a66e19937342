"""`ltx2 demo`: the whole path on an embedded tiny random-weight model, no checkpoint or network needed.

Builds the tiny model, saves it with `save_pretrained`, loads it back with `DiffusionPipeline.from_pretrained`,
generates a short clip with audio and writes the MP4. The weights are random: expect colourful noise and hiss.
"""

from __future__ import annotations

import argparse
import os
import tempfile

from .common import StageTimer, check_output_path, non_negative_int, positive_int, write_clip


def add_parser(subparsers) -> None:
    """Register `ltx2 demo`."""
    p = subparsers.add_parser("demo", help="run the full pipeline on a tiny random-weight model",
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--output", default="ltx2_demo.mp4", help="output .mp4 path")
    p.add_argument("--model-dir", default=None, help="where to save the tiny model (default: a temporary folder)")
    p.add_argument("--prompt", default="a red bird flies over the sea at sunset, waves and wind")
    p.add_argument("--steps", type=positive_int, default=8)
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--size", choices=("tiny", "small"), default="tiny", help="model size preset")
    p.set_defaults(func=run)


def run(args) -> int:
    """Build, save, reload and run the tiny model; write the MP4; returns the exit code."""
    import diffusers
    import torch

    from .. import factory
    from ..schedulers import LTX2Scheduler
    from ..pipelines import LTX2AudioVideoPipeline

    check_output_path(args.output)
    if args.model_dir and os.path.isdir(args.model_dir) and os.listdir(args.model_dir) \
            and not os.path.isfile(os.path.join(args.model_dir, "model_index.json")):
        raise ValueError(f"--model-dir {args.model_dir} is a non-empty folder that is not a pipeline folder; "
                         "saving the model there would overwrite its files: choose a new or empty folder")
    size, clip = (factory.TINY, dict(factory.TINY_CLIP, num_frames=25)) if args.size == "tiny" \
        else (factory.SMALL, dict(factory.SMALL_CLIP))
    timer = StageTimer()
    print("ltx2 demo: the model's weights are RANDOM, so the clip is noise with noise for sound; "
          "it shows the whole path works (build -> save -> load -> generate -> MP4).")
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model_dir or os.path.join(tmp, "ltx2-tiny")
        with timer.stage("build tiny model"):
            components = factory.build_components(size, seed=args.seed)
            # the default guider: MultimodalGuider with the recommended dials (cfg, STG, modality guidance)
            pipe = LTX2AudioVideoPipeline(scheduler=LTX2Scheduler(), **components)
        with timer.stage("save_pretrained"):
            pipe.save_pretrained(model_dir)
        with timer.stage("from_pretrained"):
            pipe = diffusers.DiffusionPipeline.from_pretrained(model_dir)
        with timer.stage("generate"):
            out = pipe(args.prompt, num_inference_steps=args.steps, output_type="np",
                       generator=torch.Generator().manual_seed(args.seed), **clip)
    with timer.stage("write mp4"):
        write_clip(out, args.output, clip["frame_rate"])
    frames = out.frames[0]
    print(f"wrote {os.path.abspath(args.output)}: {frames.shape[0]} frames {frames.shape[2]}x{frames.shape[1]} "
          f"at {clip['frame_rate']:g} fps, stereo audio at {out.sample_rate} Hz")
    if args.model_dir:
        print(f"tiny model saved in {os.path.abspath(args.model_dir)}")
    print(timer.summary())
    return 0
