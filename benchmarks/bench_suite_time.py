"""Wall time and CPU time of the test suite as the README runs it, with the machine's load while it ran.

    python benchmarks/bench_suite_time.py [--nice N] [-- PYTEST ARGS]     (default pytest args: -q)

Runs `python -m pytest` in a child process and prints its result line, the wall time, the CPU time of pytest and
every process it waited for (user + sys: test subprocesses and `accelerate launch` workers included), the number
of CPU cores, and the 1-minute load average before and after (on a machine shared with other work the wall time
grows with the load; the CPU time much less). The `--durations=15` report of pytest is printed too.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nice", type=int, default=0, help="run pytest at this niceness (shared machines)")
    parser.add_argument("pytest_args", nargs="*", help="arguments for pytest (after --)")
    args = parser.parse_args(argv)
    pytest_args = args.pytest_args or ["-q"]
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pytest", *pytest_args, "-p", "no:cacheprovider", "--durations=15"],
                          capture_output=True, text=True,
                          preexec_fn=(lambda: os.nice(args.nice)) if args.nice else None)
    wall = time.perf_counter() - start
    load_after = os.getloadavg()[0]
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    lines = done.stdout.strip().splitlines()
    durations = [line for line in lines if " call " in line or " setup " in line][:15]
    print("\n".join(durations + [line for line in lines if line.startswith(("FAILED", "ERROR"))]))
    print(f"result: {lines[-1] if lines else done.stderr[-500:]}")
    print(f"wall {wall:.0f} s, CPU {usage.ru_utime + usage.ru_stime:.0f} s (user {usage.ru_utime:.0f} s, sys "
          f"{usage.ru_stime:.0f} s), {os.cpu_count()} cores, load average {load_before:.1f} before / "
          f"{load_after:.1f} after, niceness {args.nice}")
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
