"""GPU check: one guided denoising step at realistic widths, ours vs diffusers' call pattern, per SDPA backend and
with `torch.compile` on/off. Prints seconds per step and peak GPU memory.

Model: diffusers' `LTX2VideoTransformer3DModel` with LTX-2's real widths (video 32x128 = 4096, audio 32x64 = 2048,
caption 3840) and a few blocks (`--blocks`, default 4; the STG block is the last one but one), random weights,
bf16, `perturbed_attn=True` so that diffusers' own STG really perturbs (a fair amount of work on both sides).
Tokens: 720p-like by default (704x1280, 49 frames -> 7 x 22 x 40 = 6160 video tokens, 51 audio tokens,
`--text` prompt tokens).

Variants, all with the recommended dials (cfg, STG and modality guidance on both modalities = 4 passes):
- diffusers: its `LTX2Pipeline` call pattern - one 2B call (negative + conditional), one B call with
  `spatio_temporal_guidance_blocks`, one B call with `isolate_modalities=True`;
- ours: `TransformerPasses` + `GuidanceAttentionControl`, all 4 passes in one call (the blocks before the STG
  block run 3 passes), and with `max_batch_passes=2` and `1`.
Only the transformer work of a step is timed (the guidance arithmetic is negligible at these sizes).

    python benchmarks/gpu_check.py [--blocks 4] [--steps 5] [--backends default,flash,efficient,cudnn]
                                   [--compile both|on|off] [--height 704 --width 1280 --frames 49] [--device cuda]

A CPU smoke run (tiny sizes, checks the script itself):
    python benchmarks/gpu_check.py --device cpu --dtype float32 --blocks 2 --heads 2 --height 64 --width 64
                                   --frames 9 --text 16 --steps 2 --backends default --compile off
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffusers import LTX2VideoTransformer3DModel  # noqa: E402

from diffusers_ltx2.guiders import GuidancePass, StepPlan  # noqa: E402
from diffusers_ltx2.transformer import GuidanceAttentionControl  # noqa: E402
from diffusers_ltx2.loaders.prompt_embeddings import PromptEmbeddings  # noqa: E402
from diffusers_ltx2.latents.state import ModalityLatents  # noqa: E402
from diffusers_ltx2.transformer.passes import TextContexts, TransformerPasses  # noqa: E402

PASSES = (GuidancePass("cond"), GuidancePass("uncond", negative=True),
          GuidancePass("perturbed", perturb_video=True, perturb_audio=True),
          GuidancePass("isolated", a2v=False, v2a=False))


def build(args, device, dtype):
    heads = args.heads
    tr = LTX2VideoTransformer3DModel(
        num_layers=args.blocks, num_attention_heads=heads, attention_head_dim=128, cross_attention_dim=heads * 128,
        audio_num_attention_heads=heads, audio_attention_head_dim=64, audio_cross_attention_dim=heads * 64,
        caption_channels=args.caption, perturbed_attn=True,
    )
    return tr.to(device=device, dtype=dtype).eval()


def inputs(tr, args, device, dtype):
    g = torch.Generator(device="cpu").manual_seed(0)
    f, h, w = (args.frames - 1) // 8 + 1, args.height // 32, args.width // 32
    nv, na = f * h * w, round(args.frames / 24 * 25)
    cfg = tr.config

    def rnd(*shape):
        return torch.randn(*shape, generator=g).to(device=device, dtype=torch.float32)

    video = ModalityLatents(rnd(1, nv, cfg.in_channels), torch.zeros(1, nv, cfg.in_channels, device=device),
                            torch.ones(1, nv, device=device),
                            tr.rope.prepare_video_coords(1, f, h, w, device, fps=24.0), nv)
    audio = ModalityLatents(rnd(1, na, cfg.audio_in_channels), torch.zeros(1, na, cfg.audio_in_channels, device=device),
                            torch.ones(1, na, device=device), tr.audio_rope.prepare_audio_coords(1, na, device), na)
    mask = torch.ones(1, args.text, dtype=torch.long, device=device)
    ctx = TextContexts(PromptEmbeddings(rnd(1, args.text, args.caption), rnd(1, args.text, args.caption), mask),
                       PromptEmbeddings(rnd(1, args.text, args.caption), rnd(1, args.text, args.caption), mask))
    return video, audio, ctx, (f, h, w, na)


def diffusers_step(tr, video, audio, ctx, grid, stg_block, dtype):
    """The transformer calls diffusers' `LTX2Pipeline` makes per guided step (see its denoising loop)."""
    f, h, w, na = grid
    t = torch.full((2,), 600.0, device=video.latent.device)
    common = dict(num_frames=f, height=h, width=w, fps=24.0, audio_num_frames=na, use_cross_timestep=True,
                  return_dict=False)
    lat, alat = video.latent.to(dtype), audio.latent.to(dtype)
    both = PromptEmbeddings.cat([ctx.negative, ctx.positive])
    tr(hidden_states=lat.repeat(2, 1, 1), audio_hidden_states=alat.repeat(2, 1, 1),
       encoder_hidden_states=both.video_context.to(dtype), audio_encoder_hidden_states=both.audio_context.to(dtype),
       encoder_attention_mask=both.attention_mask, audio_encoder_attention_mask=both.attention_mask,
       timestep=t, sigma=t, **common)
    one = dict(hidden_states=lat, audio_hidden_states=alat, encoder_hidden_states=ctx.positive.video_context.to(dtype),
               audio_encoder_hidden_states=ctx.positive.audio_context.to(dtype),
               encoder_attention_mask=ctx.positive.attention_mask,
               audio_encoder_attention_mask=ctx.positive.attention_mask, timestep=t[:1], sigma=t[:1], **common)
    tr(spatio_temporal_guidance_blocks=[stg_block], **one)
    tr(isolate_modalities=True, **one)


def backend_context(name: str):
    if name == "default":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel({"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
                        "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}[name])


def measure(fn, steps: int, device) -> tuple[list[float], float]:
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    fn()  # warm-up (and compilation)
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    return times, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--blocks", type=int, default=4)
    parser.add_argument("--heads", type=int, default=32)
    parser.add_argument("--caption", type=int, default=3840)
    parser.add_argument("--height", type=int, default=704)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--frames", type=int, default=49)
    parser.add_argument("--text", type=int, default=256)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--backends", default="default,flash,efficient,cudnn")
    parser.add_argument("--compile", default="both", choices=("both", "on", "off"))
    args = parser.parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --device cpu and tiny sizes for a smoke test (see the docstring)")

    tr = build(args, device, dtype)
    video, audio, ctx, grid = inputs(tr, args, device, dtype)
    stg_block = max(0, args.blocks - 2)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"{name}, {args.dtype}, {args.blocks} blocks of width {args.heads * 128}/{args.heads * 64}, "
          f"{video.latent.shape[1]} video + {audio.latent.shape[1]} audio tokens, {args.text} text tokens, "
          f"STG block {stg_block}, torch {torch.__version__}")
    print("| compile | SDPA backend | variant | s / step (min / median / max) | vs diffusers | peak GPU GiB (weights incl.) |")
    print("|---|---|---|---|---|---|")
    compiles = {"both": (False, True), "on": (True,), "off": (False,)}[args.compile]
    for compiled in compiles:
        if compiled:
            tr.compile_repeated_blocks(dynamic=True) if hasattr(tr, "compile_repeated_blocks") else tr.compile()
        control = GuidanceAttentionControl(tr)
        plan = StepPlan(PASSES, skip_blocks=(stg_block,))
        runners = {f"ours, max_batch_passes={m}": TransformerPasses(tr, attention_control=control, max_batch_passes=m)
                   for m in (None, 2, 1)}
        for backend in args.backends.split(","):
            rows = {}
            try:
                with torch.inference_mode(), backend_context(backend):
                    rows["diffusers call pattern"] = measure(
                        lambda: diffusers_step(tr, video, audio, ctx, grid, stg_block, dtype), args.steps, device)
                    for label, runner in runners.items():
                        rows[label] = measure(lambda r=runner: r(plan, video, audio, ctx, torch.tensor(0.6, device=device)),
                                              args.steps, device)
            except RuntimeError as err:  # e.g. a backend not available for this GPU / dtype / shape
                print(f"| {'on' if compiled else 'off'} | {backend} | unavailable: {str(err).splitlines()[0][:80]} | | | |")
                continue
            base = statistics.median(rows["diffusers call pattern"][0])
            for label, (times, peak) in rows.items():
                med = statistics.median(times)
                print(f"| {'on' if compiled else 'off'} | {backend} | {label} | {min(times):.3f} / {med:.3f} / "
                      f"{max(times):.3f} | {med / base:.2f}x | {peak:.1f} |", flush=True)


if __name__ == "__main__":
    main()
