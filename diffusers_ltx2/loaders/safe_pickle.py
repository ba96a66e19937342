"""Deserialize untrusted pickled tensors (the LTX API reply) without running arbitrary code.

A pickle is a small program: every ``GLOBAL``/``STACK_GLOBAL`` opcode imports any callable and ``REDUCE``
calls it, so ``pickle.loads`` on network data is remote code execution. This module resolves globals from a
fixed allow-list only, mapping each allowed name to a checked implementation, and refuses everything else
with `ForbiddenPickleError` *before* anything is called.

Two encodings are accepted:

* **Raw pickle** (what ComfyUI's API node consumes: ``pickle.dumps([[tensor, {...}]])``). Torch pickles a
  tensor as ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)`` where the
  storage is ``torch.storage._load_from_bytes(<legacy torch.save bytes>)``. The real ``_load_from_bytes``
  calls ``torch.load(..., weights_only=False)`` on those inner bytes, i.e. a second, unrestricted
  unpickler; here it is replaced by ``torch.load(..., map_location="cpu", weights_only=True)`` whose result
  must be a storage. Storages saved on CUDA therefore land on the CPU.
* **torch.save files** (zip or legacy format): handed to ``torch.load(map_location="cpu", weights_only=True)``.

Whatever was decoded is then walked once more and refused unless it is plain data (containers, strings,
numbers, dtypes, devices, sizes) and plain tensors without hooks or extra attributes.

Why not only ``torch._weights_only_unpickler``: it does not allow ``torch.storage._load_from_bytes`` (so it
cannot read a raw pickled tensor at all), and allow-listing that name through
``torch.serialization.safe_globals`` would call the real, unrestricted function and mutate process-wide
state. Torch's weights-only loader *is* used for the inner storage bytes and for ``torch.save`` payloads;
note that it also honours globals that the host process allow-listed itself with
``torch.serialization.add_safe_globals``.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from collections import OrderedDict
from typing import Any

import torch

__all__ = ["ForbiddenPickleError", "SafeUnpicklingError", "safe_loads"]

# First pickle of a legacy (pre-zip) `torch.save` stream.
_TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class SafeUnpicklingError(pickle.UnpicklingError, ValueError):
    """The payload could not be deserialized (truncated, corrupt, or not a pickle)."""


class ForbiddenPickleError(SafeUnpicklingError):
    """The payload references something outside the allow-list (it may try to run code); nothing was run."""


def _storage_from_bytes(data: bytes):
    """Safe stand-in for `torch.storage._load_from_bytes`: weights-only load, mapped to the CPU."""
    if not isinstance(data, (bytes, bytearray)):
        raise ForbiddenPickleError(f"tensor storage payload must be bytes, got {type(data).__name__}")
    try:
        storage = torch.load(io.BytesIO(bytes(data)), map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises UnpicklingError/RuntimeError with very long messages
        raise ForbiddenPickleError(f"rejected tensor storage payload: {_first_line(err)}") from None
    if not isinstance(storage, (torch.storage.TypedStorage, torch.storage.UntypedStorage)):
        raise ForbiddenPickleError(f"tensor storage payload decoded to {type(storage).__name__}, not a storage")
    return storage


def _check_storage(storage) -> None:
    if not isinstance(storage, (torch.storage.TypedStorage, torch.storage.UntypedStorage)):
        raise ForbiddenPickleError(f"tensor rebuild expects a storage, got {type(storage).__name__}")


def _check_hooks(hooks) -> None:
    if hooks is not None and (not isinstance(hooks, dict) or len(hooks) > 0):
        raise ForbiddenPickleError("pickled tensors with backward hooks are not accepted")


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    _check_storage(storage)
    _check_hooks(backward_hooks)
    if metadata:
        raise ForbiddenPickleError("pickled tensors with extra tensor metadata are not accepted")
    # torch validates offset/size/stride against the storage size inside `set_`.
    return torch._utils._rebuild_tensor_v2(
        storage, int(storage_offset), tuple(size), tuple(stride), bool(requires_grad), OrderedDict()
    )


def _rebuild_tensor(storage, storage_offset, size, stride):
    _check_storage(storage)
    return torch._utils._rebuild_tensor(storage, int(storage_offset), tuple(size), tuple(stride))


def _codecs_encode(obj, encoding="utf-8", errors="strict"):
    # Protocol-2 pickles spell `bytes` objects as `_codecs.encode(str, "latin1")`.
    if not isinstance(obj, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
        raise ForbiddenPickleError("_codecs.encode is only allowed as the latin-1 bytes encoding")
    return obj.encode("latin1")


def _allowed_globals() -> dict[tuple[str, str], Any]:
    allowed: dict[tuple[str, str], Any] = {
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
        ("torch.storage", "_load_from_bytes"): _storage_from_bytes,
        ("collections", "OrderedDict"): OrderedDict,
        ("_codecs", "encode"): _codecs_encode,
        ("torch", "Size"): torch.Size,
        ("torch", "device"): torch.device,
    }
    for name in dir(torch):
        value = getattr(torch, name, None)
        if isinstance(value, torch.dtype):
            allowed[("torch", name)] = value
    return allowed


_ALLOWED = _allowed_globals()


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise ForbiddenPickleError(
                f"refusing to unpickle global {module}.{name}: only tensors, dicts, lists and plain values are "
                "accepted (the payload may be trying to run code; nothing was executed)"
            ) from None

    def persistent_load(self, pid):
        raise ForbiddenPickleError("refusing persistent ids in a raw pickle")


def _first_line(err: BaseException) -> str:
    """A one-line reason; for torch's weights-only errors, the line that names what was refused."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    marker = "WeightsUnpickler error:"
    for line in lines:
        if marker in line:
            return line.split(marker, 1)[1].strip()[:300]
    boilerplate = ("Weights only load failed", "Check the documentation", "Please file an issue")
    specific = [line for line in lines if not line.startswith(boilerplate)]
    reason = (specific or lines or [type(err).__name__])[0]
    return reason.split(" Please use `torch.serialization", 1)[0][:300]  # never advise allow-listing


def _torch_weights_only_load(data: bytes) -> Any:
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, TypeError) as err:
        message = _first_line(err)
        if "global" in message.lower() or "weights_only" in message or "unsupported" in message.lower():
            raise ForbiddenPickleError(f"rejected torch.save payload: {message}") from None
        raise SafeUnpicklingError(f"could not read torch.save payload: {message}") from None
    except (EOFError, zipfile.BadZipFile, ValueError, OSError) as err:
        raise SafeUnpicklingError(f"could not read torch.save payload: {_first_line(err)}") from None


_PLAIN = (str, bytes, int, float, bool, type(None), torch.dtype, torch.device)


def _validate(root: Any) -> None:
    """Second line of defence: the decoded object may only be plain data and plain tensors.

    ``BUILD`` opcodes can set state on objects that allowed callables returned (e.g. backward hooks on a
    tensor); anything beyond plain values is refused here, before the caller sees it.
    """
    stack, seen = [root], set()
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        kind = type(obj)
        if kind in _PLAIN:
            continue
        if kind in (torch.Tensor, torch.nn.Parameter):
            hooks = getattr(obj, "_backward_hooks", None)
            if hooks or obj.grad_fn is not None or getattr(obj, "__dict__", None):
                raise ForbiddenPickleError("refusing a tensor carrying hooks or extra attributes")
            continue
        if kind is torch.Size:
            continue
        if kind in (list, tuple, set, frozenset):
            stack.extend(obj)
        elif kind in (dict, OrderedDict):
            if kind is OrderedDict and vars(obj):
                raise ForbiddenPickleError("refusing an OrderedDict carrying extra attributes")
            stack.extend(obj.keys())
            stack.extend(obj.values())
        else:
            raise ForbiddenPickleError(f"refusing a decoded {kind.__module__}.{kind.__qualname__} object")


def safe_loads(data: bytes) -> Any:
    """Deserialize `data` (a raw pickle or a `torch.save` payload) with an allow-list; tensors land on the CPU.

    Accepted: lists, tuples, dicts, ``OrderedDict``, strings, numbers, booleans, ``None``, bytes, dtypes,
    ``torch.Size``, ``torch.device`` and dense tensors (any dtype, any saved device). Anything else raises
    `ForbiddenPickleError` before it is called; truncated or corrupt data raises `SafeUnpicklingError`.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"safe_loads expects bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise SafeUnpicklingError("empty payload")
    if data[:4] == b"PK\x03\x04":  # torch.save zip container
        obj = _torch_weights_only_load(data)
        _validate(obj)
        return obj
    try:
        obj = _RestrictedUnpickler(io.BytesIO(data)).load()
    except SafeUnpicklingError:
        raise
    except RecursionError:
        raise SafeUnpicklingError("payload is nested too deeply") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError,
            OverflowError, MemoryError, RuntimeError, UnicodeDecodeError) as err:
        raise SafeUnpicklingError(f"malformed or truncated pickle ({type(err).__name__}: {_first_line(err)})") from None
    if isinstance(obj, int) and not isinstance(obj, bool) and obj == _TORCH_LEGACY_MAGIC:
        obj = _torch_weights_only_load(data)  # legacy torch.save stream: a magic number comes first
    _validate(obj)
    return obj
