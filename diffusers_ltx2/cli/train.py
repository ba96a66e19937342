"""``ltx2 train``: train an LTX-2 LoRA / IC-LoRA from a YAML config on precomputed latents.

Examples::

    ltx2 train my_lora.yaml
    ltx2 train my_lora.yaml --resume latest
    accelerate launch --num_processes 2 -m diffusers_ltx2 train my_lora.yaml

The config is validated completely (unknown keys, bad values, missing data folders) and the dataset's files are
checked before any model loads. Exit status 2 with one line for every user-facing failure: a bad config or dataset,
a checkpoint that cannot be resumed (unsafe, truncated, or from a run with other settings), a training stopped on a
non-finite loss (`optimization.on_nonfinite_loss: stop`), or a checkpoint / LoRA that cannot be written (e.g.
"No space left on device (ENOSPC)"; nothing half-written is left).
"""

from __future__ import annotations

import argparse
import json
import math


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``train`` subcommand."""
    parser = subparsers.add_parser(
        "train", help="train a LoRA / IC-LoRA from a YAML config (accelerate + peft)",
        description="Train an LTX-2 LoRA or IC-LoRA on `ltx2 preprocess` output; writes the LoRA in the official "
                    "format (diffusion_model. keys) with its metadata, loss.csv and loss.png.",
    )
    parser.add_argument("config", help="training config (.yaml)")
    parser.add_argument("--resume", help="checkpoint folder to resume from, or 'latest' (under output_dir)")
    parser.add_argument("--max-steps", type=int, help="stop after this many more optimizer steps")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)
    return parser


def run(args) -> int:
    from ..training.config import load_config
    from ..training.trainer import Trainer

    if args.max_steps is not None and args.max_steps < 1:
        raise ValueError("--max-steps must be >= 1")
    config = load_config(args.config)
    trainer = Trainer(config)
    result = trainer.train(max_steps=args.max_steps, resume_from=args.resume, progress=not args.no_progress)
    if trainer.accelerator.is_main_process:
        finite = [x for x in result.losses if math.isfinite(x)]  # skipped steps' losses are NaN: not JSON
        print(json.dumps({"output": str(result.output), "steps": result.step,
                          "first_loss": finite[0] if finite else None, "last_loss": finite[-1] if finite else None,
                          "skipped_steps": result.skipped_steps, "num_processes": trainer.accelerator.num_processes,
                          "checkpoints": [str(c) for c in result.checkpoints]}))
    return 0
