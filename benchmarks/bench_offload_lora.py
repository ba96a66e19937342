"""LoRA with weight streaming: load / re-weight / unload a LoRA under each offload mode (SMALL config, fp32, CPU).

For each mode (resident, `model`, `blocks`, `disk`), applied before the LoRA: seconds to `load_lora_weights` a
rank-32 official-format LoRA on every attention and feed-forward linear of every block, to `set_adapters` it to
0.5 and to `unload_lora_weights` it, the bytes of the `disk` mode's group files before and after each step (the
files follow the parameters: the LoRA factors are added to and removed from them), and the largest difference of
the latents against the resident pipeline after each step (0 = the same result).

CPU only here: `model` / `blocks` move nothing on CPU; `disk` really rewrites and reads its files. Times are of a
shared machine (medians over `--repeats`).

    python benchmarks/bench_offload_lora.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffusers_ltx2 import ClassifierFreeGuidance, LTX2AudioVideoPipeline, LTX2Scheduler  # noqa: E402
from diffusers_ltx2.factory import SMALL, build_components  # noqa: E402
from diffusers_ltx2.memory import apply_offload  # noqa: E402

CLIP = dict(height=64, width=64, num_frames=9, frame_rate=24.0)
TARGETS = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "attn2.to_q", "attn2.to_k", "attn2.to_v",
           "attn2.to_out.0", "ff.net.0.proj", "ff.net.2")


def write_lora(path, transformer, rank=32):
    g = torch.Generator().manual_seed(0)
    sd = {}
    for i in range(len(transformer.transformer_blocks)):
        for t in TARGETS:
            w = transformer.get_submodule(f"transformer_blocks.{i}.{t}").weight
            key = f"diffusion_model.transformer_blocks.{i}.{t}"
            sd[f"{key}.lora_A.weight"] = torch.randn(rank, w.shape[1], generator=g) * 0.05
            sd[f"{key}.lora_B.weight"] = torch.randn(w.shape[0], rank, generator=g) * 0.05
    save_file(sd, str(path))


def latents(pipe):
    return pipe("a cat", num_inference_steps=1, generator=torch.Generator().manual_seed(0), output_type="latent",
                max_sequence_length=SMALL.max_sequence_length, **CLIP).frames


def folder_bytes(folder):
    return sum(f.stat().st_size for f in Path(folder).rglob("*.safetensors")) if folder else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    components = build_components(SMALL, seed=0)
    work = tempfile.mkdtemp(prefix="bench-offload-lora-")
    lora = os.path.join(work, "lora.safetensors")
    write_lora(lora, components["transformer"])
    steps = {
        "load": lambda p: p.load_lora_weights(lora, adapter_name="style", reference_downscale_factor=1),
        "set_adapters 0.5": lambda p: p.set_adapters("style", 0.5),
        "unload": lambda p: p.unload_lora_weights(),
    }
    results = {}
    reference = {}
    for mode in (None, "model", "blocks", "disk"):
        times = {name: [] for name in steps}
        for r in range(args.repeats):
            pipe = LTX2AudioVideoPipeline(scheduler=LTX2Scheduler(), guider=ClassifierFreeGuidance(1.0, 1.0),
                                          **copy.deepcopy(components))
            pipe.set_progress_bar_config(disable=True)
            folder = os.path.join(work, f"{mode}-{r}") if mode == "disk" else None
            apply_offload(pipe, mode, "cpu", offload_folder=folder)
            sizes = [folder_bytes(folder)]
            diffs = []
            for name, step in steps.items():
                t0 = time.perf_counter()
                step(pipe)
                times[name].append(time.perf_counter() - t0)
                sizes.append(folder_bytes(folder))
                if r == 0:
                    out = latents(pipe)
                    if mode is None:
                        reference[name] = out
                    diffs.append((out - reference[name]).abs().max().item())
            if r == 0:
                results[mode] = (sizes, diffs)
            del pipe
        print(f"| {mode or 'resident'} | " + " | ".join(f"{statistics.median(times[n]):.2f} s" for n in steps)
              + f" | {' -> '.join(f'{b / 2**20:.1f}' for b in results[mode][0]) if mode == 'disk' else '-'} | "
              + " / ".join(f"{d:.3g}" for d in results[mode][1]) + " |", flush=True)


if __name__ == "__main__":
    print("| offload | load | set_adapters 0.5 | unload | disk files MiB (start -> load -> set -> unload) | "
          "latents vs resident, max abs (load / set / unload) |")
    print("|---|---|---|---|---|---|")
    main()
