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
The API key never appears in logs, reprs or exception messages (server text is redacted too), and is only
ever sent over https (plain http is allowed for loopback addresses, for tests and local proxies).
Redirects are not followed, so the key cannot be forwarded to another host.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import logging
import os
import random
import socket
import ssl
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch

from .conditioning_file import cat_padded, from_comfy_conditioning
from .identity import context_dims, read_model_id, short_identity
from .prompt_embeddings import PromptEmbeddings
from .safe_pickle import ForbiddenPickleError, SafeUnpicklingError, safe_loads

__all__ = [
    "API_KEY_ENV",
    "DEFAULT_BASE_URL",
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
    "Transport",
    "TransportError",
]

logger = logging.getLogger(__name__)

API_KEY_ENV = "LTX_API_KEY"
DEFAULT_BASE_URL = "https://api.ltx.video"
ENDPOINT = "/v1/prompt-embedding"
DEFAULT_MAX_RESPONSE_BYTES = 512 * 1024 * 1024


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


# -------------------------------------------------------------------------------------------- transport


@dataclass(frozen=True)
class HTTPResponse:
    """A complete HTTP reply; header names are lower-case."""

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""


class TransportError(OSError):
    """The request did not produce a complete reply (connection failure or truncated body). Retryable."""


@runtime_checkable
class Transport(Protocol):
    """What `LTXAPIPromptEncoder` needs from an HTTP client: one POST, the whole reply.

    Implementations raise `TimeoutError` when `timeout` (seconds, for the whole exchange) runs out and
    `TransportError` when the connection fails or the body is cut short; HTTP error statuses are returned,
    not raised, and redirects are not followed.
    """

    def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> HTTPResponse:
        ...


class HTTPClientTransport:
    """`Transport` over the standard library's `http.client` (no third-party HTTP dependency).

    Args:
        max_response_bytes: replies larger than this are refused (a 1024-token 2.0 reply in float32 is 31 MB).
        ssl_context: for https; default `ssl.create_default_context()` (certificate and host checks on).
    """

    def __init__(self, max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES, ssl_context: ssl.SSLContext | None = None):
        self.max_response_bytes = int(max_response_bytes)
        self.ssl_context = ssl_context

    def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> HTTPResponse:
        parts = urllib.parse.urlsplit(url)
        deadline = time.monotonic() + timeout
        if parts.scheme == "https":
            context = self.ssl_context or ssl.create_default_context()
            conn = http.client.HTTPSConnection(parts.hostname, parts.port, timeout=timeout, context=context)
        elif parts.scheme == "http":
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
        else:
            raise ValueError(f"unsupported URL scheme {parts.scheme!r}")
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        try:
            conn.request("POST", path, body=body, headers=dict(headers))
            response = conn.getresponse()
            reply_headers = {k.lower(): v for k, v in response.getheaders()}
            declared = reply_headers.get("content-length")
            expected = int(declared) if declared and declared.isdigit() else None
            if expected is not None and expected > self.max_response_bytes:
                raise TransportError(f"reply of {expected} bytes exceeds the {self.max_response_bytes}-byte limit")
            chunks, size = [], 0
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("reply not complete within the timeout")
                if conn.sock is not None:  # the timeout covers the whole exchange, not each read
                    conn.sock.settimeout(remaining)
                chunk = response.read(1 << 20)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
                if size > self.max_response_bytes:
                    raise TransportError(f"reply exceeds the {self.max_response_bytes}-byte limit")
            data = b"".join(chunks)
            if expected is not None and len(data) != expected:
                raise TransportError(f"reply truncated: got {len(data)} of {expected} bytes")
            return HTTPResponse(status=response.status, headers=reply_headers, body=data)
        except (socket.timeout, TimeoutError) as err:
            raise TimeoutError(str(err) or "timed out") from None
        except http.client.IncompleteRead as err:
            raise TransportError(f"reply truncated: got {len(err.partial)} bytes") from None
        except (http.client.HTTPException, ConnectionError, ssl.SSLError) as err:
            raise TransportError(f"{type(err).__name__}: {err}") from None
        except OSError as err:
            if isinstance(err, TransportError):
                raise
            raise TransportError(f"{type(err).__name__}: {err.strerror or err}") from None
        finally:
            conn.close()


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


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # HTTP-date form: fall back to our own backoff


class _Redactor:
    """Removes the API key from text that may have come from the server or a library."""

    def __init__(self, secret: str):
        self._secret = secret

    def __call__(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text

    def __repr__(self) -> str:
        return "_Redactor(***)"


# ------------------------------------------------------------------------------------------------ encoder


class LTXAPIPromptEncoder:
    """`PromptEncoder` that asks the LTX API for connector outputs (no local Gemma).

    Args:
        api_key: the LTX API key; default: the ``LTX_API_KEY`` environment variable.
        model_id: the model the embeddings are for: the checkpoint's ``encrypted_wandb_properties`` string.
            Default: read from `checkpoint`.
        enhance_prompt: let the API rewrite the prompt with Gemma before encoding.
        base_url: API root; must be https (http only for loopback addresses).
        timeout: seconds for one whole request (connect, send, read).
        retries: extra attempts after 429, 5xx, timeouts, dropped connections and truncated replies.
        checkpoint: safetensors file (or folder) to read `model_id` from.
        video_dim, audio_dim: widths of the video/audio contexts in the reply; default from `model_config`
            or, failing that, the released models' widths (7680 = 3840 + 3840, 6144 = 4096 + 2048).
        model_config: the loaded `LTX2TextConnectors` or `LTX2VideoTransformer3DModel` (or its config) to
            take the widths from (see `identity.context_dims`).
        backoff_base, backoff_max: retry delays are ``min(backoff_max, backoff_base * 2**attempt)`` with
            jitter, or the server's ``Retry-After`` capped at `backoff_max`.
        transport: the HTTP client (default `HTTPClientTransport`).

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
    ):
        key = api_key if api_key is not None else os.environ.get(API_KEY_ENV, "")
        key = key.strip()
        if not key:
            raise ValueError(
                f"no LTX API key: pass api_key= or set the {API_KEY_ENV} environment variable "
                "(keys are issued at https://console.ltx.video)"
            )
        if any(c in key for c in "\r\n\0") or not key.isprintable():
            raise ValueError(f"the LTX API key contains control characters; check {API_KEY_ENV}")
        self.__key = key
        self._redact = _Redactor(key)
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
        self.transport = transport if transport is not None else HTTPClientTransport()

    @property
    def model_identity(self) -> str:
        """The identity recorded on the embeddings (the API model id)."""
        return self.model_id

    def cache_key_parts(self) -> dict:
        """What determines the output besides the prompt (used by `CachedPromptEncoder`)."""
        return {"kind": self.kind, "model_identity": self.model_id, "enhance_prompt": self.enhance_prompt}

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(api_key=***, model_id={short_identity(self.model_id)!r}, "
            f"enhance_prompt={self.enhance_prompt}, base_url={self.base_url!r}, timeout={self.timeout}, "
            f"retries={self.retries})"
        )

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
        headers = {
            "Authorization": f"Bearer {self.__key}",
            "Content-Type": "application/json",
            "Accept": "application/octet-stream",
            "User-Agent": "diffusers-ltx2",
        }
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
                failures.append(self._redact(str(err)))
            else:
                status = response.status
                logger.debug("LTX API %s -> %d (%d bytes, %.2f s)", url, status, len(response.body),
                             time.monotonic() - started)
                if status == 200:
                    return response.body
                if status in (401, 403):
                    raise LTXAPIAuthError(
                        f"the LTX API rejected the API key (HTTP {status}); check {API_KEY_ENV} or the api_key "
                        "argument (keys are issued at https://console.ltx.video)"
                    )
                snippet = self._redact(response.body[:200].decode("utf-8", "replace")).strip()
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
                time.sleep(delay)
        raise last_kind(
            f"LTX API request failed after {attempts} attempt(s): {'; '.join(failures[-3:])}"
        )

    def _parse(self, body: bytes, prompt_index: int) -> PromptEmbeddings:
        source = f"LTX API reply for prompt {prompt_index}"
        try:
            conditioning = safe_loads(body)
        except ForbiddenPickleError as err:
            raise LTXAPIResponseError(f"{source} was refused: {self._redact(str(err))}") from None
        except SafeUnpicklingError as err:
            raise LTXAPIResponseError(f"{source} is malformed: {self._redact(str(err))}") from None
        try:
            return from_comfy_conditioning(
                conditioning, video_dim=self.video_dim, audio_dim=self.audio_dim,
                model_identity=self.model_id, source=source,
            )
        except ValueError as err:
            raise LTXAPIResponseError(
                f"{self._redact(str(err))} (requested model_id {short_identity(self.model_id)!r})"
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

