"""Convert an official LTX-2 single-file checkpoint into a diffusers pipeline folder.

    python conversion/convert_checkpoint.py ltx-2-19b-dev.safetensors ./ltx2-diffusers \
        [--dtype keep|bf16|fp32] [--fp8 dequantize|keep] [--max-shard-size 5GB] [--gemma PATH] [--overwrite]

Thin wrapper over :func:`diffusers_ltx2.conversion.convert_single_file`; ``ltx2 convert`` uses :func:`main`.
"""

from __future__ import annotations

import argparse
import sys


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """Arguments of ``convert`` (pass an existing (sub)parser to extend it)."""
    p = parser or argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("src", help="official LTX-2 .safetensors file (2.0 or 2.3)")
    p.add_argument("dst", help="output folder (must not exist unless --overwrite)")
    p.add_argument("--dtype", choices=["keep", "bf16", "fp32"], default="keep", help="dtype of floating tensors")
    p.add_argument("--fp8", choices=["dequantize", "keep"], default=None,
                   help="FP8 files: dequantize to bf16 (weight * weight_scale) or keep float8 weights + scales")
    p.add_argument("--max-shard-size", default="5GB", help="largest safetensors shard, e.g. 5GB, 500MB")
    p.add_argument("--gemma", default=None, help="Gemma folder (transformers format) to add as text_encoder/tokenizer")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder after success")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def run(args: argparse.Namespace) -> int:
    """Execute a parsed ``convert`` command; returns a process exit code."""
    from diffusers_ltx2.conversion import ConversionError, convert_single_file

    try:
        out = convert_single_file(
            args.src, args.dst, dtype=args.dtype, fp8=args.fp8, max_shard_size=args.max_shard_size,
            gemma_path=args.gemma, progress=not args.no_progress, overwrite=args.overwrite,
        )
    except (ConversionError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: nothing was written", file=sys.stderr)
        return 130
    print(out)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python conversion/convert_checkpoint.py SRC DST [...]``."""
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
