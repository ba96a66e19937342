"""Helpers shared by the `ltx2` subcommands: argument types and checks, device/dtype parsing, stage timing,
loading the pipeline, writing the clip.

Nothing here imports torch or diffusers at module level: parsers are built (and `--help` printed) without them.
Every check that needs no model runs before any model loads; a failed check raises `ValueError` /
`FileNotFoundError`, which the entry point prints as one line with exit code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time

DTYPES = {"fp32": "float32", "float32": "float32", "bf16": "bfloat16", "bfloat16": "bfloat16",
          "fp16": "float16", "float16": "float16"}


# -- argparse types (bad values end in a one-line argparse error, exit 2, before anything is imported) ----------

def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def finite_float(text: str) -> float:
    """argparse type: a finite number."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def strength(text: str) -> float:
    """argparse type: a number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return value


# -- checks needing no model ----------------------------------------------------------------------------------

def parse_dtype(name: str):
    """`"bf16"` -> `torch.bfloat16` etc.; `ValueError` naming the choices otherwise."""
    try:
        attr = DTYPES[name.lower()]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; choose one of {sorted(set(DTYPES))}") from None
    import torch

    return getattr(torch, attr)


def default_device() -> str:
    """The default torch device: "cuda" when a GPU is available, else "cpu"."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def check_device(name: str | None) -> str:
    """The torch device to use (`None`: the default); `ValueError` for a malformed name or one this machine lacks
    (CUDA asked on a CPU-only PyTorch build or without a visible GPU, an out-of-range GPU index, no MPS)."""
    import torch

    if name is None:
        return default_device()
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ValueError(f"invalid --device {name!r}; examples: cpu, cuda, cuda:1, mps") from None
    if device.type == "cuda":
        if not torch.backends.cuda.is_built():
            raise ValueError(f"--device {name}: this PyTorch build has no CUDA support (use --device cpu, or "
                             "install a CUDA build of PyTorch)")
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name}: no CUDA GPU is visible (use --device cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {name}: MPS is not available on this machine")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"--device {name}: unsupported device type {device.type!r} (use cpu, cuda or mps)")
    return str(device)


def check_output_path(path: str, suffix: str = ".mp4") -> str:
    """The output must be a `suffix` file path (not an existing folder) in an existing folder."""
    if os.path.isdir(path):
        raise ValueError(f"--output {path!r} is a folder; give a {suffix} file path")
    if not path.lower().endswith(suffix):
        raise ValueError(f"output must be a {suffix} file, got {path!r}")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"output folder does not exist: {folder}")
    return path


def check_model_folder(path: str, optional: tuple[str, ...] = ()) -> str:
    """`path` must be a diffusers pipeline folder (`model_index.json`), e.g. the output of `ltx2 convert`, with a
    subfolder for every component its index lists (except those in `optional`, which will not be loaded)."""
    if not os.path.isdir(path):
        raise FileNotFoundError(f"model folder not found: {path}")
    index = os.path.join(path, "model_index.json")
    if not os.path.isfile(index):
        raise ValueError(f"{path} is not a diffusers pipeline folder (no model_index.json); convert an official "
                         "checkpoint with `ltx2 convert CHECKPOINT FOLDER`")
    try:
        with open(index) as f:
            entries = json.load(f)
    except ValueError as err:
        raise ValueError(f"{index} is not valid JSON ({err})") from None
    if not isinstance(entries, dict):
        raise ValueError(f"{index} is not a diffusers model index (a JSON object)")
    missing = [name for name, entry in entries.items()
               if not name.startswith("_") and name not in optional and isinstance(entry, list) and len(entry) == 2
               and entry[0] is not None and not os.path.isdir(os.path.join(path, name))]
    if missing:
        raise ValueError(f"{path} is incomplete: model_index.json lists {', '.join(missing)} but the folder has no "
                         f"{', '.join(m + '/' for m in missing)}")
    return path


def check_image_file(path: str) -> str:
    """`path` must be an image file PIL can read."""
    from PIL import Image, UnidentifiedImageError

    if not os.path.isfile(path):
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        with Image.open(path) as image:
            image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ValueError(f"{path} is not a readable image ({err})") from None
    return path


def check_video_file(path: str) -> str:
    """`path` must be a video file with at least one video stream (read through PyAV)."""
    import av

    if not os.path.isfile(path):
        raise FileNotFoundError(f"video file not found: {path}")
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise ValueError(f"{path} has no video stream")
            next(container.decode(video=0))  # the first frame decodes (FFmpeg guesses formats by name)
    except (av.error.FFmpegError, OSError, StopIteration) as err:
        reason = "no frames" if isinstance(err, StopIteration) else err
        raise ValueError(f"{path} is not a readable video ({reason})") from None
    return path


_LORA_MARKERS = ("lora_A", "lora_B", "lora_down", "lora_up", "lora.down", "lora.up")


def check_lora_file(path: str) -> str:
    """`path` must be a safetensors file with LoRA factor keys (its header is read, not its tensors)."""
    from ..conversion.errors import ConversionError
    from ..conversion.streaming import read_header

    if not os.path.isfile(path):
        raise FileNotFoundError(f"LoRA file not found: {path}")
    try:
        tensors, _ = read_header(path)
    except ConversionError as err:
        raise ValueError(f"{path} is not a LoRA .safetensors file ({err})") from None
    if not any(marker in key for key in tensors for marker in _LORA_MARKERS):
        raise ValueError(f"{path} is not a LoRA file: none of its {len(tensors)} tensors are LoRA factors "
                         "(lora_A/lora_B or lora_down/lora_up)")
    return path


def check_conditioning_file(path: str) -> str:
    """`path` must be a conditioning file `ltx2 encode` (or ComfyUI) wrote; it is small and read in full."""
    from ..loaders.conditioning_file import load_conditioning

    if not os.path.isfile(path):
        raise FileNotFoundError(f"conditioning file not found: {path}")
    try:
        load_conditioning(path)
    except ValueError as err:
        raise ValueError(f"{path} is not a usable conditioning file ({err})") from None
    except Exception as err:  # safetensors' own error type for a file that is not safetensors at all
        if type(err).__name__ != "SafetensorError":
            raise
        raise ValueError(f"{path} is not a conditioning file ({err})") from None
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
    p.add_argument("--output", required=True, help="output .mp4 path (.wav / .flac for audio-only output)")
    p.add_argument("--num-frames", type=positive_int, default=121, help="8k+1 frames")
    p.add_argument("--height", type=positive_int, default=512, help=height_help)
    p.add_argument("--width", type=positive_int, default=768, help=height_help)
    p.add_argument("--frame-rate", type=positive_float, default=24.0, help="frames per second")
    p.add_argument("--steps", type=positive_int, default=40, help="denoising steps")
    p.add_argument("--distilled", action="store_true", help="use the 8-step distilled sigmas (distilled checkpoints)")
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--dtype", default="bf16", help="model dtype: bf16, fp16 or fp32")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available)")
    p.add_argument("--cpu-offload", action="store_true", help="enable diffusers model CPU offload (needs a GPU)")
    p.add_argument("--sequential-passes", action="store_true", help="run guidance passes one by one (less memory)")
    p.add_argument("--max-sequence-length", type=positive_int, default=None, help="padded prompt length (local Gemma)")
    add_guidance_arguments(p)
    from .memory_args import add_memory_arguments

    add_memory_arguments(p)


def check_clip_arguments(args, extra_files=(), *, audio_output: bool = False) -> None:
    """The checks of `add_clip_arguments`' options that need no model (bad input exits with code 2 at once).

    `audio_output`: the output is a .wav / .flac (audio-only), checked by the caller, not an .mp4.
    Also records `args.device` (the resolved device) and `args.text_encoder_needed` (False when every prompt
    comes from a conditioning file, so the text encoder is not loaded).
    """
    from ..export import check_fps
    from ..pipelines import validation as V

    if not audio_output:
        check_output_path(args.output)
    if (args.prompt is None) == (args.conditioning is None):
        raise ValueError("pass exactly one of --prompt or --conditioning")
    if args.negative_prompt is not None and args.negative_conditioning is not None:
        raise ValueError("pass at most one of --negative-prompt or --negative-conditioning")
    check_model_folder(args.model, optional=("text_encoder", "tokenizer"))  # those two: once we know they load
    for path in extra_files:
        if path is not None and not os.path.isfile(path):
            raise FileNotFoundError(f"file not found: {path}")
    V.check_num_frames(args.num_frames)
    V.check_resolution(args.height, args.width)
    check_fps(args.frame_rate)  # the MP4 writer's range, checked now rather than after generating
    parse_dtype(args.dtype)
    from .memory_args import check_memory_arguments

    check_memory_arguments(args)  # before the device checks: conflicting memory flags are the first thing to fix
    args.device = check_device(args.device)
    if args.cpu_offload and not args.device.startswith("cuda"):
        raise ValueError("--cpu-offload moves models between the CPU and a GPU; it needs a CUDA --device")
    from ..quantization import check_quantized_runtime

    check_quantized_runtime(args.quantize, args.device, parse_dtype(args.dtype))  # int8 + bf16 on CPU crashes
    for path in (args.conditioning, args.negative_conditioning):
        if path is not None:
            check_conditioning_file(path)
    guider = clip_guider(args)
    negative_from_text = args.negative_prompt is not None or (
        args.negative_conditioning is None and guider.uses_negative_prompt)
    args.text_encoder_needed = args.prompt is not None or negative_from_text
    if args.text_encoder_needed:
        check_model_folder(args.model)


def clip_guider(args):
    """The guider the flags describe (built once; bad guidance values raise `ValueError` here)."""
    if getattr(args, "_guider", None) is None:
        from .guidance_args import guider_from_args

        args._guider = guider_from_args(args)
    return args._guider


def load_pipeline(cls, args, timer: StageTimer, setup=None):
    """`cls.from_pretrained(args.model)` in the requested dtype and quantization (without the text encoder when
    no prompt needs it), optional `setup(pipe)` (e.g. LoRAs), then onto the device or offloaded (`memory_args`)."""
    from .memory_args import apply_memory_settings, memory_settings

    device = args.device or default_device()
    settings = memory_settings(args, guidance_passes(args) if args.vram_budget else 1)
    from ..quantization import check_quantized_runtime

    check_quantized_runtime(settings.quantization, device, parse_dtype(args.dtype))  # --vram-budget's choice too
    extra = {} if getattr(args, "text_encoder_needed", True) else {"text_encoder": None, "tokenizer": None}
    if settings.gguf_file is not None:
        extra["gguf_file"] = settings.gguf_file
    with timer.stage("load"):
        pipe = cls.from_pretrained(args.model, dtype=parse_dtype(args.dtype), quantization=settings.quantization,
                                   text_encoder_quantization=settings.text_encoder_quantization, **extra)
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
    import torch

    from ..schedulers import DISTILLED_SIGMAS

    return dict(
        prompt=args.prompt, negative_prompt=args.negative_prompt,
        prompt_embeds=args.conditioning, negative_prompt_embeds=args.negative_conditioning,
        height=args.height, width=args.width, num_frames=args.num_frames, frame_rate=args.frame_rate,
        num_inference_steps=args.steps, sigmas=list(DISTILLED_SIGMAS) if args.distilled else None,
        guider=clip_guider(args), max_batch_passes=1 if args.sequential_passes else None,
        max_sequence_length=args.max_sequence_length,
        generator=torch.Generator(device="cpu").manual_seed(args.seed),
    )
