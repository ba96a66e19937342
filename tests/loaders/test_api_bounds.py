"""Hard bounds of the LTX API client: one deadline per request, bounded decoding, a sized body cap, the key
kept out of messages, files and frame locals, and a capped Retry-After. Real servers on 127.0.0.1."""

from __future__ import annotations

import io
import json
import os
import pickle
import socket
import ssl
import subprocess
import sys
import textwrap
import threading
import time
import traceback
from pathlib import Path

import pytest
import torch

from diffusers_ltx2.loaders.api import (
    DEFAULT_MAX_RESPONSE_BYTES,
    HTTPClientTransport,
    HTTPResponse,
    LTXAPIConnectionError,
    LTXAPIPromptEncoder,
    LTXAPIRateLimitError,
    LTXAPIResponseError,
    LTXAPIServerError,
    LTXAPITimeoutError,
)
from diffusers_ltx2.loaders.cache import CachedPromptEncoder
from diffusers_ltx2.loaders.conditioning_file import read_conditioning_metadata, save_conditioning

from http_peers import self_signed_certificate

# the fake LTX API server and its fixture
from test_api_encoder import (  # noqa: F401
    AUDIO, KEY, MODEL_ID, VIDEO, Reply, api, conditioning_pickle, make_encoder, reference_tensor,
)

REPO = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------------------- a trickling server


class RawServer:
    """A TCP server on 127.0.0.1 that reads one request and then runs `script(send)` to answer it."""

    def __init__(self, script, tls: ssl.SSLContext | None = None):
        self.script = script
        self.tls = tls
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn):
        try:
            conn.settimeout(10)
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            self.script(conn.sendall, self.stop)
        except OSError:  # the client hung up
            pass
        finally:
            conn.close()

    def close(self):
        self.stop.set()
        self.sock.close()


def trickle(send, stop, data: bytes, every: float = 0.02, limit: float = 8.0):
    """Send `data` one byte at a time, stopping after `limit` seconds (a test that fails must not hang)."""
    end = time.monotonic() + limit
    for i in range(len(data)):
        if stop.is_set() or time.monotonic() > end:
            return
        send(data[i : i + 1])
        time.sleep(every)


FOREVER = 1 << 20
SCENARIOS = {
    "status line": lambda send, stop: trickle(send, stop, b"HTTP/1.1 200 " + b"O" * FOREVER),
    "one header": lambda send, stop: (send(b"HTTP/1.1 200 OK\r\nX-Slow: "), trickle(send, stop, b"a" * FOREVER)),
    "100 Continue": lambda send, stop: trickle(send, stop, b"HTTP/1.1 100 Continue\r\n\r\n" * 100_000),
    "body": lambda send, stop: (send(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n"),
                                trickle(send, stop, b"x" * FOREVER)),
    "chunked body": lambda send, stop: (send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
                                        trickle(send, stop, b"1\r\nx\r\n" * FOREVER)),
}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_a_trickling_server_cannot_hold_a_request_past_the_timeout(scenario):
    server = RawServer(SCENARIOS[scenario])
    try:
        encoder = LTXAPIPromptEncoder(api_key=KEY, model_id=MODEL_ID, base_url=server.url, timeout=1.0, retries=0,
                                      video_dim=VIDEO, audio_dim=AUDIO)
        start = time.monotonic()
        with pytest.raises(LTXAPITimeoutError, match="timed out"):
            encoder.encode(["p"])
        elapsed = time.monotonic() - start
    finally:
        server.close()
    assert elapsed < 1.0 + 1.0, f"{scenario}: encode() returned after {elapsed:.2f} s with timeout=1.0"


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1: (server context, client context trusting it)."""
    cert, key = self_signed_certificate(tmp_path_factory.mktemp("tls"))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    client = ssl.create_default_context(cafile=str(cert))
    return server, client


def test_https_works_and_the_deadline_holds_over_tls(api, tls):
    server_context, client_context = tls
    api.server.socket = server_context.wrap_socket(api.server.socket, server_side=True)
    https_url = api.url.replace("http://", "https://")
    out = make_encoder(api, base_url=https_url, transport=HTTPClientTransport(ssl_context=client_context)).encode(["a"])
    assert torch.equal(out.video_context[0], reference_tensor("a")[0, :, :VIDEO])
    with pytest.raises(LTXAPIConnectionError, match="CERTIFICATE_VERIFY_FAILED"):  # certificates are checked
        make_encoder(api, base_url=https_url, retries=0).encode(["a"])

    for name, server in [("trickled body", RawServer(SCENARIOS["body"], tls=server_context)),
                         ("handshake never answered", RawServer(lambda send, stop: None))]:
        encoder = LTXAPIPromptEncoder(api_key=KEY, model_id=MODEL_ID, base_url=server.url.replace("http:", "https:"),
                                      timeout=1.0, retries=0, transport=HTTPClientTransport(ssl_context=client_context))
        start = time.monotonic()
        try:
            with pytest.raises(LTXAPITimeoutError):
                encoder.encode(["p"])
        finally:
            server.close()
        assert time.monotonic() - start < 1.0 + 1.0, name


# ------------------------------------------------------------------------------------ body size cap


def test_default_body_cap_is_sized_from_the_largest_real_reply():
    # 1024 tokens (LTX-2's Gemma context) x (3840 + 3840) float32, the widest released split, with its mask
    largest = pickle.dumps([[torch.zeros(1, 1024, 3840 + 3840), {"attention_mask": torch.ones(1, 1024)}]])
    assert 1024 * 7680 * 4 < len(largest) < DEFAULT_MAX_RESPONSE_BYTES <= len(largest) + (2 << 20)
    assert DEFAULT_MAX_RESPONSE_BYTES == 32_505_856
    assert len(pickle.dumps([[torch.zeros(1, 1024, 4096 + 2048), {}]])) < DEFAULT_MAX_RESPONSE_BYTES  # 2.3


@pytest.mark.slow
def test_the_largest_real_reply_decodes_through_a_real_server(api):
    tensor = torch.randn(1, 1024, 7680)
    api.script.append(Reply(200, pickle.dumps([[tensor, {}]])))
    out = make_encoder(api, video_dim=None, audio_dim=None, timeout=20).encode(["long"])
    assert torch.equal(out.video_context[0], tensor[0, :, :3840])
    assert torch.equal(out.audio_context[0], tensor[0, :, 3840:])


def test_a_reply_over_the_configured_cap_is_refused(api):
    body = conditioning_pickle("big")
    api.script.extend([Reply(200, body)] * 2)
    with pytest.raises(LTXAPIConnectionError, match=f"exceeds the {len(body) - 1}-byte limit"):
        make_encoder(api, retries=1, max_response_bytes=len(body) - 1).encode(["big"])
    api.script.append(Reply(200, body))
    out = make_encoder(api, max_response_bytes=len(body)).encode(["big"])  # exactly at the cap: fine
    assert torch.equal(out.video_context[0], reference_tensor("big")[0, :, :VIDEO])

    class Generous:  # any Transport: the encoder applies its cap to what it is handed too
        def post(self, url, body, headers, timeout):
            return HTTPResponse(200, {}, conditioning_pickle("big"))

    with pytest.raises(LTXAPIResponseError, match="exceeds"):
        make_encoder(api, transport=Generous(), max_response_bytes=len(body) - 1).encode(["big"])

    # no Content-Length (chunked): the cap still holds while reading
    def chunked(send, stop):
        send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(100):
            send(b"400\r\n" + b"x" * 1024 + b"\r\n")
        send(b"0\r\n\r\n")

    server = RawServer(chunked)
    try:
        encoder = LTXAPIPromptEncoder(api_key=KEY, model_id=MODEL_ID, base_url=server.url, timeout=5, retries=0,
                                      max_response_bytes=10_000)
        with pytest.raises(LTXAPIConnectionError, match="exceeds the 10000-byte limit"):
            encoder.encode(["p"])
    finally:
        server.close()


@pytest.mark.parametrize(
    "shape, match",
    [((1, 4097, VIDEO + AUDIO), "4097 tokens long, more than the 4096"), ((2, 4, VIDEO + AUDIO), "2 rows")],
)
def test_a_reply_is_one_row_of_at_most_4096_tokens(api, shape, match):
    api.script.append(Reply(200, pickle.dumps([[torch.zeros(shape, dtype=torch.bfloat16), {}]])))
    with pytest.raises(LTXAPIResponseError, match=match):
        make_encoder(api).encode(["p"])
    api.script.append(Reply(200, pickle.dumps([[torch.zeros(1, 4096, VIDEO + AUDIO, dtype=torch.bfloat16), {}]])))
    assert make_encoder(api).encode(["p"]).video_context.shape == (1, 4096, VIDEO)


# ------------------------------------------------------------------------ decoding allocates nothing big

_CHILD = textwrap.dedent(
    r'''
    import io, json, os, pickle, sys
    from collections import OrderedDict
    import torch
    from diffusers_ltx2.loaders.api import HTTPResponse, LTXAPIPromptEncoder

    def vm_mb(field):
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024

    def in_fresh_fork(work):
        """Run `work()` in a forked copy of this process; returns (outcome, growth in MB) where growth is the
        child's peak virtual memory minus its size at the start: an upper bound on what `work` reserved."""
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read)
            start = vm_mb("VmSize")
            try:
                work()
                outcome = "accepted"
            except Exception as err:
                outcome = f"{type(err).__name__}: {err}"
            os.write(write, json.dumps([outcome, vm_mb("VmPeak") - start]).encode())
            os._exit(0)
        os.close(write)
        with os.fdopen(read) as fh:
            answer = fh.read()
        os.waitpid(pid, 0)
        return json.loads(answer)

    def legacy_storage_bytes(numel):  # a 4-float storage whose record declares `numel` elements
        inner = torch.arange(4, dtype=torch.float32).__reduce_ex__(2)[1][0].__reduce__()[1][0]
        at = inner.index(b"cpuq\x03K\x04")
        return inner[:at] + b"cpuq\x03\x8a\x05" + numel.to_bytes(5, "little") + inner[at + 7:]

    class Storage:
        def __init__(self, data): self.data = data
        def __reduce__(self): return (torch.storage._load_from_bytes, (self.data,))

    class Tensor:  # _rebuild_tensor_v2 over a storage of `stored` floats (or a given storage record)
        def __init__(self, stored, offset, size, stride, record=None):
            self.args = (stored, offset, size, stride, record)
        def __reduce__(self):
            stored, offset, size, stride, record = self.args
            if record is None:
                record = torch.zeros(stored).__reduce_ex__(2)[1][0].__reduce__()[1][0]
            return (torch._utils._rebuild_tensor_v2, (Storage(record), offset, size, stride, False, OrderedDict()))

    class Fixed:  # a Transport that answers every request with `body`
        def __init__(self, body): self.body = body
        def post(self, url, body, headers, timeout): return HTTPResponse(200, {}, self.body)

    def decode(body):
        encoder = LTXAPIPromptEncoder(api_key="test-key-0123456789", model_id="m", retries=0, transport=Fixed(body))
        return encoder.encode(["p"])

    payloads = {
        "zero strides (64 x 4096 x 7680)": Tensor(1, 0, (64, 4096, 7680), (0, 0, 0)),
        "zero strides (1 x 4096 x 7680), otherwise in bounds": Tensor(1, 0, (1, 4096, 7680), (0, 0, 0)),
        "overlapping strides (20^8 over 153)": Tensor(153, 0, (20,) * 8, (1,) * 8),
        "offset 5e8 into 4 floats": Tensor(4, 500_000_000, (1, 1, 7680), (7680, 7680, 1)),
        "storage declaring 2 GB": Tensor(4, 0, (1, 1, 4), (4, 4, 1), record=legacy_storage_bytes(500_000_000)),
    }
    opcodes = {  # whole replies of a few bytes: a declared argument length or memo index
        "BINBYTES8 declaring 3 GB": b"\x80\x04\x8e" + (3 * 10**9).to_bytes(8, "little") + b"abc.",
        "memo index 2**28": b"\x80\x02Nr" + (2**28 - 1).to_bytes(4, "little") + b".",
    }
    decode(pickle.dumps([[torch.zeros(1, 4, 7680), {}]], protocol=2))  # warm-up: lazy imports, thread pools
    results = {}
    bodies = {name: pickle.dumps([[obj, {}]], protocol=2) for name, obj in payloads.items()}
    for name, body in {**bodies, **opcodes}.items():
        outcome, growth = in_fresh_fork(lambda: decode(body))
        results[name] = {"bytes": len(body), "outcome": outcome, "vm_growth_mb": growth}
    # control: the instrument sees the reservation torch's own loader makes for the 2 GB declaration
    _, control = in_fresh_fork(lambda: torch.load(io.BytesIO(legacy_storage_bytes(500_000_000)), weights_only=True))
    print(json.dumps({"results": results, "control_growth_mb": control}))
    '''
)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists() or not hasattr(os, "fork"),
                    reason="VmPeak is read from Linux /proc, in forked processes")
def test_a_small_reply_cannot_make_decoding_allocate_more_than_100_mb():
    """Each hostile reply is at most ~1 KB. Each is decoded in its own fork of one warmed-up process, and the
    fork's peak virtual memory (which also counts reservations never touched) minus its size at the start,
    an upper bound on what decoding reserved, must stay under 100 MB."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["control_growth_mb"] > 1000, report  # the measurement does see a 2 GB reservation
    for name, result in report["results"].items():
        assert result["outcome"].startswith("LTXAPIResponseError"), (name, result)
        assert result["bytes"] < 1200, (name, result)
        assert result["vm_growth_mb"] < 100, (name, result)


# ---------------------------------------------------------------------------------------- the API key


def test_redaction_happens_before_the_server_text_is_cut(api):
    straddling = ("x" * 190 + KEY + " and more").encode()  # the key crosses the 200-character quote limit
    api.script.extend([Reply(500, straddling)] * 2)
    with pytest.raises(LTXAPIServerError) as info:
        make_encoder(api, retries=1).encode(["p"])
    assert "x" * 190 in str(info.value)
    for n in range(4, len(KEY) + 1):
        assert KEY[:n] not in str(info.value)
    api.script.append(Reply(418, straddling))
    with pytest.raises(LTXAPIResponseError) as info:
        make_encoder(api).encode(["p"])
    assert KEY[:4] not in str(info.value) and "x" * 190 in str(info.value)


def test_a_key_passed_as_api_key_is_kept_out_of_saved_metadata(api, tmp_path, monkeypatch):
    monkeypatch.delenv("LTX_API_KEY", raising=False)
    encoder = make_encoder(api)  # api_key=KEY, not in the environment
    careless = f"a fox, my key is {KEY}"
    embeddings = encoder.encode(["a fox"])
    with pytest.raises(ValueError, match="API key"):
        save_conditioning(tmp_path / "c.safetensors", embeddings, prompt=careless)
    assert not (tmp_path / "c.safetensors").exists()

    cached = CachedPromptEncoder(encoder, tmp_path / "cache")
    out = cached.encode([careless, "a red car"])
    assert torch.equal(out.video_context[0], reference_tensor(careless)[0, :, :VIDEO])
    secret_entry, plain_entry = cached.path_for(careless), cached.path_for("a red car")
    assert KEY.encode() not in secret_entry.read_bytes()
    assert "prompt" not in read_conditioning_metadata(secret_entry)
    assert read_conditioning_metadata(plain_entry)["prompt"] == "a red car"
    assert torch.equal(cached.encode([careless]).video_context, out.video_context[:1]) and cached.hits == 1


def _rendered_tracebacks(err: BaseException) -> list[str]:
    """The traceback as a stdlib formatter with locals and as rich (show_locals=True) would print it."""
    texts = ["".join(traceback.TracebackException.from_exception(err, capture_locals=True).format())]
    try:
        from rich.console import Console
        from rich.traceback import Traceback
    except ImportError:
        return texts
    buffer = io.StringIO()
    Console(file=buffer, width=200, color_system=None).print(
        Traceback.from_exception(type(err), err, err.__traceback__, show_locals=True, locals_max_string=1000)
    )
    return texts + [buffer.getvalue()]


def test_the_key_is_not_in_frame_locals_of_any_error(api, monkeypatch):
    def control(api_key):
        raise ValueError("boom")

    with pytest.raises(ValueError) as info:
        control(KEY)
    assert all(KEY in text for text in _rendered_tracebacks(info.value))  # the renderers do print locals

    errors = []
    with pytest.raises(ValueError) as info:  # raised inside __init__, after the key was taken
        LTXAPIPromptEncoder(api_key=KEY, base_url=api.url)
    errors.append(info.value)
    with pytest.raises(ValueError) as info:  # raised while the key itself is checked
        LTXAPIPromptEncoder(api_key=KEY + "\r\nX-Evil: 1", model_id=MODEL_ID, base_url=api.url)
    errors.append(info.value)
    echo = lambda request: Reply(500, b"down", {"X-Echo": request["headers"]["Authorization"]})  # noqa: E731
    api.script.extend([echo] * 2)
    with pytest.raises(LTXAPIServerError) as info:
        make_encoder(api, retries=1).encode(["p"])
    errors.append(info.value)
    api.script.append(Reply(200, b"not a pickle"))
    with pytest.raises(LTXAPIResponseError) as info:
        make_encoder(api).encode(["p"])
    errors.append(info.value)
    silent = RawServer(lambda send, stop: stop.wait(10))  # reads the request (with the key), never answers
    try:
        with pytest.raises(LTXAPITimeoutError) as info:
            make_encoder(api, base_url=silent.url, retries=0, timeout=0.3).encode(["p"])
    finally:
        silent.close()
    errors.append(info.value)
    for err in errors:
        for text in _rendered_tracebacks(err):
            assert KEY not in text, text[-2000:]


# ------------------------------------------------------------------------------------------ Retry-After


@pytest.mark.parametrize(
    "value, expected",
    [
        ("86400", 30.0),  # a day: capped at backoff_max
        ("1e400", 30.0),  # infinite
        ("Fri, 31 Dec 2100 23:59:59 GMT", 30.0),  # an HTTP date far ahead
        ("2.5", 2.5),  # below the cap: honoured as given
        ("0", 0.0),
    ],
)
def test_retry_after_is_honoured_up_to_the_cap(api, value, expected):
    sleeps = []
    api.script.append(Reply(429, b"slow down", {"Retry-After": value}))
    encoder = make_encoder(api, backoff_max=30.0, sleep=sleeps.append)
    out = encoder.encode(["after the rate limit"])
    assert sleeps == [pytest.approx(expected)]
    assert torch.equal(out.video_context[0], reference_tensor("after the rate limit")[0, :, :VIDEO])


def test_unreadable_retry_after_falls_back_to_backoff(api):
    sleeps = []
    api.script.extend([Reply(429, b"", {"Retry-After": value}) for value in ("nan", "soon", "-5")])
    with pytest.raises(LTXAPIRateLimitError):
        make_encoder(api, retries=2, backoff_base=0.5, backoff_max=30.0, sleep=sleeps.append).encode(["p"])
    assert len(sleeps) == 2
    assert 0.25 <= sleeps[0] <= 0.5 and 0.5 <= sleeps[1] <= 1.0  # jittered 0.5 * 2**attempt
