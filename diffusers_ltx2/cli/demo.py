"""`ltx2 demo`: the whole path on an embedded tiny random-weight model, no checkpoint or network needed.

Builds the tiny model, saves it with `save_pretrained`, loads it back with `DiffusionPipeline.from_pretrained`,
generates a short clip with audio and writes the MP4. The weights are random: expect colourful noise and hiss.
"""

from __future__ import annotations

import os
import tempfile

from .command import Command
from .common import check_output_path, write_clip
from .options import Option, text, whole

OPTIONS = (
    Option("--output", "output .mp4 path", text, default="ltx2_demo.mp4", metavar="PATH"),
    Option("--model-dir", "where to save the tiny model", text, metavar="PATH", default_text="a temporary folder"),
    Option("--prompt", "text prompt", text, default="a red bird flies over the sea at sunset, waves and wind"),
    Option("--steps", "denoising steps", whole(1), default=8),
    Option("--seed", "seed of the random weights and of the initial noise", whole(0), default=0),
    Option("--size", "model size preset", choices=("tiny", "small"), default="tiny"),
    Option("--no-progress", "no progress bars", switch=True),
)


def check(args) -> None:
    """The output path, and a `--model-dir` that saving would not spoil."""
    check_output_path(args.output)
    if args.model_dir and os.path.isdir(args.model_dir) and os.listdir(args.model_dir) \
            and not os.path.isfile(os.path.join(args.model_dir, "model_index.json")):
        raise ValueError(f"--model-dir {args.model_dir} is a non-empty folder that is not a pipeline folder; "
                         "saving the model there would overwrite its files: choose a new or empty folder")


def run(args, timer) -> int:
    """Build, save, reload and run the tiny model; write the MP4; returns the exit code."""
    import diffusers
    import torch

    from .. import factory
    from ..pipelines import LTX2AudioVideoPipeline
    from ..schedulers import LTX2Scheduler
    from .common import quiet_loading

    size, clip = (factory.TINY, dict(factory.TINY_CLIP, num_frames=25)) if args.size == "tiny" \
        else (factory.SMALL, dict(factory.SMALL_CLIP))
    quiet_loading()
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
        if args.no_progress:
            pipe.set_progress_bar_config(disable=True)
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


COMMAND = Command("demo", "run the full pipeline on a tiny random-weight model", OPTIONS, run, check=check)
add_parser = COMMAND.add_to
