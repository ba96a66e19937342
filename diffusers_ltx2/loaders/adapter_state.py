"""Switching PEFT LoRA adapters on and off for part of a call, without touching any weight.

The two-stage pipelines run stage 1 with the user's LoRAs and stage 2 with the distilled LoRA added on top of them
(official: a second `ModelLedger.with_additional_loras`, i.e. the LoRA fused into a second copy of the weights).
Here the distilled LoRA is one more PEFT adapter on the same transformer: `adapters_active` makes a given set of
adapters active for a `with` block, at given strengths, and puts every LoRA layer back exactly as it was (active
adapter names, per-adapter scalings, enabled flag) on exit, also on error. No parameter is written, copied or
reloaded, and `requires_grad` flags are left alone (the layer attributes are set directly, not through PEFT's
`set_adapter`, which would change them).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch


def lora_layers(model: torch.nn.Module) -> list:
    """PEFT tuner layers of `model` (empty when no LoRA was ever loaded)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [m for m in model.modules() if isinstance(m, BaseTunerLayer)]


def active_adapter_strengths(model: torch.nn.Module) -> dict[str, float | None]:
    """Adapter names active somewhere in `model`, in activation order, with their strength where every layer
    agrees (`scaling / (alpha / r)`), else `None`."""
    out: dict[str, float | None] = {}
    for layer in lora_layers(model):
        if layer.disable_adapters:
            continue
        for name in layer.active_adapters:
            if name not in getattr(layer, "scaling", {}):
                continue  # PEFT lists the model's active names on every layer, loaded there or not
            scaling = layer.scaling[name]
            base = getattr(layer, "lora_alpha", {}).get(name, 1) / max(getattr(layer, "r", {}).get(name, 1), 1)
            value = None if scaling is None else float(scaling) / base
            if name not in out:
                out[name] = value
            elif out[name] is not None and (value is None or abs(out[name] - value) > 1e-9):
                out[name] = None
    return out


def _snapshot(layers):
    return [(m, list(m.active_adapters), dict(getattr(m, "scaling", {})), m._disable_adapters) for m in layers]


def _restore(snapshot) -> None:
    for m, active, scaling, disabled in snapshot:
        m._active_adapter = active
        if hasattr(m, "scaling"):
            m.scaling.clear()
            m.scaling.update(scaling)
        m._disable_adapters = disabled


@contextmanager
def adapters_active(models, *, keep: set[str] | None = None, drop: set[str] = frozenset(),
                    add: dict[str, float] | None = None):
    """Within the block, every LoRA layer of `models` runs: its active adapters minus `drop` (all of them when
    `keep` is None, else only those in `keep`), plus the adapters of `add` at the given strengths
    (`W x + strength * B A x`, PEFT's `set_scale`). On exit each layer is restored exactly.

    Raises:
        ValueError: an adapter of `add` is not loaded in any of `models`.
    """
    models = [m for m in (models if isinstance(models, (list, tuple)) else [models]) if m is not None]
    add = dict(add or {})
    layers = [layer for m in models for layer in lora_layers(m)]
    present = {n for layer in layers for n in getattr(layer, "scaling", {})}
    missing = [n for n in add if n not in present]
    if missing:
        raise ValueError(f"LoRA adapter(s) {missing} are not loaded")
    snapshot = _snapshot(layers)
    try:
        for m in layers:
            active = [] if m.disable_adapters else [n for n in m.active_adapters if n not in drop]
            if keep is not None:
                active = [n for n in active if n in keep]
            for name, strength in add.items():
                if name in getattr(m, "scaling", {}):
                    m.set_scale(name, strength)
                    if name not in active:
                        active.append(name)
            m._active_adapter = active
            m._disable_adapters = False
        yield
    finally:
        _restore(snapshot)
