"""Saved prompt conditioning: encode once (locally or with the LTX API), generate many times without Gemma.

File format (safetensors), chosen so that ComfyUI's ``LTXVLoadConditioning`` reads our connector-stage
files too:

* ``conditioning_data_0``: ``(B, L, video_dim + audio_dim)`` connector output, video then audio channels
  (what the LTX API returns and ComfyUI's ``LTXVSaveConditioning`` writes);
* ``attention_mask_0``: ``(B, L)``;
* metadata: ``format`` (``diffusers_ltx2.conditioning``), ``format_version``, ``model_identity`` (absent
  when unknown), ``stage``, ``video_dim``, ``audio_dim``, ``dtype``, ``created_at`` (UTC, ISO 8601),
  ``num_conditionings`` and whatever the caller adds (``prompt``, ...).

Feature-stage embeddings (raw Gemma hidden states, before the connectors) are stored as ``gemma_features_0``
instead, which ComfyUI does not pick up by mistake.

ComfyUI ``LTXVSaveConditioning`` files (``conditioning_data_{i}``, optional ``attention_mask_{i}``, metadata
``num_conditionings``, ``dtype``, ``created_at``) load as well, with a `MissingModelIdentityWarning`: they do
not record which model produced them.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import safetensors
import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_save

from .api_keys import API_KEY_ENV, contains_api_key
from .identity import (
    MissingModelIdentityWarning,
    check_model_identity,
    short_identity,
    split_context,
)
from .prompt_embeddings import PromptEmbeddings

__all__ = [
    "ConditioningFileError",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "as_prompt_embeddings",
    "cat_padded",
    "from_comfy_conditioning",
    "load_conditioning",
    "read_conditioning_metadata",
    "save_conditioning",
]

FORMAT_NAME = "diffusers_ltx2.conditioning"
FORMAT_VERSION = 1
_SafetensorError = getattr(safetensors, "SafetensorError", Exception)
_RESERVED = frozenset(
    {"format", "format_version", "model_identity", "stage", "dtype", "created_at", "video_dim", "audio_dim",
     "num_conditionings"}
)


def _metadata_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, default=str)


class ConditioningFileError(ValueError):
    """Conditioning (a file, or a ComfyUI conditioning list) that cannot be used: corrupt, inconsistent or
    of an unknown kind. Every refusal by this module is a `ValueError` (this class or
    `identity.ModelIdentityMismatchError`), so callers such as the prompt cache can catch one type."""


def _refuse_secrets(metadata: Mapping[str, str]) -> None:
    for key, value in metadata.items():
        if contains_api_key(key) or contains_api_key(value):
            raise ValueError(
                f"refusing to save: metadata entry {key[:40]!r} contains an LTX API key ({API_KEY_ENV} or the "
                "api_key= of an LTXAPIPromptEncoder)"
            )


def _atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` via a temporary file in the same folder and an atomic rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def save_conditioning(
    path: str | os.PathLike,
    embeddings: PromptEmbeddings,
    *,
    dtype: torch.dtype | None = None,
    **metadata: Any,
) -> Path:
    """Save `embeddings` to a safetensors file; returns the path.

    Args:
        path: destination (parent folders are created). Written atomically: on any failure the destination
            is left as it was and no partial file remains.
        embeddings: what a `PromptEncoder` returned. Its `model_identity` is recorded.
        dtype: cast the contexts to this dtype (e.g. ``torch.bfloat16`` to halve the size); default: keep.
        **metadata: extra string metadata, e.g. ``prompt="..."``; non-strings are stored as JSON.
            Reserved names (``format``, ``model_identity``, ``dtype``, ...) are rejected.
    """
    if not isinstance(embeddings, PromptEmbeddings):
        raise TypeError(f"save_conditioning expects PromptEmbeddings, got {type(embeddings).__name__}")
    clashes = sorted(_RESERVED.intersection(metadata))
    if clashes:
        raise ValueError(f"metadata names {clashes} are reserved by the conditioning file format")
    extra = {str(k): _metadata_value(v) for k, v in metadata.items()}
    _refuse_secrets(extra)

    mask = embeddings.attention_mask.detach().to("cpu").contiguous()
    if embeddings.stage == "connector":
        video, audio = embeddings.video_context.detach(), embeddings.audio_context.detach()
        target = dtype or torch.promote_types(video.dtype, audio.dtype)
        data = torch.cat([video.to("cpu", target), audio.to("cpu", target)], dim=-1).contiguous()
        tensors = {"conditioning_data_0": data, "attention_mask_0": mask}
        dims = {"video_dim": str(video.shape[-1]), "audio_dim": str(audio.shape[-1]), "num_conditionings": "1"}
    else:
        features = embeddings.video_context.detach().to("cpu", dtype or embeddings.video_context.dtype)
        tensors = {"gemma_features_0": features.contiguous(), "attention_mask_0": mask}
        target, dims = features.dtype, {}
    header = {
        **extra,
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "stage": embeddings.stage,
        "dtype": str(target).removeprefix("torch."),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **dims,
    }
    if embeddings.model_identity is not None:
        header["model_identity"] = embeddings.model_identity
    payload = safetensors_save(tensors, metadata=header)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, payload)
    return path


def read_conditioning_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata of a conditioning file (ours or ComfyUI's), without loading tensors."""
    from .identity import read_safetensors_metadata

    return read_safetensors_metadata(path)


def _binary_mask(mask: torch.Tensor | None, batch: int, tokens: int, source: str) -> torch.Tensor:
    if mask is None:
        return torch.ones(batch, tokens, dtype=torch.int64)
    if not isinstance(mask, torch.Tensor):
        raise ConditioningFileError(f"{source}: attention_mask is a {type(mask).__name__}, not a tensor")
    if mask.numel() != batch * tokens:
        raise ConditioningFileError(
            f"{source}: attention_mask has shape {tuple(mask.shape)}, which does not fit the context's "
            f"(batch, tokens) = ({batch}, {tokens})"
        )
    mask = mask.reshape(batch, tokens)
    if mask.dtype == torch.bool:
        return mask.to(torch.int64)
    if mask.is_complex() or not bool(((mask == 0) | (mask == 1)).all()):
        raise ConditioningFileError(f"{source}: attention_mask must hold only 0 and 1 (got other values)")
    return mask.to(torch.int64)


def _check_context(
    context: Any,
    source: str,
    what: str = "the context tensor",
    *,
    max_batch: int | None = None,
    max_tokens: int | None = None,
) -> None:
    """A usable ``(batch, tokens, channels)`` float tensor: shapes and bounds first (cheap), values last."""
    if not isinstance(context, torch.Tensor):
        raise ConditioningFileError(f"{source}: expected a tensor, got {type(context).__name__}")
    if context.ndim != 3:
        raise ConditioningFileError(
            f"{source}: {what} must be (batch, tokens, channels), got shape {tuple(context.shape)}"
        )
    if context.numel() == 0:
        raise ConditioningFileError(f"{source}: {what} is empty (shape {tuple(context.shape)})")
    if max_batch is not None and context.shape[0] > max_batch:
        raise ConditioningFileError(f"{source}: {what} holds {context.shape[0]} rows, expected at most {max_batch}")
    if max_tokens is not None and context.shape[1] > max_tokens:
        raise ConditioningFileError(
            f"{source}: {what} is {context.shape[1]} tokens long, more than the {max_tokens} allowed"
        )
    if not context.is_floating_point():
        raise ConditioningFileError(f"{source}: {what} has dtype {context.dtype}, expected a floating type")
    if not bool(torch.isfinite(context).all()):
        raise ConditioningFileError(f"{source}: {what} contains NaN or infinite values")


def from_comfy_conditioning(
    conditioning: Any,
    *,
    video_dim: int | None = None,
    audio_dim: int | None = None,
    model_identity: str | None = None,
    source: str = "ComfyUI conditioning",
    max_batch: int | None = None,
    max_tokens: int | None = None,
) -> PromptEmbeddings:
    """Turn a ComfyUI conditioning list ``[[tensor, {options}]]`` (the LTX API reply) into `PromptEmbeddings`.

    The tensor is the connector output with video and audio channels concatenated; `video_dim`/`audio_dim`
    give the split (default: the released models' widths, see `identity.KNOWN_CONTEXT_SPLITS`). The mask is
    ``options["attention_mask"]`` when present, else all ones. Conditioning flagged
    ``unprocessed_ltxav_embeds`` (ComfyUI's projected-but-not-connected 2.3 features) is refused: it is not
    a connector output. `max_batch`/`max_tokens` bound the tensor's rows and length (checked before any
    value is read).

    Raises:
        ConditioningFileError: (a `ValueError`) for anything unusable: wrong
            structure, a non-float, empty, non-finite or out-of-bounds tensor, a width that does not split,
            a mask that does not fit or is not binary.
    """
    if not isinstance(conditioning, (list, tuple)) or not conditioning:
        raise ConditioningFileError(
            f"{source}: expected a non-empty list [[tensor, {{...}}]], got {type(conditioning).__name__}"
        )
    if len(conditioning) != 1:
        raise ConditioningFileError(f"{source}: expected exactly one conditioning entry, got {len(conditioning)}")
    entry = conditioning[0]
    if not isinstance(entry, (list, tuple)) or not 1 <= len(entry) <= 2:
        raise ConditioningFileError(f"{source}: each entry must be [tensor, options], got {type(entry).__name__}")
    context = entry[0]
    options = entry[1] if len(entry) == 2 else {}
    if not isinstance(options, dict):
        raise ConditioningFileError(f"{source}: options must be a dict, got {type(options).__name__}")
    if options.get("unprocessed_ltxav_embeds"):
        raise ConditioningFileError(
            f"{source}: the tensor is flagged unprocessed_ltxav_embeds (projected Gemma features that still need "
            "the model's connectors), not a connector output; it cannot be used as prompt embeddings here"
        )
    if isinstance(context, torch.Tensor) and context.ndim == 2:
        context = context.unsqueeze(0)
    _check_context(context, source, max_batch=max_batch, max_tokens=max_tokens)
    try:
        video, audio = split_context(context, video_dim, audio_dim, source=source)
    except ValueError as err:
        raise ConditioningFileError(str(err)) from None
    mask = _binary_mask(options.get("attention_mask"), context.shape[0], context.shape[1], source)
    return PromptEmbeddings(
        video_context=video.contiguous(), audio_context=audio.contiguous(), attention_mask=mask,
        model_identity=model_identity, stage="connector",
    )


def _check_dims(file_dims: tuple[int, int], video_dim: int | None, audio_dim: int | None, source: str) -> None:
    want = (video_dim if video_dim is not None else file_dims[0], audio_dim if audio_dim is not None else file_dims[1])
    if tuple(want) != tuple(file_dims):
        raise ConditioningFileError(
            f"{source}: holds video {file_dims[0]} + audio {file_dims[1]} wide contexts but the loaded model "
            f"expects video {want[0]} + audio {want[1]}; the embeddings were made for a different model"
        )


def load_conditioning(
    path: str | os.PathLike,
    *,
    video_dim: int | None = None,
    audio_dim: int | None = None,
    model_identities: str | Iterable[str | None] | None = None,
    device: torch.device | str | None = None,
) -> PromptEmbeddings:
    """Load a conditioning file written by `save_conditioning` or by ComfyUI's ``LTXVSaveConditioning``.

    Args:
        path: the safetensors file.
        video_dim, audio_dim: context widths the target model expects (see `identity.context_dims`). Our
            files record their split and are checked against these; ComfyUI files are split with them (or
            with the released models' widths when not given).
        model_identities: identities of the model the embeddings are for (checkpoint model id and/or
            connector fingerprint). A file made for another model raises `ModelIdentityMismatchError`
            naming both.
        device: where to put the tensors (default CPU).

    Both stages get the same checks: a ``(batch, tokens, channels)`` floating tensor, non-empty, finite,
    with a binary ``(batch, tokens)`` mask. ComfyUI files carry no model identity and emit a
    `MissingModelIdentityWarning`.

    Raises:
        FileNotFoundError: `path` is not a file.
        ValueError: every other refusal (`ConditioningFileError`, `ModelIdentityMismatchError`): unreadable
            or corrupt file, unknown or missing ``stage``, newer format version, failed checks above.
    """
    path = Path(path)
    source = f"conditioning file {path}"
    if not path.is_file():
        raise FileNotFoundError(f"no such conditioning file: {path}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            metadata = fh.metadata() or {}
            keys = set(fh.keys())
            tensors = {k: fh.get_tensor(k) for k in keys}
    except (_SafetensorError, OSError, ValueError, RuntimeError, TypeError) as err:
        raise ConditioningFileError(f"{source} is not a readable safetensors file: {err}") from None
    try:
        embeddings = _from_tensors(tensors, metadata, path, source, video_dim, audio_dim, model_identities)
    except (RuntimeError, TypeError, IndexError, OverflowError) as err:  # torch on odd tensors: still a refusal
        raise ConditioningFileError(f"{source} is not usable conditioning: {type(err).__name__}: {err}") from None
    return embeddings.to(device) if device is not None else embeddings


def _from_tensors(tensors, metadata, path, source, video_dim, audio_dim, model_identities) -> PromptEmbeddings:
    keys = set(tensors)
    if metadata.get("format") == FORMAT_NAME:
        try:
            version = int(metadata.get("format_version", "0"))
        except ValueError:
            version = -1
        if not 1 <= version <= FORMAT_VERSION:
            raise ConditioningFileError(
                f"{source} has format version {metadata.get('format_version')!r}; this version of diffusers_ltx2 "
                f"reads up to {FORMAT_VERSION}"
            )
        identity = metadata.get("model_identity") or None
        check_model_identity(identity, model_identities, source=source)
        stage = metadata.get("stage")
        if stage not in ("connector", "features"):
            raise ConditioningFileError(
                f"{source} records stage {stage!r}; expected 'connector' or 'features' (the file is corrupt or "
                "was written by a newer tool)"
            )
        if stage == "features":
            if keys != {"gemma_features_0", "attention_mask_0"}:
                raise ConditioningFileError(
                    f"{source} is a feature-stage file and must hold exactly gemma_features_0 and attention_mask_0, "
                    f"got {sorted(keys)}"
                )
            features = tensors["gemma_features_0"]
            _check_context(features, source, "gemma_features_0")
            return PromptEmbeddings(
                video_context=features, audio_context=None,
                attention_mask=_binary_mask(tensors["attention_mask_0"], features.shape[0], features.shape[1], source),
                model_identity=identity, stage="features",
            )
        if "gemma_features_0" in keys:
            raise ConditioningFileError(f"{source} is a connector-stage file but holds gemma_features_0")
        try:
            file_dims = (int(metadata["video_dim"]), int(metadata["audio_dim"]))
        except (KeyError, ValueError):
            raise ConditioningFileError(f"{source} does not record video_dim/audio_dim") from None
        _check_dims(file_dims, video_dim, audio_dim, source)
        video_dim, audio_dim = file_dims
    elif any(k.startswith("conditioning_data_") for k in keys):
        identity = None
        warnings.warn(
            f"{path.name} is a ComfyUI LTXVSaveConditioning file: it records no model identity, so it cannot be "
            "checked against the loaded model (conditioning made for another LTX-2 model gives wrong results "
            "silently)",
            MissingModelIdentityWarning,
            stacklevel=4,
        )
    else:
        raise ConditioningFileError(f"{source} holds no conditioning (no conditioning_data_* tensors)")

    data_keys = sorted(k for k in keys if k.startswith("conditioning_data_"))
    if len(data_keys) != 1:
        raise ConditioningFileError(
            f"{source} holds {len(data_keys)} conditionings ({', '.join(data_keys)}); exactly one is supported"
        )
    index = data_keys[0].removeprefix("conditioning_data_")
    options = {}
    if f"attention_mask_{index}" in tensors:
        options["attention_mask"] = tensors[f"attention_mask_{index}"]
    return from_comfy_conditioning(
        [[tensors[data_keys[0]], options]], video_dim=video_dim, audio_dim=audio_dim,
        model_identity=identity, source=source,
    )


def as_prompt_embeddings(
    value: Any,
    *,
    model_identities: str | Iterable[str | None] | None = None,
    video_dim: int | None = None,
    audio_dim: int | None = None,
    device: torch.device | str | None = None,
) -> PromptEmbeddings:
    """Accept what a pipeline's ``prompt_embeds=`` may receive and return checked `PromptEmbeddings`.

    `value` is `PromptEmbeddings`, a path to a conditioning file, or a ComfyUI conditioning list. The
    model identity is checked against `model_identities` and, for connector-stage embeddings, the context
    widths against `video_dim`/`audio_dim` (the loaded model's, see `identity.context_dims`).
    """
    if isinstance(value, (str, os.PathLike)):
        return load_conditioning(
            value, video_dim=video_dim, audio_dim=audio_dim, model_identities=model_identities, device=device
        )
    if isinstance(value, (list, tuple)):
        embeddings = from_comfy_conditioning(value, video_dim=video_dim, audio_dim=audio_dim)
        check_model_identity(None, model_identities, source="ComfyUI conditioning")
    elif isinstance(value, PromptEmbeddings):
        embeddings = value
        check_model_identity(embeddings.model_identity, model_identities, source="prompt_embeds")
        if embeddings.stage == "connector":
            got = (embeddings.video_context.shape[-1], embeddings.audio_context.shape[-1])
            _check_dims(got, video_dim, audio_dim, f"prompt_embeds ({short_identity(embeddings.model_identity)})")
    else:
        raise TypeError(
            f"prompt embeddings must be PromptEmbeddings, a conditioning file path or a ComfyUI conditioning "
            f"list, got {type(value).__name__}"
        )
    return embeddings.to(device) if device is not None else embeddings


def cat_padded(rows: list[PromptEmbeddings]) -> PromptEmbeddings:
    """Concatenate embeddings along the batch, right-padding shorter sequences with masked-out zeros."""
    if len(rows) == 1:
        return rows[0]
    length = max(r.video_context.shape[1] for r in rows)

    def pad(t: torch.Tensor) -> torch.Tensor:
        extra = length - t.shape[1]
        if extra == 0:
            return t
        return torch.cat([t, t.new_zeros(t.shape[0], extra, *t.shape[2:])], dim=1)

    padded = [
        PromptEmbeddings(
            video_context=pad(r.video_context),
            audio_context=pad(r.audio_context) if r.audio_context is not None else None,
            attention_mask=pad(r.attention_mask), model_identity=r.model_identity, stage=r.stage,
        )
        for r in rows
    ]
    return PromptEmbeddings.cat(padded)
