"""JSON read from files this package did not write: safetensors headers, their `config` / LoRA metadata,
`model_index.json` and component configs, manifests, caption lists.

`json.loads` turns nesting deeper than the interpreter's recursion limit (`[[[[...` 100000 deep, a few hundred
kilobytes) into a `RecursionError`, which escapes every `except ValueError` and ends as a traceback. Here every
failure is a `ValueError` naming the file. Standard library only (no torch), so the CLI's early checks can use it.
"""

from __future__ import annotations

import json
import os
from typing import Any

__all__ = ["check_json_files", "parse_json", "read_json"]


def parse_json(text: str | bytes, source: str | os.PathLike) -> Any:
    """`json.loads(text)`, raising `ValueError` naming `source` (a file, or "file: what") for invalid JSON,
    bytes that are not UTF-8, nesting too deep for the interpreter (`RecursionError`) and integers too long to
    convert."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError(f"{os.fspath(source)}: the JSON is nested too deeply to read (a broken or crafted file)") \
            from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, int digit limit
        raise ValueError(f"{os.fspath(source)}: not valid JSON ({exc})") from None


def read_json(path: str | os.PathLike) -> Any:
    """The JSON content of the file at `path` (`parse_json`); `OSError` (e.g. `FileNotFoundError`) when it cannot
    be read."""
    with open(path, "rb") as f:
        return parse_json(f.read(), path)


_PARSED_ELSEWHERE = ("tokenizer.json",)  # read by the Rust `tokenizers` library, whose parser bounds nesting
# itself; parsing Gemma's 33 MB vocabulary here too would cost seconds per load


def check_json_files(folder: str | os.PathLike) -> None:
    """Parse every `*.json` of a model folder and of its direct subfolders (`model_index.json`, component
    configs, shard indexes, tokenizer configs; not `tokenizer.json`) with `parse_json`, so that a file diffusers /
    transformers would later parse with a bare `json.loads` fails here as a `ValueError` naming it, before any
    model loads. A path that is not a local folder (a Hub repo id) is left alone."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        return
    places = [folder] + sorted(os.path.join(folder, name) for name in os.listdir(folder)
                               if os.path.isdir(os.path.join(folder, name)))
    for place in places:
        for name in sorted(os.listdir(place)):
            path = os.path.join(place, name)
            if name.endswith(".json") and name not in _PARSED_ELSEWHERE and os.path.isfile(path):
                read_json(path)
