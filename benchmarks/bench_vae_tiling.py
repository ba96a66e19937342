"""VAE decode memory: the estimate against the measured peak, diffusers' tiled decode against the streamed one.

A random-weight LTX-2 video VAE with the real decoder widths (256 / 512 / 1024; one layer per level by default:
the peak does not depend on the depth, 1 and 5 layers measured equal) decodes a few clips untiled and tiled, with
`AllocationTracker` counting what the decode allocates (what `max_memory_allocated` would add on a GPU, without
allocator rounding). For each: the estimate (`vae_tiling.decode_bytes` / `tiled_decode_bytes`), the peak of
diffusers' `vae.decode` (keep every tile, then blend) and of `tiled_decode.streamed_decode` (tiles streamed
into the output), and the largest difference between the two outputs. Then the budget rule: a budget 10% under
the untiled peak picks tiles (`plan_vae_tiling`) and the streamed decode's peak is checked against it.

    python benchmarks/bench_vae_tiling.py [--widths 256,512,1024] [--layers 1] [--dtype fp32|bf16]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffusers import AutoencoderKLLTX2Video  # noqa: E402

from diffusers_ltx2.memory.measure import AllocationTracker  # noqa: E402
from diffusers_ltx2.memory.tiled_decode import streamed_decode  # noqa: E402
from diffusers_ltx2.memory.vae_tiling import (VaeTiling, apply_vae_tiling, decode_bytes, plan_vae_tiling,  # noqa: E402
                                              tiled_decode_bytes)

# (frames, height, width), tiling: spatial only, temporal only, both
CASES = [((9, 160, 384), VaeTiling(128, 32, None, None)), ((41, 64, 64), VaeTiling(None, None, 16, 8)),
         ((25, 160, 192), VaeTiling(128, 32, 16, 8))]
MiB = 2**20


def build_vae(widths, layers, dtype):
    torch.manual_seed(0)
    return AutoencoderKLLTX2Video(
        latent_channels=128, block_out_channels=(8, 16, 32), down_block_types=("LTX2VideoDownBlock3D",) * 3,
        layers_per_block=(1, 1, 1, 1), spatio_temporal_scaling=(True,) * 3, downsample_type=("spatiotemporal",) * 3,
        decoder_block_out_channels=widths, decoder_layers_per_block=(layers,) * 4,
        decoder_spatio_temporal_scaling=(True,) * 3, decoder_inject_noise=(False,) * 4,
        upsample_type=("spatiotemporal",) * 3, upsample_residual=(True,) * 3, upsample_factor=(2, 2, 2),
        timestep_conditioning=False, patch_size=4, patch_size_t=1, encoder_causal=True, decoder_causal=False,
        spatial_compression_ratio=32, temporal_compression_ratio=8).eval().to(dtype)


def measure(fn):
    t0 = time.perf_counter()
    with torch.no_grad(), AllocationTracker() as tracker:
        out = fn()
    return tracker.peak, out, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", default="256,512,1024")
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=FutureWarning)
    widths = tuple(int(w) for w in args.widths.split(","))
    dtype = torch.float32 if args.dtype == "fp32" else torch.bfloat16
    nbytes = torch.finfo(dtype).bits // 8
    vae = build_vae(widths, args.layers, dtype)
    kw = dict(decoder_channels=widths[0], patch_size=4, dtype_bytes=nbytes)
    print(f"decoder widths {widths}, {args.layers} layer(s) per level, {args.dtype}; MiB allocated during the decode")
    print("| clip (F x H x W) | tiles | estimate | streamed | diffusers | untiled (estimate) | max abs diff |")
    print("|---|---|---|---|---|---|---|")
    for (frames, height, width), tiling in CASES:
        torch.manual_seed(1)
        z = torch.randn(1, 128, (frames - 1) // 8 + 1, height // 32, width // 32, dtype=dtype)
        apply_vae_tiling(vae, None)
        untiled, _, _ = measure(lambda: streamed_decode(vae, z))
        apply_vae_tiling(vae, tiling)
        streamed, a, ts = measure(lambda: streamed_decode(vae, z))
        diffusers, b, td = measure(lambda: vae.decode(z, return_dict=False)[0])
        est = tiled_decode_bytes(frames, height, width, tiling, **kw)
        est_untiled = decode_bytes(frames, height, width, **kw)
        print(f"| {frames}x{height}x{width} | {tiling.describe()} | {est / MiB:.1f} | {streamed / MiB:.1f} | "
              f"{diffusers / MiB:.1f} | {untiled / MiB:.1f} ({est_untiled / MiB:.1f}) | "
              f"{(a.float() - b.float()).abs().max().item():.2g} |", flush=True)
        # the budget rule: 10% under the untiled peak
        budget = int(0.9 * untiled)
        chosen = plan_vae_tiling(frames, height, width, budget_bytes=budget, **kw)
        apply_vae_tiling(vae, chosen)
        peak, _, _ = measure(lambda: streamed_decode(vae, z))
        print(f"|   budget {budget / MiB:.1f} | {chosen.describe() if chosen else 'untiled'} | "
              f"{tiled_decode_bytes(frames, height, width, chosen, **kw) / MiB:.1f} | {peak / MiB:.1f} | - | - | - |",
              flush=True)
    apply_vae_tiling(vae, None)


if __name__ == "__main__":
    main()
