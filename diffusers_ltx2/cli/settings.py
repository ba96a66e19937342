"""Settings files: a command's resolved arguments saved as JSON beside its output, and `--from-settings FILE`,
which runs them again.

`ltx2 ui` writes one beside every clip it makes; `ltx2 <command> --from-settings FILE` re-runs it with the same
values, through the same argument layer (so a file edited by hand is checked as the command line is). Flags given
on the command line win over the file's (e.g. `--output other.mp4`, `--seed 3`). The file holds the values after
the checks that need no import (`Command.resolve(values)`: `--steps` filled in, `--cpu-offload` spelled
`--offload model`), never a secret (an LTX API key is read from the environment when needed, never stored).

Format::

    {"format": "ltx2-settings", "version": 1, "command": "generate",
     "values": {"model": "...", "prompt": "...", "num_frames": 121, ...}}

Standard library only: nothing here imports torch.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

from ..json_files import read_json
from .options import Option, given_values, text

FORMAT, VERSION = "ltx2-settings", 1

FROM_SETTINGS_OPTION = Option(
    "--from-settings", "run the arguments saved in a settings JSON (`ltx2 ui` writes one beside each output) again; "
                       "flags given here win over the file's (e.g. --output)", text, metavar="FILE")


def _plain(value: Any) -> Any:
    """A typed option value as JSON its parser reads back (`LoraSpec` -> `"path:strength"`, tuples -> lists)."""
    if hasattr(value, "path") and hasattr(value, "strength"):  # cli.lora_args.LoraSpec (no import cycle)
        return f"{value.path}:{value.strength!r}"
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot save a {type(value).__name__} option value as JSON")


def settings_values(options, args) -> dict:
    """The JSON-ready values of `options` in the checked namespace `args` (`--from-settings` itself left out)."""
    return {o.dest: _plain(getattr(args, o.dest)) for o in options if o.dest != "from_settings"}


def settings_document(command: str, values: Mapping[str, Any]) -> dict:
    """The settings file's content for `command` and JSON-ready `values`."""
    return {"format": FORMAT, "version": VERSION, "command": command, "values": dict(values)}


def write_settings(path: str | os.PathLike, command: str, values: Mapping[str, Any]) -> str:
    """Write the settings file (to a temporary sibling, then renamed: a failure leaves nothing). Returns `path`."""
    path = os.fspath(path)
    tmp = os.path.join(os.path.dirname(os.path.abspath(path)), f".tmp-{os.getpid()}-{os.path.basename(path)}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(settings_document(command, values), f, indent=2, sort_keys=True, allow_nan=False)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def read_settings(path: str, command: str) -> dict:
    """The saved values of a settings file for `command`. Raises `FileNotFoundError`, or `ValueError` naming the
    file: not JSON, not a settings file, a newer version, or saved by another command (naming the one to run)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--from-settings: settings file not found: {path}")
    document = read_json(path)
    if not isinstance(document, dict) or document.get("format") != FORMAT or not isinstance(
            document.get("values"), dict):
        raise ValueError(f"--from-settings {path} is not an ltx2 settings file (no \"format\": \"{FORMAT}\" with "
                         "\"values\")")
    if document.get("version") != VERSION:
        raise ValueError(f"--from-settings {path}: settings version {document.get('version')!r}; this ltx2 reads "
                         f"version {VERSION}")
    saved_by = document.get("command")
    if saved_by != command:
        raise ValueError(f"--from-settings {path} holds `ltx2 {saved_by}` settings: run ltx2 {saved_by} "
                         f"--from-settings {path}")
    return document["values"]


def merge_settings(command: str, options, values) -> dict:
    """`values` (a mapping or namespace) with `--from-settings FILE` expanded: the file's values, then every value
    given in `values` (not `None`) on top. Without `--from-settings`, the given values as they are. A re-run that
    would overwrite the recorded output (no `--output` given and that file exists) is refused."""
    options = tuple(options)
    given = given_values(options, values)
    path = given.pop("from_settings", None)
    if path is None:
        return given
    saved = read_settings(path, command)
    dests = {o.dest for o in options}
    unknown = sorted(set(saved) - dests)
    if unknown:
        raise ValueError(f"--from-settings {path}: unknown option(s) {', '.join(unknown)} for ltx2 {command}")
    merged = {k: v for k, v in saved.items() if v is not None}
    merged.update({k: v for k, v in given.items() if v is not None})
    output = merged.get("output")
    if given.get("output") is None and isinstance(output, str) and os.path.exists(output):
        raise ValueError(f"--from-settings {path}: its output {output} exists and would be overwritten: pass --output "
                         "PATH for the re-run")
    return merged
