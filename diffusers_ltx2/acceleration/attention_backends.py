"""Attention backends: diffusers' dispatcher (`transformer.set_attention_backend(...)`, `--attention`) under every
guidance pass layout.

Every attention of the LTX-2 transformer goes through diffusers' `LTX2AudioVideoAttnProcessor`, which calls
`dispatch_attention_fn` with its `_attention_backend`; this package's per-row guidance processor
(`transformer.attention.GuidedAttnProcessor`) wraps that processor and forwards `_attention_backend` to it, so the
backend set before or during a call is the one that runs (STG's value path computes no attention at all).

Backends without attention masks (flash-attn 2 / 3, SageAttention: diffusers raises "`attn_mask` is not
supported") need care with LTX-2's masks, decided per transformer call:

* the text mask is all ones in practice (LTX-2's connectors replace padding by learnable registers and return an
  all-valid mask): it is dropped (`None`), which is exact - a zero additive bias;
* a padded text mask (prompts of different lengths batched together) or the IC-LoRA attention-strength bias on
  video self-attention (`transformer.attention_bias`) cannot be dropped: those attentions (`attn2` / `audio_attn2`,
  `attn1`) run on torch SDPA ("native") for that call, with a one-time warning; the others keep the backend.

With a mask-capable backend ("native" and its pinned kernels, "flex", "xformers") nothing changes.

diffusers' `set_attention_backend` also makes the backend the process-wide default (its registry's "active"
backend), which reaches every other model without a backend of its own - LTX-2's text connectors, whose
register-filled mask then meets flash-attn. `pipe.set_attention_backend` keeps the choice on the transformer
(the default is put back), and the connectors run on native SDPA whenever the default is mask-free
(`connectors_backend`), so `pipe.transformer.set_attention_backend(...)` works too.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager, nullcontext

logger = logging.getLogger(__name__)

#: diffusers backends that refuse `attn_mask` (their dispatch functions raise on it); varlen flash takes masks
_MASK_FREE_PREFIXES = ("flash", "_flash", "sage", "_sage", "aiter", "_native_flash")
_WARNED: set[str] = set()


def backend_name(name: str) -> str:
    """`--attention` name (`memory_modes.ATTENTION_BACKENDS`) or diffusers backend name -> diffusers' name.

    Raises:
        ValueError: unknown name (the message lists the choices).
    """
    from diffusers.models.attention_dispatch import AttentionBackendName

    from ..memory_modes import ATTENTION_BACKENDS

    value = ATTENTION_BACKENDS.get(name, name)
    if value not in {b.value for b in AttentionBackendName}:
        raise ValueError(f"unknown attention backend {name!r}; choose one of {', '.join(ATTENTION_BACKENDS)} (or "
                         "a diffusers backend name)")
    return value


def check_attention_backend(name: str) -> str:
    """Validate a backend before any model loads (its package is installed, its kernels exist in this build);
    returns diffusers' name.

    Raises:
        ValueError: unknown name, or diffusers' requirement check fails (the message is diffusers', e.g. which
            package to install).
    """
    from diffusers.models.attention_dispatch import AttentionBackendName, _check_attention_backend_requirements

    value = backend_name(name)
    try:
        _check_attention_backend_requirements(AttentionBackendName(value))
    except RuntimeError as err:
        raise ValueError(f"attention backend {name!r}: {err}") from None
    return value


def takes_attention_mask(backend) -> bool:
    """False for the backends that refuse an attention mask (flash-attn, SageAttention, native SDPA's flash)."""
    value = getattr(backend, "value", backend) or "native"
    return not (str(value).startswith(_MASK_FREE_PREFIXES) and "varlen" not in str(value))


def current_backend(transformer) -> str:
    """The backend the transformer's attention processors dispatch to (diffusers' name)."""
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry

    model = getattr(transformer, "_orig_mod", transformer)
    for module in model.modules():
        processor = getattr(module, "processor", None)
        if processor is not None and hasattr(processor, "_attention_backend"):
            backend = processor._attention_backend
            if backend is not None:
                return getattr(backend, "value", backend)
            break
    active = _AttentionBackendRegistry.get_active_backend()[0]
    return getattr(active, "value", active)


def masks_for_backend(transformer, text_mask, audio_text_mask, self_attention_bias):
    """The text masks to pass to the transformer for this call and a context routing the attentions whose mask
    cannot be dropped to native SDPA (see the module docstring). Returns `(text_mask, audio_text_mask, context)`;
    with a mask-capable backend the masks come back unchanged and the context does nothing."""
    backend = current_backend(transformer)
    if takes_attention_mask(backend):
        return text_mask, audio_text_mask, nullcontext()
    kinds = []
    if text_mask is not None:
        if bool(text_mask.all()):
            text_mask = None
        else:
            kinds.append("attn2")
    if audio_text_mask is not None:
        if bool(audio_text_mask.all()):
            audio_text_mask = None
        else:
            kinds.append("audio_attn2")
    if self_attention_bias is not None:
        kinds.append("attn1")
    if kinds and backend not in _WARNED:
        _WARNED.add(backend)
        logger.warning("attention backend %r takes no attention mask: %s run on native SDPA in calls with a padded "
                       "prompt mask or an attention-strength bias", backend, ", ".join(sorted(set(kinds))))
    return text_mask, audio_text_mask, _native_for(transformer, kinds) if kinds else nullcontext()


def set_transformer_backend(transformer, name: str) -> str:
    """`transformer.set_attention_backend` for the transformer alone: checked (`check_attention_backend`), the
    process-wide default left as it was. Returns diffusers' name."""
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry

    value = check_attention_backend(name)
    before = _AttentionBackendRegistry._active_backend
    try:
        transformer.set_attention_backend(value)
    finally:
        _AttentionBackendRegistry.set_active_backend(before)
    return value


def connectors_backend():
    """Context for running models without a backend of their own (the text connectors, whose masks are never
    dropped): native SDPA while the process-wide default is mask-free, else nothing."""
    from diffusers.models.attention_dispatch import AttentionBackendName, _AttentionBackendRegistry, attention_backend

    if takes_attention_mask(_AttentionBackendRegistry._active_backend):
        return nullcontext()
    return attention_backend(AttentionBackendName.NATIVE)


@contextmanager
def _native_for(transformer, kinds):
    """Set the listed attentions of every block to the native backend while inside; restore after."""
    from diffusers.models.attention_dispatch import AttentionBackendName

    model = getattr(transformer, "_orig_mod", transformer)
    saved = []
    try:
        for block in model.transformer_blocks:
            for kind in kinds:
                processor = getattr(block, kind).processor
                saved.append((processor, processor._attention_backend))
                processor._attention_backend = AttentionBackendName.NATIVE
        yield
    finally:
        for processor, backend in saved:
            processor._attention_backend = backend
