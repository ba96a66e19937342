"""``ltx2 train``: train an LTX-2 LoRA / IC-LoRA from a YAML config on precomputed latents.

Examples::

    ltx2 train my_lora.yaml
    ltx2 train my_lora.yaml --resume latest
    accelerate launch --num_processes 2 -m diffusers_ltx2 train my_lora.yaml

The config is validated completely (unknown keys, bad values, missing data folders) and the dataset's files are
checked before any model loads, and so is `--resume` (a checkpoint to continue from, not one of a run that already
reached its `steps`). Exit status 2 with one line for every user-facing failure: a bad config or dataset, a
checkpoint that cannot be resumed (unsafe, truncated, from a run with other settings, or of a finished run), a
training stopped on a non-finite loss (`optimization.on_nonfinite_loss: stop`), or a checkpoint / LoRA that cannot
be written (e.g. "No space left on device (ENOSPC)"; nothing half-written is left).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from .command import Command
from .timing import say
from .options import Option, text, whole

#: a checkpoint folder's state file and that of earlier versions (`training.checkpoints.STATE_FILE` /
#: `LEGACY_STATE_FILE`; not imported here: that module loads torch. tests/cli/test_first_hour.py checks they agree)
STATE_FILES = ("training_state.safetensors", "training_state.pt")

OPTIONS = (
    Option("config", "training config (.yaml)", text),
    Option("--resume", "checkpoint folder to resume from, or 'latest' (the newest under output_dir/checkpoints)",
           text, metavar="PATH|latest"),
    Option("--max-steps", "stop after this many more optimizer steps (within the config's steps)", whole(1)),
    Option("--no-progress", "no progress bar", switch=True),
)


def _is_checkpoint(path: Path) -> bool:
    """A checkpoint folder holding a state file, or that state file itself (as `find_checkpoint` takes them)."""
    if path.is_file():
        return path.name in STATE_FILES
    return any((path / name).is_file() for name in STATE_FILES)


def check(args) -> None:
    """The config file exists; `--resume` names a checkpoint folder, its state file, or `latest`."""
    if not os.path.isfile(args.config):
        raise FileNotFoundError(f"training config not found: {args.config}")
    if args.resume not in (None, "latest") and not _is_checkpoint(Path(args.resume)):
        raise FileNotFoundError(f"--resume {args.resume}: no {STATE_FILES[0]} (nor a {STATE_FILES[1]} of an earlier "
                                "version) there (a checkpoint folder is output_dir/checkpoints/step_NNNNN/)")


def prepare(args) -> None:
    """The validated config (`args.training_config`), and a `--resume` checkpoint that leaves steps to train."""
    from ..training.checkpoints import find_checkpoint, list_checkpoints
    from ..training.config import load_config

    config = load_config(args.config)
    args.training_config = config
    if args.resume is None:
        return
    try:  # "latest": the highest step number (step_100000 after step_99999), as the trainer finds it
        folder = find_checkpoint(args.resume, Path(config.output_dir) / "checkpoints")
    except FileNotFoundError as err:
        raise FileNotFoundError(f"--resume {args.resume}: {err}") from None
    step = dict((p.resolve(), n) for n, p in list_checkpoints(folder.parent)).get(folder.resolve())
    total = config.optimization.steps
    if step is not None and step >= total:
        raise ValueError(f"--resume {args.resume}: checkpoint {folder.name} is at step {step}, the config's "
                         f"optimization.steps is {total}: the run is finished, nothing to train (raise "
                         f"optimization.steps in {args.config} to train on)")


def run(args, timer) -> int:
    from ..training.trainer import Trainer

    prepare(args)
    trainer = Trainer(args.training_config)
    with timer.stage("train"):
        result = trainer.train(max_steps=args.max_steps, resume_from=args.resume, progress=not args.no_progress)
    if trainer.accelerator.is_main_process:
        finite = [x for x in result.losses if math.isfinite(x)]  # a skipped step's loss is NaN: not JSON
        first, last = (finite[0], finite[-1]) if finite else (None, None)
        say(json.dumps({"output": str(result.output), "steps": result.step, "first_loss": first,
                          "last_loss": last, "skipped_steps": result.skipped_steps,
                          "num_processes": trainer.accelerator.num_processes,
                          "checkpoints": [str(c) for c in result.checkpoints]}))
        what = "LoRA" if trainer.adapted else "weights"
        losses = f"; loss {first:.4g} -> {last:.4g}" if first is not None else ""
        say(f"{what} written to {result.output} (step {result.step}{losses}; {timer.summary()})")
    return 0


COMMAND = Command(
    "train", "train a LoRA / IC-LoRA from a YAML config (accelerate + peft)", OPTIONS, run, check=check,
    prepare=prepare, description="Train an LTX-2 LoRA or IC-LoRA on `ltx2 preprocess` output; writes the LoRA in "
                                 "the official format (diffusion_model. keys) with its metadata, loss.csv and "
                                 "loss.png.", loading="PyTorch, diffusers and accelerate",
    imports=("diffusers_ltx2.training.trainer",))
add_parser = COMMAND.add_to
