"""Official / community LTX-2 LoRAs -> diffusers/PEFT LoRA format.

Input keys: ``diffusion_model.<module>.lora_A.weight`` / ``lora_B.weight`` (official trainer) or
``lora_down`` / ``lora_up`` (community), optional ``<module>.alpha``, and ``text_embedding_projection.*``.
Module paths are renamed with the same rules as full checkpoints (:class:`keymap.KeyMapper`), so connector
blocks (``diffusion_model.{video,audio}_embeddings_connector.*``) land in ``connectors.*`` rather than in
the transformer, where diffusers 0.42.1's own converter puts them.

Output keys: ``transformer.<module>.lora_A.weight`` / ``lora_B.weight`` and ``connectors.<module>...``,
which ``LTX2LoraLoaderMixin.load_lora_weights`` loads as-is. Scaling: the official fusion adds
``B @ A`` with no alpha scaling; a file that stores ``alpha`` follows the kohya/ComfyUI convention
(``alpha / rank``), which is folded into ``lora_B`` so PEFT's default scale of 1 reproduces it.
All metadata (``reference_downscale_factor``, ``reference_temporal_scale_factor``...) is kept.
"""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .errors import ConversionError, KeyMismatchError
from .keymap import TRANSFORMER_PREFIX, KeyMapper
from .streaming import read_header

_LORA_RE = re.compile(r"^(?P<module>.+)\.(?P<kind>lora_A|lora_B|lora_down|lora_up)(?:\.default)?\.weight$")
_ALPHA_RE = re.compile(r"^(?P<module>.+)\.alpha$")
_KIND = {"lora_A": "lora_A", "lora_down": "lora_A", "lora_B": "lora_B", "lora_up": "lora_B"}
_PREFIXES = ("diffusion_model.", "text_embedding_projection.")


def _official_key(module: str) -> str:
    """LoRA module path -> the full-checkpoint key of the weight it adapts."""
    if module.startswith("diffusion_model."):
        return TRANSFORMER_PREFIX + module.removeprefix("diffusion_model.") + ".weight"
    return module + ".weight"


def _parse_factor(metadata: dict | None, key: str) -> int | None:
    if not metadata or metadata.get(key) in (None, ""):
        return None
    raw = metadata[key]
    try:
        value = float(raw)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"LoRA metadata {key}={raw!r} is not a number") from exc
    if value < 1 or value != int(value):
        raise ValueError(f"LoRA metadata {key}={raw!r} must be a positive integer")
    return int(value)


def read_reference_factors(metadata: dict | None) -> tuple[int | None, int | None]:
    """`(reference_downscale_factor, reference_temporal_scale_factor)` from a LoRA file's metadata (None = absent)."""
    return _parse_factor(metadata, "reference_downscale_factor"), _parse_factor(
        metadata, "reference_temporal_scale_factor"
    )


def reference_downscale_factor(metadata: dict[str, str] | None) -> int | None:
    """IC-LoRA ``reference_downscale_factor`` from LoRA metadata (``None`` when absent)."""
    return read_reference_factors(metadata)[0]


def convert_lora_state_dict(
    state_dict: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Rename an official LoRA state dict to diffusers/PEFT keys.

    Returns ``(state_dict, metadata)``; raises :class:`KeyMismatchError` for keys that are not LoRA
    factors / alphas of known modules, or for modules with only one of the two factors.
    """
    mapper = KeyMapper({})
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    alphas: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, value in state_dict.items():
        if not key.startswith(_PREFIXES):
            unknown.append(key)
            continue
        m = _LORA_RE.match(key)
        if m:
            pairs.setdefault(m.group("module"), {})[_KIND[m.group("kind")]] = value
            continue
        m = _ALPHA_RE.match(key)
        if m:
            alphas[m.group("module")] = value
            continue
        unknown.append(key)

    out: dict[str, torch.Tensor] = {}
    missing: list[str] = []
    for module, factors in sorted(pairs.items()):
        if set(factors) != {"lora_A", "lora_B"}:
            missing.append(f"{module}: has only {sorted(factors)}")
            continue
        try:
            routed = mapper.map(_official_key(module))
        except KeyError:
            routed = None
        if routed is None:
            unknown.append(module)
            continue
        component, new = routed
        target = new.removesuffix(".weight")
        a, b = factors["lora_A"], factors["lora_B"]
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1]:
            raise ConversionError(f"{module}: LoRA factors of shapes {tuple(a.shape)} and {tuple(b.shape)} do not chain")
        if module in alphas:
            rank = a.shape[0]
            b = (b.to(torch.float32) * (float(alphas.pop(module)) / rank)).to(b.dtype)
        out[f"{component}.{target}.lora_A.weight"] = a
        out[f"{component}.{target}.lora_B.weight"] = b
    unknown.extend(f"{m}.alpha (no LoRA factors)" for m in alphas)
    if unknown or missing:
        raise KeyMismatchError(unknown=unknown, missing=missing)
    return out, dict(metadata or {})


def convert_lora_file(
    src: str | os.PathLike, dst: str | os.PathLike, *, dtype: str = "keep", overwrite: bool = False
) -> Path:
    """Convert an official LoRA ``.safetensors`` to a diffusers/PEFT LoRA file (written atomically).

    Args:
        src: official LoRA file.
        dst: output ``.safetensors`` path (refused if it exists, unless ``overwrite``).
        dtype: ``"keep"``, ``"bf16"`` or ``"fp32"`` for the factors.
    """
    src, dst = Path(src), Path(dst)
    tensors, metadata = read_header(src)  # validates the file before reading data
    if dst.exists() and not overwrite:
        raise ConversionError(f"{dst} already exists (pass overwrite=True / --overwrite)")
    target = {"keep": None, "bf16": torch.bfloat16, "fp32": torch.float32}[dtype]
    with safe_open(str(src), framework="pt", device="cpu") as f:
        sd = {k: f.get_tensor(k) for k in tensors}
    out, meta = convert_lora_state_dict(sd, metadata)
    if target is not None:
        out = {k: v.to(target) for k, v in out.items()}
    meta.setdefault("format", "pt")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        save_file({k: v.contiguous() for k, v in out.items()}, str(tmp), metadata=meta)
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dst
