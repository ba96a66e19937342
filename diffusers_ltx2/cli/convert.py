"""`ltx2 convert` and `ltx2 convert-lora`: official single-file checkpoints and LoRAs -> diffusers layout.

The same parsers back the standalone scripts `conversion/convert_checkpoint.py` and `conversion/convert_lora.py`.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings


def _upsampler_dtype(name: str):
    import torch

    return {"keep": None, "bf16": torch.bfloat16, "fp32": torch.float32}[name]


def build_convert_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """Arguments of ``convert`` (pass an existing (sub)parser to extend it)."""
    p = parser or argparse.ArgumentParser(description="Convert an official LTX-2 checkpoint to a diffusers folder")
    p.add_argument("src", nargs="+",
                   help="official LTX-2 .safetensors file (2.0 / 2.3), or the LTX-2.5 files (one per component: "
                        "transformer, text encoder, video VAE(s), audio VAE, optionally duration head, upscalers, "
                        "distilled LoRA) named one by one or as the folder holding them")
    p.add_argument("dst", help="output folder (must not exist unless --overwrite)")
    p.add_argument("--dtype", choices=["keep", "bf16", "fp32"], default="keep", help="dtype of floating tensors")
    p.add_argument("--fp8", choices=["dequantize", "keep"], default=None,
                   help="FP8 files: dequantize to bf16 (weight * weight_scale) or keep float8 weights + scales")
    p.add_argument("--max-shard-size", default="5GB", help="largest safetensors shard, e.g. 5GB, 500MB")
    p.add_argument("--gemma", default=None, help="Gemma folder (transformers format) to add as text_encoder/tokenizer")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder after success")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--upsampler", default=None,
                   help="official ltx-2-spatial-upscaler-*.safetensors to add as the latent_upsampler/ component "
                        "(two-stage generation); SRC may also be an upsampler file alone")
    return p


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
    p = parser or argparse.ArgumentParser(description="Convert an official LTX-2 LoRA to diffusers/PEFT keys")
    p.add_argument("src", help="official LoRA .safetensors")
    p.add_argument("dst", help="output .safetensors")
    p.add_argument("--dtype", choices=["keep", "bf16", "fp32"], default="keep")
    p.add_argument("--overwrite", action="store_true")
    return p


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



def add_parser(subparsers) -> None:
    """Register `convert` and `convert-lora`."""
    p = subparsers.add_parser("convert", help="official LTX-2 .safetensors -> diffusers folder",
                              description=build_convert_parser.__doc__)
    build_convert_parser(p).set_defaults(func=run_convert)
    p = subparsers.add_parser("convert-lora", help="official LTX-2 LoRA -> diffusers/PEFT LoRA file")
    build_convert_lora_parser(p).set_defaults(func=run_convert_lora)


def main_convert(argv: list[str] | None = None) -> int:
    """Entry of `python conversion/convert_checkpoint.py SRC DST [...]`."""
    return run_convert(build_convert_parser().parse_args(argv))


def main_convert_lora(argv: list[str] | None = None) -> int:
    """Entry of `python conversion/convert_lora.py SRC DST [...]`."""
    return run_convert_lora(build_convert_lora_parser().parse_args(argv))
