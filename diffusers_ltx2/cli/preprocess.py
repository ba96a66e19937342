"""``ltx2 preprocess``: videos + captions -> latents / conditions / reference latents for ``ltx2 train``.

Examples::

    ltx2 preprocess clips/ --model ./ltx2-pipeline --output data/ --height 512 --width 768 --num-frames 121
    ltx2 preprocess clips.csv --model ./ltx2-pipeline --output data/ --height 512 --width 768 --num-frames 121 \\
        --reference-downscale-factor 2 --control canny --control depth=./depth-anything

Captions: a folder with ``<clip>.txt`` next to each video, or a CSV / JSONL with ``video``, ``caption`` (and
optionally ``control_type``). Prompts are encoded by the pipeline's Gemma (or use the library function
``diffusers_ltx2.training.preprocess.preprocess_dataset`` with any ``PromptEncoder``, e.g. the LTX API).
"""

from __future__ import annotations

import argparse
import json


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``preprocess`` subcommand."""
    parser = subparsers.add_parser(
        "preprocess", help="encode videos + captions into a training dataset (latents, conditions, references)",
        description="Encode a video dataset once so `ltx2 train` needs neither the VAE nor Gemma. Resumable; "
                    "bad clips are reported and skipped.",
    )
    parser.add_argument("source", help="folder of videos + .txt captions, or a .csv / .jsonl")
    parser.add_argument("--model", required=True,
                        help="pipeline folder (vae/, connectors/, text_encoder/, tokenizer/) or factory:tiny")
    parser.add_argument("--output", "-o", required=True, help="dataset root to write")
    parser.add_argument("--height", type=int, required=True)
    parser.add_argument("--width", type=int, required=True)
    parser.add_argument("--num-frames", type=int, required=True, help="frames per clip (8k + 1)")
    parser.add_argument("--frame-rate", type=float, default=24.0)
    parser.add_argument("--reference-downscale-factor", type=int,
                        help="make IC-LoRA references at (height / f, width / f)")
    parser.add_argument("--control", action="append", default=[],
                        help="control type for the references: canny, depth=MODEL_PATH, pose=MODEL_PATH; "
                             "repeat for a union dataset")
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(func=run)
    return parser


def _controls(specs: list[str]):
    from ..control import get_preprocessor

    types, preprocessors = [], {}
    for spec in specs:
        name, _, path = spec.partition("=")
        if name in types:
            raise ValueError(f"--control {name} given twice")
        types.append(name)
        preprocessors[name] = get_preprocessor(name, path or None)
    return types, preprocessors


def _pipeline(model: str):
    from .. import LTX2ICLoRAPipeline

    if model.startswith("factory:"):
        from ..factory import SMALL, TINY, build_components
        from ..schedulers import LTX2Scheduler

        parts = model.split(":")
        size = {"tiny": TINY, "small": SMALL}.get(parts[1])
        if size is None:
            raise ValueError("factory models are factory:tiny or factory:small")
        return LTX2ICLoRAPipeline(scheduler=LTX2Scheduler(), **build_components(size, int(parts[2]) if len(parts) > 2 else 0))
    return LTX2ICLoRAPipeline.from_pretrained(model)


def run(args) -> int:
    from ..training.preprocess import find_clips, preprocess_dataset

    if args.reference_downscale_factor is not None and args.reference_downscale_factor < 1:
        raise ValueError("--reference-downscale-factor must be >= 1")
    if args.control and args.reference_downscale_factor is None:
        raise ValueError("--control needs --reference-downscale-factor")
    clips = find_clips(args.source)
    types, preprocessors = _controls(args.control)
    pipe = _pipeline(args.model)
    report = preprocess_dataset(
        pipe, clips, args.output, height=args.height, width=args.width, num_frames=args.num_frames,
        frame_rate=args.frame_rate, reference_downscale_factor=args.reference_downscale_factor,
        control_types=types or None, preprocessors=preprocessors, progress=not args.no_progress,
    )
    print(json.dumps(report.to_json()))
    return 0
