"""LTX-2 LoRA files in every layout users meet -> one checked set of factors per target layer.

`normalize_lora` is the single key-normalisation step behind both `load_lora_weights` and `ltx2 convert-lora`.
Accepted keys (`<module>` in any layout `lora_targets.resolve_module` knows: official `diffusion_model.`,
diffusers `transformer.` / `connectors.`, bare diffusers paths, `diffusion_model.connectors.*`, kohya
`lora_unet_<path_with_underscores>`):

* ``<module>.lora_A.weight`` / ``lora_B.weight``, optionally with an adapter segment (``lora_A.default.weight``);
* ``<module>.lora_down.weight`` / ``lora_up.weight`` (community / kohya), with an optional ``<module>.alpha``.

Every module must resolve to a linear layer of the target (a real model, or the LTX-2 layer names when
converting without one) with matching shapes, both factors present and finite; otherwise one `LoraKeyError`
(a `ValueError`) lists the unmatched keys grouped by module and names the probable cause - nothing is loaded.

Scaling: the official fusion adds ``B @ A`` with no alpha (the trainer sets alpha = rank); a kohya-style
``alpha`` means ``alpha / rank`` and is folded into ``lora_B``. diffusers files keep their PEFT adapter
metadata (``lora_adapter_metadata``: ``r``, ``lora_alpha``, patterns), which the loader hands to PEFT; a file
with both is ambiguous and refused. IC-LoRA metadata (``reference_downscale_factor``, or kohya's
``ss_reference_downscale_factor``) is read by `read_reference_factors`.
"""

from __future__ import annotations

import math
import os
import re
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .errors import ConversionError, KeyMismatchError
from ..json_files import parse_json
from .lora_targets import LoraTargets, resolve_module
from .streaming import read_header

__all__ = [
    "LoraKeyError", "NormalizedLora", "normalize_lora", "convert_lora_state_dict", "convert_lora_file",
    "read_reference_factors", "reference_downscale_factor", "ADAPTER_METADATA_KEY",
]

#: diffusers' safetensors metadata key holding the PEFT `LoraConfig` fields (`diffusers.loaders.lora_base`).
ADAPTER_METADATA_KEY = "lora_adapter_metadata"

_FACTOR_RE = re.compile(
    r"^(?P<module>.+?)\.(?P<kind>lora_A|lora_B|lora_down|lora_up)(?:\.(?P<adapter>[^.]+))?\.weight$"
)
_ALPHA_RE = re.compile(r"^(?P<module>.+)\.alpha$")
_KIND = {"lora_A": "A", "lora_down": "A", "lora_B": "B", "lora_up": "B"}
_SHOWN_GROUPS, _SHOWN_KEYS = 8, 3
#: largest IC-LoRA reference downscale / temporal factor accepted (official IC-LoRAs use 1 and 2)
MAX_REFERENCE_FACTOR = 64
#: dtypes a LoRA factor may have (float8 factors are refused: no trainer writes them, and torch cannot check them)
_FACTOR_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


class LoraKeyError(KeyMismatchError, ValueError):
    """A LoRA file whose tensors do not all land on a layer of the model (nothing was loaded).

    Attributes:
        unknown: keys of modules with no target.
        missing: ``"<module>: has only [...]"`` for modules lacking one of their two factors.
        problems: ``(cause, module, keys)`` for every refused module.
    """

    def __init__(self, message: str, problems: list[tuple[str, str, list[str]]], unknown=(), missing=()):
        ValueError.__init__(self, message)
        self.unknown, self.missing, self.problems = sorted(unknown), sorted(missing), problems

    def __str__(self) -> str:
        return self.args[0]


@dataclass
class NormalizedLora:
    """Checked LoRA factors: `factors[(component, path)] = (A (r, in), B (out, r))`, alpha folded into B.

    `adapter_config[component]` holds diffusers' PEFT adapter metadata for that component (empty when the file
    has none); `metadata` the file's safetensors metadata, unchanged."""

    factors: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]]
    metadata: dict[str, str] = field(default_factory=dict)
    adapter_config: dict[str, dict] = field(default_factory=dict)

    def components(self) -> list[str]:
        return sorted({c for c, _ in self.factors})

    def modules(self, component: str) -> list[str]:
        return sorted(p for c, p in self.factors if c == component)

    def state_dict(self, component: str | None = None) -> dict[str, torch.Tensor]:
        """diffusers/PEFT keys: ``<component>.<path>.lora_A.weight`` / ``lora_B.weight``."""
        out = {}
        for (c, path), (a, b) in sorted(self.factors.items()):
            if component in (None, c):
                out[f"{c}.{path}.lora_A.weight"] = a
                out[f"{c}.{path}.lora_B.weight"] = b
        return out


def _adapter_config(metadata: dict | None) -> dict[str, dict]:
    raw = (metadata or {}).get(ADAPTER_METADATA_KEY)
    if raw in (None, ""):
        return {}
    try:
        flat = parse_json(raw, f"LoRA metadata {ADAPTER_METADATA_KEY}") if isinstance(raw, str) else dict(raw)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"LoRA metadata {ADAPTER_METADATA_KEY} is not valid JSON ({exc})") from exc
    out: dict[str, dict] = defaultdict(dict)
    for key, value in flat.items():
        component, _, name = key.partition(".")
        if not name:
            raise ValueError(f"LoRA metadata {ADAPTER_METADATA_KEY} has an entry {key!r} without a component prefix")
        out[component][name] = value
    return dict(out)


def _peft_rank_alpha(config: dict, path: str) -> tuple[int, float]:
    """Rank and alpha PEFT will use for `path` under a `LoraConfig`-style dict (its pattern rules)."""
    from peft.utils.other import get_pattern_key

    rank_pattern, alpha_pattern = config.get("rank_pattern") or {}, config.get("alpha_pattern") or {}
    r = rank_pattern.get(get_pattern_key(list(rank_pattern), path), config.get("r", 8))
    alpha = alpha_pattern.get(get_pattern_key(list(alpha_pattern), path), config.get("lora_alpha", r))
    return int(r), float(alpha)


def _group_label(module: str) -> str:
    return re.sub(r"(transformer_blocks|transformer_1d_blocks)([._])\d+([._])", r"\1\2*\3", module)


def _format_problems(problems: list[tuple[str, str, list[str]]], total_modules: int, name: str | None,
                     model: str) -> str:
    by_cause: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for cause, module, keys in problems:
        by_cause[cause][_group_label(module)].extend(keys)
    n_keys = sum(len(k) for _, _, k in problems)
    who = f"LoRA {name!r}" if name else "the LoRA"
    lines = [f"{who} does not fit {model}: {len({m for _, m, _ in problems})} of {total_modules} modules "
             f"({n_keys} tensors) have no valid target; nothing was loaded."]
    shown = 0
    for cause, groups in by_cause.items():
        lines.append(f"  {cause}:")
        for label, keys in groups.items():
            if shown == _SHOWN_GROUPS:
                lines.append("    ...")
                break
            more = f", ... ({len(keys)} keys)" if len(keys) > _SHOWN_KEYS else ""
            lines.append(f"    {label}: {', '.join(keys[:_SHOWN_KEYS])}{more}")
            shown += 1
    return "\n".join(lines)


def normalize_lora(
    state_dict: dict[str, torch.Tensor],
    metadata: dict[str, str] | None = None,
    targets: LoraTargets | None = None,
    *,
    name: str | None = None,
) -> NormalizedLora:
    """Map every tensor of a LoRA state dict to `(component, layer path)` and check it (see the module doc).

    Args:
        state_dict: the file's tensors, in any supported layout.
        metadata: the file's safetensors metadata (strings), or None.
        targets: the catalogue to check against (`LoraTargets.from_models(...)`); default: LTX-2 layer names.
        name: adapter name, for messages.

    Raises:
        LoraKeyError: (a ValueError) some tensors have no target, lack their other factor, have shapes that do
            not fit, are not finite, or the file mixes conventions; nothing is returned.
        ValueError: an empty state dict, float8 (or other non-float16/32) factors, or unreadable adapter
            metadata.
    """
    if not state_dict:
        raise ValueError("the LoRA file holds no tensors")
    odd = sorted(k for k, v in state_dict.items() if v.is_floating_point() and v.dtype not in _FACTOR_DTYPES)
    if odd:
        who = f"LoRA {name!r}" if name else "the LoRA"
        raise ValueError(f"{who} has {len(odd)} tensors in {state_dict[odd[0]].dtype} (e.g. {odd[0]}): LoRA factors "
                         "must be float16, bfloat16 or float32; nothing was loaded")
    targets = targets or LoraTargets.template()
    entries: dict[str, dict[str, tuple[str, torch.Tensor]]] = defaultdict(dict)
    adapters: set[str] = set()
    problems: list[tuple[str, str, list[str]]] = []
    for key, value in state_dict.items():
        m = _FACTOR_RE.match(key)
        kind = _KIND[m.group("kind")] if m else None
        if m and m.group("adapter"):
            adapters.add(m.group("adapter"))
        if m is None:
            m = _ALPHA_RE.match(key)
            kind = "alpha" if m else None
        if m is None:
            problems.append(("not a LoRA factor (lora_A/B, lora_down/up or alpha; DoRA, LoKr and bias tensors are "
                             "not supported)", key, [key]))
            continue
        module = m.group("module")
        if kind in entries[module]:
            problems.append(("two tensors for the same factor", module, [entries[module][kind][0], key]))
        entries[module][kind] = (key, value)
    if len(adapters) > 1:
        raise ValueError(f"the LoRA file holds several adapters ({sorted(adapters)}): save one adapter per file")

    adapter_config = _adapter_config(metadata)
    factors: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]] = {}
    owner: dict[tuple[str, str], str] = {}
    missing: list[str] = []
    for module, parts in entries.items():
        keys = [k for k, _ in parts.values()]
        (component, path), found = resolve_module(module, targets)
        if not found:
            problems.append((targets.diagnose(component, path), module, keys))
            continue
        if "A" not in parts or "B" not in parts:
            have = sorted({"A": "lora_A", "B": "lora_B", "alpha": "alpha"}[k] for k in parts)
            missing.append(f"{module}: has only {have}")
            problems.append(("one of the two factors is missing", module, keys))
            continue
        if (component, path) in owner:
            problems.append((f"a second set of factors for {component}.{path}", module, keys))
            continue
        a, b = parts["A"][1], parts["B"][1]
        shape = targets.shape(component, path)
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1] or (
            shape is not None and (b.shape[0], a.shape[1]) != shape
        ):
            layer = f" for a layer of shape {shape}" if shape else ""
            problems.append((f"factor shapes do not fit (made for a model of another size?): A {tuple(a.shape)}, "
                             f"B {tuple(b.shape)}{layer}", module, keys))
            continue
        alpha = parts.get("alpha", (None, None))[1]
        if not (a.is_floating_point() and b.is_floating_point()):
            problems.append(("factors are not floating point", module, keys))
            continue
        if not (torch.isfinite(a).all() and torch.isfinite(b).all()) or (
            alpha is not None and (alpha.numel() != 1 or not math.isfinite(float(alpha)))
        ):
            problems.append(("NaN or inf values (a corrupt or diverged LoRA)", module, keys))
            continue
        if alpha is not None and adapter_config.get(component, {}).get("lora_alpha") is not None:
            problems.append(("alpha given twice (an .alpha tensor and lora_alpha in lora_adapter_metadata)",
                             module, keys))
            continue
        if alpha is not None:
            b = (b.to(torch.float32) * (float(alpha) / a.shape[0])).to(b.dtype)
        factors[(component, path)] = (a, b)
        owner[(component, path)] = module
    if problems:
        unknown = [k for cause, _, keys in problems for k in keys if "missing" not in cause]
        model = "LTX-2 (2.0 or 2.3)" if targets.template else "this model"
        if not entries:  # not one LoRA factor: a model checkpoint or another kind of file
            who = f"LoRA {name!r}" if name else "the file"
            message = (f"{who} is not a LoRA: none of its {len(state_dict)} tensors is a LoRA factor (lora_A / "
                       f"lora_B, lora_down / lora_up), e.g. {next(iter(state_dict))}; nothing was loaded")
        else:
            message = _format_problems(problems, len(entries), name, model)
        origin = lora_origin(metadata)
        raise LoraKeyError(message + (f"\n  {origin}" if origin else ""), problems, unknown, missing)
    for component, config in adapter_config.items():
        for path in (p for c, p in factors if c == component):
            r, _ = _peft_rank_alpha(config, path)
            if r != factors[(component, path)][0].shape[0]:
                raise ValueError(f"lora_adapter_metadata gives rank {r} for {component}.{path} but its factors have "
                                 f"rank {factors[(component, path)][0].shape[0]}")
    return NormalizedLora(factors, dict(metadata or {}), adapter_config)


# ----------------------------------------------------------------------------------------------- metadata

#: metadata keys that say which model a LoRA was made for: `ltx2 train`'s, kohya's, the modelspec standard's
_ORIGIN_KEYS = ("base_model", "base_model_identity", "training_strategy", "ss_base_model_version",
                "ss_sd_model_name", "modelspec.architecture", "modelspec.title")


def lora_origin(metadata: dict | None) -> str:
    """What a LoRA file's metadata says of the model it was made for (`"its metadata: base_model=...,
    training_strategy=..."`), or `""` when it says nothing; for error messages."""
    found = [f"{k}={str(metadata[k])[:120]}" for k in _ORIGIN_KEYS if metadata and metadata.get(k) not in (None, "")]
    return f"its metadata: {', '.join(found)}" if found else "its metadata names no base model"


def check_reference_factor(name: str, value) -> int | None:
    """`value` as an IC-LoRA reference factor: an integer from 1 to `MAX_REFERENCE_FACTOR` (`None` passes).

    Raises:
        ValueError: anything else (bools, floats, strings, 0, 10**9).
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_REFERENCE_FACTOR:
        raise ValueError(f"{name} must be a positive integer no larger than {MAX_REFERENCE_FACTOR}, got {value!r} (a "
                         f"larger factor leaves the reference under one latent pixel even at "
                         f"{32 * MAX_REFERENCE_FACTOR} px)")
    return value


def _parse_factor(metadata: dict | None, key: str) -> int | None:
    """A factor written in the metadata as a whole number ("2"; "2.0" too), checked by `check_reference_factor`."""
    if not metadata or metadata.get(key) in (None, ""):
        return None
    raw = metadata[key]
    match = re.fullmatch(r"\s*(\d+)(?:\.0*)?\s*", raw) if isinstance(raw, str) else None
    if match is None:
        raise ValueError(f"LoRA metadata {key}={raw!r} is not a number in whole-number notation (such as \"2\")")
    return check_reference_factor(f"LoRA metadata {key}", int(match.group(1)))


def _read_factor(metadata: dict | None, key: str) -> int | None:
    """`key` or kohya's `ss_<key>`; a file where both are present and differ is refused."""
    plain, kohya = _parse_factor(metadata, key), _parse_factor(metadata, "ss_" + key)
    if plain is not None and kohya is not None and plain != kohya:
        raise ValueError(f"LoRA metadata disagrees with itself: {key}={plain} but ss_{key}={kohya}")
    return plain if plain is not None else kohya


def read_reference_factors(metadata: dict | None) -> tuple[int | None, int | None]:
    """`(reference_downscale_factor, reference_temporal_scale_factor)` from a LoRA file's metadata (None = absent).

    Reads the official keys and the kohya-trainer spelling (`ss_reference_downscale_factor`, ...).

    Raises:
        ValueError: a value that is not a positive integer, or the two spellings disagree.
    """
    return _read_factor(metadata, "reference_downscale_factor"), _read_factor(metadata,
                                                                             "reference_temporal_scale_factor")


def reference_downscale_factor(metadata: dict[str, str] | None) -> int | None:
    """IC-LoRA ``reference_downscale_factor`` from LoRA metadata (``None`` when absent)."""
    return read_reference_factors(metadata)[0]


# ----------------------------------------------------------------------------------------------- files


def convert_lora_state_dict(
    state_dict: dict[str, torch.Tensor], metadata: dict[str, str] | None = None, targets: LoraTargets | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Rename a LoRA state dict (any supported layout) to diffusers/PEFT keys: `normalize_lora` + keys.

    Returns ``(state_dict, metadata)``; raises :class:`LoraKeyError` (see `normalize_lora`).
    """
    normalized = normalize_lora(state_dict, metadata, targets)
    read_reference_factors(normalized.metadata)  # refuse unreadable / contradictory IC-LoRA metadata
    return normalized.state_dict(), normalized.metadata


def convert_lora_file(
    src: str | os.PathLike, dst: str | os.PathLike, *, dtype: str = "keep", overwrite: bool = False
) -> Path:
    """Convert a LoRA ``.safetensors`` (official, kohya, ...) to a diffusers/PEFT LoRA file (written atomically).

    Args:
        src: the LoRA file.
        dst: output ``.safetensors`` path (refused if it exists, unless ``overwrite``).
        dtype: ``"keep"``, ``"bf16"`` or ``"fp32"`` for the factors.

    Raises:
        LoraKeyError: some tensors have no LTX-2 target (see `normalize_lora`); nothing is written.
        ConversionError: an unreadable file, or `dst` exists.
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

