"""Where a guided step goes (SMALL config, 576 video tokens): transformer forward time per step and block-pass rows
per step (feed-forward input rows summed over blocks), diffusers' `LTX2Pipeline` vs ours (one batched call).

The row count is deterministic (the work each pipeline asks for); the times are one run on a possibly shared
machine.

    python benchmarks/profile_guidance_step.py
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_guidance import CLIPS, build, diffusers_dials, our_guider, step_times  # noqa: E402

STEPS = 3


def main() -> None:
    torch.set_num_threads(1)
    theirs, ours = build()
    tr = ours.transformer  # shared by both pipelines
    forward, rows, state = [], [], {}
    tr.register_forward_pre_hook(lambda m, a, k: state.update(t=time.perf_counter()), with_kwargs=True)
    tr.register_forward_hook(lambda m, a, k, o: forward.append(time.perf_counter() - state["t"]), with_kwargs=True)
    for block in tr.transformer_blocks:
        block.ff.register_forward_pre_hook(lambda m, a: rows.append(a[0].shape[0]))
    clip = CLIPS[576]
    with torch.inference_mode():
        for name, run in (("diffusers", lambda: step_times(theirs, STEPS, clip, **diffusers_dials())),
                          ("ours", lambda: step_times(ours, STEPS, clip, guider=our_guider()))):
            run()  # warm-up
            forward.clear()
            rows.clear()
            steps = run()
            print(f"{name}: step median {statistics.median(steps) * 1000:.0f} ms, transformer forward "
                  f"{sum(forward) / STEPS * 1000:.0f} ms per step ({len(forward) // STEPS} calls), "
                  f"block-pass rows per step {sum(rows) // STEPS}")


if __name__ == "__main__":
    main()
