"""Which model a set of prompt embeddings belongs to, and how wide its video/audio contexts are.

Connector outputs are only meaningful for the model whose connectors produced them: feeding LTX-2.0
embeddings to LTX-2.3 (or a fine-tune's to its base) gives wrong results without any error. Embeddings
therefore carry a *model identity*:

* for checkpoints from Lightricks, the string in the safetensors metadata key ``encrypted_wandb_properties``
  (the same string the LTX API calls ``model_id``), read by `read_model_id`;
* for locally-encoded embeddings, `connector_fingerprint`: a short hash of the text connectors' config and
  weights.

A pipeline accepts embeddings whose identity is one of its own (its checkpoint's model id and/or its
connectors' fingerprint): see `check_model_identity`.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import warnings
import weakref
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch

from ..conversion.metadata import MODEL_ID_METADATA_KEY
from ..json_files import parse_json

__all__ = [
    "KNOWN_CONTEXT_SPLITS",
    "MODEL_ID_METADATA_KEY",
    "MissingModelIdentityWarning",
    "ModelIdentityMismatchError",
    "check_model_identity",
    "connector_fingerprint",
    "context_dims",
    "read_model_id",
    "read_safetensors_metadata",
    "split_context",
]


# Width of the concatenated connector output -> (video, audio) for the released models.
KNOWN_CONTEXT_SPLITS: dict[int, tuple[int, int]] = {
    3840 + 3840: (3840, 3840),  # LTX-2.0 (19B)
    4096 + 2048: (4096, 2048),  # LTX-2.3 and LTX-2.5 (22B): same widths, told apart by their model identity only
}

_MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors' own limit


class ModelIdentityMismatchError(ValueError):
    """Prompt embeddings were produced for a different model than the one they are being used with."""


class MissingModelIdentityWarning(UserWarning):
    """Prompt embeddings carry no model identity (e.g. ComfyUI files), so a mismatch cannot be detected."""


def short_identity(identity: str | None, limit: int = 48) -> str:
    """`identity` shortened for messages (model ids are long opaque strings)."""
    if identity is None:
        return "<unknown>"
    return identity if len(identity) <= limit else f"{identity[:limit - 1]}…"


def read_safetensors_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file, read from its header only (no tensor is loaded)."""
    path = Path(path)
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) != 8:
            raise ValueError(f"{path} is not a safetensors file (shorter than its 8-byte header length)")
        (length,) = struct.unpack("<Q", head)
        if length == 0 or length > _MAX_HEADER_BYTES:
            raise ValueError(f"{path} is not a safetensors file (header length {length})")
        raw = fh.read(length)
    if len(raw) != length:
        raise ValueError(f"{path} is truncated: its safetensors header is incomplete")
    try:
        header = parse_json(raw, f"{path}: safetensors header")
    except ValueError as err:
        raise ValueError(f"{path} has a corrupt safetensors header ({err})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path} has a corrupt safetensors header (not a JSON object)")
    metadata = header.get("__metadata__") or {}
    if not isinstance(metadata, dict):
        raise ValueError(f"{path} has a corrupt safetensors header (metadata is not a mapping)")
    return {str(k): str(v) for k, v in metadata.items()}


def _declares_transformer(path: Path) -> bool:
    """Whether a safetensors file's ``config`` metadata has a ``transformer`` section (a single-file checkpoint or
    the transformer file of an LTX-2.5 split set; its other component files declare only their own sections)."""
    try:
        config = json.loads(read_safetensors_metadata(path).get("config") or "{}")
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and "transformer" in config


def _candidate_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"no such checkpoint file or directory: {path}")
    files = sorted(path.glob("*.safetensors"))
    # an official 2.5 folder holds one file per component: the model's identity is the transformer file's
    files = sorted(files, key=lambda f: not _declares_transformer(f))
    for sub in ("transformer", "connectors"):
        files += sorted((path / sub).glob("*.safetensors"))
    return files


def read_model_id(checkpoint_path: str | os.PathLike) -> str:
    """The LTX API ``model_id`` of a checkpoint: its ``encrypted_wandb_properties`` metadata string.

    `checkpoint_path` is a safetensors file, or a directory whose ``*.safetensors`` files (those declaring a
    ``transformer`` config section first: an official LTX-2.5 set has one file per component, then those in
    ``transformer/`` and ``connectors/``) are searched in order. Only headers are read. A diffusers-layout folder
    made by `ltx2 convert` keeps the id in ``model_index.json`` (``"model_identity"``, which the pipeline loads
    as its `model_identity`; its shards carry no metadata): read when no file carries the key.

    Raises:
        ValueError: no file carries the key (e.g. a community re-save that dropped the metadata).
    """
    path = Path(checkpoint_path)
    files = _candidate_files(path)
    for file in files:
        model_id = read_safetensors_metadata(file).get(MODEL_ID_METADATA_KEY)
        if model_id:
            return model_id
    index = path / "model_index.json"
    if path.is_dir() and index.is_file():
        document = parse_json(index.read_bytes(), index)
        model_id = document.get("model_identity") if isinstance(document, dict) else None
        if isinstance(model_id, str) and model_id:
            return model_id
    searched = ", ".join(str(f) for f in files[:5]) or "no .safetensors files"
    raise ValueError(
        f"cannot identify the model: no {MODEL_ID_METADATA_KEY!r} metadata in {path} (searched: {searched}). "
        "Use an official LTX-2 checkpoint or pass the model id explicitly"
    )


_FINGERPRINT_CACHE: "weakref.WeakKeyDictionary[torch.nn.Module, tuple[tuple, str]]" = weakref.WeakKeyDictionary()


def _config_dict(obj) -> dict:
    config = getattr(obj, "config", obj)
    if isinstance(config, Mapping):
        return dict(config)
    if hasattr(config, "to_dict"):
        return dict(config.to_dict())
    raise TypeError(f"expected a model with a config or a config mapping, got {type(obj).__name__}")


def connector_fingerprint(connectors: torch.nn.Module) -> str:
    """A short stable hash of the text connectors' config and weights, e.g. ``"connectors-1f0c…"`` (16 hex).

    Identifies locally-encoded embeddings. Private config entries (``_name_or_path``, ``_diffusers_version``,
    ``_class_name``: they appear on save/load) are ignored and the class name is used instead. Weights are
    hashed after rounding to bfloat16, so float32 and bfloat16 copies of one model agree and so do CPU and GPU
    copies (float16 or fp8 copies may not). The result is cached per module until a parameter is replaced or
    modified in place (e.g. a LoRA fused into it).
    """
    named = sorted(connectors.state_dict(keep_vars=True).items())
    key = tuple((name, t.data_ptr(), t._version, t.dtype, t.device.type) for name, t in named)
    cached = _FINGERPRINT_CACHE.get(connectors)
    if cached is not None and cached[0] == key:
        return cached[1]
    # Private entries (`_class_name`, `_name_or_path`, ...) appear or change on save/load: use the class instead.
    config = {k: v for k, v in _config_dict(connectors).items() if not k.startswith("_")}
    digest = hashlib.blake2b(digest_size=8)
    digest.update(json.dumps([type(connectors).__name__, config], sort_keys=True, default=str).encode())
    with torch.no_grad():
        for name, tensor in named:
            if tensor.device.type == "meta":
                raise ValueError(f"cannot fingerprint connectors: {name} is on the meta device (not loaded)")
            digest.update(f"{name}:{tuple(tensor.shape)}".encode())
            if tensor.is_floating_point():
                tensor = tensor.detach().to(device="cpu", dtype=torch.bfloat16)
            flat = tensor.detach().cpu().contiguous().reshape(-1)
            digest.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    fingerprint = f"connectors-{digest.hexdigest()}"
    _FINGERPRINT_CACHE[connectors] = (key, fingerprint)
    return fingerprint


def context_dims(model_or_config) -> tuple[int, int]:
    """(video_dim, audio_dim) of the connector outputs a model consumes.

    Accepts `LTX2TextConnectors` or an `LTX2VideoTransformer3DModel` (or their config mappings):

    * connectors with ``per_modality_projections=True`` (2.3): ``(video_hidden_dim, audio_hidden_dim)``;
      otherwise (2.0): ``(caption_channels, caption_channels)``;
    * a transformer with caption projections (``use_prompt_embeddings=True``, 2.0): both
      ``caption_channels``; without them (2.3): the video and audio stream widths.
    """
    config = _config_dict(model_or_config)
    if "per_modality_projections" in config or "text_proj_in_factor" in config:
        if config.get("per_modality_projections", False):
            return int(config["video_hidden_dim"]), int(config["audio_hidden_dim"])
        return int(config["caption_channels"]), int(config["caption_channels"])
    if "caption_channels" in config and "num_attention_heads" in config:
        if config.get("use_prompt_embeddings", True):
            return int(config["caption_channels"]), int(config["caption_channels"])
        video = int(config["num_attention_heads"]) * int(config["attention_head_dim"])
        audio = int(config["audio_num_attention_heads"]) * int(config["audio_attention_head_dim"])
        return video, audio
    raise ValueError(
        "cannot tell the context widths from this config: expected LTX2TextConnectors or "
        "LTX2VideoTransformer3DModel settings (caption_channels, per_modality_projections, ...)"
    )


def split_context(
    context: torch.Tensor,
    video_dim: int | None = None,
    audio_dim: int | None = None,
    *,
    source: str = "conditioning",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a ``(B, L, video_dim + audio_dim)`` connector output into its video and audio contexts.

    With neither dim given, the width must be one of `KNOWN_CONTEXT_SPLITS` (the released models); with one
    given, the other is the remainder. A width that does not match raises `ValueError` naming both.
    """
    if context.ndim != 3:
        raise ValueError(f"{source}: expected a (batch, tokens, channels) tensor, got shape {tuple(context.shape)}")
    width = int(context.shape[-1])
    if video_dim is None and audio_dim is None:
        if width not in KNOWN_CONTEXT_SPLITS:
            known = ", ".join(f"{w} = {v} + {a}" for w, (v, a) in KNOWN_CONTEXT_SPLITS.items())
            raise ValueError(
                f"{source}: context is {width} wide, which is not a known LTX-2 split ({known}); "
                "pass video_dim/audio_dim (or the model's connectors/transformer config)"
            )
        video_dim, audio_dim = KNOWN_CONTEXT_SPLITS[width]
    elif video_dim is None:
        video_dim = width - int(audio_dim)
    elif audio_dim is None:
        audio_dim = width - int(video_dim)
    video_dim, audio_dim = int(video_dim), int(audio_dim)
    if video_dim <= 0 or audio_dim <= 0 or video_dim + audio_dim != width:
        raise ValueError(
            f"{source}: context is {width} wide but the loaded model expects video {video_dim} + audio "
            f"{audio_dim} = {video_dim + audio_dim}; the embeddings were made for a different model"
        )
    return context[..., :video_dim], context[..., video_dim:]


def check_model_identity(
    embeddings_identity: str | None,
    model_identities: str | Iterable[str | None] | None,
    *,
    source: str = "prompt embeddings",
    warn_if_unknown: bool = True,
) -> None:
    """Raise `ModelIdentityMismatchError` if embeddings of one model are used with another.

    `model_identities` are the identities the loaded model answers to (its checkpoint's model id and/or its
    connector fingerprint). Nothing is checked when either side is unknown; with `warn_if_unknown`, embeddings
    without identity used with a model that has one emit `MissingModelIdentityWarning`.
    """
    if isinstance(model_identities, str):
        model_identities = [model_identities]
    accepted = [i for i in (model_identities or []) if i]
    if embeddings_identity is None:
        if warn_if_unknown and accepted:
            warnings.warn(
                f"{source} carry no model identity, so they cannot be checked against the loaded model; "
                "embeddings made for another LTX-2 model give wrong results silently",
                MissingModelIdentityWarning,
                stacklevel=3,
            )
        return
    if not accepted or embeddings_identity in accepted:
        return
    raise ModelIdentityMismatchError(
        f"{source}: the embeddings were made for model {short_identity(embeddings_identity)!r}, but the loaded "
        f"model is {' / '.join(repr(short_identity(i)) for i in accepted)}; re-encode the prompt with this model"
    )
