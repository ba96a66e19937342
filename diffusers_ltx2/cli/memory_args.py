"""The CLI's memory options: `--quantize`, `--text-encoder-quantize`, `--offload`, `--offload-folder`,
`--vram-budget`; checked before anything heavy is imported (`check_memory_arguments`), planned before any model
loads (`memory_settings`: a `--vram-budget` nothing fits is refused) and applied by `load_pipeline`."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from ..memory_modes import OFFLOAD_MODES, QUANTIZATION_MODES, TEXT_ENCODER_QUANTIZATION_MODES
from .options import Option

_UNITS = {"": 1, "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4,
          "kib": 1024, "mib": 1024**2, "gib": 1024**3, "k": 1024, "m": 1024**2, "g": 1024**3}

GROUP = "memory"


def parse_bytes(text) -> int:
    """`"16GB"` -> 16e9, `"16GiB"` / `"16G"` -> 16 x 2^30, `"1500000"` -> bytes. Raises `ValueError`."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text or ""))
    if not m or m.group(2).lower() not in _UNITS or float(m.group(1)) <= 0:
        raise ValueError(f"bad memory size {text!r}; use e.g. 16GB, 12GiB or 24G")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


MEMORY_OPTIONS = (
    Option("--quantize", "quantize the transformer at load (fp8-cast: official float8 cast; fp8/int8/int4: "
                         "optimum-quanto)", choices=QUANTIZATION_MODES, group=GROUP),
    Option("--text-encoder-quantize", "quantize the Gemma text encoder at load (optimum-quanto)",
           choices=TEXT_ENCODER_QUANTIZATION_MODES, group=GROUP),
    Option("--offload", "weight streaming: model (whole components, moved to the GPU in turn), blocks (one "
                        "transformer block at a time), disk (blocks from files in --offload-folder)",
           choices=OFFLOAD_MODES, group=GROUP),
    Option("--offload-folder", "folder for --offload disk", metavar="PATH", group=GROUP),
    Option("--vram-budget", "e.g. 16GB: choose quantization, offload and VAE tiling that fit, print the plan "
                            "(explicit --quantize / --offload win); refused when nothing fits", metavar="SIZE",
           group=GROUP),
    # the older spelling of --offload model
    Option("--cpu-offload", "same as --offload model", switch=True, hidden=True, group=GROUP),
)


def check_memory_arguments(args) -> None:
    """Flag checks needing no model and no import (exit code 2 on bad input); `--cpu-offload` becomes
    `--offload model`."""
    if args.vram_budget is not None:
        try:
            parse_bytes(args.vram_budget)
        except ValueError as err:
            raise ValueError(f"--vram-budget: {err}") from None
    if args.cpu_offload:
        if args.offload is not None:
            raise ValueError("pass either --cpu-offload or --offload, not both (--cpu-offload is --offload model)")
        args.offload, args.cpu_offload = "model", False
    if args.offload == "disk":
        if not args.offload_folder:
            raise ValueError("--offload disk needs --offload-folder PATH (a folder for the weight files)")
        if os.path.exists(args.offload_folder) and not os.path.isdir(args.offload_folder):
            raise ValueError(f"--offload-folder {args.offload_folder} is a file, not a folder")
        quanto = [f"{flag} {q}" for flag, q in (("--quantize", args.quantize),
                                                  ("--text-encoder-quantize", args.text_encoder_quantize))
                  if q not in (None, "fp8-cast")]
        if quanto:
            raise ValueError(f"--offload disk cannot store optimum-quanto weights ({quanto[0]}): use --offload "
                             "blocks, or --quantize fp8-cast (plain float8 tensors) with --offload disk")
    elif args.offload_folder is not None:
        raise ValueError("--offload-folder is only used with --offload disk")


@dataclass
class MemorySettings:
    quantization: str | None = None
    text_encoder_quantization: str | None = None
    offload: str | None = None
    offload_folder: str | None = None
    vae_budget: int | None = None


def memory_settings(args, passes: int, stream=None) -> MemorySettings:
    """The settings to load with: explicit flags, completed by the `--vram-budget` plan (printed), which reads
    the model folder's configs only. Raises `ValueError` when no plan fits the budget."""
    settings = MemorySettings(args.quantize, args.text_encoder_quantize, args.offload, args.offload_folder)
    if args.vram_budget is None:
        return settings
    from ..memory.budget import Clip, estimate, format_bytes, plan
    from ..memory.footprint import footprint_from_folder

    budget = parse_bytes(args.vram_budget)
    fp = footprint_from_folder(args.model)
    clip = Clip(args.num_frames, args.height, args.width, args.frame_rate,
                text_tokens=args.max_sequence_length or 1024)
    chosen = plan(fp, clip, budget, passes=passes)
    settings.quantization = settings.quantization or chosen.quantization
    settings.text_encoder_quantization = settings.text_encoder_quantization or (
        chosen.text_encoder_quantization if fp.text_encoder else None)
    settings.offload = settings.offload or chosen.offload
    final = estimate(fp, clip, passes=passes, quantization=settings.quantization,
                     text_encoder_quantization=settings.text_encoder_quantization, offload=settings.offload,
                     vae_tiling=chosen.vae_tiling, budget=budget)
    if not final.fits:
        raise ValueError(f"--vram-budget {args.vram_budget} = {format_bytes(budget)}: does not fit; the plan "
                         f"({final.describe().splitlines()[0]}) needs {format_bytes(final.peak)}: lower --num-frames "
                         "/ --height / --width, add --sequential-passes, or raise the budget")
    if settings.offload == "disk" and not settings.offload_folder:
        raise ValueError("--vram-budget chose --offload disk: pass --offload-folder PATH for the weight files")
    settings.vae_budget = final.vae_budget  # what the resident weights leave to the VAE decode
    print(f"memory plan (--vram-budget {args.vram_budget} = {format_bytes(budget)}):\n" + final.describe(),
          file=stream, flush=True)
    return settings


def apply_memory_settings(pipe, settings: MemorySettings, device) -> None:
    """Offload (or move to `device`) and set the VAE tiling budget."""
    from ..memory import apply_offload

    apply_offload(pipe, settings.offload, device, offload_folder=settings.offload_folder)
    pipe.vae_memory_budget = settings.vae_budget
