"""A disk cache in front of any `PromptEncoder`: each distinct prompt is encoded once per model."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from pathlib import Path

import torch

from .api_keys import contains_api_key
from .conditioning_file import FORMAT_VERSION, cat_padded, load_conditioning, save_conditioning
from .identity import connector_fingerprint
from .prompt_embeddings import PromptEmbeddings, PromptEncoder

__all__ = ["CachedPromptEncoder"]

logger = logging.getLogger(__name__)


class CachedPromptEncoder:
    """Wrap `inner` so that embeddings are stored in `cache_dir` and reused.

    Entries are conditioning files (see `save_conditioning`) named by a hash of the prompt, the encoder kind,
    the model identity and the encoder's other output-determining settings (e.g. the API's
    ``enhance_prompt``, Gemma's sequence length). Entries that fail to load (corrupt, other model) are
    re-encoded and replaced. Writes are atomic, so concurrent processes sharing a folder are safe. Entries
    record their prompt as metadata, except a prompt containing an LTX API key (``LTX_API_KEY`` or any live
    encoder's ``api_key=``): that entry is saved without its prompt.

    Args:
        inner: the encoder to call on cache misses.
        cache_dir: folder for the entries (created if needed).
        model_identity: overrides the identity taken from `inner` (``inner.model_identity``, else the
            fingerprint of ``inner.connectors``). Required when `inner` reports none, since the cache key
            must distinguish models.

    Attributes:
        hits, misses: counters of prompts served from disk / encoded.
    """

    def __init__(self, inner: PromptEncoder, cache_dir: str | os.PathLike, *, model_identity: str | None = None):
        if not callable(getattr(inner, "encode", None)):
            raise TypeError(f"inner must be a PromptEncoder (with an encode method), got {type(inner).__name__}")
        self.inner = inner
        self.cache_dir = Path(cache_dir)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self._identity_override = model_identity
        self.hits = 0
        self.misses = 0

    @property
    def kind(self) -> str:
        return f"cached-{getattr(self.inner, 'kind', type(self.inner).__name__)}"

    @property
    def model_identity(self) -> str:
        """The identity the cache is keyed by (and that the embeddings carry)."""
        if self._identity_override:
            return self._identity_override
        identity = getattr(self.inner, "model_identity", None)
        if identity:
            return identity
        connectors = getattr(self.inner, "connectors", None)
        if connectors is not None:
            return connector_fingerprint(connectors)
        raise ValueError(
            f"cannot key the prompt cache: {type(self.inner).__name__} reports no model identity; pass "
            "model_identity= to CachedPromptEncoder"
        )

    def _key_parts(self) -> dict:
        parts_fn = getattr(self.inner, "cache_key_parts", None)
        parts = dict(parts_fn()) if callable(parts_fn) else {}
        parts.setdefault("kind", getattr(self.inner, "kind", type(self.inner).__name__))
        parts["model_identity"] = self.model_identity
        for attr in ("max_sequence_length", "enhance_prompt"):
            if hasattr(self.inner, attr) and attr not in parts:
                parts[attr] = getattr(self.inner, attr)
        connectors = getattr(self.inner, "connectors", "absent")
        parts.setdefault("stage", "features" if connectors is None else "connector")
        parts["format_version"] = FORMAT_VERSION
        return parts

    def path_for(self, prompt: str, key_parts: dict | None = None) -> Path:
        """The cache file that holds (or would hold) `prompt`'s embeddings (`key_parts`: `_key_parts()`,
        when the caller already has them)."""
        parts = self._key_parts() if key_parts is None else key_parts
        key = json.dumps({**parts, "prompt": prompt}, sort_keys=True, default=str)
        return self.cache_dir / f"{hashlib.sha256(key.encode('utf-8')).hexdigest()[:32]}.safetensors"

    def _load(self, path: Path, identity: str) -> PromptEmbeddings | None:
        if not path.is_file():
            return None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                embeddings = load_conditioning(path, model_identities=[identity])
        except (ValueError, OSError) as err:
            logger.warning("ignoring unusable prompt cache entry %s: %s", path.name, err)
            return None
        if embeddings.model_identity != identity or embeddings.batch_size != 1:
            return None
        return embeddings

    def encode(self, prompts: list[str], *, device: torch.device | None = None) -> PromptEmbeddings:
        """Return embeddings for `prompts`, encoding only those not yet in the cache."""
        if isinstance(prompts, str):
            prompts = [prompts]
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise ValueError("prompts must be a non-empty list of strings")
        identity = self.model_identity
        key_parts = self._key_parts()
        paths = {prompt: self.path_for(prompt, key_parts) for prompt in dict.fromkeys(prompts)}
        rows: dict[str, PromptEmbeddings] = {}
        missing: list[str] = []
        for prompt, path in paths.items():
            cached = self._load(path, identity)
            if cached is None:
                missing.append(prompt)
            else:
                rows[prompt] = cached
        self.hits += sum(1 for p in prompts if p in rows)
        if missing:
            fresh = self.inner.encode(missing, device=None)
            if fresh.model_identity not in (None, identity):
                raise ValueError(
                    f"{type(self.inner).__name__} returned embeddings for model {fresh.model_identity!r} but the "
                    f"cache is keyed by {identity!r}; fix model_identity="
                )
            for i, prompt in enumerate(missing):
                row = _row(fresh, i, identity)
                extra = {} if contains_api_key(prompt) else {"prompt": prompt}
                save_conditioning(paths[prompt], row, encoder=self.kind.removeprefix("cached-"), **extra)
                rows[prompt] = row
            self.misses += sum(1 for p in prompts if p in missing)
        embeddings = cat_padded([rows[p] for p in prompts])
        return embeddings.to(device) if device is not None else embeddings


def _row(batch: PromptEmbeddings, i: int, identity: str) -> PromptEmbeddings:
    audio = batch.audio_context[i : i + 1].detach().cpu() if batch.audio_context is not None else None
    return PromptEmbeddings(
        video_context=batch.video_context[i : i + 1].detach().cpu(),
        audio_context=audio,
        attention_mask=batch.attention_mask[i : i + 1].detach().cpu(),
        model_identity=identity,
        stage=batch.stage,
    )
