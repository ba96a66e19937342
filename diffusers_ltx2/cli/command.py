"""An `ltx2` command as a value: its options, its checks in three stages, and what it runs.

1. `options` (`cli.options.Option`): each flag's own value, checked when parsed;
2. `check(args)`: rules between flags and the files they name, still without importing torch / diffusers (so a
   mistake costs a second, not the 10 s import);
3. `prepare(args)`: checks that need those libraries (devices, media contents, conditions), before any model
   loads; then `call(args)`: the pipeline call's keyword arguments.

`resolve(values)` runs 1-2 (and, with `call=True`, 3) on a plain mapping or namespace: the command line and any
other front end (a web form) share it. `execute(namespace)` is the command line's path: resolve, print a
"loading ..." line, import the heavy libraries (timed), run.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Callable

from .options import Option, add_options, parse_options
from .timing import StageTimer, say, secondary_rank


@dataclass(frozen=True)
class Resolved:
    """A command's checked, typed values (`args`) and, when asked for, the pipeline call's keyword arguments."""

    args: SimpleNamespace
    call: dict | None = None


@dataclass(frozen=True)
class Command:
    """One `ltx2` subcommand.

    Attributes:
        name, help, description: as shown by `ltx2 --help` / `ltx2 NAME --help`.
        options: its option declarations.
        run: `run(args, timer) -> exit code`, on resolved values (calls `prepare` itself).
        check: cross-flag and file checks without heavy imports (may complete `args`, e.g. from an input clip).
        prepare: checks needing torch / media libraries, before any model loads (may store derived values).
        call: the pipeline call's keyword arguments from prepared `args`.
        loading: what the import step loads, for the "loading ..." line (None: nothing heavy to import).
        imports: the modules imported (and timed) before `run`.
        load: `load(args, timer) -> pipeline` from prepared `args` (generating commands; `run` uses it).
        invoke: `invoke(pipe, args, call) -> pipeline output` (default `pipe(**call)`).

    Commands whose options include `--from-settings` (`cli.settings`) read a saved settings file first.
    """

    name: str
    help: str
    options: tuple[Option, ...]
    run: Callable[[SimpleNamespace, StageTimer], int]
    check: Callable[[SimpleNamespace], None] | None = None
    prepare: Callable[[SimpleNamespace], None] | None = None
    call: Callable[[SimpleNamespace], dict] | None = None
    description: str | None = None
    loading: str | None = "PyTorch and diffusers"
    imports: tuple[str, ...] = ("diffusers_ltx2.pipelines",)
    load: Callable[[SimpleNamespace, StageTimer], Any] | None = None
    invoke: Callable[[Any, SimpleNamespace, dict], Any] | None = None

    def add_to(self, subparsers, parser_class=None):
        """Register as an `argparse` sub-parser whose `func` runs `execute`."""
        kwargs = {} if parser_class is None else {"parser_class": parser_class}
        parser = subparsers.add_parser(self.name, help=self.help, description=self.description or self.help,
                                       **kwargs)
        add_options(parser, self.options)
        parser.set_defaults(func=self.execute, command=self.name)
        return parser

    def resolve(self, values: Any, *, call: bool = False) -> Resolved:
        """Check `values` (a mapping or namespace of dests / flags) as the command line would: every flag, then
        the rules between them and the files they name, without importing torch; with `call=True` also the
        checks needing it (before any model loads) and the pipeline call's keyword arguments. Raises
        `ValueError` / `OSError` naming the flag."""
        if any(o.dest == "from_settings" for o in self.options):
            from .settings import merge_settings

            values = merge_settings(self.name, self.options, values)
        args = parse_options(self.options, values)
        if self.check is not None:
            self.check(args)
        if not call:
            return Resolved(args)
        if self.prepare is not None:
            self.prepare(args)
        return Resolved(args, self.call(args) if self.call is not None else None)

    def generate(self, pipe, args: SimpleNamespace, call: dict):
        """The pipeline output of `call` on a loaded `pipe` (`invoke`, or `pipe(**call)`)."""
        return self.invoke(pipe, args, call) if self.invoke is not None else pipe(**call)

    def execute(self, namespace, *, start: float | None = None, stream=None) -> int:
        """The command line's path: resolve (no heavy import), say what loads, import it (timed), run."""
        args = self.resolve(namespace).args
        timer = StageTimer(stream=stream, start=start)
        if self.imports:
            if self.loading and not secondary_rank():
                say(f"ltx2 {self.name}: loading {self.loading} ...", timer.stream)
            with timer.stage("imports"):
                for module in self.imports:
                    importlib.import_module(module)
        return int(self.run(args, timer) or 0)


def announce(text: str) -> None:
    """A progress line (stdout, flushed)."""
    say(text)
