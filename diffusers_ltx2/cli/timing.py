"""Stage timing of the `ltx2` commands: each stage printed as it ends, and a total that covers the whole run,
from the start of the process (Python's own start-up and every import included)."""

from __future__ import annotations

import contextlib
import os
import sys
import time


def process_start() -> float:
    """The `time.perf_counter()` value at which this process started (Linux: from `/proc`, to 10 ms; elsewhere:
    when this module was imported, which follows the start of the `ltx2` command closely)."""
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        age = uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22 of stat: start time in clock ticks
        if 0 <= age < 10 * 24 * 3600:
            return time.perf_counter() - age
    except (OSError, ValueError, IndexError, AttributeError):
        pass
    return _IMPORTED


_IMPORTED = time.perf_counter()


def secondary_rank() -> bool:
    """True in a launched worker other than rank 0 (`accelerate launch` / `torchrun` set `RANK`): its progress
    lines would repeat rank 0's, so the commands keep them to rank 0."""
    return os.environ.get("RANK", "0") not in ("", "0")


def say(text: str, stream=None) -> None:
    """Write one line in a single `write` call, then flush. Launched workers run unbuffered
    (PYTHONUNBUFFERED) and share one pipe: `print` writes the text and its newline separately, so another
    process's line could land between them; one write of a short line to a pipe is atomic (POSIX PIPE_BUF)."""
    stream = sys.stdout if stream is None else stream
    stream.write(text + "\n")
    stream.flush()


class StageTimer:
    """Times named stages, printing each as it finishes; `summary()` gives the total since `start` (default:
    now) with every stage and the time outside them ("other": start-up, checks)."""

    def __init__(self, stream=None, start: float | None = None):
        self.stream = stream if stream is not None else sys.stdout  # resolved now, not at import
        self.start = time.perf_counter() if start is None else start
        self.stages: list[tuple[str, float]] = []

    @contextlib.contextmanager
    def stage(self, name: str):
        """Context manager timing one named stage."""
        start = time.perf_counter()
        yield
        elapsed = time.perf_counter() - start
        self.stages.append((name, elapsed))
        if not secondary_rank():
            say(f"[{name}] {elapsed:.2f} s", self.stream)

    def summary(self) -> str:
        """One line: the total since `start`, then each stage and the rest ("other")."""
        total = time.perf_counter() - self.start
        parts = [f"{n} {t:.2f} s" for n, t in self.stages]
        other = total - sum(t for _, t in self.stages)
        if other >= 0.005:
            parts.append(f"other {other:.2f} s")
        return f"total {total:.2f} s ({', '.join(parts)})"
