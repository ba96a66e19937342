"""IC-LoRA training step time and peak memory on the SMALL config (8 blocks, 512 / 256 wide, 54M-parameter DiT).

Variants (rank-32 LoRA on the official IC-LoRA modules attn1 / attn2 / ff, batch 1, 256x384x17 clips = 288 target
tokens, AdamW, fp32):

- ``ref_f1``:           reference at full size (+288 reference tokens), precomputed latents
- ``ref_f2``:           reference downscaled 2x (+72 tokens), precomputed latents
- ``ref_f2_ckpt``:      ``ref_f2`` with gradient checkpointing
- ``ref_f2_on_the_fly``: ``ref_f2`` but every step VAE-encodes the clip and the reference and runs Gemma + the
  connectors on the caption (what precomputing saves)

Step times: medians of ``--steps`` optimizer steps per variant per round, variants interleaved over ``--rounds``.
Memory: the activations autograd keeps for the backward pass (bytes of the distinct storages saved by one training
step, parameters excluded; measured with ``saved_tensors_hooks``, deterministic, what checkpointing and a smaller
reference reduce), and on CUDA also the step's ``max_memory_allocated``.

    python benchmarks/bench_training.py [--steps 3] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

VARIANTS = ("ref_f1", "ref_f2", "ref_f2_ckpt", "ref_f2_on_the_fly")
HEIGHT, WIDTH, FRAMES = 256, 384, 17


class Bench:
    """One variant: a trainer over a synthetic SMALL dataset, and (on the fly) the encoders."""

    def __init__(self, variant: str, workdir: Path):
        from diffusers_ltx2 import LTX2ICLoRAPipeline, LTX2Scheduler
        from diffusers_ltx2.factory import SMALL, build_components
        from diffusers_ltx2.training.config import parse_config
        from diffusers_ltx2.training.data import write_entry
        from diffusers_ltx2.training.trainer import Trainer

        factor = 1 if variant == "ref_f1" else 2
        components = build_components(SMALL, seed=0)
        self.pipe = LTX2ICLoRAPipeline(scheduler=LTX2Scheduler(), **components)
        g = torch.Generator().manual_seed(0)
        self.pixels = torch.rand(FRAMES, 3, HEIGHT, WIDTH, generator=g)
        self.caption = "a red fox runs through the snow"
        root = workdir / f"data_f{factor}"
        if not (root / "latents" / "clip0.safetensors").is_file():
            lat, ref, emb = self.encode(factor)
            write_entry(root / "conditions" / "clip0.safetensors", {
                "video_context": emb.video_context[0], "audio_context": emb.audio_context[0],
                "attention_mask": emb.attention_mask[0]})
            write_entry(root / "reference_latents" / "clip0.safetensors", {"latents": ref},
                        {"control_type": "canny", "reference_downscale_factor": factor})
            write_entry(root / "latents" / "clip0.safetensors", {"latents": lat}, {"fps": 24.0})
        self.factor = factor
        self.on_the_fly = variant.endswith("on_the_fly")
        cfg = parse_config({
            "model": {"model_path": "factory:small"}, "data": {"preprocessed_data_root": str(root)},
            "training_strategy": {"name": "video_to_video", "reference_downscale_factor": factor},
            "lora": {"rank": 32, "target_modules": "video"},
            "optimization": {"steps": 10 ** 6, "enable_gradient_checkpointing": variant.endswith("ckpt")},
            "output_dir": str(workdir / f"out_{variant}"),
        })
        self.trainer = Trainer(cfg, transformer=components["transformer"]).setup()
        self.batch = self.trainer.batch_for([0])
        self.k = 0

    def encode(self, factor: int):
        """VAE latents of the clip and of its (downscaled) reference, and the caption's connector embeddings."""
        from diffusers_ltx2.control.video import fit_frames

        with torch.no_grad():
            lat = self.pipe.encode_video(self.pixels, 1, "cpu")[0]
            small = fit_frames(self.pixels, FRAMES, HEIGHT // factor, WIDTH // factor)
            ref = self.pipe.encode_video(small, 1, "cpu")[0]
            emb = self.pipe.encode_prompt([self.caption], None, need_negative=False, device="cpu").positive
        return lat, ref, emb

    def step(self) -> None:
        t = self.trainer
        batch = self.batch
        if self.on_the_fly:
            lat, ref, emb = self.encode(self.factor)
            batch = dict(batch, latents=lat[None], reference_latents=ref[None], video_context=emb.video_context,
                         audio_context=emb.audio_context, attention_mask=emb.attention_mask)
        loss = t.compute_loss(batch, [self.k])
        t.accelerator.backward(loss.mean())
        t.optimizer.step()
        t.optimizer.zero_grad(set_to_none=True)
        self.k += 1


def saved_activation_bytes(bench: "Bench") -> int:
    """Bytes of the distinct non-parameter storages autograd saves during one training step."""
    params = {p.untyped_storage().data_ptr() for p in bench.trainer.unwrapped.parameters()}
    saved: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        bench.step()
    return sum(saved.values())


def cuda_peak_bytes(bench: "Bench") -> int | None:
    if not torch.cuda.is_available():
        return None
    torch.cuda.reset_peak_memory_stats()
    bench.step()
    return torch.cuda.max_memory_allocated()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        benches = {v: Bench(v, workdir) for v in VARIANTS}
        for b in benches.values():
            b.step()  # warm-up
        memory = {v: (saved_activation_bytes(b), cuda_peak_bytes(b)) for v, b in benches.items()}
        times = {v: [] for v in VARIANTS}
        for _ in range(args.rounds):
            for v, b in benches.items():
                for _ in range(args.steps):
                    start = time.perf_counter()
                    b.step()
                    times[v].append(time.perf_counter() - start)
    base = statistics.median(times["ref_f2"])
    print("| variant | ms / step | vs ref_f2 | saved activations | CUDA peak |")
    print("|---|---|---|---|---|")
    for v in VARIANTS:
        med = statistics.median(times[v])
        act, peak = memory[v]
        cuda = "-" if peak is None else f"{peak / 2 ** 20:.0f} MiB"
        print(f"| {v} | {med * 1000:.0f} | {med / base:.2f}x | {act / 2 ** 20:.1f} MiB | {cuda} |")


if __name__ == "__main__":
    main()
