"""GPU check: one guided denoising step at LTX-2 widths, per weight format, with / without regional compile, per
attention backend; and ours vs diffusers' call pattern per SDPA backend. Prints seconds per step, peak GPU
memory and the deviation from bf16.

Model: diffusers' `LTX2VideoTransformer3DModel` with LTX-2's real widths (video 32x128 = 4096, audio 32x64 = 2048,
caption 3840) and a few blocks (`--blocks`, default 4; the STG block is the last one but one), random weights,
bf16, `perturbed_attn=True`. Tokens: 704x1280, 49 frames -> 7 x 22 x 40 = 6160 video tokens, 51 audio tokens,
`--text` prompt tokens. A step = the recommended guidance (cfg, STG and modality guidance on both modalities:
4 passes) batched in one transformer call by `TransformerPasses` (the blocks before the STG block run 3 passes).

`--part formats` (default `all` = both parts): for each weight format of `--formats` (bf16, fp8-cast,
fp8-scaled-mm, torchao-int8, torchao-fp8, torchao-nvfp4, int8 = quanto, gguf-Q8_0; those this GPU / build cannot
run are listed as unavailable with the reason) x compile off / on (`pipe.compile()`: the blocks' forward,
inductor) x `--attention` backends (`native`, `native-flash`, `native-cudnn`, `flash`, `sage`, ...):
* s / step: median of `--steps` timed steps after a warm-up (compilation) step, at `--blocks` blocks and at half
  as many (the same weights, the first half of the blocks); extrapolated to 48 blocks linearly:
  `t48 = t_N + (48 - N) * (t_N - t_{N/2}) / (N - N/2)` (blocks are identical in work; the rest - embeddings,
  projections, the per-step overhead - is the intercept);
* peak GPU memory of the step (`max_memory_allocated`, weights included) and stored weight bytes, extrapolated to
  48 blocks the same way (per block bytes x 48 + the rest);
* deviation from bf16: relative L2 of the step's x0 predictions (all passes) against the bf16 model's.

`--part guidance`: ours (4 passes in one call, `max_batch_passes` 2 and 1) vs diffusers' `LTX2Pipeline` call
pattern (a 2B call, an STG call, an isolated-modalities call), per SDPA kernel, compile off / on.

    python benchmarks/gpu_check.py [--part all|formats|guidance] [--blocks 4] [--steps 5]
        [--formats bf16,fp8-cast,...] [--attention native,native-flash,...] [--compile both|on|off]

`--smoke` runs both parts on the CPU at tiny sizes (2 blocks of 256 / 128 wide, 64x64x9, eager-backend compile,
the formats that run on a CPU): it checks the script, its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import statistics
import sys
import time
import warnings
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
FORMATS = ("bf16", "fp8-cast", "fp8-scaled-mm", "torchao-int8", "torchao-fp8", "torchao-nvfp4", "int8", "gguf-Q8_0")
SMOKE_FORMATS = ("bf16", "fp8-cast", "fp8-scaled-mm", "torchao-int8", "torchao-fp8-weight", "torchao-nvfp4-weight",
                 "int8", "gguf-Q8_0")
REAL_BLOCKS = 48


def build(args, device, dtype):
    heads = args.heads
    torch.manual_seed(0)
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


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(fn, steps: int, device) -> tuple[list[float], float, object]:
    """(step times, peak GiB allocated during the timed steps, the last result)."""
    out = fn()  # warm-up (and compilation)
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    return times, peak, out


# -- weight formats --------------------------------------------------------------------------------------------
def gguf_q8_0_(tr, device, dtype) -> None:
    """Replace the policy's linears by diffusers `GGUFLinear`s holding Q8_0 blocks (gguf's own quantizer)."""
    import gguf
    from diffusers.quantizers.gguf.utils import GGUFLinear, GGUFParameter

    from diffusers_ltx2.quantization.policy import quantized_linear_names

    qtype = gguf.GGMLQuantizationType.Q8_0
    for name in quantized_linear_names(tr):
        lin = tr.get_submodule(name)
        new = GGUFLinear(lin.in_features, lin.out_features, lin.bias is not None, compute_dtype=dtype)
        data = gguf.quants.quantize(lin.weight.detach().float().cpu().numpy(), qtype)
        new.weight = GGUFParameter(torch.from_numpy(data).to(device), quant_type=qtype)
        if lin.bias is not None:
            new.bias = torch.nn.Parameter(lin.bias.detach().clone(), requires_grad=False)
        parent, _, child = name.rpartition(".")
        setattr(tr.get_submodule(parent), child, new)


def make_format(base, fmt: str, device, dtype):
    """A copy of `base` in `fmt`; raises ValueError / RuntimeError / ImportError when it cannot run here."""
    from diffusers_ltx2.quantization import check_quantized_runtime, quantize_transformer_

    tr = copy.deepcopy(base)
    if fmt == "bf16":
        return tr
    if fmt.startswith("gguf-"):
        gguf_q8_0_(tr, device, dtype)
        return tr
    check_quantized_runtime(fmt, device, dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_transformer_(tr, fmt)
    return tr


def step_fn(tr, video, audio, ctx, stg_block, device, blocks: int | None = None):
    """One guided step (4 passes batched); with `blocks`, on the first `blocks` blocks only."""
    control = GuidanceAttentionControl(tr)
    runner = TransformerPasses(tr, attention_control=control)
    plan = StepPlan(PASSES, skip_blocks=(min(stg_block, (blocks or len(tr.transformer_blocks)) - 1),))
    sigma = torch.tensor(0.6, device=device)

    def run():
        full = tr.transformer_blocks
        if blocks is not None:
            tr.transformer_blocks = torch.nn.ModuleList(list(full)[:blocks])
        try:
            with torch.inference_mode():
                out = runner(plan, video, audio, ctx, sigma)
        finally:
            tr.transformer_blocks = full
        return torch.cat([torch.cat([p.video.flatten(), p.audio.flatten()]).float() for p in out.values()])

    return run


def extrapolate(t_n: float, t_half: float, n: int) -> float:
    half = n // 2
    return t_n + (REAL_BLOCKS - n) * (t_n - t_half) / max(1, n - half)


def weights_at_48(tr) -> float:
    from diffusers_ltx2.quantization import weight_bytes

    per_block = weight_bytes(tr.transformer_blocks[len(tr.transformer_blocks) // 2])  # a quantized middle block
    rest = weight_bytes(tr) - sum(weight_bytes(b) for b in tr.transformer_blocks)
    return (rest + REAL_BLOCKS * per_block) / 2**30


def run_formats(args, device, dtype) -> None:
    base = build(args, device, dtype)
    video, audio, ctx, _ = inputs(base, args, device, dtype)
    stg_block = max(0, args.blocks - 2)
    print(f"\n### weight formats: {args.blocks} blocks (and {args.blocks // 2}), {video.latent.shape[1]} video + "
          f"{audio.latent.shape[1]} audio tokens, 4 passes per step; times and weights extrapolated to 48 blocks\n")
    print("| format | compile | attention | s / step (N blocks) | s / step at 48 blocks (extrapolated) | "
          "peak GiB (N blocks) | weights GiB at 48 blocks | deviation from bf16 (rel. L2) |")
    print("|---|---|---|---|---|---|---|---|")
    reference = None
    compiles = {"both": (False, True), "on": (True,), "off": (False,)}[args.compile]
    for fmt in args.formats.split(","):
        try:
            tr = make_format(base, fmt, device, dtype)
        except (ValueError, RuntimeError, ImportError, AssertionError) as err:
            print(f"| {fmt} | | | unavailable: {str(err).splitlines()[0][:120]} | | | | |", flush=True)
            continue
        for compiled in compiles:
            if compiled:
                from diffusers_ltx2.acceleration.compile import compile_blocks

                torch._dynamo.reset()
                compile_blocks(tr, backend=args.compile_backend)
            for backend in args.attention.split(","):
                try:
                    from diffusers_ltx2.acceleration.attention_backends import set_transformer_backend

                    set_transformer_backend(tr, backend)
                    times, peak, out = measure(step_fn(tr, video, audio, ctx, stg_block, device), args.steps, device)
                    half, _, _ = measure(step_fn(tr, video, audio, ctx, stg_block, device, args.blocks // 2),
                                         args.steps, device)
                except (ValueError, RuntimeError) as err:
                    print(f"| {fmt} | {'on' if compiled else 'off'} | {backend} | unavailable: "
                          f"{str(err).splitlines()[0][:100]} | | | | |", flush=True)
                    continue
                if fmt == "bf16" and reference is None:
                    reference = out
                dev = ((out - reference).norm() / reference.norm()).item() if reference is not None else float("nan")
                t_n, t_half = statistics.median(times), statistics.median(half)
                print(f"| {fmt} | {'on' if compiled else 'off'} | {backend} | {t_n:.4f} | "
                      f"{extrapolate(t_n, t_half, args.blocks):.3f} | {peak:.2f} | {weights_at_48(tr):.2f} | "
                      f"{dev:.4f} |", flush=True)
        del tr
        if device.type == "cuda":
            torch.cuda.empty_cache()


# -- ours vs diffusers' call pattern -------------------------------------------------------------------------
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


def sdpa_context(name: str):
    if name == "default":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel({"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
                        "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}[name])


def run_guidance(args, device, dtype) -> None:
    tr = build(args, device, dtype)
    video, audio, ctx, grid = inputs(tr, args, device, dtype)
    stg_block = max(0, args.blocks - 2)
    print("\n### ours vs diffusers' call pattern\n")
    print("| compile | SDPA kernel | variant | s / step (min / median / max) | vs diffusers | peak GPU GiB |")
    print("|---|---|---|---|---|---|")
    compiles = {"both": (False, True), "on": (True,), "off": (False,)}[args.compile]
    for compiled in compiles:
        if compiled:
            from diffusers_ltx2.acceleration.compile import compile_blocks

            torch._dynamo.reset()
            compile_blocks(tr, backend=args.compile_backend)
        control = GuidanceAttentionControl(tr)
        plan = StepPlan(PASSES, skip_blocks=(stg_block,))
        runners = {f"ours, max_batch_passes={m}": TransformerPasses(tr, attention_control=control, max_batch_passes=m)
                   for m in (None, 2, 1)}
        for kernel in args.sdpa.split(","):
            rows = {}
            try:
                with torch.inference_mode(), sdpa_context(kernel):
                    rows["diffusers call pattern"] = measure(
                        lambda: diffusers_step(tr, video, audio, ctx, grid, stg_block, dtype), args.steps, device)
                    for label, runner in runners.items():
                        sigma = torch.tensor(0.6, device=device)
                        rows[label] = measure(lambda r=runner: r(plan, video, audio, ctx, sigma), args.steps, device)
            except RuntimeError as err:  # e.g. a kernel not available for this GPU / dtype / shape
                reason = str(err).splitlines()[0][:80]
                print(f"| {'on' if compiled else 'off'} | {kernel} | unavailable: {reason} | | | |")
                continue
            base = statistics.median(rows["diffusers call pattern"][0])
            for label, (times, peak, _) in rows.items():
                med = statistics.median(times)
                print(f"| {'on' if compiled else 'off'} | {kernel} | {label} | {min(times):.3f} / {med:.3f} / "
                      f"{max(times):.3f} | {med / base:.2f}x | {peak:.1f} |", flush=True)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", default="all", choices=("all", "formats", "guidance"))
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny sizes: checks the script only")
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
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument("--attention", default="native,native-flash,native-cudnn,flash,sage")
    parser.add_argument("--sdpa", default="default,flash,efficient,cudnn")
    parser.add_argument("--compile", default="both", choices=("both", "on", "off"))
    parser.add_argument("--compile-backend", default="inductor")
    args = parser.parse_args(argv)
    if args.smoke:
        args.device, args.dtype, args.blocks, args.heads, args.caption = "cpu", "float32", 2, 2, 64
        args.height, args.width, args.frames, args.text, args.steps = 64, 64, 9, 16, 1
        args.compile_backend, args.attention, args.sdpa = "eager", "native", "default"
        if args.formats == ",".join(FORMATS):
            args.formats = ",".join(SMOKE_FORMATS)
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --smoke for a CPU check of the script")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"{name}, {args.dtype}, blocks of width {args.heads * 128}/{args.heads * 64}, torch {torch.__version__}")
    if args.part in ("all", "formats"):
        run_formats(args, device, dtype)
    if args.part in ("all", "guidance"):
        run_guidance(args, device, dtype)


if __name__ == "__main__":
    main()
