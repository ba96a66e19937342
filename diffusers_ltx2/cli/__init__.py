"""The `ltx2` command line (also `python -m diffusers_ltx2`).

Each subcommand lives in its own module exposing `add_parser(subparsers)`, which registers an
`argparse` sub-parser whose `func` default takes the parsed namespace and returns an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMANDS = ("generate", "demo", "encode", "convert", "control", "preprocess", "train")  # convert also registers convert-lora


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every available subcommand."""
    parser = argparse.ArgumentParser(prog="ltx2", description="LTX-2 audio+video generation with diffusers")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as err:
            if err.name == f"{__name__}.{name}":
                continue  # subcommand not shipped in this build
            raise
        module.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `ltx2` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, PermissionError) as err:
        print(f"ltx2 {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ltx2 {args.command}: interrupted", file=sys.stderr)
        return 130
