"""Weight streaming for small GPUs: diffusers' model CPU offload and group (block) offloading, to RAM or disk.

`--offload model`: `DiffusionPipeline.enable_model_cpu_offload` - whole components move to the GPU when called
(text encoder -> connectors -> transformer -> VAEs -> vocoder); peak = the largest component + activations.
`--offload blocks`: diffusers' `enable_group_offload(offload_type="block_level", num_blocks_per_group=1)` on the
transformer and the text encoder - one block at a time on the GPU, the next prefetched on a CUDA stream; peak ~
one block + activations + the small resident components (VAEs, connectors, vocoder).
`--offload disk`: block-level group offloading to safetensors files under a folder (the official `--offload disk`
streams blocks from disk likewise, ltx-core 1.2 `block_streaming/`), for machines short of RAM.

Every mode leaves the numbers unchanged: the same weights, the same kernels, only where they live differs.
"""

from __future__ import annotations

import os

import torch

from ..memory_modes import OFFLOAD_MODES  # noqa: E402  (plain data, shared with the command line)

# Streamed in the block modes: the transformer and the Gemma text encoder (the bulk of the weights). The rest
# stays resident on the compute device: it is small, and the pipeline reads the VAEs' latent statistics
# (`latents_mean` / `latents_std` buffers) outside their forward, where group offloading has not loaded them
# (with `disk` they are empty placeholders then: decoded garbage, found by the tests).
RESIDENT_IN_BLOCK_MODES = ("vae", "audio_vae", "vocoder", "connectors")


def check_offload(mode: str | None, *, disk_path: str | None = None, transformer=None, text_encoder=None,
                  quantizations=()) -> str | None:
    """Validate an offload request before anything loads or moves (`quantizations`: the modes requested for
    models not loaded yet).

    Raises:
        ValueError: unknown mode; `disk` without a folder; `disk` with optimum-quanto / torchao / GGUF weights
            (transformer or text encoder: tensor subclasses cannot be written to safetensors files).
    """
    if mode is None:
        return None
    if mode not in OFFLOAD_MODES:
        raise ValueError(f"unknown offload mode {mode!r}; choose one of {', '.join(OFFLOAD_MODES)}")
    if mode == "disk":
        if not disk_path:
            raise ValueError("offload 'disk' needs a folder for the weight files (offload_folder=)")
        from ..quantization import transformer_quantization

        modes = list(quantizations)
        if transformer is not None:
            modes.append(transformer_quantization(transformer))
        if text_encoder is not None:
            modes.append(getattr(text_encoder, "_ltx2_quantization", None))
        quanto = [q for q in modes if q not in (None, "fp8-cast", "fp8-scaled-mm")]
        if quanto:
            backend = ("optimum-quanto" if quanto[0] in ("fp8", "int8", "int4") else
                       "GGUF" if str(quanto[0]).startswith("gguf") else "torchao")
            raise ValueError(f"offload 'disk' cannot store {backend} weights ({quanto[0]}): they are tensor "
                             "subclasses, not plain tensors; use 'blocks', or quantization='fp8-cast' / "
                             "'fp8-scaled-mm' (plain float8 tensors) with 'disk'")
    return mode


def apply_offload(pipe, mode: str | None, device: str | torch.device | None = None, *,
                  offload_folder: str | os.PathLike | None = None, num_blocks_per_group: int = 1) -> None:
    """Enable `mode` ("model", "blocks", "disk" or `None` = everything resident on `device`) on a pipeline.

    Args:
        device: the compute device (default: cuda when available, else cpu). On CPU the hooks run but the
            weights stay where they are (`model`, `blocks`) or really go through the disk files (`disk`).
        offload_folder: folder of the `disk` mode's group files (created if missing).
        num_blocks_per_group: transformer blocks resident at a time in the block modes.
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    check_offload(mode, disk_path=offload_folder, transformer=getattr(pipe, "transformer", None),
                  text_encoder=getattr(pipe, "text_encoder", None))
    if mode is None:
        pipe.to(device)
    elif mode == "model":
        pipe.enable_model_cpu_offload(device=device)
    else:
        if mode == "disk":
            os.makedirs(offload_folder, exist_ok=True)
        pipe.enable_group_offload(
            onload_device=device, offload_device=torch.device("cpu"), offload_type="block_level",
            num_blocks_per_group=num_blocks_per_group, use_stream=device.type == "cuda",
            offload_to_disk_path=str(offload_folder) if mode == "disk" else None,
            exclude_modules=[n for n in RESIDENT_IN_BLOCK_MODES if getattr(pipe, n, None) is not None],
        )
