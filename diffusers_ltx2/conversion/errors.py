"""Exceptions raised by the checkpoint and LoRA converters."""

from __future__ import annotations


class ConversionError(ValueError):
    """Base class: the source cannot be converted (the message says why). A `ValueError`, as every error this
    package raises for a bad input file, so `except ValueError` (and the CLI's exit 2) catches it."""


class CorruptCheckpointError(ConversionError):
    """The file is not a readable safetensors file (truncated, bad header, wrong format)."""


class UnsupportedCheckpointError(ConversionError):
    """The checkpoint is readable but its version or configuration is not supported."""


class KeyMismatchError(ConversionError):
    """The checkpoint has keys the converter does not know, or lacks keys a component needs.

    Attributes:
        unknown: source keys that no rule maps.
        missing: ``"component: key"`` entries the diffusers modules expect but the file does not provide.
    """

    def __init__(self, unknown: list[str] | None = None, missing: list[str] | None = None):
        self.unknown = sorted(unknown or [])
        self.missing = sorted(missing or [])
        parts = []
        if self.unknown:
            parts.append(f"{len(self.unknown)} unknown key(s):\n  " + "\n  ".join(self.unknown))
        if self.missing:
            parts.append(f"{len(self.missing)} missing key(s):\n  " + "\n  ".join(self.missing))
        super().__init__("Checkpoint keys do not match the expected layout; " + "\n".join(parts))
