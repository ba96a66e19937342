"""Synthetic precomputed datasets for the training tests (written with the real file format)."""

from __future__ import annotations

import torch

from diffusers_ltx2.loaders.identity import context_dims
from diffusers_ltx2.training.config import parse_config
from diffusers_ltx2.training.data import write_entry

TEXT_TOKENS = 8


def write_dataset(root, transformer, n_clips: int = 2, *, grid=(2, 2, 2), audio_len: int = 9, factor: int | None = None,
                  control_types=("canny",), seed: int = 0):
    """`n_clips` clips of random normalized latents (+ audio, + references at `grid / factor` with control types
    cycling through `control_types`) and random connector-stage prompt embeddings."""
    g = torch.Generator().manual_seed(seed)
    vd, ad = context_dims(transformer)
    c = transformer.config.in_channels
    ca = transformer.config.audio_in_channels
    f, h, w = grid
    for i in range(n_clips):
        name = f"clip{i}"
        write_entry(root / "latents" / f"{name}.safetensors", {"latents": torch.randn(c, f, h, w, generator=g)},
                    {"fps": 24.0, "num_frames": 8 * (f - 1) + 1, "height": 32 * h, "width": 32 * w})
        mask = torch.ones(TEXT_TOKENS, dtype=torch.long)
        mask[: i % 3] = 0  # some left padding
        write_entry(root / "conditions" / f"{name}.safetensors", {
            "video_context": torch.randn(TEXT_TOKENS, vd, generator=g),
            "audio_context": torch.randn(TEXT_TOKENS, ad, generator=g), "attention_mask": mask})
        write_entry(root / "audio_latents" / f"{name}.safetensors",
                    {"latents": torch.randn(ca // 16, audio_len, 16, generator=g)})
        if factor is not None:
            ctype = control_types[i % len(control_types)]
            write_entry(root / "reference_latents" / f"{name}.safetensors",
                        {"latents": torch.randn(c, f, h // factor, w // factor, generator=g)},
                        {"control_type": ctype, "reference_downscale_factor": factor})
    return root


def make_config(root, out, strategy: dict, **overrides):
    data = {
        "model": {"model_path": "factory:tiny"},
        "data": {"preprocessed_data_root": str(root)},
        "training_strategy": strategy,
        "lora": {"rank": 4, "alpha": 8},
        "optimization": {"steps": 4, "learning_rate": 1e-3, "batch_size": 1},
        "output_dir": str(out),
    }
    for key, value in overrides.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return parse_config(data)


def json_report(stdout: str) -> dict:
    """The JSON report line of `ltx2 preprocess` / `ltx2 train` output (a human-readable line follows it)."""
    import json

    return json.loads(next(line for line in reversed(stdout.splitlines()) if line.startswith("{")))
