"""The restricted unpickler: its exact allow-list, and the refusals its docstring promises.

Each hostile payload below is built with the same pickle opcodes torch itself emits; a control shows that
the plain `pickle.loads` would have accepted it (so the refusal is ours, not a malformed test payload).
"""

from __future__ import annotations

import builtins
import codecs
import collections
import io
import os
import pickle
import struct
import zipfile
from collections import OrderedDict

import pytest
import torch

from diffusers_ltx2.loaders import safe_pickle
from diffusers_ltx2.loaders.safe_pickle import ForbiddenPickleError, SafeUnpicklingError, allowed_globals, safe_loads

TORCH_DTYPES = {name for name in dir(torch) if isinstance(getattr(torch, name), torch.dtype)}
EXPECTED_ALLOWED = {
    "torch._utils._rebuild_tensor_v2",
    "torch._utils._rebuild_tensor",
    "torch.storage._load_from_bytes",
    "collections.OrderedDict",
    "_codecs.encode",
    "torch.Size",
    "torch.device",
} | {f"torch.{name}" for name in TORCH_DTYPES}


def global_pickle(module: str, name: str, protocol: int = 2) -> bytes:
    """A pickle whose whole program is: import `module.name` and return it."""
    if protocol >= 4:  # STACK_GLOBAL
        def short(text):
            raw = text.encode()
            return b"\x8c" + bytes([len(raw)]) + raw
        return b"\x80\x04" + short(module) + short(name) + b"\x93."
    return b"\x80\x02c" + module.encode() + b"\n" + name.encode() + b"\n."


def test_allow_list_is_exactly_the_documented_set():
    assert allowed_globals() == EXPECTED_ALLOWED
    assert {"torch.float32", "torch.bfloat16", "torch.float16", "torch.int64", "torch.bool"} <= allowed_globals()


@pytest.mark.parametrize("protocol", [2, 4])
def test_every_other_global_is_refused_before_it_is_resolved(protocol):
    """Every public name of the modules a payload would reach for (builtins, os, torch, ...) is tried:
    exactly the allow-listed ones get past name resolution."""
    candidates = {("builtins", n) for n in dir(builtins)} | {("os", n) for n in dir(os)}
    for module in (torch, torch._utils, torch.storage, collections, codecs, pickle):
        candidates |= {(module.__name__, n) for n in dir(module)}
    candidates |= {("_codecs", n) for n in dir(codecs)} | {("posix", "system"), ("subprocess", "Popen")}
    passed = set()
    for module, name in sorted(candidates):
        try:
            safe_loads(global_pickle(module, name, protocol))
        except ForbiddenPickleError as err:
            if "refusing to unpickle global" not in str(err):
                passed.add(f"{module}.{name}")  # resolved, then refused as a decoded object
        except SafeUnpicklingError:
            passed.add(f"{module}.{name}")
        else:
            passed.add(f"{module}.{name}")
    assert passed == {g for g in EXPECTED_ALLOWED if tuple(g.rsplit(".", 1)) in candidates}


def test_getattr_walk_to_os_system_is_refused_and_does_not_run(tmp_path):
    marker = tmp_path / "pwned"
    # builtins.getattr(os-module-reached-via-allowed-object, "system")("touch marker"), spelled as protocol 2
    payload = (
        b"\x80\x02cbuiltins\ngetattr\n(cbuiltins\n__import__\n(X\x02\x00\x00\x00ostRX\x06\x00\x00\x00systemtR"
        b"(X" + struct.pack("<I", len(f"touch {marker}")) + f"touch {marker}".encode() + b"tR."
    )
    pickle.loads(payload)  # control: the payload is live
    assert marker.exists()
    marker.unlink()
    with pytest.raises(ForbiddenPickleError, match="builtins.getattr"):
        safe_loads(payload)
    assert not marker.exists()


class HooksAsArgument:
    """Pickles like a tensor, but `_rebuild_tensor_v2` is asked to attach backward hooks."""

    def __init__(self, tensor):
        self.tensor = tensor

    def __reduce__(self):
        func, (storage, offset, size, stride, grad, _hooks) = self.tensor.__reduce_ex__(2)
        return (func, (storage, offset, size, stride, grad, OrderedDict(hook=torch.device("cpu"))))


def test_tensor_with_backward_hooks_is_refused():
    payload = pickle.dumps([[HooksAsArgument(torch.ones(2, 3)), {}]], protocol=2)
    assert pickle.loads(payload)[0][0]._backward_hooks  # control: the real rebuild attaches them
    with pytest.raises(ForbiddenPickleError, match="hooks"):
        safe_loads(payload)
    # the same tensor without hooks is accepted
    assert torch.equal(safe_loads(pickle.dumps([[torch.ones(2, 3), {}]], protocol=2))[0][0], torch.ones(2, 3))


class Encoded:
    def __init__(self, text, *args):
        self.args = (text, *args)

    def __reduce__(self):
        return (codecs.encode, self.args)


@pytest.mark.parametrize("args", [("abc", "utf-8"), ("abc", "utf-16"), ("abc", "rot13"), ("abc", "ascii"),
                                  ("abc", "latin1", "ignore"), ("abc",)])
def test_codecs_encode_other_than_latin1_is_refused(args):
    payload = pickle.dumps(Encoded(*args), protocol=2)
    assert b"_codecs\nencode" in payload
    pickle.loads(payload)  # control: a plain unpickler runs it
    with pytest.raises(ForbiddenPickleError, match="latin-1"):
        safe_loads(payload)


def test_latin1_bytes_still_decode():
    data = bytes(range(256))
    payload = pickle.dumps(data, protocol=2)
    assert b"_codecs\nencode" in payload and b"latin1" in payload
    assert safe_loads(payload) == data


class Layout:
    """Pickles as `_rebuild_tensor_v2(<storage of `values`>, offset, size, stride)` (any layout)."""

    def __init__(self, values, offset, size, stride):
        self.values, self.offset, self.size, self.stride = values, offset, size, stride

    def __reduce__(self):
        func, (storage, *_rest) = torch.tensor(self.values, dtype=torch.float32).__reduce_ex__(2)
        return (func, (storage, self.offset, self.size, self.stride, False, OrderedDict()))


@pytest.mark.parametrize(
    "offset, size, stride, match",
    [
        (10, (2,), (1,), "reaches element"),  # offset past the end: torch would read uninitialised memory
        (3, (2,), (1,), "reaches element"),  # extent one past the end
        (0, (1000, 1000), (0, 0), "expanding"),  # zero strides repeat one value a million times
        (0, (2, 3), (1, 1), "expanding"),  # overlapping strides: 6 elements over 4 stored
        (0, (2,), (-1,), "negative"),
        (-1, (1,), (1,), "negative"),
        (0, (2, 2), (1,), "2 sizes and 1 strides"),
    ],
)
def test_tensors_must_lie_inside_their_storage(offset, size, stride, match):
    payload = pickle.dumps(Layout([1.0, 2.0, 3.0, 4.0], offset, size, stride), protocol=2)
    with pytest.raises(ForbiddenPickleError, match=match):
        safe_loads(payload)


def test_in_bounds_views_are_accepted():
    # a transposed view and an offset slice of a 6-element storage
    out = safe_loads(pickle.dumps(Layout([0.0, 1, 2, 3, 4, 5], 0, (3, 2), (1, 3)), protocol=2))
    assert torch.equal(out, torch.tensor([[0.0, 3], [1, 4], [2, 5]]))
    out = safe_loads(pickle.dumps(Layout([0.0, 1, 2, 3, 4, 5], 4, (2,), (1,)), protocol=2))
    assert torch.equal(out, torch.tensor([4.0, 5.0]))


def legacy_storage_bytes(numel: int) -> bytes:
    """Legacy torch.save bytes of a 4-float storage whose record is rewritten to declare `numel` elements."""
    inner = torch.arange(4, dtype=torch.float32).__reduce_ex__(2)[1][0].__reduce__()[1][0]
    at = inner.index(b"cpuq\x03K\x04")
    return inner[:at] + b"cpuq\x03\x8a\x05" + numel.to_bytes(5, "little") + inner[at + 7:]


def test_storage_declaring_more_than_it_carries_is_refused_before_torch_allocates():
    with pytest.raises(RuntimeError, match="wrong byte size"):  # control: torch reserves first, then notices
        torch.load(io.BytesIO(legacy_storage_bytes(1000)), weights_only=True)
    with pytest.raises(ForbiddenPickleError, match="declares"):
        safe_pickle._storage_from_bytes(legacy_storage_bytes(500_000_000))


def test_torch_save_zip_with_compressed_or_oversized_entries_is_refused():
    buffer = io.BytesIO()
    torch.save([[torch.zeros(1, 2, 4), {}]], buffer)
    data = buffer.getvalue()
    assert torch.equal(safe_loads(data)[0][0], torch.zeros(1, 2, 4))

    with zipfile.ZipFile(io.BytesIO(data)) as src:
        entries = [(info.filename, src.read(info)) for info in src.infolist()]
    deflated = io.BytesIO()
    with zipfile.ZipFile(deflated, "w", compression=zipfile.ZIP_DEFLATED) as dst:
        for name, content in entries:
            dst.writestr(name, content)
    with pytest.raises(ForbiddenPickleError, match="compressed"):
        safe_loads(deflated.getvalue())

    patched = bytearray(data)
    at = patched.find(b"PK\x01\x02")
    while at != -1:  # every central-directory entry claims 2 GB
        struct.pack_into("<II", patched, at + 20, 2_000_000_000, 2_000_000_000)
        at = patched.find(b"PK\x01\x02", at + 4)
    with pytest.raises(ForbiddenPickleError, match="declares"):
        safe_loads(bytes(patched))


def test_sparse_tensors_from_torch_save_are_refused():
    sparse = torch.sparse_coo_tensor(torch.tensor([[0], [0]]), torch.tensor([1.0]), (100_000, 100_000),
                                     check_invariants=True)
    buffer = io.BytesIO()
    torch.save([[sparse, {}]], buffer)
    assert torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)[0][0].is_sparse  # control
    with pytest.raises(ForbiddenPickleError, match="sparse"):
        safe_loads(buffer.getvalue())


# Opcodes whose declared length or memo index CPython's C unpickler reserves before reading anything.
HUGE = 3_000_000_000
DECLARED_ALLOCATIONS = {
    "BINBYTES8 of 3 GB": b"\x80\x04\x8e" + struct.pack("<Q", HUGE) + b"abc.",
    "BINUNICODE8 of 3 GB": b"\x80\x04\x8d" + struct.pack("<Q", HUGE) + b"abc.",
    "BYTEARRAY8 of 3 GB": b"\x80\x05\x96" + struct.pack("<Q", HUGE) + b"abc.",
    "FRAME of 3 GB": b"\x80\x04\x95" + struct.pack("<Q", HUGE) + b"N.",
    "LONG_BINPUT at 2**28": b"\x80\x02N" + b"r" + struct.pack("<I", 2**28 - 1) + b".",
    "PUT at 2e9": b"\x80\x02Np2000000000\n.",
}


@pytest.mark.parametrize("name", sorted(DECLARED_ALLOCATIONS))
def test_declared_lengths_and_memo_indices_are_checked_before_unpickling(name):
    with pytest.raises(SafeUnpicklingError):
        safe_loads(DECLARED_ALLOCATIONS[name])


def test_memo_and_frames_of_real_pickles_still_load():
    value = [[torch.ones(2, 3), {"a": "x" * 100, "b": ["x" * 100] * 3}]]
    for protocol in (2, 3, 4, 5):
        out = safe_loads(pickle.dumps(value, protocol=protocol))
        assert torch.equal(out[0][0], value[0][0]) and out[0][1] == value[0][1]
