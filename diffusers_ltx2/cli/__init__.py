"""The `ltx2` command line (also `python -m diffusers_ltx2`).

Each subcommand lives in its own module exposing `COMMAND` (a `cli.command.Command`: its option declarations,
checks and run) and `add_parser(subparsers)`. One argument layer serves them all (`cli.options`): every flag and
the rules between flags are checked, naming the flag and the nearest valid value, before torch / diffusers are
imported (a "loading ..." line is printed while they are) and before any model loads; `resolve(command, values)`
runs the same checks on a plain mapping, for other front ends.

Exit codes: 0 success, 2 a user error (one line on stderr: bad argument, missing or unusable file, full disk,
permission denied...), 130 Ctrl-C. The printed total covers the whole run, from the start of the process.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import sys

# convert also registers convert-lora
SUBCOMMANDS = ("generate", "retake", "foley", "extend", "demo", "encode", "convert", "control", "preprocess", "train",
               "ui")
#: command modules outside this package: the web front end's command lives with it (`diffusers_ltx2.ui` builds on
#: this argument layer, so this package names its module, as every command's, and never imports it statically)
_ELSEWHERE = {"ui": "diffusers_ltx2.ui.command"}


class ArgumentParser(argparse.ArgumentParser):
    """`argparse` parser whose errors are one line on stderr (exit 2), pointing at `--help`."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _modules():
    for name in SUBCOMMANDS:
        module = _ELSEWHERE.get(name, f"{__name__}.{name}")
        try:
            yield importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name != module:
                raise  # else: subcommand not shipped in this build


def commands() -> dict:
    """Every available command by name (`cli.command.Command`)."""
    found = {}
    for module in _modules():
        for command in getattr(module, "COMMANDS", None) or (module.COMMAND,):
            found[command.name] = command
    return found


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every available subcommand."""
    parser = ArgumentParser(prog="ltx2", description="LTX-2 audio+video generation with diffusers")
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=ArgumentParser)
    for module in _modules():
        module.add_parser(subparsers)
    return parser


def parse_args(argv: list[str]):
    """`(command, values)`: the command named by `argv` and each of its flags' typed value (no cross-flag or
    file checks); raises `OptionError` for a bad value, `SystemExit` for argparse's own errors."""
    from .options import parse_options

    namespace = build_parser().parse_args(argv)
    command = commands()[namespace.command]
    values = namespace
    if any(o.dest == "from_settings" for o in command.options):  # the file's values under the flags given
        from .settings import merge_settings

        values = merge_settings(command.name, command.options, namespace)
    return command, parse_options(command.options, values)


def resolve(command: str, values, *, call: bool = False):
    """Check `values` (a mapping of dests or flags -> values: `{"prompt": "a cat", "num_frames": 121, ...}`) as
    `ltx2 <command>` would, and return `Resolved(args, call)`: the typed values and, with `call=True`, the
    pipeline call's keyword arguments (after the checks needing torch; still before any model loads). Raises
    `ValueError` / `OSError` whose message names the flag."""
    found = commands()
    if command not in found:
        raise ValueError(f"unknown command {command!r}; choose from {', '.join(sorted(found))}")
    return found[command].resolve(values, call=call)


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
    """Entry point of the `ltx2` console script. With `argv=None` (a real command line) the printed total is
    counted from the start of the process; a call from Python counts from the call."""
    from .timing import process_start

    start = process_start() if argv is None else None
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if getattr(args.func, "__name__", "") == "execute":
            return int(args.func(args, start=start) or 0)
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"ltx2 {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if not isinstance(err, _user_errors()):
            raise
        print(f"ltx2 {args.command}: error: {describe_error(err)}", file=sys.stderr)
        return 2
