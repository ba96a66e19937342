"""Sliding-window long video: peak memory of a 5-window clip against a 1-window clip, and time per window.

A random-weight model from `diffusers_ltx2.factory` (TINY or SMALL) generates clips of one, two and five windows
(`pipe.generate_long_video`, same window / overlap / steps), interleaved (1, 2, 5, 1, 2, 5, ...) so that machine
load hits them alike. Windows after the first are guided calls (appended guide tokens, per-token timesteps), so
the 2-window run shows what a guided window adds and the 5-window run whether anything grows after it. For each
run:
- generation peak: bytes allocated during the windowed generation (`output_type="latent"`: every window's
  denoising, guides and joins; finished windows are kept on the CPU), counted by `AllocationTracker` (on CUDA also
  `torch.cuda.max_memory_allocated`, which does not see the CPU-held windows);
- decode peak: bytes allocated decoding the whole clip's latents into frames and one waveform (grows with the
  clip's frames: the output itself);
- time per window (generation seconds / windows, timed in a run of its own without the tracker).
- a one-window guided call: one window's call with the overlap guide a later window gets (`LatentGuide` of the
  same shape, random latents), to show that a later window costs what any one-window call with appended
  conditioning tokens costs.
Peak memory is given two ways: the device peak a user sees (`torch.cuda.max_memory_allocated`: the resident
weights and buffers plus the generation peak; on CPU the resident bytes are summed from the pipeline's modules) and
the generation peak alone (activations, guides, finished latents). Medians over the repeats; the issue's bound is
the 5-window / 1-window device peak <= 1.15.

    python benchmarks/bench_long_video.py [--size tiny|small] [--window 41] [--overlap 16] [--steps 4]
        [--height 64] [--width 64] [--repeats 3] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffusers_ltx2.conditioning.latent_guide import LatentGuide  # noqa: E402
from diffusers_ltx2 import ClassifierFreeGuidance, LTX2AudioVideoPipeline, LTX2Scheduler  # noqa: E402
from diffusers_ltx2.factory import SMALL, TINY, build_components  # noqa: E402
from diffusers_ltx2.long_video import plan_windows  # noqa: E402
from diffusers_ltx2.memory.measure import AllocationTracker  # noqa: E402
from diffusers_ltx2.quantization import weight_bytes  # noqa: E402

MiB = 2**20


def frames_for(windows: int, window: int, overlap: int) -> int:
    """Frames of a clip that `windows` full windows make."""
    w, o = (window - 1) // 8 + 1, overlap // 8
    return (w + (windows - 1) * (w - o) - 1) * 8 + 1


def resident_bytes(pipe) -> int:
    """Bytes of every parameter and buffer of the pipeline's modules (what is allocated before a call)."""
    return sum(weight_bytes(c) for c in pipe.components.values() if isinstance(c, torch.nn.Module))


def guided_window_peak(pipe, args) -> int:
    """Generation peak of one window's call guided like a later window: the overlap guide is the tail of a finished
    window's latents (video: the last `overlap / 8` latent frames; audio: the matching audio latents), as
    `generate_long_video` cuts it."""
    call = dict(num_frames=args.window, height=args.height, width=args.width, num_inference_steps=args.steps,
                max_sequence_length=128, output_type="latent")
    with torch.no_grad():
        done = pipe("a red fox trots through snow", generator=torch.Generator().manual_seed(1), **call)
    video = done.frames[:, :, -(args.overlap // 8):].clone()
    audio = done.audio[:, :, -round(done.audio.shape[2] * args.overlap / args.window):].clone()
    del done
    with torch.no_grad(), AllocationTracker() as gen:
        pipe("a red fox trots through snow", generator=torch.Generator().manual_seed(0),
             conditions=[LatentGuide(video, audio, 0.5)], **call)
    return gen.peak


def run_once(pipe, num_frames, args):
    device = torch.device(args.device)
    call = dict(num_frames=num_frames, window=args.window, overlap=args.overlap, height=args.height,
                width=args.width, num_inference_steps=args.steps, max_sequence_length=128,
                generator=torch.Generator().manual_seed(0))
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()  # timed without the tracker (its per-operator bookkeeping costs time)
    with torch.no_grad():
        pipe.generate_long_video("a red fox trots through snow", output_type="latent", **call)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    cuda_peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else None  # weights included
    call["generator"] = torch.Generator().manual_seed(0)
    with torch.no_grad(), AllocationTracker() as gen:
        out = pipe.generate_long_video("a red fox trots through snow", output_type="latent", **call)
    with torch.no_grad(), AllocationTracker() as dec:
        pipe.decode_video(out.frames.to(device), "pt")
        pipe.decode_audio(out.audio.to(device), "pt")
    return gen.peak, dec.peak, seconds, cuda_peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=("tiny", "small"), default="tiny")
    parser.add_argument("--window", type=int, default=41)
    parser.add_argument("--overlap", type=int, default=16)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.manual_seed(0)
    components = build_components(TINY if args.size == "tiny" else SMALL, seed=0)
    pipe = LTX2AudioVideoPipeline(scheduler=LTX2Scheduler(), guider=ClassifierFreeGuidance(1.0, 1.0), **components)
    pipe.to(args.device)
    pipe.set_progress_bar_config(disable=True)
    variants = {n: frames_for(n, args.window, args.overlap) for n in (1, 2, 5)}
    for n, frames in variants.items():
        assert len(plan_windows(frames, args.window, args.overlap)) == n
    run_once(pipe, variants[1], args)  # warm-up
    resident = resident_bytes(pipe)
    results = {n: [] for n in variants}
    guided = []
    for _ in range(args.repeats):
        for n, frames in variants.items():  # interleaved
            results[n].append(run_once(pipe, frames, args))
        guided.append(guided_window_peak(pipe, args))
    print(f"{args.size} model, {args.height}x{args.width}, window {args.window}, overlap {args.overlap}, "
          f"{args.steps} steps, device {args.device}, median of {args.repeats}; resident weights and buffers "
          f"{resident / MiB:.2f} MiB")
    med = {n: [statistics.median(r[i] for r in rs) if rs[0][i] is not None else None for i in range(4)]
           for n, rs in results.items()}
    device_peak = {n: (m[3] if m[3] is not None else resident + m[0]) for n, m in med.items()}
    for n, (gen, dec, seconds, cuda) in med.items():
        print(f"{n} window(s), {variants[n]} frames: device peak {device_peak[n] / MiB:.2f} MiB, generation peak "
              f"{gen / MiB:.2f} MiB, decode peak {dec / MiB:.2f} MiB, {seconds / n:.3f} s per window")
    print(f"one-window call with a later window's overlap guide: generation peak "
          f"{statistics.median(guided) / MiB:.2f} MiB")
    print(f"device peak 5 / 1 windows: {device_peak[5] / device_peak[1]:.3f} (bound 1.15); generation peak 5 / 1: "
          f"{med[5][0] / med[1][0]:.3f}, 5 / 2: {med[5][0] / med[2][0]:.3f}, 5 / guided one-window call: "
          f"{med[5][0] / statistics.median(guided):.3f}")


if __name__ == "__main__":
    main()
