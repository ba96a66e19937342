"""LTXAPIPromptEncoder against a real HTTP server on 127.0.0.1 that speaks the LTX API protocol."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import pickle
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch
from safetensors.torch import save_file

from diffusers_ltx2.cli import encode as encode_cli
from diffusers_ltx2.loaders.api import (
    LTXAPIAuthError,
    LTXAPIConnectionError,
    LTXAPIPromptEncoder,
    LTXAPIRateLimitError,
    LTXAPIResponseError,
    LTXAPIServerError,
    LTXAPITimeoutError,
)
from diffusers_ltx2.loaders.conditioning_file import load_conditioning
from diffusers_ltx2.loaders.identity import context_dims
from diffusers_ltx2.loaders.safe_pickle import ForbiddenPickleError, safe_loads

KEY = "ltx-test-key-4f1e9c0b7d"
MODEL_ID = "enc:gAAAAABmodel-id-for-tests=="
VIDEO, AUDIO, TOKENS = 24, 16, 12
FAST = dict(timeout=0.5, backoff_base=0.001, backoff_max=0.01)


def reference_tensor(prompt: str, width: int = VIDEO + AUDIO, dtype=torch.bfloat16) -> torch.Tensor:
    """What the fake API returns for `prompt` (deterministic per prompt)."""
    seed = int(hashlib.sha256(prompt.encode()).hexdigest()[:8], 16)
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(1, TOKENS, width, generator=gen).to(dtype)


def reference_mask() -> torch.Tensor:
    mask = torch.ones(1, TOKENS, dtype=torch.int64)
    mask[0, -3:] = 0
    return mask


def conditioning_pickle(prompt: str, **kw) -> bytes:
    return pickle.dumps([[reference_tensor(prompt, **kw), {"attention_mask": reference_mask(), "pooled_output": None}]])


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict = field(default_factory=dict)
    delay: float = 0.0
    truncate_to: int | None = None  # declare the full length, send only this many bytes, hang up


class FakeLTXAPI:
    """http.server speaking the LTX prompt-embedding protocol; `script` overrides replies one by one."""

    def __init__(self):
        self.requests: list[dict] = []
        self.script: list = []  # Reply objects or callables(request) -> Reply, consumed in order
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length)
                request = {"path": self.path, "headers": dict(self.headers), "body": raw}
                api.requests.append(request)
                reply = api.script.pop(0) if api.script else api.default
                if callable(reply):
                    reply = reply(request)
                if reply.delay:
                    time.sleep(reply.delay)
                try:
                    self.send_response(reply.status)
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    body = reply.body if reply.truncate_to is None else reply.body[: reply.truncate_to]
                    self.wfile.write(body)
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass
                self.close_connection = True

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def default(self, request) -> Reply:
        """The real protocol: Bearer check, JSON body, pickled [[tensor, {...}]] reply."""
        if request["path"] != "/v1/prompt-embedding":
            return Reply(404, b"not found")
        if request["headers"].get("Authorization") != f"Bearer {KEY}":
            return Reply(401, b'{"detail": "Invalid API key"}')
        payload = json.loads(request["body"])
        if set(payload) != {"prompt", "model_id", "enhance_prompt"} or payload["model_id"] != MODEL_ID:
            return Reply(400, b'{"detail": "bad request"}')
        return Reply(200, conditioning_pickle(payload["prompt"]), {"Content-Type": "application/octet-stream"})


@pytest.fixture
def api():
    server = FakeLTXAPI()
    server.thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()


def make_encoder(api, **kw):
    args = dict(api_key=KEY, model_id=MODEL_ID, base_url=api.url, retries=2, video_dim=VIDEO, audio_dim=AUDIO, **FAST)
    args.update(kw)
    return LTXAPIPromptEncoder(**args)


def cli_main(argv: list[str]) -> int:
    """`ltx2 <argv>` with only the encode subcommand registered (other subcommands are not under test here)."""
    import argparse

    parser = argparse.ArgumentParser(prog="ltx2")
    encode_cli.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


# ------------------------------------------------------------------------------------------------ success


def test_success_speaks_the_protocol_and_splits_the_context(api):
    encoder = make_encoder(api, enhance_prompt=True)
    out = encoder.encode(["a fox in the snow", "a red car"])

    assert len(api.requests) == 2
    request = api.requests[0]
    assert request["path"] == "/v1/prompt-embedding"
    assert request["headers"]["Authorization"] == f"Bearer {KEY}"
    assert request["headers"]["Content-Type"] == "application/json"
    assert json.loads(request["body"]) == {"prompt": "a fox in the snow", "model_id": MODEL_ID, "enhance_prompt": True}

    assert out.stage == "connector" and out.model_identity == MODEL_ID
    assert out.video_context.shape == (2, TOKENS, VIDEO) and out.audio_context.shape == (2, TOKENS, AUDIO)
    for i, prompt in enumerate(["a fox in the snow", "a red car"]):
        ref = reference_tensor(prompt)
        assert torch.equal(out.video_context[i], ref[0, :, :VIDEO])
        assert torch.equal(out.audio_context[i], ref[0, :, VIDEO:])
        assert torch.equal(out.attention_mask[i], reference_mask()[0])


def test_split_taken_from_model_config_and_known_widths(api):
    connectors_2_3 = {"caption_channels": 8, "text_proj_in_factor": 3, "per_modality_projections": True,
                      "video_hidden_dim": VIDEO, "audio_hidden_dim": AUDIO}
    out = make_encoder(api, video_dim=None, audio_dim=None, model_config=connectors_2_3).encode(["x"])
    assert out.video_context.shape[-1] == VIDEO and out.audio_context.shape[-1] == AUDIO
    # 2.0 connectors / transformers: both contexts are caption_channels wide; 2.3 transformer: stream widths
    connectors_2_0 = {"caption_channels": 20, "text_proj_in_factor": 3, "per_modality_projections": False}
    assert context_dims(connectors_2_0) == (20, 20)
    assert context_dims({"caption_channels": 20, "num_attention_heads": 2, "attention_head_dim": 12,
                         "audio_num_attention_heads": 2, "audio_attention_head_dim": 8}) == (20, 20)
    assert context_dims({"caption_channels": 20, "num_attention_heads": 2, "attention_head_dim": 12,
                         "audio_num_attention_heads": 2, "audio_attention_head_dim": 8,
                         "use_prompt_embeddings": False}) == (24, 16)
    # no dims given: the released widths are recognised (2.3: 4096 + 2048)
    api.script.append(Reply(200, conditioning_pickle("y", width=6144)))
    out = make_encoder(api, video_dim=None, audio_dim=None).encode(["y"])
    assert out.video_context.shape[-1] == 4096 and out.audio_context.shape[-1] == 2048


class _CudaStorage:
    def __init__(self, data: bytes):
        self.data = data

    def __reduce__(self):
        return (torch.storage._load_from_bytes, (self.data,))


class CudaPickledTensor:
    """Pickles exactly like `tensor` would on a GPU server: the same rebuild call, storage located on cuda:0."""

    def __init__(self, tensor: torch.Tensor):
        self.tensor = tensor.contiguous()

    def __reduce__(self):
        func, args = self.tensor.__reduce_ex__(2)
        storage, *rest = args
        inner = storage.__reduce__()[1][0]  # legacy torch.save bytes of the storage
        cuda_inner = inner.replace(b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0")
        assert cuda_inner != inner
        return (func, (_CudaStorage(cuda_inner), *rest))


def test_missing_mask_means_all_ones_and_cuda_storages_land_on_cpu(api):
    tensor = reference_tensor("z", dtype=torch.float16)
    payload = pickle.dumps([[CudaPickledTensor(tensor), {}]])
    if not torch.cuda.is_available():  # the payload really asks for a GPU
        with pytest.raises(RuntimeError, match="CUDA"):
            pickle.loads(payload)
    api.script.append(Reply(200, payload))
    out = make_encoder(api).encode(["z"])
    assert out.video_context.device.type == "cpu" and out.video_context.dtype == torch.float16
    assert torch.equal(out.video_context[0], tensor[0, :, :VIDEO])
    assert torch.equal(out.attention_mask, torch.ones(1, TOKENS, dtype=torch.int64))


def test_key_from_environment_and_model_id_from_checkpoint(api, tmp_path, monkeypatch):
    checkpoint = tmp_path / "ltx-2-tiny.safetensors"
    save_file({"w": torch.zeros(2)}, checkpoint, metadata={"encrypted_wandb_properties": MODEL_ID})
    monkeypatch.setenv("LTX_API_KEY", KEY)
    encoder = LTXAPIPromptEncoder(checkpoint=checkpoint, base_url=api.url, video_dim=VIDEO, audio_dim=AUDIO, **FAST)
    assert encoder.model_id == MODEL_ID
    assert encoder.encode(["q"]).model_identity == MODEL_ID
    assert api.requests[0]["headers"]["Authorization"] == f"Bearer {KEY}"

    bare = tmp_path / "community.safetensors"
    save_file({"w": torch.zeros(2)}, bare)
    with pytest.raises(ValueError, match="encrypted_wandb_properties"):
        LTXAPIPromptEncoder(checkpoint=bare, base_url=api.url)
    monkeypatch.delenv("LTX_API_KEY")
    with pytest.raises(ValueError, match="LTX_API_KEY"):
        LTXAPIPromptEncoder(model_id=MODEL_ID, base_url=api.url)


# ----------------------------------------------------------------------------------------------- failures


@pytest.mark.parametrize("status", [401, 403])
def test_bad_key_names_the_variable_and_is_not_retried(api, status):
    api.script.append(Reply(status, f"invalid key {KEY}".encode()))
    with pytest.raises(LTXAPIAuthError, match="LTX_API_KEY") as info:
        make_encoder(api).encode(["p"])
    assert len(api.requests) == 1
    assert KEY not in str(info.value) and KEY not in repr(info.value)


def test_wrong_key_is_rejected_by_the_server(api):
    with pytest.raises(LTXAPIAuthError):
        make_encoder(api, api_key="not-the-right-key").encode(["p"])


def test_429_then_200_retries_with_backoff(api):
    api.script.append(Reply(429, b"slow down", {"Retry-After": "0"}))
    out = make_encoder(api).encode(["after the rate limit"])
    assert len(api.requests) == 2
    assert torch.equal(out.video_context[0], reference_tensor("after the rate limit")[0, :, :VIDEO])


def test_429_forever_gives_a_rate_limit_error(api):
    api.script.extend([Reply(429, b"slow down")] * 3)
    with pytest.raises(LTXAPIRateLimitError, match="3 attempt"):
        make_encoder(api, retries=2).encode(["p"])


def test_500s_until_retries_run_out_and_the_key_is_redacted(api):
    echo = lambda request: Reply(500, f"boom; you sent {request['headers']['Authorization']}".encode())  # noqa: E731
    api.script.extend([echo] * 3)
    with pytest.raises(LTXAPIServerError, match="after 3 attempt") as info:
        make_encoder(api, retries=2).encode(["p"])
    assert len(api.requests) == 3
    assert "HTTP 500" in str(info.value) and "***" in str(info.value)
    assert KEY not in str(info.value)


def test_timeout_is_bounded_and_retried(api):
    api.script.extend([Reply(200, conditioning_pickle("slow"), delay=1.5)] * 2)
    start = time.monotonic()
    with pytest.raises(LTXAPITimeoutError, match="timed out"):
        make_encoder(api, retries=1, timeout=0.3).encode(["slow"])
    assert time.monotonic() - start < 1.4
    assert len(api.requests) == 2


def test_truncated_body_is_detected(api):
    body = conditioning_pickle("cut")
    api.script.extend([Reply(200, body, truncate_to=len(body) // 2)] * 2)
    with pytest.raises(LTXAPIConnectionError, match="truncated"):
        make_encoder(api, retries=1).encode(["cut"])
    # a truncation followed by a complete reply succeeds
    api.script.append(Reply(200, body, truncate_to=100))
    out = make_encoder(api, retries=1).encode(["cut"])
    assert torch.equal(out.audio_context[0], reference_tensor("cut")[0, :, VIDEO:])


def test_wrong_width_for_the_loaded_model(api):
    api.script.append(Reply(200, conditioning_pickle("w", width=VIDEO + AUDIO + 8)))
    with pytest.raises(LTXAPIResponseError, match=r"48 wide .* video 24 \+ audio 16") as info:
        make_encoder(api).encode(["w"])
    assert MODEL_ID[:20] in str(info.value)
    assert len(api.requests) == 1


@pytest.mark.parametrize(
    "body, match",
    [
        (b"<html>502 Bad Gateway</html>", "malformed"),
        (pickle.dumps({"not": "a conditioning list"}), "expected a non-empty list"),
        (pickle.dumps([[torch.zeros(1, 4, VIDEO + AUDIO, dtype=torch.int64), {}]]), "floating"),
        (pickle.dumps([[torch.full((1, 4, VIDEO + AUDIO), float("nan")), {}]]), "NaN"),
        (pickle.dumps([[torch.zeros(1, 4, VIDEO + AUDIO), {"unprocessed_ltxav_embeds": True}]]), "unprocessed"),
        (pickle.dumps([[torch.zeros(1, 4, VIDEO + AUDIO), {"attention_mask": torch.ones(1, 5)}]]), "attention_mask"),
    ],
)
def test_malformed_replies_give_clear_errors(api, body, match):
    api.script.append(Reply(200, body))
    with pytest.raises(LTXAPIResponseError, match=match):
        make_encoder(api).encode(["m"])
    assert len(api.requests) == 1


def test_other_client_errors_are_not_retried(api):
    with pytest.raises(LTXAPIResponseError, match="HTTP 400"):
        make_encoder(api, model_id="some-other-model").encode(["p"])
    assert len(api.requests) == 1


def test_unreachable_server():
    encoder = LTXAPIPromptEncoder(api_key=KEY, model_id=MODEL_ID, base_url="http://127.0.0.1:9", retries=1, **FAST)
    with pytest.raises(LTXAPIConnectionError, match="2 attempt"):
        encoder.encode(["p"])


# ----------------------------------------------------------------------------------------------- security


class RunsCode:
    """Unpickling this runs `exec(code)`."""

    def __init__(self, code: str):
        self.code = code

    def __reduce__(self):
        return (exec, (self.code,))


class RunsShell:
    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class EvilStorage:
    """A tensor storage whose inner torch.save bytes run code (torch's own _load_from_bytes would run it)."""

    def __init__(self, code: str):
        self.code = code

    def __reduce__(self):
        return (torch.storage._load_from_bytes, (pickle.dumps(RunsCode(self.code), protocol=2),))


@pytest.mark.parametrize("kind", ["exec", "shell", "storage", "torch.save"])
def test_code_running_pickle_is_refused_and_does_not_run(api, tmp_path, kind):
    marker = tmp_path / "pwned"
    code = f"open({str(marker)!r}, 'w').write('pwned')"
    if kind == "exec":
        payload = pickle.dumps([[RunsCode(code), {}]])
    elif kind == "shell":
        payload = pickle.dumps([[reference_tensor("x"), {"attention_mask": RunsShell(f"touch '{marker}'")}]])
    elif kind == "storage":
        payload = pickle.dumps([[EvilStorage(code), {}]])
    else:
        buffer = io.BytesIO()
        torch.save([[RunsCode(code), {}]], buffer)
        payload = buffer.getvalue()

    api.script.append(Reply(200, payload))
    with pytest.raises(LTXAPIResponseError, match="refused") as info:
        make_encoder(api).encode(["p"])
    assert not marker.exists(), "the payload ran"
    assert isinstance(info.value.__context__, ForbiddenPickleError) or "refus" in str(info.value)
    with pytest.raises(ForbiddenPickleError):
        safe_loads(payload)
    assert not marker.exists()

    # control: the payload is live, a naive load does run it
    if kind == "torch.save":
        torch.load(io.BytesIO(payload), weights_only=False)
    else:
        try:
            pickle.loads(payload)
        except Exception:  # the exec payload returns None where a tensor is expected, after running
            pass
    assert marker.exists()


class HookedTensor:
    """A real tensor whose pickle also sets backward hooks through BUILD (only allowed globals are used)."""

    def __init__(self, tensor):
        self.tensor = tensor

    def __reduce__(self):
        func, args = self.tensor.__reduce_ex__(2)
        hooks = OrderedDict(hook=torch.device("cpu"))
        return (func, args, (self.tensor, None, hooks, False, None))


def test_state_smuggled_onto_a_tensor_is_refused(api):
    payload = pickle.dumps([[HookedTensor(reference_tensor("h")), {}]])
    assert pickle.loads(payload)[0][0]._backward_hooks  # control: a naive load attaches the hooks
    api.script.append(Reply(200, payload))
    with pytest.raises(LTXAPIResponseError, match="refused.*hooks"):
        make_encoder(api).encode(["h"])


@pytest.mark.parametrize("zip_format", [True, False])
def test_torch_save_payloads_are_accepted(api, zip_format):
    buffer = io.BytesIO()
    conditioning = [[reference_tensor("t"), {"attention_mask": reference_mask()}]]
    torch.save(conditioning, buffer, _use_new_zipfile_serialization=zip_format)
    api.script.append(Reply(200, buffer.getvalue()))
    out = make_encoder(api).encode(["t"])
    assert torch.equal(out.audio_context[0], reference_tensor("t")[0, :, VIDEO:])
    assert torch.equal(out.attention_mask, reference_mask())


def test_https_only_except_loopback():
    for url in ("http://api.ltx.video", "http://10.0.0.5:8080", "ftp://api.ltx.video", "api.ltx.video",
                "https://user:pw@api.ltx.video"):
        with pytest.raises(ValueError):
            LTXAPIPromptEncoder(api_key=KEY, model_id=MODEL_ID, base_url=url)
    for url in ("https://api.ltx.video", "http://127.0.0.1:8000", "http://localhost:1", "http://[::1]:1"):
        LTXAPIPromptEncoder(api_key=KEY, model_id=MODEL_ID, base_url=url)


def test_key_stays_out_of_reprs_logs_and_pickles(api, caplog):
    encoder = make_encoder(api)
    assert KEY not in repr(encoder) and KEY not in str(encoder) and "***" in repr(encoder)
    api.script.extend([Reply(503, KEY.encode()), Reply(500, b"")])
    with caplog.at_level(logging.DEBUG, logger="diffusers_ltx2"):
        encoder.encode(["logged"])
    assert caplog.records and all(KEY not in r.getMessage() for r in caplog.records)
    with pytest.raises(TypeError, match="not picklable"):
        pickle.dumps(encoder)
    with pytest.raises(ValueError, match="control characters"):
        LTXAPIPromptEncoder(api_key="abc\r\nX-Evil: 1", model_id=MODEL_ID, base_url=api.url)


# -------------------------------------------------------------------------------------------------- CLI


def test_cli_encode_with_api_writes_a_loadable_file_without_the_key(api, tmp_path, monkeypatch, capsys):
    checkpoint = tmp_path / "model.safetensors"
    save_file({"w": torch.zeros(2)}, checkpoint, metadata={"encrypted_wandb_properties": MODEL_ID})
    monkeypatch.setenv("LTX_API_KEY", KEY)
    out = tmp_path / "cond.safetensors"
    code = cli_main(["encode", "--api", "--model", str(checkpoint), "--prompt", "a fox", "--output", str(out),
                     "--base-url", api.url, "--video-dim", str(VIDEO), "--audio-dim", str(AUDIO), "--timeout", "2"])
    assert code == 0
    assert "wrote" in capsys.readouterr().out
    assert KEY.encode() not in out.read_bytes()
    loaded = load_conditioning(out, video_dim=VIDEO, audio_dim=AUDIO, model_identities=[MODEL_ID])
    assert torch.equal(loaded.video_context[0], reference_tensor("a fox")[0, :, :VIDEO])

    monkeypatch.setenv("LTX_API_KEY", "wrong-key-123456")
    code = cli_main(["encode", "--api", "--model-id", MODEL_ID, "--prompt", "x",
                     "--output", str(tmp_path / "n.safetensors"),
                     "--base-url", api.url, "--retries", "0"])
    err = capsys.readouterr().err
    assert code == 1 and "LTX_API_KEY" in err and "wrong-key-123456" not in err
    assert not (tmp_path / "n.safetensors").exists()
