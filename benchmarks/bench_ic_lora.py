"""Per-step denoising time of `LTX2ICLoRAPipeline` with the reference at factor 1 vs factor 2 (SMALL config).

At factor f the reference is encoded at (H / f, W / f), so it adds f^2 times fewer tokens to the sequence:
on `SMALL_CLIP` (256x384, 17 frames -> 288 generated video tokens) f = 1 appends 288 reference tokens and
f = 2 appends 72. The step time is measured between step-end callbacks (transformer + sampler only; prompt
encoding, VAE encode and decode excluded), guidance off (one transformer call per step), median of the
steps after a warm-up run. Also reported: the same clip without any reference.

    python benchmarks/bench_ic_lora.py [--steps 6] [--repeats 2] [--threads N] [--attention-strength 1.0] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffusers_ltx2 import ClassifierFreeGuidance, LTX2AudioVideoPipeline, LTX2ICLoRAPipeline, LTX2Scheduler  # noqa: E402
from diffusers_ltx2.factory import SMALL, SMALL_CLIP, build_components  # noqa: E402


def step_times(pipe, steps: int, **kwargs) -> list[float]:
    marks = [time.perf_counter()]

    def on_step_end(_pipe, _step, _sigma, _tensors):
        marks.append(time.perf_counter())
        return {}

    # the first step's start is taken by a callback-free mark right before denoising starts: use steps 2..n
    pipe(num_inference_steps=steps, output_type="latent", callback_on_step_end=on_step_end,
         generator=torch.Generator().manual_seed(0), max_sequence_length=SMALL.max_sequence_length, **SMALL_CLIP,
         **kwargs)
    return [b - a for a, b in zip(marks[1:], marks[2:])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--attention-strength", type=float, default=1.0)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    components = build_components(SMALL, seed=0)
    pipe = LTX2ICLoRAPipeline(scheduler=LTX2Scheduler(), guider=ClassifierFreeGuidance(1.0, 1.0), **components)
    pipe.to(args.device)
    plain = LTX2AudioVideoPipeline.from_pipe(pipe)
    pipe.set_progress_bar_config(disable=True)
    plain.set_progress_bar_config(disable=True)
    control = torch.rand(SMALL_CLIP["num_frames"], 3, SMALL_CLIP["height"], SMALL_CLIP["width"])
    runs = {
        "no reference": lambda: step_times(plain, args.steps, prompt="a cat"),
        "factor 1": lambda: step_times(pipe, args.steps, prompt="a cat", control_video=control,
                                       reference_downscale_factor=1,
                                       conditioning_attention_strength=args.attention_strength),
        "factor 2": lambda: step_times(pipe, args.steps, prompt="a cat", control_video=control,
                                       reference_downscale_factor=2,
                                       conditioning_attention_strength=args.attention_strength),
    }
    video_tokens = 3 * (SMALL_CLIP["height"] // 32) * (SMALL_CLIP["width"] // 32)
    tokens = {"no reference": video_tokens, "factor 1": 2 * video_tokens, "factor 2": video_tokens + video_tokens // 4}
    results, times = {}, {name: [] for name in runs}
    with torch.inference_mode():
        for run in runs.values():
            run()  # warm-up
        for _ in range(args.repeats):  # interleaved, so load from other processes hits every variant alike
            for name, run in runs.items():
                times[name] += run()
    for name in runs:
        results[name] = statistics.median(times[name])
        print(f"{name:>13}: {tokens[name]:4d} video tokens, {results[name] * 1000:7.1f} ms / step "
              f"(median of {len(times[name])})", flush=True)
    ratio = results["factor 1"] / results["factor 2"]
    print(f"device={args.device} threads={torch.get_num_threads()} attention_strength={args.attention_strength}")
    print(f"per-step speed-up of factor 2 over factor 1: {ratio:.2f}x")


if __name__ == "__main__":
    main()
