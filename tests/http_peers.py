"""HTTP servers the LTX API client did not write, on 127.0.0.1, for tests: the standard library's `http.server`
(HTTP/1.0, or HTTP/1.1 keep-alive or ``Connection: close``) and uvicorn (h11) with a tiny ASGI app, each over
plain TCP or TLS with a self-signed certificate made here. Every server answers each request with the `Answer`
its `answer` callable returns; the servers frame the reply themselves (we only choose how: a Content-Length,
chunked, or ended by closing the connection)."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

TRICKLE_EVERY = 0.02  # seconds between the bytes of a trickled body
TRICKLE_LIMIT = 8.0  # a trickle stops after this long, so a failing test cannot hang


@dataclass
class Request:
    path: str
    headers: dict  # lower-case names
    body: bytes


@dataclass
class Answer:
    status: int = 200
    body: bytes = b""
    headers: dict = field(default_factory=dict)
    framing: str = "length"  # "length" (Content-Length), "chunked", or "close" (no length, ended by closing)
    trickle: bool = False  # send the body one byte every TRICKLE_EVERY seconds


# ---------------------------------------------------------------------------------------- certificates


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 valid for a day and its key, as PEM files in `folder`: made with the
    `cryptography` package if it is installed, else with the ``openssl`` command."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        if shutil.which("openssl") is None:
            pytest.skip("the cryptography package or the openssl command is needed to make a test certificate")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                        str(cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                       check=True, capture_output=True)
        return cert, key
    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(private.public_key()), False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(private.public_key()), False)
        .sign(private, hashes.SHA256())
    )
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return cert, key


# ------------------------------------------------------------------------------------------ http.server


class StdlibServer:
    """`http.server.ThreadingHTTPServer` speaking `protocol` ("HTTP/1.0" or "HTTP/1.1"); `close` sends
    ``Connection: close`` on every reply (HTTP/1.1 otherwise keeps the connection open)."""

    def __init__(self, answer: Callable[[Request], Answer], protocol: str, close: bool = False,
                 certificate: tuple[Path, Path] | None = None):
        self.stop = threading.Event()
        stop = self.stop

        class Handler(BaseHTTPRequestHandler):
            protocol_version = protocol

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                reply = answer(Request(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                if reply.framing == "length":
                    self.send_header("Content-Length", str(len(reply.body)))
                elif reply.framing == "chunked":
                    self.send_header("Transfer-Encoding", "chunked")
                if close:
                    self.send_header("Connection", "close")
                self.end_headers()
                if reply.framing == "close":
                    self.close_connection = True
                try:
                    self._write_body(reply)
                except OSError:  # the client hung up (a refused or timed-out reply)
                    self.close_connection = True

            def _write_body(self, reply: Answer):
                pieces = [reply.body[i : i + 1] for i in range(len(reply.body))] if reply.trickle else (
                    [reply.body[i : i + 4096] for i in range(0, len(reply.body), 4096)])
                end = time.monotonic() + TRICKLE_LIMIT
                for piece in pieces:
                    if reply.trickle and (stop.is_set() or time.monotonic() > end):
                        self.close_connection = True
                        return
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece) if reply.framing == "chunked" else piece)
                    self.wfile.flush()
                    if reply.trickle:
                        time.sleep(TRICKLE_EVERY)
                if reply.framing == "chunked":
                    self.wfile.write(b"0\r\n\r\n")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False
        scheme = "http"
        if certificate is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*certificate)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
            scheme = "https"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self):
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()


# ---------------------------------------------------------------------------------------------- uvicorn


class UvicornServer:
    """uvicorn (its h11 protocol) serving a tiny ASGI app that answers every request with `answer`'s reply;
    uvicorn frames it: Content-Length when the app sends one, chunked otherwise."""

    framings = ("length", "chunked")

    def __init__(self, answer: Callable[[Request], Answer], certificate: tuple[Path, Path] | None = None):
        import uvicorn

        self.stop = threading.Event()
        stop = self.stop

        async def app(scope, receive, send):
            assert scope["type"] == "http"
            body, more = b"", True
            while more:
                message = await receive()
                body += message.get("body", b"")
                more = message.get("more_body", False)
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
            reply = answer(Request(scope["path"], headers, body))
            out = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers.items()]
            if reply.framing == "length":
                out.append((b"content-length", str(len(reply.body)).encode()))
            elif reply.framing != "chunked":
                raise ValueError(f"uvicorn frames replies itself; no {reply.framing!r} framing")
            await send({"type": "http.response.start", "status": reply.status, "headers": out})
            if reply.trickle:
                end = time.monotonic() + TRICKLE_LIMIT
                for i in range(len(reply.body)):
                    if stop.is_set() or time.monotonic() > end:
                        break
                    await send({"type": "http.response.body", "body": reply.body[i : i + 1], "more_body": True})
                    await asyncio.sleep(TRICKLE_EVERY)
                await send({"type": "http.response.body", "body": b""})
            elif reply.framing == "chunked":  # several pieces, so that the reply really is streamed
                third = max(1, len(reply.body) // 3)
                for i in range(0, len(reply.body), third):
                    await send({"type": "http.response.body", "body": reply.body[i : i + third], "more_body": True})
                await send({"type": "http.response.body", "body": b""})
            else:
                await send({"type": "http.response.body", "body": reply.body})

        tls = {} if certificate is None else {"ssl_certfile": str(certificate[0]), "ssl_keyfile": str(certificate[1])}
        config = uvicorn.Config(app, http="h11", lifespan="off", log_level="error", access_log=False,
                                timeout_graceful_shutdown=2, **tls)
        self.server = uvicorn.Server(config)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"{'https' if certificate else 'http'}://127.0.0.1:{self.sock.getsockname()[1]}"
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        end = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > end:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)

    def close(self):
        self.stop.set()
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


# ------------------------------------------------------------------------------------------------ menu

# name -> (server class, keyword arguments, over TLS)
PEERS = {
    "http.server HTTP/1.0": (StdlibServer, {"protocol": "HTTP/1.0"}, False),
    "http.server HTTP/1.1 keep-alive": (StdlibServer, {"protocol": "HTTP/1.1"}, False),
    "http.server HTTP/1.1 Connection: close": (StdlibServer, {"protocol": "HTTP/1.1", "close": True}, False),
    "http.server HTTP/1.0 TLS": (StdlibServer, {"protocol": "HTTP/1.0"}, True),
    "http.server HTTP/1.1 TLS": (StdlibServer, {"protocol": "HTTP/1.1"}, True),
    "uvicorn": (UvicornServer, {}, False),
    "uvicorn TLS": (UvicornServer, {}, True),
}


def framings(peer: str) -> tuple[str, ...]:
    """The reply framings `peer` can send (chunked is HTTP/1.1 only; uvicorn never ends a reply by closing)."""
    cls, kwargs, _ = PEERS[peer]
    if cls is UvicornServer:
        return cls.framings
    return ("length", "chunked", "close") if kwargs["protocol"] == "HTTP/1.1" else ("length", "close")


def start_peer(peer: str, answer: Callable[[Request], Answer], certificate: tuple[Path, Path] | None):
    cls, kwargs, over_tls = PEERS[peer]
    return cls(answer, certificate=certificate if over_tls else None, **kwargs)
