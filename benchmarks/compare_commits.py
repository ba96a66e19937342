"""Run one benchmark script on two checkouts alternately, in fresh processes, and compare its table rows.

For a before / after measurement on a shared machine: the two checkouts (e.g. this branch and a `git worktree` of
the commit before a change) run the same script with the same arguments in turn, `--rounds` times, so that load
from other processes hits both alike. Every markdown table row the script prints (`| key | variant | ... |`) is
collected; for each row the cells holding a `min / median / max` triple and a ratio (`0.86x`) are summarised over
the rounds as min / median / max per checkout. The machine's load average is printed before and after. A script
the other checkout lacks (a new benchmark) runs there from a temporary copy.

    python benchmarks/compare_commits.py --other /path/to/other/checkout [--rounds 3] -- \\
        benchmarks/bench_guidance.py --sizes 288 --steps 4 --repeats 2 --threads 1 --no-memory
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
TRIPLE = re.compile(r"^\s*([\d.]+) / ([\d.]+) / ([\d.]+)")
RATIO = re.compile(r"^\s*([\d.]+)x\s*$")


def run(checkout: Path, script: list[str]) -> dict[tuple[str, str], dict[str, float]]:
    """One fresh run of `script` in `checkout`: `(key, variant) -> {"median": ms, "ratio": x}` per table row. A
    script the checkout does not have (a new benchmark) is copied beside its benchmarks for the run and removed."""
    env = dict(os.environ, PYTHONPATH=str(checkout))
    path, copied = checkout / script[0], None
    if not path.exists():
        copied = path = path.with_name(f"_compare_{path.name}")
        shutil.copyfile(HERE / script[0], path)
    try:
        out = subprocess.run([sys.executable, str(path), *script[1:]], cwd=checkout, env=env, capture_output=True,
                             text=True, check=True).stdout
    finally:
        if copied is not None:
            copied.unlink()
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not line.startswith("|") or set(cells[0]) <= {"-"}:
            continue
        values = {}
        for cell in cells[2:]:
            if (m := TRIPLE.match(cell)) is not None:
                values["median"] = float(m.group(2))
            elif (m := RATIO.match(cell)) is not None:
                values["ratio"] = float(m.group(1))
        if values:
            rows[(cells[0], cells[1])] = values
    return rows


def load() -> str:
    return " ".join(open("/proc/loadavg").read().split()[:3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--other", required=True, type=Path, help="the other checkout (e.g. a git worktree)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("script", nargs=argparse.REMAINDER, help="-- script.py [arguments]")
    args = parser.parse_args()
    script = args.script[1:] if args.script[:1] == ["--"] else args.script
    checkouts = {"this": HERE, "other": args.other.resolve()}
    for name, path in checkouts.items():
        commit = subprocess.run(["git", "-C", str(path), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True).stdout.strip()
        print(f"{name}: {path} at {commit}")
    print(f"load average before: {load()}")
    results = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for r in range(args.rounds):
        for name in (("this", "other") if r % 2 == 0 else ("other", "this")):
            for row, values in run(checkouts[name], script).items():
                for field, value in values.items():
                    results[row][name][field].append(value)
            print(f"round {r + 1}: {name} done (load {load()})", flush=True)
    print(f"load average after: {load()}")
    print("| row | checkout | the row's median over rounds: min / median / max | ratio: min / median / max |")
    print("|---|---|---|---|")
    for row, per in results.items():
        for name in ("other", "this"):
            cells = []
            for field in ("median", "ratio"):
                v = per[name][field]
                cells.append(f"{min(v):.2f} / {statistics.median(v):.2f} / {max(v):.2f}" if v else "")
            print(f"| {' '.join(row)} | {name} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
