"""The HTTP client under `LTXAPIPromptEncoder`: one POST, the whole reply, within one deadline and one size cap.

`HTTPClientTransport` uses the standard library's `http.client` on a socket wrapper that re-arms the socket
timeout with the time *left* before every receive and send. The ``timeout`` is therefore a deadline for the
whole exchange: connecting (each address tried gets only what is left), the TLS handshake, sending, the status
line, every header line, interim ``100 Continue`` replies and every body byte. A server that trickles one
byte at a time cannot hold a request past it. (Name resolution, ``getaddrinfo``, is the one step the
operating system does not let a socket timeout bound.) The wrapper keeps the socket's own lifetime rules, so
replies that end the connection (HTTP/1.0, ``Connection: close``, a body ended by closing) read to the end, as
keep-alive and chunked replies do; the socket is closed when `post` returns or raises.
"""

from __future__ import annotations

import http.client
import io
import socket
import ssl
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

__all__ = [
    "DEFAULT_MAX_RESPONSE_BYTES",
    "HTTPClientTransport",
    "HTTPResponse",
    "Transport",
    "TransportError",
]

# The largest legitimate reply: 1024 tokens (the LTX-2 Gemma context length) x 7680 channels (the widest
# released split, 3840 + 3840; 2.3's 4096 + 2048 is narrower) in float32 = 31,457,280 bytes, plus 1 MiB for
# the mask and the pickle framing: 32,505,856 bytes (31 MiB).
DEFAULT_MAX_RESPONSE_BYTES = 1024 * (3840 + 3840) * 4 + (1 << 20)


@dataclass(frozen=True)
class HTTPResponse:
    """A complete HTTP reply; header names are lower-case. Only the status is in the ``repr`` (a server may
    echo the request's key in its headers or body, and tracebacks print reprs of locals)."""

    status: int
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    body: bytes = field(default=b"", repr=False)


class TransportError(OSError):
    """The request did not produce a complete reply (connection failure or truncated body). Retryable."""


@runtime_checkable
class Transport(Protocol):
    """What `LTXAPIPromptEncoder` needs from an HTTP client: one POST, the whole reply.

    Implementations raise `TimeoutError` when `timeout` (seconds, a deadline for the whole exchange) runs
    out and `TransportError` when the connection fails or the body is cut short or too large; HTTP error
    statuses are returned, not raised, and redirects are not followed.
    """

    def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> HTTPResponse:
        ...


class _DeadlineReader(io.RawIOBase):
    """The receiving side of a `_DeadlineSocket`: the real socket's own unbuffered ``makefile`` stream, with
    the socket timeout re-armed to the time left before every read."""

    def __init__(self, raw: io.RawIOBase, arm):
        self._raw = raw
        self._arm = arm
        super().__init__()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int | None:
        self._arm()
        return self._raw.readinto(buffer)

    def fileno(self) -> int:
        return self._raw.fileno()

    def close(self) -> None:
        if not self.closed:
            try:
                self._raw.close()  # drops this stream's reference to the socket (the last one closes it)
            finally:
                super().close()


class _DeadlineSocket:
    """A socket whose every receive and send may only use the time left before `deadline` (monotonic).

    Socket lifetime stays the real socket's: `makefile` hands out a stream made by the real socket's own
    ``makefile``, which counts a reference, and `close` is the real socket's ``close``, which only marks the
    socket closed while such a stream is open; the descriptor is released when the last of them closes.
    `http.client` relies on this: on a reply that ends the connection (HTTP/1.0, ``Connection: close``, a
    body ended by close) it closes the socket right after the headers and reads the body from the stream.
    """

    def __init__(self, sock: socket.socket, deadline: float):
        self._sock = sock
        self._deadline = deadline

    def _arm(self) -> None:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the request deadline passed")
        self._sock.settimeout(remaining)

    def sendall(self, data) -> None:
        view = memoryview(data).cast("B")
        while view:
            self._arm()
            sent = self._sock.send(view)
            view = view[sent:]

    def makefile(self, mode: str = "rb", buffering: int | None = None, **_):
        if mode not in ("r", "rb"):
            raise ValueError(f"unsupported makefile mode {mode!r}")
        raw = self._sock.makefile("rb", buffering=0)  # a counted reference: the socket outlives close()
        size = buffering if buffering is not None and buffering > 0 else io.DEFAULT_BUFFER_SIZE
        return io.BufferedReader(_DeadlineReader(raw, self._arm), size)

    def fileno(self) -> int:
        return self._sock.fileno()

    def settimeout(self, _timeout) -> None:  # http.client may set one; the deadline rules instead
        pass

    def close(self) -> None:
        self._sock.close()


def _connect(host: str, port: int, deadline: float) -> socket.socket:
    """Connect to the first address of `host` that answers, within the deadline."""
    error: OSError | None = None
    for family, kind, proto, _, address in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("connect timed out")
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(remaining)
            sock.connect(address)
            return sock
        except OSError as err:
            sock.close()
            error = err
    raise error if error is not None else OSError(f"no address for {host}")


class _DeadlineHTTPConnection(http.client.HTTPConnection):
    def __init__(self, host, port, deadline: float, ssl_context: ssl.SSLContext | None = None):
        super().__init__(host, port)
        self._deadline = deadline
        self._ssl_context = ssl_context

    def connect(self):
        sock = _connect(self.host, self.port, self._deadline)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._ssl_context is not None:
                # CPython bounds the whole handshake by the socket timeout set here (what is left).
                sock.settimeout(max(1e-3, self._deadline - time.monotonic()))
                sock = self._ssl_context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise
        self.sock = _DeadlineSocket(sock, self._deadline)


class HTTPClientTransport:
    """`Transport` over the standard library's `http.client` (no third-party HTTP dependency).

    Args:
        max_response_bytes: replies larger than this are refused before they are read in full; default
            `DEFAULT_MAX_RESPONSE_BYTES` = 32,505,856 (the largest legitimate reply, 1024 tokens x 7680
            float32 channels = 31,457,280 bytes, plus 1 MiB).
        ssl_context: for https; default `ssl.create_default_context()` (certificate and host checks on).
    """

    def __init__(self, max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES, ssl_context: ssl.SSLContext | None = None):
        if int(max_response_bytes) <= 0:
            raise ValueError(f"max_response_bytes must be positive, got {max_response_bytes}")
        self.max_response_bytes = int(max_response_bytes)
        self.ssl_context = ssl_context

    def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> HTTPResponse:
        """POST `body` to `url`; the reply within `timeout` seconds in all (see the module docstring)."""
        deadline = time.monotonic() + timeout
        parts = urllib.parse.urlsplit(url)
        if parts.scheme == "https":
            context = self.ssl_context or ssl.create_default_context()
            conn = _DeadlineHTTPConnection(parts.hostname, parts.port or 443, deadline, context)
        elif parts.scheme == "http":
            conn = _DeadlineHTTPConnection(parts.hostname, parts.port or 80, deadline)
        else:
            raise ValueError(f"unsupported URL scheme {parts.scheme!r}")
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        response = None
        try:
            # `headers` itself is passed (not a copy) so that a masking repr of it stays the one in every frame
            conn.request("POST", path, body=body, headers=headers)
            response = conn.getresponse()
            reply_headers = {k.lower(): v for k, v in response.getheaders()}
            declared = reply_headers.get("content-length")
            expected = int(declared) if declared and declared.isdigit() else None
            if expected is not None and expected > self.max_response_bytes:
                raise TransportError(f"reply of {expected} bytes exceeds the {self.max_response_bytes}-byte limit")
            chunks, size = [], 0
            while True:
                chunk = response.read(min(1 << 20, self.max_response_bytes + 1 - size))
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
            # The response first: when the reply ends the connection it holds the socket's last reference.
            if response is not None:
                response.close()
            conn.close()
