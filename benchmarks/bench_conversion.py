"""Peak memory of streaming conversion vs loading the whole state dict, on a synthetic official checkpoint.

The checkpoint has the released LTX-2 2.0 layout at full width (4096/2048-wide DiT blocks, the
3840*49 -> 3840 text projection, 30x128 connectors, full video/audio VAEs and vocoder) but only
``--blocks`` transformer blocks, so it is several GB instead of 38 GB. Shapes come from ltx-core's
configurators built on the meta device; tensors are random bf16 written one at a time.

Each measurement runs in a fresh subprocess and reports its peak resident set (VmHWM):

- ``convert``:       ``convert_single_file`` (streaming, sharded output)
- ``load_components``: ``load_components_from_single_file`` (the ``from_single_file`` path; the modules
  themselves must be resident, so the floor is the model size)
- ``load_state_dict``: ``safetensors.torch.load_file`` of the whole file (what diffusers' single-file
  loading and the diffusers conversion script do first)

safetensors maps files lazily, so the two loading modes then read one element per page of every tensor
(any real consumer touches all weights); otherwise their RSS would only show the pages never read.

    python benchmarks/bench_conversion.py [--blocks 2] [--workdir /tmp/ltx2-bench] [--keep]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

GEMMA_HIDDEN, GEMMA_STATES = 3840, 49


def full_width_config(blocks: int) -> dict:
    """Released 2.0 architecture (metadata keys as in the official file) with ``blocks`` DiT blocks."""
    from official_checkpoints import AUDIO_VAE, TRANSFORMER_20

    t = dict(TRANSFORMER_20)
    t.update({"num_layers": blocks, "num_attention_heads": 32, "attention_head_dim": 128, "in_channels": 128,
              "out_channels": 128, "cross_attention_dim": 4096, "audio_num_attention_heads": 32,
              "audio_attention_head_dim": 64, "audio_in_channels": 128, "audio_out_channels": 128,
              "audio_cross_attention_dim": 2048, "caption_channels": 3840, "connector_num_attention_heads": 30,
              "connector_attention_head_dim": 128, "connector_num_layers": 2})
    res = lambda n: ["res_x", {"num_layers": n}]  # noqa: E731
    res_d = lambda n: ["res_x", {"num_layers": n, "inject_noise": False}]  # noqa: E731
    up = ["compress_all", {"residual": True, "multiplier": 2}]
    vae = {"_class_name": "CausalVideoAutoencoder", "dims": 3, "in_channels": 3, "out_channels": 3,
           "latent_channels": 128, "patch_size": 4, "norm_layer": "pixel_norm", "latent_log_var": "uniform",
           "causal_decoder": False, "timestep_conditioning": False, "decoder_base_channels": 128,
           "encoder_blocks": [res(4), ["compress_space_res", {"multiplier": 2}], res(6),
                              ["compress_time_res", {"multiplier": 2}], res(6), ["compress_all_res", {"multiplier": 2}],
                              res(2), ["compress_all_res", {"multiplier": 2}], res(2)],
           "decoder_blocks": [res_d(5), up, res_d(5), up, res_d(5), up, res_d(5)]}
    audio = json.loads(json.dumps(AUDIO_VAE))
    audio["model"]["params"]["ddconfig"].update({"ch": 128, "z_channels": 8, "num_res_blocks": 2})
    vocoder = {"upsample_initial_channel": 1024, "resblock": "1", "upsample_rates": [6, 5, 2, 2, 2],
               "resblock_kernel_sizes": [3, 7, 11], "upsample_kernel_sizes": [16, 15, 8, 4, 4],
               "resblock_dilation_sizes": [[1, 3, 5]] * 3, "stereo": True, "output_sampling_rate": 24000}
    return {"transformer": t, "vae": vae, "audio_vae": audio, "vocoder": vocoder}


def official_shapes(config: dict) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Official key -> (shape, dtype) of every tensor, from ltx-core modules built on the meta device."""
    import official_checkpoints as C

    out: dict[str, tuple[tuple[int, ...], torch.dtype]] = {}

    def add(prefix, module, skip_stats=False):
        for k, v in module.state_dict().items():
            if k.startswith("per_channel_statistics."):
                if skip_stats:
                    continue
            out[prefix + k] = (tuple(v.shape), torch.bfloat16 if v.is_floating_point() else v.dtype)

    with torch.device("meta"):
        add("model.diffusion_model.", C.LTXModelConfigurator.from_config(config))
        add("model.diffusion_model.video_embeddings_connector.", C.Embeddings1DConnectorConfigurator.from_config(config))
        add("model.diffusion_model.audio_embeddings_connector.",
            C.AudioEmbeddings1DConnectorConfigurator.from_config(config))
        out["text_embedding_projection.aggregate_embed.weight"] = ((GEMMA_HIDDEN, GEMMA_HIDDEN * GEMMA_STATES),
                                                                   torch.bfloat16)
        for prefix, enc, dec in (("vae.", C.VideoEncoderConfigurator, C.VideoDecoderConfigurator),
                                 ("audio_vae.", C.AudioEncoderConfigurator, C.AudioDecoderConfigurator)):
            e, d = enc.from_config(config), dec.from_config(config)
            add(prefix + "encoder.", e, skip_stats=True)
            add(prefix + "decoder.", d, skip_stats=True)
            for k, v in d.state_dict().items():
                if k.startswith("per_channel_statistics."):
                    out[prefix + k] = (tuple(v.shape), torch.bfloat16)
        add("vocoder.", C.VocoderConfigurator.from_config(config))
    return out


def write_synthetic(path: Path, blocks: int) -> int:
    """Write the synthetic checkpoint tensor by tensor; returns its size in bytes."""
    from diffusers_ltx2.conversion.streaming import OutputTensor, SafetensorsStreamWriter

    config = full_width_config(blocks)
    shapes = official_shapes(config)
    tensors = [OutputTensor(k, dt, s) for k, (s, dt) in shapes.items()]
    meta = {"config": json.dumps(config), "model_version": "2.0.0", "format": "pt"}
    writer = SafetensorsStreamWriter(path, tensors, metadata=meta)
    gen = torch.Generator().manual_seed(0)
    for t in tensors:
        if t.name.endswith("std-of-means"):
            value = torch.ones(t.shape, dtype=t.dtype)
        else:
            value = (torch.randn(t.shape, generator=gen) * 0.02).to(t.dtype)
        writer.write(t.name, value)
    writer.close()
    return path.stat().st_size


_CHILD = r"""
import sys, time, json
sys.path.insert(0, {repo!r})
mode, src, dst = sys.argv[1:4]

def touch(tensors):
    # safetensors maps the file lazily: read one element per 4 KiB page so the data is really resident,
    # as it is for any consumer that uses the weights (renaming + saving, load_state_dict, inference).
    for t in tensors:
        flat = t.reshape(-1)
        if flat.numel():
            flat[:: max(1, 4096 // t.element_size())].float().sum()

t0 = time.time()
if mode == "convert":
    from diffusers_ltx2.conversion import convert_single_file
    convert_single_file(src, dst, max_shard_size="5GB", progress=False)
elif mode == "load_components":
    from diffusers_ltx2.conversion import load_components_from_single_file
    mods = load_components_from_single_file(src)
    touch([t for m in mods.values() for t in m.state_dict().values()])
elif mode == "load_state_dict":
    from safetensors.torch import load_file
    sd = load_file(src)
    touch(list(sd.values()))
elif mode == "baseline":
    import torch, diffusers, diffusers_ltx2.conversion  # imports only
elapsed = time.time() - t0
status = dict(l.split(":", 1) for l in open("/proc/self/status") if ":" in l)
print(json.dumps({{"peak_rss": int(status["VmHWM"].split()[0]) * 1024, "seconds": elapsed}}))
"""


def measure(mode: str, src: Path, dst: Path) -> dict:
    """Run one mode in a fresh interpreter; returns peak RSS (bytes) and wall time."""
    code = _CHILD.format(repo=str(REPO))
    done = subprocess.run([sys.executable, "-c", code, mode, str(src), str(dst)], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{mode} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    """Build the synthetic checkpoint, run each mode, print a table (and JSON with --json)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--blocks", type=int, default=2, help="DiT blocks (the released 2.0 model has 48)")
    p.add_argument("--workdir", default="/tmp/ltx2-conversion-bench")
    p.add_argument("--keep", action="store_true", help="keep the synthetic file and outputs")
    p.add_argument("--json", action="store_true", help="also print the results as JSON")
    args = p.parse_args(argv)

    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    src = work / "synthetic-official.safetensors"
    t0 = time.time()
    size = write_synthetic(src, args.blocks)
    from diffusers_ltx2.conversion.streaming import read_header

    largest = max(t.nbytes for t in read_header(src)[0].values())
    print(f"synthetic checkpoint: {size / 1e9:.2f} GB, {args.blocks} blocks, largest tensor {largest / 1e9:.2f} GB "
          f"(written in {time.time() - t0:.0f}s)")
    results = {"file_bytes": size, "largest_tensor_bytes": largest, "blocks": args.blocks}
    for mode in ("baseline", "convert", "load_components", "load_state_dict"):
        dst = work / f"out-{mode}"
        r = measure(mode, src, dst)
        results[mode] = r
        print(f"{mode:>16}: peak RSS {r['peak_rss'] / 1e9:6.2f} GB ({r['peak_rss'] / size:5.2f} x file)  "
              f"{r['seconds']:6.1f} s")
        shutil.rmtree(dst, ignore_errors=True)
    if args.json:
        print(json.dumps(results))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
