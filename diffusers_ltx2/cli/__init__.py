"""The `ltx2` command line (also `python -m diffusers_ltx2`).

Each subcommand lives in its own module exposing `add_parser(subparsers)`, which registers an
`argparse` sub-parser whose `func` default takes the parsed namespace and returns an exit code.

Building the parser imports neither torch nor diffusers (subcommand modules import them inside `run`), so
`ltx2 --help` and argument errors answer at once. Exit codes: 0 success, 2 a user error (one line on stderr:
bad argument, missing or unusable file, full disk, permission denied...), 130 Ctrl-C.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import sys

# convert also registers convert-lora
SUBCOMMANDS = ("generate", "retake", "foley", "extend", "demo", "encode", "convert", "control", "preprocess", "train")


class ArgumentParser(argparse.ArgumentParser):
    """`argparse` parser whose errors are one line on stderr (exit 2), pointing at `--help`."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every available subcommand."""
    parser = ArgumentParser(prog="ltx2", description="LTX-2 audio+video generation with diffusers")
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


def describe_error(err: BaseException) -> str:
    """The message of a user error; an `OSError` names the OS error (e.g. "No space left on device (ENOSPC)").
    Notes added on the way (e.g. a cleanup that failed) follow in brackets."""
    if isinstance(err, OSError) and err.errno is not None and err.strerror:
        code = errno.errorcode.get(err.errno, str(err.errno))
        where = f": {err.filename}" if err.filename else ""
        text = f"{err.strerror} ({code}){where}"
    else:
        text = str(err)
    notes = getattr(err, "__notes__", None) or []
    return text + "".join(f" [{note}]" for note in notes)


def _user_errors() -> tuple[type[BaseException], ...]:
    from ..conversion.errors import ConversionError  # light module: no torch/diffusers

    return ValueError, OSError, ConversionError


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `ltx2` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"ltx2 {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if not isinstance(err, _user_errors()):
            raise
        print(f"ltx2 {args.command}: error: {describe_error(err)}", file=sys.stderr)
        return 2
