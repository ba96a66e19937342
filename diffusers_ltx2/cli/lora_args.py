"""`--lora PATH[:STRENGTH]` (repeatable) on every generating command, loaded through the same
`pipe.load_lora_weights` as in Python; the LoRA's file and its metadata (the base model it was made for) are named
in every error.

Checks, in order: the spec and the file's existence before anything is imported (`check_lora_specs`); the file's
header (a safetensors file with LoRA factors) before any model loads (`check_lora_files`); the fit to the model's
layers when it is loaded (`load_loras`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from .options import Option

LORA_FORM = "PATH[:STRENGTH] (STRENGTH a number, default 1), e.g. style.safetensors:0.8"


@dataclass(frozen=True)
class LoraSpec:
    """A parsed `PATH[:STRENGTH]`."""

    path: str
    strength: float = 1.0
    text: str = ""


def parse_lora_spec(text) -> LoraSpec:
    """`"lora.safetensors:0.8"` -> `LoraSpec("lora.safetensors", 0.8)`; a path containing ':' (a Windows drive) is
    kept whole unless it ends with `:<number>`."""
    if isinstance(text, LoraSpec):
        return text
    if isinstance(text, (tuple, list)) and len(text) == 2:  # (path, strength) from Python
        return LoraSpec(str(text[0]), float(text[1]), f"{text[0]}:{text[1]}")
    if not isinstance(text, (str, os.PathLike)) or not os.fspath(text):
        raise ValueError(f"expected {LORA_FORM}, got {text!r}")
    text = os.fspath(text)
    path, sep, tail = text.rpartition(":")
    if sep and path and re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?", tail.strip(), re.I):
        return LoraSpec(path, float(tail), text)
    return LoraSpec(text, 1.0, text)


LORA_OPTION = Option(
    "--lora", f"LoRA to apply, {LORA_FORM}; repeat for several (official, kohya or diffusers format, e.g. "
              "`ltx2 train` output)", parse_lora_spec, repeat=True, metavar="PATH[:STRENGTH]", group="LoRA")


def check_lora_specs(specs: list[LoraSpec], flag: str = "--lora") -> None:
    """Before anything is imported: each file exists (a malformed `:STRENGTH` is named as such) and each
    strength is finite. Raises `ValueError` / `FileNotFoundError` naming the flag."""
    import math

    from .media_args import check_spec_suffix

    for spec in specs:
        check_spec_suffix(spec.path, flag, ":", "STRENGTH", LORA_FORM)
        if os.path.isdir(spec.path):
            raise ValueError(f"{flag} {spec.path} is a folder; give the LoRA's .safetensors file")
        if not os.path.isfile(spec.path):
            raise FileNotFoundError(f"{flag}: LoRA file not found: {spec.path}")
        if not math.isfinite(spec.strength):
            raise ValueError(f"{flag} {spec.text}: STRENGTH must be a finite number")


_LORA_MARKERS = ("lora_A", "lora_B", "lora_down", "lora_up", "lora.down", "lora.up")


def read_lora_header(path: str, flag: str = "--lora") -> dict:
    """The metadata of a LoRA file, after checking it is a safetensors file with LoRA factors (its header is read,
    not its tensors). Raises `ValueError` naming the flag, the file and, for a file that is not a LoRA, what its
    metadata says it is."""
    from ..conversion.errors import ConversionError
    from ..conversion.lora import lora_origin
    from ..conversion.streaming import read_header

    try:
        tensors, metadata = read_header(path)
    except ConversionError as err:
        raise ValueError(f"{flag} {path} is not a LoRA .safetensors file ({err})") from None
    if not any(marker in key for key in tensors for marker in _LORA_MARKERS):
        raise ValueError(f"{flag} {path} is not a LoRA file: none of its {len(tensors)} tensors are LoRA factors "
                         f"(lora_A/lora_B or lora_down/lora_up); {lora_origin(metadata)}")
    return metadata


def adapter_names(specs: list[LoraSpec], taken=()) -> list[str]:
    """A PEFT adapter name per LoRA, from its file name (`style_v2.safetensors` -> `style_v2`), made unique."""
    names, used = [], set(taken)
    for spec in specs:
        stem = re.sub(r"[^0-9A-Za-z_-]", "_", os.path.splitext(os.path.basename(spec.path))[0]) or "lora"
        name, n = stem, 2
        while name in used:
            name, n = f"{stem}_{n}", n + 1
        used.add(name)
        names.append(name)
    return names


def load_loras(pipe, specs: list[LoraSpec], flag: str = "--lora", **kwargs) -> list[str]:
    """`pipe.load_lora_weights(path, adapter_name=<file stem>, strength=STRENGTH, **kwargs)` per spec; a
    `ValueError` (a LoRA that does not fit the model, contradictory IC-LoRA factors...) is re-raised naming the
    flag and the file (the library's message carries the LoRA's metadata). Returns the adapter names."""
    names = adapter_names(specs)
    for spec, name in zip(specs, names):
        try:
            pipe.load_lora_weights(spec.path, adapter_name=name, strength=spec.strength, **kwargs)
        except ValueError as err:
            # one line: the message, its causes and the LoRA's metadata, without the per-key listings
            lines = [line.strip() for line in str(err).splitlines() if not line.startswith("    ")]
            raise ValueError(f"{flag} {spec.text}: {' '.join(lines)}") from None
    return names
