"""Helpers shared by the `ltx2` subcommands: dtype/device parsing, stage timing, writing the clip."""

from __future__ import annotations

import contextlib
import os
import sys
import time

import torch

DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
          "fp16": torch.float16, "float16": torch.float16}


def parse_dtype(name: str) -> torch.dtype:
    """`"bf16"` -> `torch.bfloat16` etc.; clear error otherwise."""
    try:
        return DTYPES[name.lower()]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; choose one of {sorted(set(DTYPES))}") from None


def default_device() -> str:
    """The default torch device: "cuda" when a GPU is available, else "cpu"."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def check_output_path(path: str) -> str:
    """The output's folder must exist and the file must be an .mp4 (checked before any model loads)."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"output folder does not exist: {folder}")
    if not path.lower().endswith(".mp4"):
        raise ValueError(f"output must be an .mp4 file, got {path!r}")
    return path


class StageTimer:
    """Times named stages and prints them as they finish."""

    def __init__(self, stream=None):
        self.stream = stream if stream is not None else sys.stdout  # resolved now, not at import
        self.stages: list[tuple[str, float]] = []

    @contextlib.contextmanager
    def stage(self, name: str):
        """Context manager timing one named stage."""
        start = time.perf_counter()
        yield
        elapsed = time.perf_counter() - start
        self.stages.append((name, elapsed))
        print(f"[{name}] {elapsed:.2f} s", file=self.stream, flush=True)

    def summary(self) -> str:
        """One line: total and per-stage seconds."""
        total = sum(t for _, t in self.stages)
        parts = ", ".join(f"{n} {t:.2f} s" for n, t in self.stages)
        return f"total {total:.2f} s ({parts})"


def write_clip(output, path: str, frame_rate: float) -> str:
    """Write the first clip of a pipeline output (frames + audio) to `path` as MP4."""
    from ..export import export_to_video_with_audio

    return export_to_video_with_audio(output.frames[0], output.audio[0], path, fps=frame_rate,
                                      sample_rate=output.sample_rate)


def add_clip_arguments(p, *, height_help: str = "multiple of 32") -> None:
    """Options every generating subcommand shares: model, prompt, output, clip size, sampling, device."""
    from .guidance_args import add_guidance_arguments

    p.add_argument("--model", required=True, help="diffusers-layout LTX-2 folder (see `ltx2 convert`)")
    p.add_argument("--prompt", help="text prompt (or use --conditioning)")
    p.add_argument("--negative-prompt", default=None)
    p.add_argument("--conditioning", help="saved conditioning file used instead of --prompt")
    p.add_argument("--negative-conditioning", help="saved conditioning file for the negative prompt")
    p.add_argument("--output", required=True, help="output .mp4 path")
    p.add_argument("--num-frames", type=int, default=121, help="8k+1 frames")
    p.add_argument("--height", type=int, default=512, help=height_help)
    p.add_argument("--width", type=int, default=768, help=height_help)
    p.add_argument("--frame-rate", type=float, default=24.0)
    p.add_argument("--steps", type=int, default=40, help="denoising steps")
    p.add_argument("--distilled", action="store_true", help="use the 8-step distilled sigmas (distilled checkpoints)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", default="bf16", help="model dtype: bf16, fp16 or fp32")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available)")
    p.add_argument("--cpu-offload", action="store_true", help="enable diffusers model CPU offload")
    p.add_argument("--sequential-passes", action="store_true", help="run guidance passes one by one (less memory)")
    p.add_argument("--max-sequence-length", type=int, default=None, help="padded prompt length (local Gemma)")
    add_guidance_arguments(p)
    from .memory_args import add_memory_arguments

    add_memory_arguments(p)


def check_clip_arguments(args, extra_files=()) -> None:
    """The checks of `add_clip_arguments`' options that need no model (bad input exits with code 2 at once)."""
    from ..pipelines import validation as V

    check_output_path(args.output)
    if (args.prompt is None) == (args.conditioning is None):
        raise ValueError("pass exactly one of --prompt or --conditioning")
    if not os.path.isdir(args.model):
        raise FileNotFoundError(f"model folder not found: {args.model}")
    for path in (args.conditioning, args.negative_conditioning, *extra_files):
        if path is not None and not os.path.isfile(path):
            raise FileNotFoundError(f"file not found: {path}")
    V.check_num_frames(args.num_frames)
    V.check_resolution(args.height, args.width)
    parse_dtype(args.dtype)
    from .memory_args import check_memory_arguments

    check_memory_arguments(args)


def load_pipeline(cls, args, timer: StageTimer, setup=None):
    """`cls.from_pretrained(args.model)` in the requested dtype and quantization, optional `setup(pipe)` (e.g.
    LoRAs), then onto the device or offloaded (`memory_args`)."""
    from .memory_args import apply_memory_settings, memory_settings

    device = args.device or default_device()
    settings = memory_settings(args, guidance_passes(args) if args.vram_budget else 1)
    with timer.stage("load"):
        pipe = cls.from_pretrained(args.model, dtype=parse_dtype(args.dtype), quantization=settings.quantization,
                                   text_encoder_quantization=settings.text_encoder_quantization)
        if setup is not None:
            setup(pipe)
        apply_memory_settings(pipe, settings, device)
    return pipe


def guidance_passes(args) -> int:
    """Transformer passes batched per call at the first step (1 with --sequential-passes); without guidance
    flags, those of the default guider (the folder's saved guider is not read for the plan)."""
    from ..pipelines.base import default_guider
    from .guidance_args import guider_from_args

    if args.sequential_passes:
        return 1
    guider = guider_from_args(args) or default_guider()
    return max(1, len(guider.plan(0, max(1, args.steps), 1.0).passes))


def clip_call_arguments(args) -> dict:
    """Keyword arguments of a pipeline call taken from `add_clip_arguments`' options."""
    from ..schedulers import DISTILLED_SIGMAS
    from .guidance_args import guider_from_args

    return dict(
        prompt=args.prompt, negative_prompt=args.negative_prompt,
        prompt_embeds=args.conditioning, negative_prompt_embeds=args.negative_conditioning,
        height=args.height, width=args.width, num_frames=args.num_frames, frame_rate=args.frame_rate,
        num_inference_steps=args.steps, sigmas=list(DISTILLED_SIGMAS) if args.distilled else None,
        guider=guider_from_args(args), max_batch_passes=1 if args.sequential_passes else None,
        max_sequence_length=args.max_sequence_length,
        generator=torch.Generator(device="cpu").manual_seed(args.seed),
    )
