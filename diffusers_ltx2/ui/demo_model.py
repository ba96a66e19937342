"""The tiny demo model `ltx2 ui` starts on when no `--model` is given: the package's TINY random-weight pipeline
(`factory`, as `ltx2 demo`), saved once in a cache folder, with a random IC-LoRA and a random latent upsampler so
that every tab runs. The weights are RANDOM: clips are coloured noise with hiss (the page says so)."""

from __future__ import annotations

import os

#: bump when what is saved changes (a new folder is built)
VERSION = 1
TARGETS = ("attn1.to_q", "attn1.to_v", "ff.net.0.proj")


def default_folder() -> str:
    """`$XDG_CACHE_HOME/diffusers-ltx2/ui-demo-v1` (`~/.cache/...` without XDG_CACHE_HOME)."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "diffusers-ltx2", f"ui-demo-v{VERSION}")


def _random_lora(transformer, path: str, seed: int, metadata: dict) -> None:
    """An official-format LoRA (`diffusion_model.<module>.lora_A/B.weight`) of rank 4 on the first block."""
    import torch
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for target in TARGETS:
        weight = transformer.get_submodule(f"transformer_blocks.0.{target}").weight
        key = f"diffusion_model.transformer_blocks.0.{target}"
        tensors[f"{key}.lora_A.weight"] = torch.randn(4, weight.shape[1], generator=g) * 0.1
        tensors[f"{key}.lora_B.weight"] = torch.randn(weight.shape[0], 4, generator=g) * 0.1
    save_file(tensors, path, metadata=metadata)


def ensure_demo_model(folder: str | None = None, seed: int = 0) -> dict:
    """Build the demo files once (a complete folder is reused): `{"model", "loras", "upsampler"}` paths. Written
    to a temporary sibling and renamed, so an interrupted build leaves nothing half-made."""
    import shutil
    import tempfile

    folder = os.path.abspath(folder or default_folder())
    paths = {"model": os.path.join(folder, "model"), "loras": os.path.join(folder, "loras"),
             "upsampler": os.path.join(folder, "upsampler")}
    if os.path.isfile(os.path.join(folder, "complete")):
        return paths
    from diffusers.pipelines.ltx2.latent_upsampler import LTX2LatentUpsamplerModel

    from .. import factory
    from ..pipelines import LTX2AudioVideoPipeline
    from ..schedulers import LTX2Scheduler

    os.makedirs(os.path.dirname(folder), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".building-", dir=os.path.dirname(folder))
    try:
        components = factory.build_components(factory.TINY, seed=seed)
        LTX2AudioVideoPipeline(scheduler=LTX2Scheduler(), **components).save_pretrained(os.path.join(tmp, "model"))
        os.makedirs(os.path.join(tmp, "loras"))
        _random_lora(components["transformer"], os.path.join(tmp, "loras", "tiny-ic-lora-union.safetensors"),
                     seed + 1, {"reference_downscale_factor": "1"})
        _random_lora(components["transformer"], os.path.join(tmp, "loras", "tiny-style.safetensors"), seed + 2,
                     {"base_model": "tiny random demo model"})
        _random_lora(components["transformer"], os.path.join(tmp, "loras", "tiny-distilled-lora.safetensors"),
                     seed + 3, {"base_model": "tiny random demo model"})
        channels = components["vae"].config.latent_channels
        LTX2LatentUpsamplerModel(in_channels=channels, mid_channels=32, num_blocks_per_stage=1,
                                 use_rational_resampler=False).save_pretrained(os.path.join(tmp, "upsampler"))
        with open(os.path.join(tmp, "complete"), "w") as f:
            f.write("tiny random-weight LTX-2 demo files for ltx2 ui\n")
        if os.path.isdir(folder):
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return paths
