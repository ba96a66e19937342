"""Several ranks for one clip: per-step communication bytes and wall time of each layout.

Layouts: one process (baseline), guidance-pass parallel (`passes`), sequence parallel (`sequence`) and both
(`passes+sequence`, 4 ranks or more). The call: the full multimodal guider (cfg, STG, modality isolation: 4 passes
a step) on the SMALL or TINY factory model, `output_type="latent"` (no decode), after a one-step warm-up.

Columns: median seconds per step (between step-end callbacks, from the second step on); bytes one rank receives in
a denoising step (median over the steps), counted at every collective from its tensors' shapes
(`distributed.comm.CommCounter`: x0 all-gather, status flags, Ulysses all-to-all, gathered keys / RoPE, the output
all-gather), next to the formula of the x0 all-gather (`passes.pass_gather_bytes`; the 4-byte status flags make
the difference). Sequence-parallel steps move rows as STG / isolation / the shared prefix compute them, which the
all-rows formula `comm.sequence_call_bytes` does not model; it is checked against the counter in the tests on
unguided calls and used below for the real model.
Step peak: the allocation peak of the warm-up step on rank 0 (`memory.measure.AllocationTracker` around the pass
executor: activations and buffers of the step, weights excluded; that run is not timed). Then the formulas for
the real LTX-2 19B transformer (48 blocks, 32 x 128 video heads, bf16) at 768x512, 121 frames.

On CPU (gloo, ranks sharing the cores) the wall times say nothing about GPUs; on a machine with N GPUs run it under
`torchrun --nproc-per-node N benchmarks/bench_parallel.py --size small` (NCCL).

    python benchmarks/bench_parallel.py [--ranks 2] [--size small|tiny] [--steps 3]     # spawns gloo ranks itself
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import socket
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

PROMPT = "a cat walks on the beach at sunset, waves and wind"


def _clip(size: str) -> dict:
    from diffusers_ltx2.factory import SMALL_CLIP, TINY_CLIP

    return dict(SMALL_CLIP if size == "small" else TINY_CLIP)


def _pipe(size: str, text: bool):
    from diffusers_ltx2 import LTX2AudioVideoPipeline, LTX2Scheduler, MultimodalGuider
    from diffusers_ltx2.factory import SMALL, TINY, build_components

    comps = build_components(SMALL if size == "small" else TINY, seed=0)
    if not text:
        comps.update(text_encoder=None, tokenizer=None)
    pipe = LTX2AudioVideoPipeline(scheduler=LTX2Scheduler(), guider=MultimodalGuider(), **comps)
    pipe.set_progress_bar_config(disable=True)
    return pipe


class _Counted:
    """Pass executor wrapper counting the communication of each denoising step."""

    def __init__(self, inner, track_memory: bool):
        self.inner, self.counters, self.peaks, self.track_memory = inner, [], [], track_memory

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __call__(self, *args):
        from diffusers_ltx2.distributed.comm import CommCounter
        from diffusers_ltx2.memory.measure import AllocationTracker

        if self.track_memory:  # the tracker slows every op down: its runs are not timed
            with AllocationTracker() as tracker:
                out = self.inner(*args)
            self.peaks.append(tracker.peak)
            return out
        with CommCounter() as counter:
            out = self.inner(*args)
        self.counters.append(counter)
        return out


def _timed_call(pipe, size: str, steps: int, device) -> tuple[list[float], "_Counted", int]:
    """Seconds per step (from the second step on) and the steps' `CommCounter`s of one call, after a one-step
    warm-up whose allocation peak is measured (returned third)."""
    stamps, executors = [], []
    wrap = pipe.pass_executor
    track = [True]

    def executor(local):
        executors.append(_Counted(wrap(local) if wrap is not None else local, track[0]))
        return executors[-1]

    def on_step(p, i, sigma, tensors):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        stamps.append(time.perf_counter())
        return {}

    kwargs = dict(**_clip(size), output_type="latent", callback_on_step_end=on_step)
    pipe.pass_executor = executor
    pipe(PROMPT, num_inference_steps=1, generator=torch.Generator().manual_seed(0), **kwargs)  # warm-up, memory
    peak = max(executors[0].peaks)
    stamps.clear()
    track[0] = False
    pipe(PROMPT, num_inference_steps=steps, generator=torch.Generator().manual_seed(0), **kwargs)
    pipe.pass_executor = wrap
    return [b - a for a, b in zip(stamps, stamps[1:])], executors[-1], peak


def _layouts(world: int):
    from diffusers_ltx2.distributed import ParallelLayout

    out = [("passes", ParallelLayout(passes=world)), ("sequence", ParallelLayout(sequence=world))]
    if world >= 4 and world % 2 == 0:
        out.append(("passes+sequence", ParallelLayout(passes=2, sequence=world // 2)))
    return out


def rank_main(size: str, steps: int) -> list | None:
    import torch.distributed as dist

    from diffusers_ltx2.distributed import build_context, enable_parallel, init_distributed

    runtime = init_distributed(timeout_s=3600)
    device = runtime.device
    rows = []
    if runtime.rank == 0:  # the one-process baseline, while the others wait
        times, counted, peak = _timed_call(_pipe(size, True).to(device), size, steps, device)
        rows.append(("one process", 1, times, 0, None, peak))
    dist.barrier()
    for name, layout in _layouts(runtime.world_size):
        context = build_context(runtime, layout)
        pipe = enable_parallel(_pipe(size, context.is_clip_leader).to(device), context)
        times, counted, peak = _timed_call(pipe, size, steps, device)
        per_step = statistics.median(c.total for c in counted.counters)
        formula = None
        if layout.sequence == 1:
            from diffusers_ltx2.distributed.passes import pass_gather_bytes

            cfg = pipe.transformer.config
            plan = pipe.guider.plan(0, steps, 1.0)
            formula = pass_gather_bytes(counted.inner.last_shares, plan, (1, _tokens(pipe, size), cfg.in_channels),
                                        (1, _audio_tokens(pipe, size), cfg.audio_in_channels))["received"]
        rows.append((name, runtime.world_size, times, per_step, formula, peak))
    return rows if runtime.rank == 0 else None


def _tokens(pipe, size):
    from diffusers_ltx2.latents import layout as L

    c = _clip(size)
    f, h, w = L.latent_video_size(c["num_frames"], c["height"], c["width"], pipe.vae_temporal_compression_ratio,
                                  pipe.vae_spatial_compression_ratio)
    return f * h * w


def _audio_tokens(pipe, size):
    from diffusers_ltx2.latents import layout as L

    c = _clip(size)
    return L.audio_latent_length(c["num_frames"], c["frame_rate"], L.audio_latents_per_second(pipe.audio_vae))


def _child(rank, world, port, size, steps, queue):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    queue.put((rank, rank_main(size, steps)))


#: the LTX-2 19B transformer's config entries the formulas read
LTX2_19B = dict(num_attention_heads=32, attention_head_dim=128, audio_num_attention_heads=32,
                audio_attention_head_dim=64, audio_cross_attention_dim=2048, out_channels=128, num_layers=48)


def real_model_formulas() -> list[str]:
    """Per-step bytes of the real LTX-2 19B transformer at 768x512, 121 frames (pure formulas)."""
    from diffusers_ltx2.distributed.comm import sequence_call_bytes
    from diffusers_ltx2.distributed.passes import assign_passes, pass_gather_bytes
    from diffusers_ltx2.guiders import MultimodalGuider

    video_tokens, audio_tokens = 16 * 16 * 24, 126  # 121 frames -> 16 latent frames of 16 x 24; 5.04 s of audio
    plan = MultimodalGuider().plan(0, 40, 1.0)
    lines = []
    for ranks in (2, 4):
        g = pass_gather_bytes(assign_passes(list(plan.passes), ranks), plan, (1, video_tokens, 128),
                              (1, audio_tokens, 128))
        lines.append(f"  passes x{ranks}: x0 all-gather {g['received'] / 2**20:.2f} MiB received per rank per step")
    for ranks in (2, 4, 8):
        b = sequence_call_bytes(LTX2_19B, rows=4, video_tokens=video_tokens, audio_tokens=audio_tokens, shards=ranks,
                                itemsize=2)
        lines.append(f"  sequence x{ranks} (Ulysses, 4 rows a step): {b['total'] / 2**30:.2f} GiB received per rank "
                     f"per step (video self-attention {b['attn1'] / 2**30:.2f}, video-to-audio {b['v2a'] / 2**30:.2f})")
    return lines


def _print(rows, size, steps):
    print(f"{size.upper()} model, {steps} steps, full multimodal guider (4 passes), device "
          f"{'cuda' if torch.cuda.is_available() else 'cpu'}")
    print(f"{'layout':<18}{'ranks':>6}{'s/step (median)':>18}{'bytes/step/rank':>18}{'formula (x0)':>14}"
          f"{'step peak MiB':>15}")
    for name, ranks, times, total, formula, peak in rows:
        med = statistics.median(times) if times else float("nan")
        print(f"{name:<18}{ranks:>6}{med:>18.3f}{int(total):>18,}{'' if formula is None else f'{formula:,}':>14}"
              f"{peak / 2**20:>15.1f}")
    print("LTX-2 19B, 768x512, 121 frames (formulas, not measured):")
    print("\n".join(real_model_formulas()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--size", choices=("small", "tiny"), default="small")
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    if "WORLD_SIZE" in os.environ:  # started by torchrun / accelerate
        rows = rank_main(args.size, args.steps)
        if rows is not None:
            _print(rows, args.size, args.steps)
        return 0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_child, args=(r, args.ranks, port, args.size, args.steps, queue))
             for r in range(args.ranks)]
    for p in procs:
        p.start()
    results = dict(queue.get() for _ in procs)
    for p in procs:
        p.join()
    _print(results[0], args.size, args.steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
