"""Prompt encoding with the LTX API: no Gemma download, no Gemma memory, prompt to embeddings in a request.

Protocol (what ComfyUI's ``GemmaAPITextEncode`` node speaks): ``POST {base_url}/v1/prompt-embedding`` with
``Authorization: Bearer <key>`` and the JSON body ``{"prompt", "model_id", "enhance_prompt"}``. ``model_id``
is the checkpoint's ``encrypted_wandb_properties`` metadata string (`identity.read_model_id`). The reply is a
*pickle* of a ComfyUI conditioning list ``[[tensor, {...}]]`` whose tensor is the connector output, video
and audio channels concatenated. It is read with `safe_pickle.safe_loads` (allow-listed, tensors mapped to
the CPU); anything else in it is refused.

Failure handling: 401/403 raise `LTXAPIAuthError` naming ``LTX_API_KEY``; 429 and 5xx, timeouts, dropped
connections and truncated replies are retried with exponential backoff (``Retry-After`` honoured, capped);
other statuses, malformed replies and replies of the wrong width for the loaded model raise at once.
Bounds: ``timeout`` is a deadline for each whole request (see `api_transport`), replies are capped at
``max_response_bytes`` (31 MiB by default, the largest legitimate reply plus 1 MiB), and a decoded reply must be
one row of at most `MAX_REPLY_TOKENS` tokens whose tensors lie inside their storages (see `safe_pickle`).

The API key (``api_key=`` or ``LTX_API_KEY``, treated alike, see `api_keys`) never appears in logs, reprs,
exception messages or frame locals (server text is redacted before it is cut short), and is only ever sent
over https (plain http is allowed for loopback addresses, for tests and local proxies).
Redirects are not followed, so the key cannot be forwarded to another host.
"""

from __future__ import annotations

import email.utils
import ipaddress
import json
import logging
import math
import os
import random
import time
import urllib.parse
from collections.abc import Callable, Mapping

import torch

from .api_keys import API_KEY_ENV, APIKey, redact
from .api_transport import (
    DEFAULT_MAX_RESPONSE_BYTES,
    HTTPClientTransport,
    HTTPResponse,
    Transport,
    TransportError,
)
from .conditioning_file import cat_padded, from_comfy_conditioning
from .identity import context_dims, read_model_id, short_identity
from .prompt_embeddings import PromptEmbeddings
from .safe_pickle import ForbiddenPickleError, SafeUnpicklingError, safe_loads

__all__ = [
    "API_KEY_ENV",
    "DEFAULT_BASE_URL",
    "DEFAULT_MAX_RESPONSE_BYTES",
    "HTTPClientTransport",
    "HTTPResponse",
    "LTXAPIAuthError",
    "LTXAPIConnectionError",
    "LTXAPIError",
    "LTXAPIPromptEncoder",
    "LTXAPIRateLimitError",
    "LTXAPIResponseError",
    "LTXAPIServerError",
    "LTXAPITimeoutError",
    "MAX_REPLY_TOKENS",
    "Transport",
    "TransportError",
]

logger = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.ltx.video"
ENDPOINT = "/v1/prompt-embedding"
# A reply is one prompt: 1 row of at most this many tokens (LTX-2's Gemma context is 1024 tokens).
MAX_REPLY_TOKENS = 4096
# Bytes of a non-200 reply quoted in error messages (after the key is redacted).
_SNIPPET_CHARS = 200


# ----------------------------------------------------------------------------------------------- errors


class LTXAPIError(RuntimeError):
    """A prompt could not be encoded with the LTX API."""


class LTXAPIAuthError(LTXAPIError):
    """The API rejected the key (HTTP 401/403)."""


class LTXAPIRateLimitError(LTXAPIError):
    """HTTP 429 on every attempt."""


class LTXAPIServerError(LTXAPIError):
    """HTTP 5xx on every attempt."""


class LTXAPITimeoutError(LTXAPIError):
    """No complete reply within the timeout on every attempt."""


class LTXAPIConnectionError(LTXAPIError):
    """The server could not be reached or dropped the connection on every attempt."""


class LTXAPIResponseError(LTXAPIError, ValueError):
    """The reply is not usable: unexpected status, malformed or unsafe pickle, or the wrong width for the model."""


# ------------------------------------------------------------------------------------------------ helpers


def _check_base_url(base_url: str) -> str:
    parts = urllib.parse.urlsplit(base_url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"base_url must be an https:// URL, got {base_url!r}")
    if parts.username or parts.password:
        raise ValueError("base_url must not contain credentials; pass api_key or set LTX_API_KEY")
    if parts.scheme == "http":
        host = parts.hostname
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        if not loopback:
            raise ValueError(
                f"refusing to send the API key over plain http to {host}: use https (http is only allowed for "
                "loopback addresses)"
            )
    return base_url.rstrip("/")


def _retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds the server asks to wait (``Retry-After``: delta-seconds or an HTTP date); `None` if absent or
    unreadable. Not capped here: the caller caps it."""
    value = (headers.get("retry-after") or "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None or when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if math.isnan(seconds):
        return None
    return max(0.0, seconds)


def _quote_reply(body: bytes, key: APIKey) -> str:
    """The start of a server's reply for an error message: the key is redacted first, then the text cut,
    so a key straddling the cut cannot leak its first characters."""
    head = body[: 4 * (_SNIPPET_CHARS + len(key.reveal())) + 64]  # a key starting in the quote ends in here
    text = redact(head.decode("utf-8", "replace"), key).strip()
    return text[:_SNIPPET_CHARS]


class _RequestHeaders(dict):
    """The request headers; their ``repr`` (what a traceback printing frame locals shows) masks the key."""

    def __repr__(self) -> str:
        return repr({k: ("***" if k.lower() == "authorization" else v) for k, v in self.items()})


# ------------------------------------------------------------------------------------------------ encoder


class LTXAPIPromptEncoder:
    """`PromptEncoder` that asks the LTX API for connector outputs (no local Gemma).

    Args:
        api_key: the LTX API key; default: the ``LTX_API_KEY`` environment variable.
        model_id: the model the embeddings are for: the checkpoint's ``encrypted_wandb_properties`` string.
            Default: read from `checkpoint`.
        enhance_prompt: let the API rewrite the prompt with Gemma before encoding.
        base_url: API root; must be https (http only for loopback addresses).
        timeout: seconds for one whole request: a deadline covering connecting, sending, the status line,
            headers, interim replies and every body byte (a server trickling bytes cannot extend it).
        retries: extra attempts after 429, 5xx, timeouts, dropped connections and truncated replies.
        checkpoint: safetensors file (or folder) to read `model_id` from.
        video_dim, audio_dim: widths of the video/audio contexts in the reply; default from `model_config`
            or, failing that, the released models' widths (7680 = 3840 + 3840, 6144 = 4096 + 2048).
        model_config: the loaded `LTX2TextConnectors` or `LTX2VideoTransformer3DModel` (or its config) to
            take the widths from (see `identity.context_dims`).
        backoff_base, backoff_max: retry delays are ``min(backoff_max, backoff_base * 2**attempt)`` with
            jitter, or the server's ``Retry-After`` capped at `backoff_max`.
        transport: the HTTP client (default `HTTPClientTransport`).
        max_response_bytes: larger replies are refused (by the default transport before they are read in
            full); default 32,505,856 bytes, the largest legitimate reply (1024 tokens x 7680 float32
            channels) plus 1 MiB. Decoded replies must also be one row of at most `MAX_REPLY_TOKENS` tokens.
        sleep: called with the delay in seconds between attempts (default `time.sleep`).

    The returned embeddings are connector-stage, on the CPU unless `device` is given, with
    ``model_identity = model_id``.
    """

    kind = "ltx-api"

    def __init__(
        self,
        api_key: str | None = None,
        model_id: str | None = None,
        enhance_prompt: bool = False,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float = 60.0,
        retries: int = 3,
        *,
        checkpoint: str | os.PathLike | None = None,
        video_dim: int | None = None,
        audio_dim: int | None = None,
        model_config=None,
        backoff_base: float = 1.0,
        backoff_max: float = 30.0,
        transport: Transport | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        sleep: Callable[[float], None] = time.sleep,
    ):
        try:
            self.__key = APIKey(api_key)  # validates; repr "***"; known to save_conditioning's secret check
        finally:
            api_key = None  # a traceback printing this frame's locals shows no key
        if model_id is None and checkpoint is not None:
            model_id = read_model_id(checkpoint)
        if not model_id:
            raise ValueError(
                "model_id is required: pass model_id= or checkpoint= (an LTX-2 safetensors file carrying "
                "'encrypted_wandb_properties' metadata)"
            )
        self.model_id = str(model_id)
        self.enhance_prompt = bool(enhance_prompt)
        self.base_url = _check_base_url(base_url)
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        self.timeout = float(timeout)
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        self.retries = int(retries)
        self.backoff_base = float(backoff_base)
        self.backoff_max = float(backoff_max)
        if model_config is not None and video_dim is None and audio_dim is None:
            video_dim, audio_dim = context_dims(model_config)
        self.video_dim = video_dim
        self.audio_dim = audio_dim
        if int(max_response_bytes) <= 0:
            raise ValueError(f"max_response_bytes must be positive, got {max_response_bytes}")
        self.max_response_bytes = int(max_response_bytes)
        self.transport = transport if transport is not None else HTTPClientTransport(self.max_response_bytes)
        self.sleep = sleep

    @property
    def model_identity(self) -> str:
        """The identity recorded on the embeddings (the API model id)."""
        return self.model_id

    def cache_key_parts(self) -> dict:
        """What determines the output besides the prompt (used by `CachedPromptEncoder`)."""
        return {"kind": self.kind, "model_identity": self.model_id, "enhance_prompt": self.enhance_prompt}

    def __repr__(self) -> str:
        # getattr: also called on a half-built instance (a traceback printing __init__'s locals)
        model_id = getattr(self, "model_id", None)
        settings = ", ".join(
            f"{name}={getattr(self, name)!r}" for name in ("enhance_prompt", "base_url", "timeout", "retries")
            if hasattr(self, name)
        )
        settings = f", {settings}" if settings else ""
        return f"{type(self).__name__}(api_key=***, model_id={short_identity(model_id)!r}{settings})"

    def __getstate__(self):
        raise TypeError(f"{type(self).__name__} holds an API key and is not picklable; build one per process")

    # -- requests --------------------------------------------------------------------------------------

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.backoff_max)
        delay = min(self.backoff_max, self.backoff_base * (2 ** attempt))
        return delay * (0.5 + random.random() / 2)

    def _request(self, prompt: str) -> bytes:
        url = self.base_url + ENDPOINT
        body = json.dumps(
            {"prompt": prompt, "model_id": self.model_id, "enhance_prompt": self.enhance_prompt}
        ).encode("utf-8")
        headers = _RequestHeaders({
            "Authorization": f"Bearer {self.__key.reveal()}",
            "Content-Type": "application/json",
            "Accept": "application/octet-stream",
            "User-Agent": "diffusers-ltx2",
        })
        attempts = self.retries + 1
        failures: list[str] = []
        last_kind: type[LTXAPIError] = LTXAPIConnectionError
        for attempt in range(attempts):
            retry_after = None
            started = time.monotonic()
            try:
                response = self.transport.post(url, body, headers, self.timeout)
            except TimeoutError:
                last_kind = LTXAPITimeoutError
                failures.append(f"timed out after {self.timeout:g} s")
            except TransportError as err:
                last_kind = LTXAPIConnectionError
                failures.append(redact(str(err), self.__key)[:_SNIPPET_CHARS])
            else:
                status = response.status
                logger.debug("LTX API %s -> %d (%d bytes, %.2f s)", url, status, len(response.body),
                             time.monotonic() - started)
                if status == 200:
                    if len(response.body) > self.max_response_bytes:
                        raise LTXAPIResponseError(
                            f"the LTX API reply of {len(response.body)} bytes exceeds the "
                            f"{self.max_response_bytes}-byte limit (max_response_bytes)"
                        )
                    return response.body
                if status in (401, 403):
                    raise LTXAPIAuthError(
                        f"the LTX API rejected the API key (HTTP {status}); check {API_KEY_ENV} or the api_key "
                        "argument (keys are issued at https://console.ltx.video)"
                    )
                snippet = _quote_reply(response.body, self.__key)
                if status == 429 or 500 <= status < 600:
                    last_kind = LTXAPIRateLimitError if status == 429 else LTXAPIServerError
                    retry_after = _retry_after(response.headers)
                    failures.append(f"HTTP {status}" + (f": {snippet}" if snippet else ""))
                else:
                    raise LTXAPIResponseError(
                        f"the LTX API answered HTTP {status} for model_id {short_identity(self.model_id)!r}"
                        + (f": {snippet}" if snippet else "")
                    )
            if attempt + 1 < attempts:
                delay = self._delay(attempt, retry_after)
                logger.info("LTX API attempt %d/%d failed (%s); retrying in %.2f s", attempt + 1, attempts,
                            failures[-1], delay)
                self.sleep(delay)
        raise last_kind(
            f"LTX API request failed after {attempts} attempt(s): {'; '.join(failures[-3:])}"
        )

    def _parse(self, body: bytes, prompt_index: int) -> PromptEmbeddings:
        source = f"LTX API reply for prompt {prompt_index}"
        try:
            conditioning = safe_loads(body)
        except ForbiddenPickleError as err:
            raise LTXAPIResponseError(f"{source} was refused: {redact(str(err), self.__key)}") from None
        except SafeUnpicklingError as err:
            raise LTXAPIResponseError(f"{source} is malformed: {redact(str(err), self.__key)}") from None
        try:
            return from_comfy_conditioning(
                conditioning, video_dim=self.video_dim, audio_dim=self.audio_dim,
                model_identity=self.model_id, source=source, max_batch=1, max_tokens=MAX_REPLY_TOKENS,
            )
        except ValueError as err:
            raise LTXAPIResponseError(
                f"{redact(str(err), self.__key)} (requested model_id {short_identity(self.model_id)!r})"
            ) from None

    def encode(self, prompts: list[str], *, device: torch.device | None = None) -> PromptEmbeddings:
        """Encode each prompt with one API request; returns connector-stage `PromptEmbeddings`."""
        if isinstance(prompts, str):
            prompts = [prompts]
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise ValueError("prompts must be a non-empty list of strings")
        rows = [self._parse(self._request(prompt), i) for i, prompt in enumerate(prompts)]
        embeddings = cat_padded(rows)
        return embeddings.to(device) if device is not None else embeddings

