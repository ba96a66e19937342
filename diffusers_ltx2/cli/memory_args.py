"""The CLI's memory and speed options: `--quantize`, `--transformer-gguf`, `--text-encoder-quantize`, `--offload`,
`--offload-folder`, `--vram-budget`, `--compile`, `--attention`; checked before anything heavy is imported
(`check_memory_arguments`), then before any model loads (`prepare_memory_arguments`: the GGUF file's header, the
attention backend's package; `memory_settings`: a `--vram-budget` nothing fits is refused) and applied by
`load_pipeline`."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from ..memory_modes import ATTENTION_BACKENDS, OFFLOAD_MODES, QUANTIZATION_MODES, TEXT_ENCODER_QUANTIZATION_MODES
from .options import Option, text

_UNITS = {"": 1, "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4,
          "kib": 1024, "mib": 1024**2, "gib": 1024**3, "k": 1024, "m": 1024**2, "g": 1024**3}

GROUP = "memory"
SPEED_GROUP = "speed"


def parse_bytes(text) -> int:
    """`"16GB"` -> 16e9, `"16GiB"` / `"16G"` -> 16 x 2^30, `"1500000"` -> bytes. Raises `ValueError`."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text or ""))
    if not m or m.group(2).lower() not in _UNITS or float(m.group(1)) <= 0:
        raise ValueError(f"bad memory size {text!r}; use e.g. 16GB, 12GiB or 24G")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


MEMORY_OPTIONS = (
    Option("--quantize", "quantize the transformer at load (fp8-cast: official float8 cast; fp8-scaled-mm: official "
                         "float8 matmul; fp8/int8/int4: optimum-quanto; torchao-*: torchao, some need a recent "
                         "NVIDIA GPU)", choices=QUANTIZATION_MODES, group=GROUP),
    Option("--transformer-gguf", "load the transformer from a community GGUF file (city96-style; the model folder "
                                 "gives the config and the other components); not with --quantize", text,
           metavar="PATH", group=GROUP),
    Option("--text-encoder-quantize", "quantize the Gemma text encoder at load (optimum-quanto)",
           choices=TEXT_ENCODER_QUANTIZATION_MODES, group=GROUP),
    Option("--offload", "weight streaming: model (whole components, moved to the GPU in turn), blocks (one "
                        "transformer block at a time), disk (blocks from files in --offload-folder)",
           choices=OFFLOAD_MODES, group=GROUP),
    Option("--offload-folder", "folder for --offload disk", metavar="PATH", group=GROUP),
    Option("--vram-budget", "e.g. 16GB: choose quantization, offload and VAE tiling that fit, print the plan "
                            "(explicit --quantize / --offload win; a --transformer-gguf file keeps its format); "
                            "refused when nothing fits", metavar="SIZE", group=GROUP),
    # the older spelling of --offload model
    Option("--cpu-offload", "same as --offload model", switch=True, hidden=True, group=GROUP),
    Option("--compile", "regional torch.compile of the transformer blocks (the first denoising step compiles); "
                        "BACKEND: torch.compile's", text, const="inductor", metavar="BACKEND",
           default_text="off; inductor when given without BACKEND", group=SPEED_GROUP),
    Option("--attention", "attention backend of the transformer (diffusers' dispatcher; flash / sage need their "
                          "packages and a GPU)", choices=tuple(ATTENTION_BACKENDS), default_text="native (torch SDPA)",
           group=SPEED_GROUP),
    Option("--video-decoder", "LTX-2.5 video decoder: diffusion (its diffusion decoder), conv (the VAE's conv "
                              "decoder: much faster, e.g. on a CPU) or auto (the diffusion decoder when loaded)",
           choices=("auto", "diffusion", "conv"), default_text="auto", group=SPEED_GROUP),
)

#: the --quantize modes whose weights are plain tensors, which --offload disk can write to files
_DISK_STORABLE = (None, "fp8-cast", "fp8-scaled-mm")


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
    if args.transformer_gguf is not None:
        if args.quantize is not None:
            raise ValueError("--transformer-gguf loads a quantized transformer: pass no --quantize with it")
        if not os.path.isfile(args.transformer_gguf):
            raise FileNotFoundError(f"--transformer-gguf: GGUF file not found: {args.transformer_gguf}")
    if args.offload == "disk":
        if not args.offload_folder:
            raise ValueError("--offload disk needs --offload-folder PATH (a folder for the weight files)")
        if os.path.exists(args.offload_folder) and not os.path.isdir(args.offload_folder):
            raise ValueError(f"--offload-folder {args.offload_folder} is a file, not a folder")
        if args.transformer_gguf is not None:
            raise ValueError("--offload disk cannot store GGUF weights (--transformer-gguf): they are tensor "
                             "subclasses; use --offload blocks")
        subclass = [f"{flag} {q}" for flag, q in (("--quantize", args.quantize),
                                                    ("--text-encoder-quantize", args.text_encoder_quantize))
                    if q not in _DISK_STORABLE]
        if subclass:
            backend = "torchao" if subclass[0].split()[-1].startswith("torchao") else "optimum-quanto"
            raise ValueError(f"--offload disk cannot store {backend} weights ({subclass[0]}): use --offload "
                             "blocks, or --quantize fp8-cast / fp8-scaled-mm (plain float8 tensors) with "
                             "--offload disk")
    elif args.offload_folder is not None:
        raise ValueError("--offload-folder is only used with --offload disk")


def prepare_memory_arguments(args) -> None:
    """Checks needing torch / diffusers / gguf, before any model loads: the `--transformer-gguf` file is a GGUF
    file holding quantized tensors, the `--attention` backend's package is installed. Raises `ValueError` naming
    the flag."""
    if args.transformer_gguf is not None:
        from ..quantization.gguf import gguf_file_quantization

        try:
            gguf_file_quantization(args.transformer_gguf)
        except ValueError as err:
            raise ValueError(f"--transformer-gguf: {err}") from None
    if args.attention is not None:
        from ..acceleration.attention_backends import check_attention_backend

        try:
            check_attention_backend(args.attention)
        except ValueError as err:
            raise ValueError(f"--attention: {err}") from None


@dataclass
class MemorySettings:
    quantization: str | None = None
    text_encoder_quantization: str | None = None
    offload: str | None = None
    offload_folder: str | None = None
    vae_budget: int | None = None
    compile: str | None = None  # torch.compile backend
    attention: str | None = None
    gguf_file: str | None = None
    video_decoder: str | None = None  # pipe.video_decoder ("auto" / "diffusion" / "conv"); None: the pipeline's


def memory_settings(args, passes: int, stream=None) -> MemorySettings:
    """The settings to load with: explicit flags, completed by the `--vram-budget` plan (printed), which reads
    the model folder's configs and the LoRA files' headers only (a `--transformer-gguf` file keeps its format).
    Raises `ValueError` when no plan fits the budget."""
    settings = MemorySettings(args.quantize, args.text_encoder_quantize, args.offload, args.offload_folder,
                              compile=args.compile, attention=args.attention, gguf_file=args.transformer_gguf,
                              video_decoder=getattr(args, "video_decoder", None))
    if args.vram_budget is None:
        return settings
    from ..memory.budget import Clip, estimate, format_bytes, plan
    from ..memory.footprint import footprint_from_folder, lora_parameters_in_files

    budget = parse_bytes(args.vram_budget)
    fp = footprint_from_folder(args.model)
    clip = Clip(args.num_frames, args.height, args.width, args.frame_rate,
                text_tokens=args.max_sequence_length or 1024)
    loras = lora_parameters_in_files(lora_files(args))
    fixed = None
    if settings.gguf_file is not None:
        from ..quantization.gguf import gguf_file_quantization

        fixed = gguf_file_quantization(settings.gguf_file)
    chosen = plan(fp, clip, budget, passes=passes, lora_parameters=loras, fixed_quantization=fixed)
    if fixed is None:
        settings.quantization = settings.quantization or chosen.quantization
    settings.text_encoder_quantization = settings.text_encoder_quantization or (
        chosen.text_encoder_quantization if fp.text_encoder else None)
    settings.offload = settings.offload or chosen.offload
    final = estimate(fp, clip, passes=passes, quantization=fixed or settings.quantization,
                     text_encoder_quantization=settings.text_encoder_quantization, offload=settings.offload,
                     vae_tiling=chosen.vae_tiling, budget=budget, lora_parameters=loras)
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


def lora_files(args) -> list[str]:
    """The LoRA files a command will load (`--lora`, the two-stage `--distilled-lora PATH[:STRENGTH]`), for the
    `--vram-budget` plan."""
    files = [spec.path for spec in getattr(args, "lora", None) or []]
    distilled = getattr(args, "distilled_lora", None)
    if distilled:
        files.append(distilled.path)
    return files


def apply_memory_settings(pipe, settings: MemorySettings, device) -> None:
    """Attention backend and compilation (before offloading: its hooks then wrap the compiled blocks), offload
    (or move to `device`) and the VAE tiling budget."""
    from ..memory import apply_offload

    if settings.attention is not None:
        pipe.set_attention_backend(settings.attention)
    if settings.compile:
        pipe.compile(backend=settings.compile)
    apply_offload(pipe, settings.offload, device, offload_folder=settings.offload_folder)
    pipe.vae_memory_budget = settings.vae_budget
    if settings.video_decoder is not None:
        pipe.video_decoder = settings.video_decoder
