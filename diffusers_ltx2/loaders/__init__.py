"""Prompt conditioning: the `PromptEncoder` interface and its implementations."""

from .gemma import GemmaPromptEncoder, gemma_features, run_connectors
from .prompt_embeddings import PromptEmbeddings, PromptEncoder

__all__ = ["GemmaPromptEncoder", "PromptEmbeddings", "PromptEncoder", "gemma_features", "run_connectors"]

# Prompt conditioning without a local Gemma: the LTX API encoder, saved conditioning files, a disk cache.
from .api import (
    LTXAPIAuthError,
    LTXAPIConnectionError,
    LTXAPIError,
    LTXAPIPromptEncoder,
    LTXAPIRateLimitError,
    LTXAPIResponseError,
    LTXAPIServerError,
    LTXAPITimeoutError,
)
from .cache import CachedPromptEncoder
from .conditioning_file import (
    as_prompt_embeddings,
    from_comfy_conditioning,
    load_conditioning,
    read_conditioning_metadata,
    save_conditioning,
)
from .identity import (
    MissingModelIdentityWarning,
    ModelIdentityMismatchError,
    check_model_identity,
    connector_fingerprint,
    context_dims,
    read_model_id,
)
from .safe_pickle import ForbiddenPickleError, SafeUnpicklingError, safe_loads

__all__ += [
    "CachedPromptEncoder",
    "ForbiddenPickleError",
    "LTXAPIAuthError",
    "LTXAPIConnectionError",
    "LTXAPIError",
    "LTXAPIPromptEncoder",
    "LTXAPIRateLimitError",
    "LTXAPIResponseError",
    "LTXAPIServerError",
    "LTXAPITimeoutError",
    "MissingModelIdentityWarning",
    "ModelIdentityMismatchError",
    "SafeUnpicklingError",
    "as_prompt_embeddings",
    "check_model_identity",
    "connector_fingerprint",
    "context_dims",
    "from_comfy_conditioning",
    "load_conditioning",
    "read_conditioning_metadata",
    "read_model_id",
    "safe_loads",
    "save_conditioning",
]
