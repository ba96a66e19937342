"""LoRA for training: target-module presets, peft adapters on diffusers' LTX-2 transformer, and export to the
official LoRA file format.

Presets (`TARGET_MODULE_PRESETS`, peft suffix patterns on `LTX2VideoTransformer3DModel` module names, which are the
official block names):
- `video`: video self-attention `attn1`, video text cross-attention `attn2` (q, k, v, out) and the video
  feed-forward `ff` - the official IC-LoRA layout (rank 32 on attn1, attn2, ff);
- `audio`: the same for the audio stream (`audio_attn1`, `audio_attn2`, `audio_ff`);
- `audio_video` (default): every attention projection `to_q`, `to_k`, `to_v`, `to_out.0` - video, audio and the
  cross-modal `audio_to_video_attn` / `video_to_audio_attn` (the official trainer's default, which the official
  docs require for audio-video LoRAs);
- `av_full`: `audio_video` plus both feed-forwards.

Export (`export_lora_state_dict`): keys `diffusion_model.<official module>.lora_A.weight` / `.lora_B.weight`,
as the official trainer writes them (ComfyUI's convention). The official fusion adds `B @ A` without alpha
scaling, so peft's `alpha / rank` is folded into `lora_B`: the file reproduces the trained model exactly with
`W + B @ A` (and with `load_lora_weights` of our pipelines, which sets peft's scale to 1).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from ..conversion.keymap import map_transformer_key

__all__ = ["TARGET_MODULE_PRESETS", "resolve_target_modules", "add_lora", "export_lora_state_dict", "save_lora",
           "official_module_name", "load_lora_into"]

_ATTN = ("to_q", "to_k", "to_v", "to_out.0")
_FF = ("net.0.proj", "net.2")


def _stream(prefix: str) -> list[str]:
    attn = [f"{prefix}attn{i}.{p}" for i in (1, 2) for p in _ATTN]
    return attn + [f"{prefix}ff.{p}" for p in _FF]


TARGET_MODULE_PRESETS: dict[str, list[str]] = {
    "video": _stream(""),
    "audio": _stream("audio_"),
    "audio_video": list(_ATTN),
    "av_full": list(_ATTN) + [f"{s}ff.{p}" for s in ("", "audio_") for p in _FF],
}


def resolve_target_modules(target_modules: str | list[str]) -> list[str]:
    """A preset name or an explicit pattern list -> the pattern list."""
    if isinstance(target_modules, str):
        if target_modules not in TARGET_MODULE_PRESETS:
            raise ValueError(f"unknown target_modules preset {target_modules!r}; presets: {sorted(TARGET_MODULE_PRESETS)}")
        return list(TARGET_MODULE_PRESETS[target_modules])
    return list(target_modules)


def add_lora(transformer, rank: int, alpha: float | None, dropout: float, target_modules, adapter_name: str = "default",
             seed: int = 0) -> list[str]:
    """Add a peft LoRA adapter (A ~ kaiming-uniform from `seed`, B = 0, as peft initialises it) and freeze the
    base. Returns the adapted module names; raises `ValueError` when the patterns match no module."""
    from peft import LoraConfig

    patterns = resolve_target_modules(target_modules)
    config = LoraConfig(r=rank, lora_alpha=alpha if alpha is not None else rank, lora_dropout=dropout,
                        target_modules=patterns, init_lora_weights=True)
    transformer.requires_grad_(False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            transformer.add_adapter(config, adapter_name=adapter_name)
        except ValueError as err:
            raise ValueError(f"LoRA target_modules {patterns} match no module of the transformer: {err}") from None
    names = [n for n, m in transformer.named_modules() if hasattr(m, "lora_A") and adapter_name in m.lora_A]
    from ..quantization.lora import adopt_quantized_lora_layers

    adopt_quantized_lora_layers(transformer)  # on a quantized base: fusion re-quantizes (quantization.lora)
    return names


_REVERSE = (("proj_in", "patchify_proj"), ("norm_q", "q_norm"), ("norm_k", "k_norm"), ("time_embed", "adaln_single"))


def official_module_name(module: str) -> str:
    """diffusers transformer module path -> official (`model.diffusion_model.`-relative) path, checked against the
    forward key map the LoRA loader uses (raises `ValueError` when no candidate maps back)."""
    candidates = [module]
    for new, old in _REVERSE:
        candidates += [c.replace(new, old) for c in candidates if new in c]
    for c in reversed(candidates):  # prefer the renamed (official) spelling over an identity that also maps back
        if map_transformer_key(c + ".weight") == module + ".weight":
            return c
    raise ValueError(f"no official name maps to transformer module {module!r}")


def export_lora_state_dict(transformer, adapter_name: str = "default", dtype: torch.dtype = torch.float32):
    """The adapter as an official-format state dict (`diffusion_model.*.lora_A/B.weight`, alpha folded into B)."""
    out: dict[str, torch.Tensor] = {}
    for name, module in transformer.named_modules():
        if not (hasattr(module, "lora_A") and adapter_name in module.lora_A):
            continue
        a = module.lora_A[adapter_name].weight.detach().float()
        b = module.lora_B[adapter_name].weight.detach().float() * float(module.scaling[adapter_name])
        key = "diffusion_model." + official_module_name(name)
        out[f"{key}.lora_A.weight"] = a.to(dtype).contiguous().cpu()
        out[f"{key}.lora_B.weight"] = b.to(dtype).contiguous().cpu()
    if not out:
        raise ValueError(f"the transformer has no LoRA adapter {adapter_name!r}")
    return out


def save_lora(transformer, path: str | os.PathLike, metadata: dict, adapter_name: str = "default",
              dtype: torch.dtype = torch.float32) -> Path:
    """Write the adapter as an official LoRA `.safetensors` (atomically, `training.data.write_entry`: mode as
    `open()` gives) with string metadata. A LoRA holding NaN / inf is refused (`ValueError`) and nothing is
    written; a write error (ENOSPC) is an `OSError` naming `path`, with no temporary file left."""
    from .checkpoints import check_finite
    from .data import write_entry

    state = export_lora_state_dict(transformer, adapter_name, dtype)
    check_finite(state, f"the LoRA {path}")
    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items() if v is not None}
    meta.setdefault("format", "pt")
    return write_entry(path, state, meta)


def load_lora_into(transformer, path: str | os.PathLike, adapter_name: str = "default") -> None:
    """Load an official LoRA file into an existing adapter of the same layout (to continue training from it);
    the folded `alpha / rank` is divided back out of `lora_B`."""
    from safetensors.torch import load_file

    from ..conversion.lora import convert_lora_state_dict

    converted, _ = convert_lora_state_dict(load_file(str(path)))
    modules = dict(transformer.named_modules())
    for key, value in converted.items():
        if not key.startswith("transformer."):
            raise ValueError(f"{path}: {key} is not a transformer LoRA weight")
        mod_name, kind = key.removeprefix("transformer.").rsplit(".", 2)[:2]
        module = modules.get(mod_name)
        if module is None or not hasattr(module, "lora_A") or adapter_name not in module.lora_A:
            raise ValueError(f"{path}: module {mod_name} is not adapted in this run (check lora.target_modules)")
        layer = getattr(module, kind)[adapter_name]
        if layer.weight.shape != value.shape:
            raise ValueError(f"{path}: {key} has shape {tuple(value.shape)}, the adapter {tuple(layer.weight.shape)}")
        if kind == "lora_B":
            value = value.float() / float(module.scaling[adapter_name])
        with torch.no_grad():
            layer.weight.copy_(value)
