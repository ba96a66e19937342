"""The argument layer of every `ltx2` command: options declared once, checked before anything heavy is imported.

An `Option` is one declaration: its flag, help, default, how a raw value (a command-line string, or a typed value
from Python, e.g. a web form) becomes a typed value, and, when it feeds the pipeline call as is, the call's
keyword. `add_options` registers declarations on an `argparse` parser (which only collects strings: no checking
happens inside argparse actions); `parse_options` turns a plain mapping or namespace into a namespace of typed,
checked values. A bad value raises `OptionError` (a `ValueError`) whose message starts with the flag and, where
there is one, names the nearest valid value. Nothing here imports torch, diffusers or media libraries.

Adding a flag to a command is one `Option(...)` in that command's option tuple, e.g.::

    Option("--sampler", "denoising sampler", default="euler", choices=("euler", "res_2s"), call="sampler")
"""

from __future__ import annotations

import argparse
import difflib
import math
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Callable, Iterable, Mapping


class OptionError(ValueError):
    """A value one option cannot take; the message starts with the option's flag."""

    def __init__(self, flag: str | None, message: str):
        self.flag = flag
        super().__init__(f"{flag}: {message}" if flag else message)


@dataclass(frozen=True)
class Option:
    """One command option (or positional argument when `flag` has no leading dash).

    Attributes:
        flag: `"--num-frames"` (or a positional's name, `"source"`).
        help: the help text; `(default: ...)` is appended from `default` / `default_text`, never twice.
        parse: raw value -> typed value; raises `ValueError` with a message *without* the flag. Raw values are
            strings from the command line or already typed values from Python. `None`: kept as given.
        default: the value when the option is not given (a repeatable option defaults to `[]`).
        dest: the attribute name (default: the flag without dashes, `-` -> `_`).
        metavar: the value's name in `--help`.
        choices: the valid values; another value is refused naming the closest one.
        repeat: may be given several times (a list); a repeatable positional takes one or more values.
        switch: an on/off flag without a value (default False).
        required: must be given.
        group: the `--help` section.
        call: the pipeline-call keyword this value is passed as, unchanged (see `call_kwargs`).
        hidden: accepted but not listed in `--help`.
        default_text: what `--help` says the default is, when the value itself says nothing (e.g. "from --input").
        aliases: other spellings of the flag (`-o`).
        const: the value of the flag given without one (its value is then optional, e.g. `--compile` means
            `--compile inductor`); `None`: a value is required.
    """

    flag: str
    help: str
    parse: Callable[[Any], Any] | None = None
    default: Any = None
    dest: str = ""
    metavar: str | None = None
    choices: tuple | None = None
    repeat: bool = False
    switch: bool = False
    required: bool = False
    group: str | None = None
    call: str | None = None
    hidden: bool = False
    default_text: str | None = None
    aliases: tuple[str, ...] = ()
    const: Any = None

    def __post_init__(self):
        if not self.dest:
            object.__setattr__(self, "dest", self.flag.lstrip("-").replace("-", "_"))
        if self.switch and self.default is None:
            object.__setattr__(self, "default", False)

    @property
    def positional(self) -> bool:
        return not self.flag.startswith("-")

    def help_text(self) -> str:
        """The help with its default, stated once (switches and unset defaults state none)."""
        shown = self.default_text
        if shown is None and not self.switch and self.default not in (None, [], ()):
            shown = _show(self.default)
        return f"{self.help} (default: {shown})" if shown is not None else self.help

    def value(self, raw: Any) -> Any:
        """The typed value of `raw` (None: not given), or `OptionError` naming the flag."""
        if raw is None:
            if self.required:
                raise OptionError(self.flag, "is required")
            return list(self.default or []) if self.repeat else self.default
        if self.repeat:
            items = list(raw) if isinstance(raw, (list, tuple)) else [raw]
            return [self._one(item) for item in items]
        return self._one(raw)

    def _one(self, raw: Any) -> Any:
        if self.switch:
            if isinstance(raw, bool):
                return raw
            raise OptionError(self.flag, f"is a switch: true or false, got {raw!r}")
        if self.choices is not None:
            return check_choice(self.flag, raw, self.choices)
        if self.parse is None:
            return raw
        try:
            return self.parse(raw)
        except OptionError:
            raise
        except ValueError as err:
            raise OptionError(self.flag, str(err)) from None


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_show(v) for v in value)
    return str(value)


def check_choice(flag: str, raw: Any, choices: Iterable) -> Any:
    """`raw` if it is one of `choices` (strings compared case-insensitively), else `OptionError` naming the valid
    values and the closest one."""
    choices = tuple(choices)
    if raw in choices:
        return raw
    if isinstance(raw, str):
        for choice in choices:
            if isinstance(choice, str) and choice.lower() == raw.lower():
                return choice
    text = ", ".join(map(str, choices))
    close = difflib.get_close_matches(str(raw), [str(c) for c in choices], n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]}?" if close else ""
    raise OptionError(flag, f"invalid choice {raw!r} (choose from {text}){hint}")


# ------------------------------------------------------------------------------------------------- value parsers


def whole(minimum: int = 1, maximum: int | None = None) -> Callable[[Any], int]:
    """Parser: a whole number in `[minimum, maximum]` (a string, an int, or an integral float)."""
    def parse(raw: Any) -> int:
        if isinstance(raw, float) and raw.is_integer():
            raw = int(raw)
        if isinstance(raw, bool) or not isinstance(raw, (int, str)):
            raise ValueError(f"expected a whole number >= {minimum}, got {raw!r}")
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f"expected a whole number >= {minimum}, got {raw!r}") from None
        if value < minimum:
            raise ValueError(f"must be >= {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise ValueError(f"must be <= {maximum}, got {value}")
        return value

    parse.metavar = "N"
    return parse


def number(minimum: float | None = None, maximum: float | None = None, *, above: float | None = None
           ) -> Callable[[Any], float]:
    """Parser: a finite number in `[minimum, maximum]` (`above`: strictly greater than)."""
    if above is not None:
        wanted = f"a finite number > {above:g}"
    elif minimum is not None and maximum is not None:
        wanted = f"in [{minimum:g}, {maximum:g}]"
    elif minimum is not None:
        wanted = f"a finite number >= {minimum:g}"
    else:
        wanted = "a finite number"

    def parse(raw: Any) -> float:
        if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
            raise ValueError(f"expected a number, got {raw!r}")
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"expected a number, got {raw!r}") from None
        bad = (not math.isfinite(value) or (above is not None and not value > above)
               or (minimum is not None and value < minimum) or (maximum is not None and value > maximum))
        if bad:
            raise ValueError(f"must be {wanted}, got {raw}")
        return value

    parse.metavar = "X"
    return parse


def text(raw: Any) -> str:
    """Parser: a string."""
    if not isinstance(raw, str):
        raise ValueError(f"expected text, got {type(raw).__name__}")
    return raw


text.metavar = "TEXT"


# --------------------------------------------------------------------------------------------- declarations in use


def add_options(parser: argparse.ArgumentParser, options: Iterable[Option]) -> argparse.ArgumentParser:
    """Register `options` on `parser` (in `--help` sections by `group`). argparse only collects the raw strings:
    every check is `parse_options`'."""
    options = tuple(options)
    # with --from-settings, required values may come from the file: parse_options checks them after the merge
    from_file = any(o.dest == "from_settings" for o in options)
    groups: dict[str, Any] = {}
    for option in options:
        target = parser
        if option.group is not None:
            if option.group not in groups:
                groups[option.group] = parser.add_argument_group(option.group)
            target = groups[option.group]
        help_text = argparse.SUPPRESS if option.hidden else option.help_text().replace("%", "%%")
        if option.positional:  # a repeatable positional takes one or more values
            target.add_argument(option.dest, help=help_text, metavar=option.metavar or option.flag,
                                **({"nargs": "+"} if option.repeat else {}))
            continue
        kwargs: dict[str, Any] = dict(dest=option.dest, default=None, help=help_text)
        if option.switch:
            kwargs["action"] = "store_true"
        else:
            if option.repeat:
                kwargs["action"] = "append"
            if option.const is not None:
                kwargs.update(nargs="?", const=option.const)
            metavar = option.metavar or getattr(option.parse, "metavar", None)
            if metavar is None and option.choices is not None:
                metavar = "{" + ",".join(map(str, option.choices)) + "}"
            kwargs["metavar"] = metavar
        if option.required and not from_file:
            kwargs["required"] = True
        target.add_argument(option.flag, *option.aliases, **kwargs)
    return parser


def given_values(options: Iterable[Option], values: Mapping[str, Any] | argparse.Namespace | SimpleNamespace
                 ) -> dict[str, Any]:
    """The raw values of `values` by dest (keys: dests such as `num_frames` / `video_cfg`, or flags with or without
    their dashes such as `--num-frames` / `cfg`), unchecked; `OptionError` for an unknown key."""
    options = tuple(options)
    raw = dict(vars(values) if not isinstance(values, Mapping) else values)
    dests = {o.dest for o in options}
    by_flag = {flag: o.dest for o in options for flag in (o.flag, *o.aliases)}
    given: dict[str, Any] = {}
    for key, value in raw.items():
        key = str(key)
        if key.startswith("_") or key in ("func", "command"):
            continue
        dest = key if key in dests else by_flag.get(key) or by_flag.get("--" + key.replace("_", "-"))
        if dest is None:
            wanted = key if key.startswith("-") else "--" + key.replace("_", "-")
            close = difflib.get_close_matches(wanted, sorted(by_flag), n=1)
            raise OptionError(None, f"unknown option {wanted}" + (f"; did you mean {close[0]}?" if close else ""))
        given[dest] = value
    return given


def parse_options(options: Iterable[Option], values: Mapping[str, Any] | argparse.Namespace | SimpleNamespace
                  ) -> SimpleNamespace:
    """Typed, checked values of `options` from a mapping or namespace (keys as `given_values`; a missing or `None`
    value takes the option's default; `was_given` tells which were given). Raises `OptionError` for the first bad
    value (in declaration order) or an unknown key."""
    options = tuple(options)
    given = given_values(options, values)
    args = SimpleNamespace(**{o.dest: o.value(given.get(o.dest)) for o in options})
    args._given = frozenset(dest for dest, value in given.items() if value not in (None, False, []))
    return args


def was_given(args, dest: str) -> bool:
    """Whether the option stored in `dest` was given (not its default); `parse_options` records it."""
    return dest in getattr(args, "_given", ())


def call_kwargs(options: Iterable[Option], args) -> dict[str, Any]:
    """The pipeline-call keyword arguments of the options declared with `call=` (their typed values as is)."""
    return {o.call: getattr(args, o.dest) for o in options if o.call is not None}


def flag_of(options: Iterable[Option], dest: str) -> str:
    """The flag of the option stored in `dest` (for messages)."""
    for option in options:
        if option.dest == dest:
            return option.flag
    return "--" + dest.replace("_", "-")
