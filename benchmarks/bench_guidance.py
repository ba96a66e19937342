"""Per-step time of multimodal guidance: diffusers' `LTX2Pipeline` vs ours, same weights, same dials (SMALL config).

Dials (both pipelines): video cfg 3, stg 1, modality 3, rescale 0.7; audio cfg 7, stg 1, modality 3, rescale 0.7.
STG block: 5 of SMALL's 8 blocks, the relative depth of LTX-2.0's block 29 of 48.

- diffusers runs cfg as one 2B call, then the STG pass and the isolation pass as two more B calls;
- ours runs all four passes as one 4B call (`GuidanceAttentionControl`); the conditional and STG passes are
  identical before the STG block, so those blocks run them once (3B rows there);
- also ours with two passes per call (`max_batch_passes=2`: [cond, perturbed] + [isolated, uncond], the pair that
  shares the prefix kept together) and ours with sequential passes (`max_batch_passes=1`, lowest memory).

Scaling table: 288, 576 and 1152 video tokens (256x384, 256x768, 512x768 at 17 frames; audio tokens fixed).
Time per step is measured between step-end callbacks (transformer + guidance + sampler; prompt encoding and
decoding excluded), from the second step on, after a warm-up run; the variants are run interleaved so that load
from other processes hits all of them alike. min / median / max and the ratio of medians to diffusers' are
printed. Peak memory: each variant runs a 2-step call in a fresh subprocess; reported is the peak resident set
size during the call minus the resident size just before it (activations + transient buffers; weights excluded).

Then the STG check: diffusers' STG is a silent no-op when the transformer config has `perturbed_attn=False`
(the factory's and LTX-2.0 conversions' setting): its output with stg 1 equals the output with stg 0 up to fp32
rounding (its "perturbed" pass is an unperturbed B-row call compared with rows of a 2B call, ~1e-5), while ours
changes by orders of magnitude more.

    python benchmarks/bench_guidance.py [--steps 4] [--repeats 2] [--threads N] [--sizes 288,576,1152] [--no-memory]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffusers import LTX2Pipeline  # noqa: E402

from diffusers_ltx2 import LTX2AudioVideoPipeline, LTX2Scheduler, MultimodalGuider  # noqa: E402
from diffusers_ltx2.factory import SMALL, SMALL_CLIP, build_components, build_scheduler  # noqa: E402

PROMPT = "a cat walks on the beach at sunset, waves and wind"
VIDEO = dict(cfg=3.0, stg=1.0, modality_scale=3.0, rescale=0.7)
AUDIO = dict(cfg=7.0, stg=1.0, modality_scale=3.0, rescale=0.7)
STG_BLOCK = round(29 / 48 * SMALL.num_layers)  # 5
CLIPS = {288: dict(height=256, width=384, num_frames=17), 576: dict(height=256, width=768, num_frames=17),
         1152: dict(height=512, width=768, num_frames=17)}
VARIANTS = ("diffusers LTX2Pipeline", "ours (one batched call)", "ours, max_batch_passes=2", "ours, sequential passes")


def diffusers_dials(stg: float = 1.0) -> dict:
    return dict(guidance_scale=VIDEO["cfg"], stg_scale=stg, modality_scale=VIDEO["modality_scale"],
                guidance_rescale=VIDEO["rescale"], audio_guidance_scale=AUDIO["cfg"], audio_stg_scale=stg,
                audio_modality_scale=AUDIO["modality_scale"], audio_guidance_rescale=AUDIO["rescale"],
                spatio_temporal_guidance_blocks=[STG_BLOCK], use_cross_timestep=True)


def our_guider(stg: float = 1.0, audio_skip_step: int = 0) -> MultimodalGuider:
    return MultimodalGuider(video=dict(VIDEO, stg=stg), audio=dict(AUDIO, stg=stg, skip_step=audio_skip_step),
                            skip_blocks=[STG_BLOCK])


def step_times(pipe, steps: int, clip: dict = SMALL_CLIP, **kwargs) -> list[float]:
    """Seconds per denoising step, steps 2..n (each interval between two step-end callbacks)."""
    marks: list[float] = []

    def on_step_end(_pipe, _step, _t, _tensors):
        marks.append(time.perf_counter())
        return {}

    pipe(PROMPT, num_inference_steps=steps, output_type="latent", callback_on_step_end=on_step_end,
         generator=torch.Generator().manual_seed(0), max_sequence_length=SMALL.max_sequence_length, **clip,
         **kwargs)
    return [b - a for a, b in zip(marks, marks[1:])]


def final_latents(pipe, steps: int, **kwargs):
    out = pipe(PROMPT, num_inference_steps=steps, output_type="latent", generator=torch.Generator().manual_seed(0),
               max_sequence_length=SMALL.max_sequence_length, **SMALL_CLIP, **kwargs)
    return out.frames, out.audio


def build():
    components = build_components(SMALL, seed=0)
    assert components["transformer"].config.perturbed_attn is False
    theirs = LTX2Pipeline(scheduler=build_scheduler(), **components)
    ours = LTX2AudioVideoPipeline(scheduler=LTX2Scheduler(), **components)
    for pipe in (theirs, ours):
        pipe.set_progress_bar_config(disable=True)
    return theirs, ours


def variant_runs(theirs, ours, steps: int, clip: dict) -> dict:
    return {
        VARIANTS[0]: lambda: step_times(theirs, steps, clip, **diffusers_dials()),
        VARIANTS[1]: lambda: step_times(ours, steps, clip, guider=our_guider()),
        VARIANTS[2]: lambda: step_times(ours, steps, clip, guider=our_guider(), max_batch_passes=2),
        VARIANTS[3]: lambda: step_times(ours, steps, clip, guider=our_guider(), max_batch_passes=1),
    }


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def memory_probe(variant: str, tokens: int) -> None:
    """(subprocess) peak RSS growth of one 2-step call of `variant` at `tokens` video tokens, printed in bytes."""
    theirs, ours = build()
    run = variant_runs(theirs, ours, 2, CLIPS[tokens])[variant]
    with torch.inference_mode():
        with open("/proc/self/clear_refs", "w") as f:  # reset the high-water mark (VmHWM) to the current RSS
            f.write("5")
        before = _rss_bytes()
        run()
    with open("/proc/self/status") as f:
        hwm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    print(hwm - before)


def peak_memory(variant: str, tokens: int, threads: int | None) -> float:
    cmd = [sys.executable, __file__, "--memory-probe", variant, "--sizes", str(tokens)]
    if threads:
        cmd += ["--threads", str(threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
    return int(out) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--sizes", default="288,576,1152")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--memory-probe", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.memory_probe:
        memory_probe(args.memory_probe, sizes[0])
        return

    theirs, ours = build()
    print(f"SMALL config ({SMALL.num_layers} blocks, {SMALL.video_inner_dim}/{SMALL.audio_inner_dim} wide), "
          f"{args.steps} steps, {torch.get_num_threads()} threads, STG block {STG_BLOCK}; shared machine: "
          "compare ratios, not absolute times")
    print("| video tokens | variant | min / median / max ms per step | vs diffusers (median) | peak memory |")
    print("|---|---|---|---|---|")
    for tokens in sizes:
        runs = variant_runs(theirs, ours, args.steps, CLIPS[tokens])
        times = {name: [] for name in runs}
        with torch.inference_mode():
            for run in runs.values():
                run()  # warm-up
            for _ in range(args.repeats):
                for name, run in runs.items():
                    times[name] += run()
        base = statistics.median(times[VARIANTS[0]])
        for name, values in times.items():
            med = statistics.median(values)
            mem = "" if args.no_memory else f"+{peak_memory(name, tokens, args.threads):.0f} MiB"
            print(f"| {tokens} | {name} | {min(values) * 1000:.0f} / {med * 1000:.0f} / {max(values) * 1000:.0f} "
                  f"(n={len(values)}) | {med / base:.2f}x | {mem} |", flush=True)

    # STG: diffusers' is a no-op with perturbed_attn=False, ours perturbs.
    steps = 2
    with torch.inference_mode():
        d1 = final_latents(theirs, steps, **diffusers_dials(stg=1.0))
        d0 = final_latents(theirs, steps, **diffusers_dials(stg=0.0))
        o1 = final_latents(ours, steps, guider=our_guider(stg=1.0))
        o0 = final_latents(ours, steps, guider=our_guider(stg=0.0))
    for name, (a, b) in (("diffusers", (d1, d0)), ("ours", (o1, o0))):
        print(f"{name:>9} STG effect, max |out(stg=1) - out(stg=0)|: video {(a[0] - b[0]).abs().max().item():.3e}, "
              f"audio {(a[1] - b[1]).abs().max().item():.3e}")


if __name__ == "__main__":
    main()
