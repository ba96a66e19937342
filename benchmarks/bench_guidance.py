"""Per-step time of multimodal guidance: diffusers' `LTX2Pipeline` vs ours, same weights, same dials (SMALL config).

Dials (both pipelines): video cfg 3, stg 1, modality 3, rescale 0.7; audio cfg 7, stg 1, modality 3, rescale 0.7.
STG block: 5 of SMALL's 8 blocks, the relative depth of LTX-2.0's block 29 of 48.

- diffusers runs cfg as one 2B call, then the STG pass and the isolation pass as two more B calls;
- ours runs all four passes as one 4B call (`GuidanceAttentionControl`); the conditional and STG passes are
  identical before the STG block, so those blocks run them once (3B rows there);
- also ours with audio `skip_step=1`, ours with sequential passes (`max_batch_passes=1`, lowest memory) and ours
  without the shared prefix (batching alone).

Time per step is measured between step-end callbacks (transformer + guidance + sampler; prompt encoding and
decoding excluded), from the second step on, after a warm-up run; the variants are run interleaved so that load
from other processes hits all of them alike. Medians and ratios to diffusers' median are printed.

Then the STG check: diffusers' STG is a silent no-op when the transformer config has `perturbed_attn=False`
(the factory's and LTX-2.0 conversions' setting): its output with stg 1 equals the output with stg 0 up to fp32
rounding (its "perturbed" pass is an unperturbed B-row call compared with rows of a 2B call, ~1e-5), while ours
changes by orders of magnitude more.

    python benchmarks/bench_guidance.py [--steps 5] [--repeats 2] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffusers import LTX2Pipeline  # noqa: E402

from diffusers_ltx2 import GuidanceAttentionControl, LTX2AudioVideoPipeline, LTX2Scheduler, MultimodalGuider  # noqa: E402
from diffusers_ltx2.factory import SMALL, SMALL_CLIP, build_components, build_scheduler  # noqa: E402

PROMPT = "a cat walks on the beach at sunset, waves and wind"
VIDEO = dict(cfg=3.0, stg=1.0, modality_scale=3.0, rescale=0.7)
AUDIO = dict(cfg=7.0, stg=1.0, modality_scale=3.0, rescale=0.7)
STG_BLOCK = round(29 / 48 * SMALL.num_layers)  # 5


def diffusers_dials(stg: float = 1.0) -> dict:
    return dict(guidance_scale=VIDEO["cfg"], stg_scale=stg, modality_scale=VIDEO["modality_scale"],
                guidance_rescale=VIDEO["rescale"], audio_guidance_scale=AUDIO["cfg"], audio_stg_scale=stg,
                audio_modality_scale=AUDIO["modality_scale"], audio_guidance_rescale=AUDIO["rescale"],
                spatio_temporal_guidance_blocks=[STG_BLOCK], use_cross_timestep=True)


def our_guider(stg: float = 1.0, audio_skip_step: int = 0) -> MultimodalGuider:
    return MultimodalGuider(video=dict(VIDEO, stg=stg), audio=dict(AUDIO, stg=stg, skip_step=audio_skip_step),
                            skip_blocks=[STG_BLOCK])


def step_times(pipe, steps: int, **kwargs) -> list[float]:
    """Seconds per denoising step, steps 2..n (each interval between two step-end callbacks)."""
    marks: list[float] = []

    def on_step_end(_pipe, _step, _t, _tensors):
        marks.append(time.perf_counter())
        return {}

    pipe(PROMPT, num_inference_steps=steps, output_type="latent", callback_on_step_end=on_step_end,
         generator=torch.Generator().manual_seed(0), max_sequence_length=SMALL.max_sequence_length, **SMALL_CLIP,
         **kwargs)
    return [b - a for a, b in zip(marks, marks[1:])]


def final_latents(pipe, steps: int, **kwargs):
    out = pipe(PROMPT, num_inference_steps=steps, output_type="latent", generator=torch.Generator().manual_seed(0),
               max_sequence_length=SMALL.max_sequence_length, **SMALL_CLIP, **kwargs)
    return out.frames, out.audio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    components = build_components(SMALL, seed=0)
    assert components["transformer"].config.perturbed_attn is False
    theirs = LTX2Pipeline(scheduler=build_scheduler(), **components)
    ours = LTX2AudioVideoPipeline(scheduler=LTX2Scheduler(), **components)
    unshared = LTX2AudioVideoPipeline.from_pipe(ours)
    unshared.attention_control_for = lambda guider: GuidanceAttentionControl(unshared.transformer, share_prefix=False)
    for pipe in (theirs, ours, unshared):
        pipe.set_progress_bar_config(disable=True)

    runs = {
        "diffusers LTX2Pipeline": lambda: step_times(theirs, args.steps, **diffusers_dials()),
        "ours (one batched call)": lambda: step_times(ours, args.steps, guider=our_guider()),
        "ours, audio skip_step=1": lambda: step_times(ours, args.steps, guider=our_guider(audio_skip_step=1)),
        "ours, sequential passes": lambda: step_times(ours, args.steps, guider=our_guider(), max_batch_passes=1),
        "ours, no shared prefix": lambda: step_times(unshared, args.steps, guider=our_guider()),
    }
    print(f"SMALL config ({SMALL.num_layers} blocks, {SMALL.video_inner_dim}/{SMALL.audio_inner_dim} wide), "
          f"clip {SMALL_CLIP}, {args.steps} steps, {torch.get_num_threads()} threads, STG block {STG_BLOCK}")
    times = {name: [] for name in runs}
    with torch.inference_mode():
        for run in runs.values():
            run()  # warm-up
        for _ in range(args.repeats):
            for name, run in runs.items():
                times[name] += run()
    base = statistics.median(times["diffusers LTX2Pipeline"])
    for name, values in times.items():
        med = statistics.median(values)
        print(f"{name:>26}: {med * 1000:8.1f} ms/step  ({med / base:.2f}x diffusers, n={len(values)}, "
              f"min {min(values) * 1000:.1f}, max {max(values) * 1000:.1f})")

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
