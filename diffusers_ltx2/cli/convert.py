"""`ltx2 convert` and `ltx2 convert-lora`: official single-file checkpoints and LoRAs -> diffusers layout.

The same parsers back the standalone scripts `conversion/convert_checkpoint.py` and `conversion/convert_lora.py`.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

from .command import Command
from .options import Option, add_options, text


def _upsampler_dtype(name: str):
    import torch

    return {"keep": None, "bf16": torch.bfloat16, "fp32": torch.float32}[name]


def _convert_dtype(raw) -> str:
    """`keep`, or a dtype name (`bf16` / `bfloat16`, `fp32` / `float32`) -> `"keep"` / `"bf16"` / `"fp32"`."""
    from .common import dtype_name

    if raw == "keep":
        return raw
    short = {"bfloat16": "bf16", "float32": "fp32"}.get(dtype_name(raw))
    if short is None:
        raise ValueError(f"choose keep, bf16 or fp32, got {raw!r}")
    return short


CONVERT_OPTIONS = (
    Option("src", "official LTX-2 .safetensors file (2.0 / 2.3), an upsampler file alone, or the LTX-2.5 files (one "
                  "per component: transformer, text encoder, video VAE(s), audio VAE, optionally duration head, "
                  "upscalers, distilled LoRA) named one by one or as the folder holding them", text, repeat=True,
           required=True, metavar="SRC"),
    Option("dst", "output folder (must not exist unless --overwrite)", text),
    Option("--dtype", "dtype of floating tensors: keep, bf16 or fp32", _convert_dtype, default="keep",
           metavar="{keep,bf16,fp32}"),
    Option("--fp8", "FP8 files: dequantize to bf16 (weight * weight_scale) or keep float8 weights + scales",
           choices=("dequantize", "keep"), default_text="none: required for FP8 files"),
    Option("--max-shard-size", "largest safetensors shard, e.g. 5GB, 500MB", text, default="5GB"),
    Option("--gemma", "Gemma folder (transformers format) to add as text_encoder/tokenizer", text, metavar="PATH"),
    Option("--overwrite", "replace an existing output folder after success", switch=True),
    Option("--no-progress", "no progress bar", switch=True),
    Option("--upsampler", "official ltx-2-spatial-upscaler-*.safetensors to add as the latent_upsampler/ component "
                          "(two-stage generation)", text, metavar="PATH"),
)

CONVERT_LORA_OPTIONS = (
    Option("src", "official LoRA .safetensors", text),
    Option("dst", "output .safetensors", text),
    Option("--dtype", "dtype of the factors: keep, bf16 or fp32", _convert_dtype, default="keep",
           metavar="{keep,bf16,fp32}"),
    Option("--overwrite", "replace an existing output file", switch=True),
)


def build_convert_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """Arguments of ``convert`` (pass an existing (sub)parser to extend it)."""
    return add_options(parser or argparse.ArgumentParser(
        description="Convert an official LTX-2 checkpoint to a diffusers folder"), CONVERT_OPTIONS)


def _run(command: str, convert) -> int:
    """Run ``convert()`` and map its outcome to an exit code: 0; 2 with one message for a refused input or a
    failed write (the OS error named: disk full, permission denied...); 130 on Ctrl-C. Warnings (NaN/inf
    weights) are printed as they come."""
    from diffusers_ltx2.cli import describe_error
    from diffusers_ltx2.conversion.errors import ConversionError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", RuntimeWarning)
            warnings.showwarning = _show_warning
            out = convert()
    except KeyboardInterrupt:
        print(f"{command}: interrupted (no partial output is left behind)", file=sys.stderr)
        return 130
    except (ConversionError, ValueError, OSError) as exc:
        print(f"{command}: error: {describe_error(exc)}", file=sys.stderr)
        return 2
    print(out)
    return 0


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr)


def run_convert(args: argparse.Namespace) -> int:
    """Execute a parsed ``convert`` command; returns a process exit code."""
    def convert():
        from diffusers_ltx2.conversion import upsampler as U
        from diffusers_ltx2.conversion.convert import convert_single_file

        sources = list(args.src) if isinstance(args.src, (list, tuple)) else [args.src]
        if len(sources) == 1 and U.is_upsampler_file(sources[0]):  # an upsampler alone -> a model folder
            return U.convert_upsampler_file(sources[0], args.dst, dtype=_upsampler_dtype(args.dtype),
                                            overwrite=args.overwrite)
        upsampler = None
        if getattr(args, "upsampler", None):  # checked before the (long) main conversion
            upsampler = U.load_official_upsampler(args.upsampler, dtype=_upsampler_dtype(args.dtype))
        out = convert_single_file(
            sources[0] if len(sources) == 1 else sources, args.dst, dtype=args.dtype, fp8=args.fp8,
            max_shard_size=args.max_shard_size, gemma_path=args.gemma, progress=not args.no_progress,
            overwrite=args.overwrite,
        )
        if upsampler is not None:
            U.add_upsampler_to_folder(out, upsampler)
        return out

    return _run("ltx2 convert", convert)



def build_convert_lora_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """Arguments of ``convert-lora`` (pass an existing (sub)parser to extend it)."""
    return add_options(parser or argparse.ArgumentParser(
        description="Convert an official LTX-2 LoRA to diffusers/PEFT keys"), CONVERT_LORA_OPTIONS)


def _check_lora_destination(src: str, dst: str, overwrite: bool) -> None:
    """A LoRA's output is one file: never the source itself, never a folder; an existing file only with
    ``overwrite``, and only when it is a safetensors file (a LoRA written before)."""
    from diffusers_ltx2.conversion.errors import ConversionError

    if os.path.exists(dst) and os.path.exists(src) and os.path.samefile(src, dst):
        raise ConversionError(f"the destination {dst} is the source file; choose another output path")
    if os.path.isdir(dst):
        raise ConversionError(f"the destination {dst} is a folder; give a .safetensors file path")
    if os.path.lexists(dst) and not overwrite:
        raise ConversionError(f"{dst} already exists (pass --overwrite to replace it)")
    if os.path.lexists(dst):  # --overwrite replaces a safetensors file, never an arbitrary one
        from diffusers_ltx2.conversion.streaming import read_header

        try:
            read_header(dst)
        except ConversionError:
            raise ConversionError(f"{dst} is not a .safetensors file; --overwrite only replaces a LoRA file "
                                  "(choose another output path)") from None


def run_convert_lora(args: argparse.Namespace) -> int:
    """Execute a parsed ``convert-lora`` command; returns a process exit code."""
    def convert():
        from diffusers_ltx2.conversion.lora import convert_lora_file

        _check_lora_destination(args.src, args.dst, args.overwrite)
        return convert_lora_file(args.src, args.dst, dtype=args.dtype, overwrite=args.overwrite)

    return _run("ltx2 convert-lora", convert)



def check_convert(args) -> None:
    """Before anything is imported: every source is a file or a folder of LTX-2.5 files (not a converted pipeline
    folder: `conversion.files.list_set_files`), and the destination neither is nor holds a source nor exists
    without `--overwrite` (`conversion.output_dir.check_destination`); both need no torch. The conversion checks
    the rest, e.g. what `--overwrite` may replace."""
    from ..conversion.files import list_set_files
    from ..conversion.output_dir import check_destination

    # a converted (pipeline) folder or a folder without .safetensors files: ConversionError (a ValueError)
    for path in list_set_files(args.src):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file")
    if not args.overwrite:
        check_destination(args.dst, [p for p in (*args.src, args.gemma, args.upsampler) if p])


def _resolved(command, namespace, name: str):
    """The checked values of a standalone script's namespace, or `None` after printing the error (exit 2)."""
    from ..conversion.errors import ConversionError
    from . import describe_error

    try:
        return command.resolve(namespace).args
    except (ValueError, OSError, ConversionError) as err:
        print(f"{name}: error: {describe_error(err)}", file=sys.stderr)
        return None


CONVERT = Command("convert", "official LTX-2 .safetensors -> diffusers folder", CONVERT_OPTIONS,
                  lambda args, timer: run_convert(args), check=check_convert, loading="PyTorch",
                  imports=("torch",),
                  description="Convert an official LTX-2 checkpoint to a diffusers folder")
CONVERT_LORA = Command("convert-lora", "official LTX-2 LoRA -> diffusers/PEFT LoRA file", CONVERT_LORA_OPTIONS,
                       lambda args, timer: run_convert_lora(args), loading="PyTorch", imports=("torch",))


COMMANDS = (CONVERT, CONVERT_LORA)


def add_parser(subparsers) -> None:
    """Register `convert` and `convert-lora`."""
    CONVERT.add_to(subparsers)
    CONVERT_LORA.add_to(subparsers)


def main_convert(argv: list[str] | None = None) -> int:
    """Entry of `python conversion/convert_checkpoint.py SRC DST [...]`."""
    args = _resolved(CONVERT, build_convert_parser().parse_args(argv), "convert")
    return 2 if args is None else run_convert(args)


def main_convert_lora(argv: list[str] | None = None) -> int:
    """Entry of `python conversion/convert_lora.py SRC DST [...]`."""
    args = _resolved(CONVERT_LORA, build_convert_lora_parser().parse_args(argv), "convert-lora")
    return 2 if args is None else run_convert_lora(args)
