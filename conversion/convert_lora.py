"""Convert an official LTX-2 LoRA (``diffusion_model.*`` lora_A/B or lora_down/up) to diffusers/PEFT keys.

    python conversion/convert_lora.py ic-lora.safetensors ic-lora-diffusers.safetensors [--dtype keep|bf16|fp32]

Thin wrapper over :func:`diffusers_ltx2.conversion.convert_lora_file`; ``ltx2 convert-lora`` uses :func:`main`.
Metadata such as ``reference_downscale_factor`` is kept.
"""

from __future__ import annotations

import argparse
import sys


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """Arguments of ``convert-lora`` (pass an existing (sub)parser to extend it)."""
    p = parser or argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("src", help="official LoRA .safetensors")
    p.add_argument("dst", help="output .safetensors")
    p.add_argument("--dtype", choices=["keep", "bf16", "fp32"], default="keep")
    p.add_argument("--overwrite", action="store_true")
    return p


def run(args: argparse.Namespace) -> int:
    """Execute a parsed ``convert-lora`` command; returns a process exit code."""
    from diffusers_ltx2.conversion import ConversionError, convert_lora_file

    try:
        out = convert_lora_file(args.src, args.dst, dtype=args.dtype, overwrite=args.overwrite)
    except (ConversionError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(out)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python conversion/convert_lora.py SRC DST [...]``."""
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
