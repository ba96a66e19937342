"""diffusers' TaylorSeer cache hook on our guided pipeline: time per step against output deviation (SMALL config).

TaylorSeer is the transformer cache of diffusers 0.42.1 that works with LTX-2 and our batched passes
(FirstBlockCache / MagCache cannot be enabled on LTX-2 there; FasterCache is refused, see
`diffusers_ltx2/transformer/cache_hooks.py`). Each variant runs the same seeded, fully guided generation; reported
are the median ms per step (steps 2..n, variants interleaved, after a warm-up) and the max / mean absolute
deviation of the final video and audio latents from the uncached run. The machine is shared: compare ratios.

    python benchmarks/bench_cache_hooks.py [--steps 12] [--repeats 2] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffusers import TaylorSeerCacheConfig  # noqa: E402

from bench_guidance import PROMPT, build, our_guider, step_times  # noqa: E402
from diffusers_ltx2.factory import SMALL, SMALL_CLIP  # noqa: E402

CONFIGS = {
    "no cache": None,
    "TaylorSeer interval 3, from step 3": dict(cache_interval=3, disable_cache_before_step=3),
    "TaylorSeer interval 5, from step 3": dict(cache_interval=5, disable_cache_before_step=3),
}


def run(ours, steps: int, config: dict | None, timed: bool):
    tr = ours.transformer
    if config is not None:
        tr.enable_cache(TaylorSeerCacheConfig(taylor_factors_dtype=torch.float32, **config))
    try:
        if timed:
            return step_times(ours, steps, guider=our_guider())
        out = ours(PROMPT, num_inference_steps=steps, output_type="latent", guider=our_guider(),
                   generator=torch.Generator().manual_seed(0), max_sequence_length=SMALL.max_sequence_length,
                   **SMALL_CLIP)
        return out.frames, out.audio
    finally:
        if config is not None:
            tr.disable_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    _theirs, ours = build()
    times = {name: [] for name in CONFIGS}
    with torch.inference_mode():
        outputs = {name: run(ours, args.steps, cfg, timed=False) for name, cfg in CONFIGS.items()}  # + warm-up
        for _ in range(args.repeats):
            for name, cfg in CONFIGS.items():
                times[name] += run(ours, args.steps, cfg, timed=True)
    base = statistics.median(times["no cache"])
    ref_v, ref_a = outputs["no cache"]
    print(f"SMALL config, 288 video tokens, {args.steps} steps, fully guided; shared machine: compare ratios")
    print("| variant | ms / step (median) | vs no cache | max / mean abs dev. video | max / mean abs dev. audio |")
    print("|---|---|---|---|---|")
    for name, values in times.items():
        v, a = outputs[name]
        med = statistics.median(values)
        print(f"| {name} | {med * 1000:.0f} | {med / base:.2f}x | {(v - ref_v).abs().max():.2e} / "
              f"{(v - ref_v).abs().mean():.2e} | {(a - ref_a).abs().max():.2e} / {(a - ref_a).abs().mean():.2e} |")
    print(f"(latent magnitude: video max |x| {ref_v.abs().max():.2f}, audio {ref_a.abs().max():.2f})")


if __name__ == "__main__":
    main()
