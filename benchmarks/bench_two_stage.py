"""Time to a finished clip at the same output size (SMALL config, 256x384, 17 frames, CPU): one stage vs two stages.

Variants (run interleaved, `--repeats` rounds, after one warm-up round; prompt encoding, denoising, upsampling and
decoding included):

- `one_stage`: `LTX2AudioVideoPipeline` at 256x384, 40 steps, multimodal guidance with the recommended dials
  (video cfg 3 / stg 1 / modality 3 / rescale 0.7, audio cfg 7 / stg 1 / modality 3 / rescale 0.7): 4 passes per
  step on 3x8x12 = 288 video tokens;
- `two_stage`: `LTX2TwoStagePipeline`, the same 40 guided steps at 128x192 (3x4x6 = 72 video tokens), the latent
  upsampler, then 3 unguided refine steps at 256x384 with a distilled LoRA stand-in (rank 32 on every attention
  and feed-forward linear of every block, PEFT adapter, unfused);
- `distilled`: the distilled recipe: 8 unguided steps at 128x192, upsampler, 3 unguided steps at 256x384.

The upsampler has the official architecture (3-D res blocks, pixel shuffle x2) at `--upsampler-width` channels
(official: 512 for 128 latent channels); random weights, so the clips are noise: only the time is measured.

    python benchmarks/bench_two_stage.py [--repeats 2] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffusers.pipelines.ltx2.latent_upsampler import LTX2LatentUpsamplerModel  # noqa: E402

from diffusers_ltx2 import LTX2AudioVideoPipeline, LTX2Scheduler, LTX2TwoStagePipeline, MultimodalGuider  # noqa: E402
from diffusers_ltx2.factory import SMALL, SMALL_CLIP, build_components  # noqa: E402

PROMPT = "a cat walks on the beach at sunset, waves and wind"
STG_BLOCK = round(29 / 48 * SMALL.num_layers)  # 5, LTX-2.0's block 29 of 48 at SMALL's depth
LORA_TARGETS = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "attn2.to_q", "attn2.to_k",
                "attn2.to_v", "attn2.to_out.0", "ff.net.0.proj", "ff.net.2", "audio_attn1.to_q",
                "audio_attn1.to_k", "audio_attn1.to_v", "audio_attn1.to_out.0", "audio_ff.net.0.proj", "audio_ff.net.2")


def guider() -> MultimodalGuider:
    return MultimodalGuider(video=dict(cfg=3.0, stg=1.0, modality_scale=3.0, rescale=0.7),
                            audio=dict(cfg=7.0, stg=1.0, modality_scale=3.0, rescale=0.7), skip_blocks=[STG_BLOCK])


def distilled_lora_stand_in(transformer, rank: int = 32) -> dict:
    g = torch.Generator().manual_seed(0)
    sd = {}
    for i in range(len(transformer.transformer_blocks)):
        for t in LORA_TARGETS:
            w = transformer.get_submodule(f"transformer_blocks.{i}.{t}").weight
            key = f"diffusion_model.transformer_blocks.{i}.{t}"
            sd[f"{key}.lora_A.weight"] = torch.randn(rank, w.shape[1], generator=g) * 0.01
            sd[f"{key}.lora_B.weight"] = torch.randn(w.shape[0], rank, generator=g) * 0.01
    return sd


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--upsampler-width", type=int, default=512)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    components = build_components(SMALL, seed=0)
    one = LTX2AudioVideoPipeline(scheduler=LTX2Scheduler(), guider=guider(), **components)
    up = LTX2LatentUpsamplerModel(in_channels=SMALL.latent_channels, mid_channels=args.upsampler_width,
                                  num_blocks_per_stage=4, use_rational_resampler=False).eval()
    two = LTX2TwoStagePipeline.from_pipe(one, latent_upsampler=up)
    two.load_distilled_lora(distilled_lora_stand_in(two.transformer), strength=1.0)
    for p in (one, two):
        p.set_progress_bar_config(disable=True)
    clip = dict(SMALL_CLIP, output_type="np")
    variants = {
        "one_stage": lambda: one(PROMPT, num_inference_steps=args.steps, **clip),
        "two_stage": lambda: two(PROMPT, num_inference_steps=args.steps, guider=guider(), **clip),
        "distilled": lambda: two(PROMPT, distilled=True, **clip),
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    for round_ in range(args.repeats + 1):  # round 0 warms up
        for name, run in variants.items():
            gen_start = time.perf_counter()
            out = run()
            elapsed = time.perf_counter() - gen_start
            assert out.frames.shape[2:4] == (SMALL_CLIP["height"], SMALL_CLIP["width"]), out.frames.shape
            if round_:
                times[name].append(elapsed)
            print(f"round {round_} {name:10s} {elapsed:7.2f} s", flush=True)
    base = statistics.median(times["one_stage"])
    print(f"\nSMALL, {SMALL_CLIP['height']}x{SMALL_CLIP['width']}x{SMALL_CLIP['num_frames']}, "
          f"{torch.get_num_threads()} threads, median of {args.repeats}:")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"  {name:10s} {med:7.2f} s   x{med / base:.3f} of one_stage")


if __name__ == "__main__":
    main()
