"""The CLI's memory and speed options: `--quantize`, `--text-encoder-quantize`, `--offload`, `--offload-folder`,
`--vram-budget`, `--compile`, `--attention`; checked before any model loads, applied by `load_pipeline`."""

from __future__ import annotations

import re
from dataclasses import dataclass

_UNITS = {"": 1, "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4,
          "kib": 1024, "mib": 1024**2, "gib": 1024**3, "k": 1024, "m": 1024**2, "g": 1024**3}


def parse_bytes(text: str) -> int:
    """`"16GB"` -> 16e9, `"16GiB"` / `"16G"` -> 16 x 2^30, `"1500000"` -> bytes. Raises `ValueError`."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text or "")
    if not m or m.group(2).lower() not in _UNITS or float(m.group(1)) <= 0:
        raise ValueError(f"bad memory size {text!r}; use e.g. 16GB, 12GiB or 24G")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def add_memory_arguments(p) -> None:
    """Register the memory options on a subcommand parser (one argument group)."""
    from ..memory_modes import ATTENTION_BACKENDS, OFFLOAD_MODES, QUANTIZATION_MODES, TEXT_ENCODER_QUANTIZATION_MODES

    g = p.add_argument_group("memory")
    g.add_argument("--quantize", choices=QUANTIZATION_MODES, default=None,
                   help="quantize the transformer at load (fp8-cast: official float8 cast; fp8-scaled-mm: "
                        "official float8 matmul; fp8/int8/int4: optimum-quanto; torchao-*: torchao, some need a "
                        "recent NVIDIA GPU)")
    g.add_argument("--transformer-gguf", metavar="PATH", default=None,
                   help="load the transformer from a community GGUF file (city96-style; the model folder gives the "
                        "config and the other components)")
    g.add_argument("--text-encoder-quantize", choices=TEXT_ENCODER_QUANTIZATION_MODES, default=None,
                   help="quantize the Gemma text encoder at load (optimum-quanto)")
    g.add_argument("--offload", choices=OFFLOAD_MODES, default=None,
                   help="weight streaming: model (whole components), blocks (one transformer block at a time), "
                        "disk (blocks from files in --offload-folder)")
    g.add_argument("--offload-folder", default=None, help="folder for --offload disk")
    g.add_argument("--vram-budget", default=None,
                   help="e.g. 16GB: choose quantization, offload and VAE tiling that fit, print the plan "
                        "(explicit --quantize / --offload win)")
    s = p.add_argument_group("speed")
    s.add_argument("--compile", nargs="?", const="inductor", default=None, metavar="BACKEND",
                   help="regional torch.compile of the transformer blocks (the first denoising step compiles); "
                        "BACKEND: torch.compile's, default inductor")
    s.add_argument("--attention", choices=list(ATTENTION_BACKENDS), default=None,
                   help="attention backend of the transformer (diffusers' dispatcher; flash / sage need their "
                        "packages and a GPU; default: torch SDPA)")


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


def check_memory_arguments(args) -> None:
    """Option checks needing no model (exit code 2 on bad input)."""
    from ..memory import check_offload

    if args.vram_budget is not None:
        parse_bytes(args.vram_budget)
    if getattr(args, "cpu_offload", False) and args.offload is not None:
        raise ValueError("pass either --cpu-offload or --offload, not both")
    check_offload(args.offload, disk_path=args.offload_folder,
                  quantizations=(args.quantize, args.text_encoder_quantize))
    if args.offload_folder is not None and args.offload != "disk":
        raise ValueError("--offload-folder is only used with --offload disk")
    gguf = getattr(args, "transformer_gguf", None)
    if gguf is not None:
        if args.quantize is not None:
            raise ValueError("--transformer-gguf loads a quantized transformer: pass no --quantize with it")
        from ..quantization.gguf import gguf_file_quantization

        gguf_file_quantization(gguf)  # exists and is a GGUF file
    if getattr(args, "attention", None) is not None:
        from ..acceleration.attention_backends import check_attention_backend

        check_attention_backend(args.attention)


def memory_settings(args, passes: int, stream=None) -> MemorySettings:
    """The settings to load with: explicit flags, completed by the `--vram-budget` plan (printed), which reads
    the model folder's configs only."""
    settings = MemorySettings(args.quantize, args.text_encoder_quantize,
                              "model" if getattr(args, "cpu_offload", False) else args.offload, args.offload_folder,
                              compile=getattr(args, "compile", None), attention=getattr(args, "attention", None),
                              gguf_file=getattr(args, "transformer_gguf", None))
    if args.vram_budget is None:
        return settings
    from ..memory.budget import Clip, estimate, plan
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
    if settings.offload == "disk" and not settings.offload_folder:
        raise ValueError("--offload disk needs --offload-folder")
    settings.vae_budget = max(1, budget - (final.peak - next(v for k, v in final.parts.items()
                                                             if k.startswith("VAE"))))
    print("memory plan (--vram-budget):\n" + final.describe(), file=stream, flush=True)
    return settings


def lora_files(args) -> list[str]:
    """The LoRA files a command will load (`--lora`, the two-stage `--distilled-lora PATH[:STRENGTH]`)."""
    files = list(getattr(args, "lora", None) or [])
    distilled = getattr(args, "distilled_lora", None)
    if distilled:
        from .two_stage import parse_lora_spec

        files.append(parse_lora_spec(distilled)[0])
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
