"""The LTX API client against HTTP servers it did not write (see `http_peers`): the standard library's
`http.server` in HTTP/1.0 and HTTP/1.1 (keep-alive and ``Connection: close``), uvicorn, each over plain TCP and
TLS on loopback, and every reply framing each can send (Content-Length, chunked, ended by close). Every
request goes through the client's whole-request deadline and size cap, and must leave the client's socket
closed, however it ends."""

from __future__ import annotations

import json
import os
import ssl
import time

import pytest
import torch

from diffusers_ltx2.loaders import api_transport
from diffusers_ltx2.loaders.api import (
    HTTPClientTransport,
    LTXAPIAuthError,
    LTXAPIConnectionError,
    LTXAPIPromptEncoder,
    LTXAPIRateLimitError,
    LTXAPIServerError,
    LTXAPITimeoutError,
)
from http_peers import PEERS, Answer, Request, framings, self_signed_certificate, start_peer
from test_api_encoder import AUDIO, KEY, MODEL_ID, VIDEO, conditioning_pickle, reference_mask, reference_tensor

PROMPT = "a red fox in the snow"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    return self_signed_certificate(tmp_path_factory.mktemp("tls"))


class Peer:
    """A running peer server: answers from `script` (consumed in order), then with the real protocol."""

    def __init__(self, name: str, certificate):
        self.name = name
        self.script: list[Answer] = []
        self.requests: list[Request] = []
        self.framings = framings(name)
        self.server = start_peer(name, self._answer, certificate)
        self.url = self.server.url
        self.ssl_context = ssl.create_default_context(cafile=str(certificate[0]))

    def _answer(self, request: Request) -> Answer:
        self.requests.append(request)
        if self.script:
            return self.script.pop(0)
        if request.headers.get("authorization") != f"Bearer {KEY}":
            return Answer(401, b'{"detail": "Invalid API key"}')
        payload = json.loads(request.body)
        if request.path != "/v1/prompt-embedding" or payload["model_id"] != MODEL_ID:
            return Answer(400, b'{"detail": "bad request"}')
        return Answer(200, conditioning_pickle(payload["prompt"]), {"Content-Type": "application/octet-stream"})

    def encoder(self, max_response_bytes: int = api_transport.DEFAULT_MAX_RESPONSE_BYTES, **kw):
        args = dict(api_key=KEY, model_id=MODEL_ID, base_url=self.url, video_dim=VIDEO, audio_dim=AUDIO,
                    timeout=5.0, retries=2, backoff_base=0.001, backoff_max=0.01,
                    transport=HTTPClientTransport(max_response_bytes, ssl_context=self.ssl_context))
        args.update(kw)
        return LTXAPIPromptEncoder(**args)


@pytest.fixture(params=sorted(PEERS))
def peer(request, certificate):
    server = Peer(request.param, certificate)
    yield server
    server.server.close()


@pytest.fixture
def client_sockets(monkeypatch):
    """The sockets the client opens (after any TLS wrapping), to check that each is closed at the end."""
    opened = []

    class Recording(api_transport._DeadlineSocket):
        def __init__(self, sock, deadline):
            opened.append(sock)
            super().__init__(sock, deadline)

    monkeypatch.setattr(api_transport, "_DeadlineSocket", Recording)
    return opened


def encode(encoder: LTXAPIPromptEncoder, sockets: list):
    """`encoder.encode([PROMPT])`; afterwards, however it ended, no socket the client opened is left open."""
    before = len(sockets)
    try:
        return encoder.encode([PROMPT])
    finally:
        assert len(sockets) > before, "the request never connected"
        assert all(sock.fileno() == -1 for sock in sockets), "the client left a socket open"


# ------------------------------------------------------------------------------------------------ replies


def test_a_prompt_is_encoded_whatever_the_framing(peer, client_sockets):
    for framing in peer.framings:
        reply = conditioning_pickle(PROMPT)
        peer.script.append(Answer(200, reply, {"Content-Type": "application/octet-stream"}, framing))
        out = encode(peer.encoder(retries=0), client_sockets)
        assert torch.equal(out.video_context[0], reference_tensor(PROMPT)[0, :, :VIDEO]), framing
        assert torch.equal(out.audio_context[0], reference_tensor(PROMPT)[0, :, VIDEO:]), framing
        assert torch.equal(out.attention_mask[0], reference_mask()[0]), framing
    # and the request the server parsed is the protocol's
    request = peer.requests[-1]
    assert request.path == "/v1/prompt-embedding"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert json.loads(request.body) == {"prompt": PROMPT, "model_id": MODEL_ID, "enhance_prompt": False}
    assert len(peer.requests) == len(peer.framings)


def test_a_large_reply_arrives_whole_whatever_the_framing(peer, client_sockets):
    """Several MiB, far past any socket buffer, so the body is still arriving when the headers are parsed
    (where a server that closes after replying used to end in 'Bad file descriptor')."""
    body = os.urandom(3 << 20)
    transport = HTTPClientTransport(ssl_context=peer.ssl_context)
    for framing in peer.framings:
        peer.script.append(Answer(200, body, framing=framing))
        reply = transport.post(peer.url + "/v1/prompt-embedding", b"{}", {"Content-Type": "application/json"}, 30.0)
        assert reply.status == 200 and reply.body == body, framing
        assert all(sock.fileno() == -1 for sock in client_sockets), framing


@pytest.mark.parametrize("status", [401, 403])
def test_a_rejected_key_names_the_variable_and_is_not_retried(peer, client_sockets, status):
    for framing in peer.framings:
        for body in (b'{"detail": "Invalid API key"}', b""):
            peer.script.append(Answer(status, body, {"Content-Type": "application/json"} if body else {}, framing))
            count = len(peer.requests)
            with pytest.raises(LTXAPIAuthError, match=f"HTTP {status}.*LTX_API_KEY"):
                encode(peer.encoder(), client_sockets)
            assert len(peer.requests) == count + 1, (framing, body)
    # the server's own check, with the real protocol
    with pytest.raises(LTXAPIAuthError, match="HTTP 401"):
        encode(peer.encoder(api_key="ltx-wrong-key-0000000000"), client_sockets)


def test_429_and_5xx_are_retried_with_backoff_and_retry_after(peer, client_sockets):
    delays = []
    last = peer.framings[-1]
    peer.script += [
        Answer(429, b'{"detail": "slow down"}', {"Retry-After": "0.007"}),
        Answer(503, b"", framing=last),
        Answer(500, b"internal error", {"Retry-After": "0"}, framing=last),
    ]
    out = encode(peer.encoder(retries=3, sleep=delays.append), client_sockets)
    assert torch.equal(out.video_context[0], reference_tensor(PROMPT)[0, :, :VIDEO])
    assert len(peer.requests) == 4
    # Retry-After as sent; without one, backoff_base * 2**attempt with jitter in [1/2, 1]
    assert delays[0] == pytest.approx(0.007) and 0.001 <= delays[1] <= 0.002 and delays[2] == 0.0


@pytest.mark.parametrize("status, error", [(429, LTXAPIRateLimitError), (500, LTXAPIServerError),
                                           (502, LTXAPIServerError), (503, LTXAPIServerError)])
def test_429_and_5xx_until_the_retries_run_out(peer, client_sockets, status, error):
    for framing in peer.framings:
        for body in (b"upstream overloaded", b""):
            delays = []
            peer.script += [Answer(status, body, framing=framing) for _ in range(3)]
            count = len(peer.requests)
            with pytest.raises(error, match="after 3 attempt") as info:
                encode(peer.encoder(sleep=delays.append), client_sockets)
            assert len(peer.requests) == count + 3 and len(delays) == 2, (framing, body)
            message = str(info.value)
            if body:
                assert f"HTTP {status}: upstream overloaded" in message, (framing, message)
            else:
                assert message.endswith(f"HTTP {status}"), (framing, message)
            assert KEY not in message


# ------------------------------------------------------------------------------------------------ bounds


def test_the_size_cap_holds_whatever_the_framing(peer, client_sockets):
    reply = conditioning_pickle(PROMPT)
    for framing in peer.framings:
        peer.script.append(Answer(200, reply, framing=framing))
        with pytest.raises(LTXAPIConnectionError, match=f"exceeds the {len(reply) - 1}-byte limit"):
            encode(peer.encoder(max_response_bytes=len(reply) - 1, retries=0), client_sockets)
        peer.script.append(Answer(200, reply, framing=framing))  # a reply exactly at the cap is read
        out = encode(peer.encoder(max_response_bytes=len(reply), retries=0), client_sockets)
        assert torch.equal(out.video_context[0], reference_tensor(PROMPT)[0, :, :VIDEO]), framing


def test_the_deadline_holds_over_a_trickled_reply_whatever_the_framing(peer, client_sockets):
    timeout = 0.5
    for framing in peer.framings:
        peer.script.append(Answer(200, conditioning_pickle(PROMPT), framing=framing, trickle=True))
        start = time.monotonic()
        with pytest.raises(LTXAPITimeoutError, match="timed out"):
            encode(peer.encoder(timeout=timeout, retries=0), client_sockets)
        elapsed = time.monotonic() - start
        assert elapsed < timeout + 1.0, f"{framing}: encode() returned after {elapsed:.2f} s with timeout={timeout}"


def test_a_failed_request_releases_its_socket_at_once(peer, client_sockets):
    """Closed when `post` raises, not when the garbage collector gets to it: the socket is already closed while
    the exception (whose traceback holds the transport's frame) is still alive."""
    reply = os.urandom(1 << 16)
    capped = HTTPClientTransport(max_response_bytes=len(reply) - 1, ssl_context=peer.ssl_context)
    uncapped = HTTPClientTransport(ssl_context=peer.ssl_context)
    url = peer.url + "/v1/prompt-embedding"
    for framing in peer.framings:
        # over the size cap (refused), then trickled past the deadline (timed out)
        for transport, trickle, error in ((capped, False, api_transport.TransportError),
                                          (uncapped, True, TimeoutError)):
            peer.script.append(Answer(200, reply, framing=framing, trickle=trickle))
            with pytest.raises(error) as info:
                transport.post(url, b"{}", {}, 0.5)
            assert all(sock.fileno() == -1 for sock in client_sockets), (framing, trickle)
            assert info.traceback  # still alive


def test_certificates_are_checked(certificate):
    """TLS peers are trusted only through the test's own certificate: the default context refuses them."""
    server = Peer("uvicorn TLS", certificate)
    try:
        with pytest.raises(LTXAPIConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
            server.encoder(retries=0, transport=HTTPClientTransport()).encode([PROMPT])
        assert server.requests == []
    finally:
        server.server.close()
