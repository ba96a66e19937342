"""Helpers shared by the `ltx2` subcommands: dtype/device parsing, stage timing, writing the clip."""

from __future__ import annotations

import contextlib
import os
import sys
import time

import torch

DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
          "fp16": torch.float16, "float16": torch.float16}


def parse_dtype(name: str) -> torch.dtype:
    """`"bf16"` -> `torch.bfloat16` etc.; clear error otherwise."""
    try:
        return DTYPES[name.lower()]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; choose one of {sorted(set(DTYPES))}") from None


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def check_output_path(path: str) -> str:
    """The output's folder must exist and the file must be an .mp4 (checked before any model loads)."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"output folder does not exist: {folder}")
    if not path.lower().endswith(".mp4"):
        raise ValueError(f"output must be an .mp4 file, got {path!r}")
    return path


class StageTimer:
    """Times named stages and prints them as they finish."""

    def __init__(self, stream=None):
        self.stream = stream if stream is not None else sys.stdout  # resolved now, not at import
        self.stages: list[tuple[str, float]] = []

    @contextlib.contextmanager
    def stage(self, name: str):
        start = time.perf_counter()
        yield
        elapsed = time.perf_counter() - start
        self.stages.append((name, elapsed))
        print(f"[{name}] {elapsed:.2f} s", file=self.stream, flush=True)

    def summary(self) -> str:
        total = sum(t for _, t in self.stages)
        parts = ", ".join(f"{n} {t:.2f} s" for n, t in self.stages)
        return f"total {total:.2f} s ({parts})"


def write_clip(output, path: str, frame_rate: float) -> str:
    """Write the first clip of a pipeline output (frames + audio) to `path` as MP4."""
    from ..export import export_to_video_with_audio

    return export_to_video_with_audio(output.frames[0], output.audio[0], path, fps=frame_rate,
                                      sample_rate=output.sample_rate)
