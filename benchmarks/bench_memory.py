"""Memory of quantized and offloaded LTX-2 runs (SMALL config, bf16) and bytes of a full-width 19B block.

Variants, run interleaved in one process: bf16, fp8-cast (official), optimum-quanto qfloat8 / qint8 / qint4, and
bf16 with `--offload model` / `blocks` / `disk`. For each: transformer weight bytes (stored), peak bytes
allocated during one guided transformer call (4 guidance passes batched, `AllocationTracker`: what
`max_memory_allocated` would add), the planner's estimate of that call, median step time, and the deviation of
the decoded frames from bf16 (max abs, PSNR in dB over [0, 1] frames). A full-width block (386 M parameters)
gives the bytes ratios the real model would see.

CPU only here: offload modes move nothing on CPU (model / blocks) or go through files (disk), so their time is
hook / disk overhead, not PCIe transfers; quanto dequantizes per matmul on CPU (no int8 / fp8 kernels).

    python benchmarks/bench_memory.py [--steps 4] [--repeats 2] [--threads N] [--dtype bf16|fp32]
    python benchmarks/bench_memory.py --weights-only     # the block bytes table alone, every format

Block bytes per format: quantized for real where the format quantizes on this machine, else (torchao's GPU
formats without a GPU, GGUF block types) the VRAM planner's formula for the format, marked "(formula)".
"""

from __future__ import annotations

import argparse
import copy
import math
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffusers_ltx2 import LTX2AudioVideoPipeline, LTX2Scheduler, MultimodalGuider  # noqa: E402
from diffusers_ltx2.factory import SMALL, SMALL_CLIP, build_components  # noqa: E402
from diffusers_ltx2.memory import apply_offload  # noqa: E402
from diffusers_ltx2.memory.budget import Clip, activation_bytes  # noqa: E402
from diffusers_ltx2.memory.footprint import footprint_from_pipeline  # noqa: E402
from diffusers_ltx2.memory.measure import track_module_peak  # noqa: E402
from diffusers_ltx2.quantization import quantize_transformer_, weight_bytes  # noqa: E402
from diffusers_ltx2.memory.sizing import full_width_block, model_bytes  # noqa: E402

PROMPT = "a cat walks on the beach at sunset, waves and wind"
STG_BLOCK = round(29 / 48 * SMALL.num_layers)
VARIANTS = [("bf16", None, None), ("fp8-cast", "fp8-cast", None), ("quanto fp8", "fp8", None),
            ("quanto int8", "int8", None), ("quanto int4", "int4", None),
            ("bf16 + offload model", None, "model"), ("bf16 + offload blocks", None, "blocks"),
            ("bf16 + offload disk", None, "disk")]


def build(components, quantization, offload, folder):
    pipe = LTX2AudioVideoPipeline(scheduler=LTX2Scheduler(), guider=MultimodalGuider(skip_blocks=[STG_BLOCK]),
                                  **copy.deepcopy(components))
    if quantization:
        quantize_transformer_(pipe.transformer, quantization)
    stored = weight_bytes(pipe.transformer)
    apply_offload(pipe, offload, "cpu", offload_folder=folder)
    return pipe, stored


def run(pipe, steps):
    """(seconds per step from the second on, decoded frames (B, F, 3, H, W) in [0, 1], transformer peaks)."""
    marks = []
    peaks = track_module_peak(pipe.transformer)

    def on_step_end(_pipe, _step, _t, _tensors):
        marks.append(time.perf_counter())
        return {}

    out = pipe(PROMPT, num_inference_steps=steps, output_type="pt", callback_on_step_end=on_step_end,
               generator=torch.Generator().manual_seed(0), max_sequence_length=SMALL.max_sequence_length,
               **SMALL_CLIP)
    return [b - a for a, b in zip(marks, marks[1:])], out.frames.float(), max(peaks)


def psnr(x, ref):
    mse = torch.mean((x - ref) ** 2).item()
    return float("inf") if mse == 0 else 10 * math.log10(1.0 / mse)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--weights-only", action="store_true", help="print the block bytes table and stop")
    parser.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16",
                        help="model dtype (fp32 runs much faster on CPU; the bytes ratios are then vs fp32)")
    args = parser.parse_args()
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=FutureWarning)

    from diffusers_ltx2.quantization import QUANTIZATION_MODES
    from diffusers_ltx2.memory.sizing import can_quantize_here

    print("full-width LTX-2 19B block (386 M parameters; a quantized one for fp8-scaled-mm), stored bytes:")
    block = full_width_block()
    bf16_block = model_bytes(block, None)
    for mode in (None, *QUANTIZATION_MODES, "gguf-Q8_0", "gguf-Q5_K", "gguf-Q4_0"):
        b = model_bytes(block, mode)
        how = "" if can_quantize_here(mode) else "  (formula)"
        print(f"  {mode or 'bf16':20s} {b / 2**20:8.1f} MiB  {b / bf16_block:.4f} x bf16{how}")
    if args.weights_only:
        return

    components = {k: (v.to(dtype) if isinstance(v, torch.nn.Module) and k != "tokenizer" else v)
                  for k, v in build_components(SMALL, seed=0).items()}
    folder = tempfile.mkdtemp(prefix="ltx2-offload-")
    pipes = {name: build(components, q, o, f"{folder}/{i}") for i, (name, q, o) in enumerate(VARIANTS)}
    fp = footprint_from_pipeline(pipes["bf16"][0])
    clip = Clip(SMALL_CLIP["num_frames"], SMALL_CLIP["height"], SMALL_CLIP["width"], SMALL_CLIP["frame_rate"],
                text_tokens=SMALL.max_sequence_length)
    est_acts = activation_bytes(fp, clip, passes=4, dtype_bytes=torch.finfo(dtype).bits // 8)
    for name, (pipe, _) in pipes.items():  # warm-up
        run(pipe, 2)
    times = {name: [] for name in pipes}
    frames, peaks = {}, {}
    for _ in range(args.repeats):
        for name, (pipe, _) in pipes.items():
            t, f, peak = run(pipe, args.steps)
            times[name] += t
            frames[name], peaks[name] = f, peak
    base = statistics.median(times["bf16"])
    ref = frames["bf16"]
    print(f"\nSMALL config ({SMALL.num_layers} blocks, 512 / 256 wide), {SMALL_CLIP['height']}x"
          f"{SMALL_CLIP['width']}x{SMALL_CLIP['num_frames']}, 4 guidance passes batched, {args.dtype}, {args.steps} steps")
    print(f"| variant | transformer weights | x {args.dtype} | peak alloc. in a guided call (est.) | ms / step | vs {args.dtype} "
          "| frames max abs | PSNR dB |")
    print("|---|---|---|---|---|---|---|---|")
    bf16_bytes = pipes["bf16"][1]  # the unquantized variant (named bf16; in --dtype fp32 it is fp32)
    for name, (pipe, stored) in pipes.items():
        med = statistics.median(times[name])
        dev = (frames[name] - ref).abs().max().item()
        p = psnr(frames[name], ref)
        print(f"| {name} | {stored / 2**20:.1f} MiB | {stored / bf16_bytes:.3f} | {peaks[name] / 2**20:.1f} MiB "
              f"({est_acts / 2**20:.1f}) | {1000 * med:.0f} | {med / base:.2f}x | {dev:.3g} | "
              f"{'inf' if p == float('inf') else f'{p:.1f}'} |")


if __name__ == "__main__":
    main()
