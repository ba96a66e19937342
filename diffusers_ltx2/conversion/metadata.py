"""Metadata keys of official LTX-2 checkpoints (the safetensors header's `__metadata__`) and what they declare.

Plain data and parsing, no models: `loaders` (identity, Gemma version checks) and `conversion` both read them.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..json_files import parse_json

#: the official checkpoint's model id (an opaque string; prompt embeddings made for it carry the same id)
MODEL_ID_METADATA_KEY = "encrypted_wandb_properties"
#: LTX-2.5: the Gemma the connectors were trained on, a JSON object with `GEMMA_VERSION_KEY`
GEMMA_SOURCE_METADATA_KEY = "gemma_source_checkpoint"
GEMMA_VERSION_KEY = "gemma_version"


def expected_gemma_version(metadata: Mapping[str, str]) -> str | None:
    """The ``gemma_version`` a checkpoint's safetensors metadata declares (``gemma_source_checkpoint``), if any.

    Raises:
        ValueError: ``gemma_source_checkpoint`` is not a JSON object (a corrupt header).
    """
    raw = metadata.get(GEMMA_SOURCE_METADATA_KEY)
    if raw is None:
        return None
    # parse_json: bad JSON, bad bytes or crafted deep nesting are a ValueError (never a RecursionError)
    source = parse_json(raw, f"{GEMMA_SOURCE_METADATA_KEY} metadata") if isinstance(raw, (str, bytes)) else raw
    if not isinstance(source, Mapping):
        raise ValueError(f"{GEMMA_SOURCE_METADATA_KEY} metadata must be a JSON object, got {type(source).__name__}")
    version = source.get(GEMMA_VERSION_KEY)
    return None if version is None else str(version)
