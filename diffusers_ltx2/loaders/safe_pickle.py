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

Nothing allocates more than the payload justifies. Every pickle's opcodes are walked first (`pickletools`)
so that no declared argument length or memo index makes the C unpickler reserve memory; before torch reads a
storage, the sizes the payload *declares* are checked to fit in the payload (legacy streams are pre-scanned
with placeholder globals; zip entries must be stored uncompressed and fit in the file), so a 600-byte payload
cannot make torch reserve gigabytes. Every tensor must lie inside its storage (offset + extent <= storage
size) and hold no more elements than it (no zero or overlapping strides repeating a few stored values over a
huge shape), and only dense strided CPU tensors are accepted (no sparse, quantized or nested ones). A decoded
tensor is therefore never larger than the payload that carried it.

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
import pickletools
import warnings
import zipfile
from collections import OrderedDict
from typing import Any

import torch

__all__ = ["ForbiddenPickleError", "SafeUnpicklingError", "allowed_globals", "safe_loads"]

# First pickle of a legacy (pre-zip) `torch.save` stream.
_TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_MAX_NDIM = 8


class SafeUnpicklingError(pickle.UnpicklingError, ValueError):
    """The payload could not be deserialized (truncated, corrupt, or not a pickle)."""


class ForbiddenPickleError(SafeUnpicklingError):
    """The payload references something outside the allow-list (it may try to run code); nothing was run."""


def _storage_numel(storage) -> int:
    """Elements of a storage (bytes for an untyped one)."""
    if isinstance(storage, torch.storage.TypedStorage):
        return int(storage.size())
    return int(storage.nbytes())


def _check_layout(storage_numel: int, offset, size, stride) -> None:
    """Refuse a tensor view that reaches outside its storage or holds more elements than the storage.

    `offset`, `size` and `stride` are in elements. Zero or overlapping strides (which would repeat a few
    stored values over a huge shape) fail the element count; negative strides are refused outright.
    """
    size, stride = tuple(size), tuple(stride)
    values = (offset, *size, *stride)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise ForbiddenPickleError("tensor offset, sizes and strides must be integers")
    if len(size) != len(stride) or len(size) > _MAX_NDIM:
        raise ForbiddenPickleError(f"tensor with {len(size)} sizes and {len(stride)} strides is not accepted")
    if offset < 0 or any(n < 0 for n in size) or any(st < 0 for st in stride):
        raise ForbiddenPickleError("tensor with a negative offset, size or stride is not accepted")
    numel = 1
    for n in size:
        numel *= n
    if numel == 0:
        if offset > storage_numel:
            raise ForbiddenPickleError(f"tensor offset {offset} lies outside its {storage_numel}-element storage")
        return
    extent = offset + sum((n - 1) * st for n, st in zip(size, stride)) + 1
    if extent > storage_numel:
        raise ForbiddenPickleError(
            f"tensor (offset {offset}, size {size}, stride {stride}) reaches element {extent} of a "
            f"{storage_numel}-element storage"
        )
    if numel > storage_numel:
        raise ForbiddenPickleError(
            f"tensor of {numel} elements over a {storage_numel}-element storage (zero or overlapping strides "
            "expanding the data) is not accepted"
        )


_MEMO_PUTS = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})


def _prescan(stream: io.BytesIO) -> None:
    """Walk the opcodes of the pickle at `stream`'s position, then rewind; refuse what would make the C
    unpickler reserve memory the payload does not carry.

    CPython's unpickler reserves a ``BINBYTES8``/``BINUNICODE8``/``BYTEARRAY8`` argument at its declared length
    before reading it, and grows its memo table to any ``PUT`` index; `pickletools.genops` reads the same
    arguments without reserving them (a truncated one is an error) and the memo indices are checked here
    against what a pickler writes (sequential: never more than the opcodes seen so far), as are ``FRAME``
    lengths against the bytes left.
    """
    start = stream.tell()
    available = len(stream.getbuffer()) - start
    try:
        for count, (op, arg, pos) in enumerate(pickletools.genops(stream)):
            if op.name in _MEMO_PUTS and (not isinstance(arg, int) or not 0 <= arg <= count):
                raise ForbiddenPickleError(f"refusing memo index {arg!r} (a pickler numbers its memo sequentially)")
            if op.name == "FRAME" and arg > available - (pos - start):
                raise SafeUnpicklingError(f"pickle frame of {arg} bytes is longer than the payload")
    except SafeUnpicklingError:
        raise
    except Exception as err:  # ValueError for truncated arguments, missing STOP, unknown opcodes
        raise SafeUnpicklingError(f"malformed or truncated pickle ({type(err).__name__}: {_first_line(err)})") from None
    finally:
        stream.seek(start)


class _Placeholder:
    """Stands in for every global while a legacy stream is only being measured: accepts any call or state."""

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass

    def append(self, item):
        pass

    def extend(self, items):
        pass

    def __setitem__(self, key, value):
        pass


class _StorageType:
    def __init__(self, itemsize: int):
        self.itemsize = itemsize


class _PlainUnpickler(pickle.Unpickler):
    """No globals, no persistent ids: plain data only."""

    def find_class(self, module: str, name: str):
        raise ForbiddenPickleError(f"refusing global {module}.{name} in a torch.save header")

    def persistent_load(self, pid):
        raise ForbiddenPickleError("refusing a persistent id in a torch.save header")


class _MeasuringUnpickler(pickle.Unpickler):
    """Reads the object pickle of a legacy torch.save stream with placeholders, recording declared storages."""

    def __init__(self, file):
        super().__init__(file)
        self.storages: dict[str, int] = {}  # key -> declared bytes

    def find_class(self, module: str, name: str):
        if module == "torch" and name.endswith("Storage"):
            kind = getattr(torch, name, None)
            if kind is torch.UntypedStorage:
                return _StorageType(1)
            with warnings.catch_warnings():  # legacy storage classes warn on every attribute access
                warnings.simplefilter("ignore")
                dtype = getattr(kind, "dtype", None)
            if isinstance(dtype, torch.dtype):
                return _StorageType(torch.empty((), dtype=dtype).element_size())
        return type(f"{module}.{name}", (_Placeholder,), {})

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or len(pid) != 6 or pid[0] not in ("storage", b"storage"):
            raise ForbiddenPickleError("unexpected persistent id in a legacy torch.save stream")
        _, kind, key, _location, numel, view = pid
        if not isinstance(kind, _StorageType) or not isinstance(numel, int) or numel < 0 or view is not None:
            raise ForbiddenPickleError("unexpected storage record in a legacy torch.save stream")
        self.storages[str(key)] = numel * kind.itemsize
        return _Placeholder()


def _check_legacy_sizes(data: bytes) -> None:
    """Refuse a legacy torch.save stream whose declared storages do not fit in the stream itself.

    torch reserves each storage at the size the stream declares before reading it; this reads the same
    records first (nothing real is resolved or called) and compares.
    """
    stream = io.BytesIO(data)

    def load(unpickler):
        _prescan(stream)
        return unpickler.load()

    try:
        if load(_PlainUnpickler(stream)) != _TORCH_LEGACY_MAGIC:
            raise SafeUnpicklingError("not a torch.save stream")
        load(_PlainUnpickler(stream))  # protocol version
        load(_PlainUnpickler(stream))  # system info
        measuring = _MeasuringUnpickler(stream)
        load(measuring)
        keys = load(_PlainUnpickler(stream))
    except SafeUnpicklingError:
        raise
    except Exception as err:  # malformed pickles raise many types; none of them ran anything
        raise SafeUnpicklingError(f"malformed torch.save stream ({type(err).__name__}: {_first_line(err)})") from None
    if not isinstance(keys, list) or any(str(k) not in measuring.storages for k in keys):
        raise SafeUnpicklingError("malformed torch.save stream (storage keys do not match)")
    declared = sum(8 + measuring.storages[str(k)] for k in keys)
    available = len(data) - stream.tell()
    if declared > available:
        raise ForbiddenPickleError(
            f"torch.save stream declares {declared} bytes of storage but carries {available}: refusing to allocate"
        )


def _check_zip_sizes(data: bytes) -> None:
    """Refuse a torch.save zip whose entries are compressed or do not fit in the file (torch reserves each
    entry at its declared size before reading it; torch itself writes entries uncompressed)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as err:
        raise SafeUnpicklingError(f"could not read torch.save payload: {_first_line(err)}") from None
    total = 0
    for info in infos:
        if info.compress_type != zipfile.ZIP_STORED or info.file_size != info.compress_size:
            raise ForbiddenPickleError(f"torch.save entry {info.filename[:80]!r} is compressed: not accepted")
        total += info.file_size
    if total > len(data):
        raise ForbiddenPickleError(
            f"torch.save zip declares {total} bytes of entries but is {len(data)} bytes long: refusing to allocate"
        )


def _storage_from_bytes(data: bytes):
    """Safe stand-in for `torch.storage._load_from_bytes`: sizes checked, weights-only load, mapped to the CPU."""
    if not isinstance(data, (bytes, bytearray)):
        raise ForbiddenPickleError(f"tensor storage payload must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if data[:4] == b"PK\x03\x04":
        _check_zip_sizes(data)
    else:
        _check_legacy_sizes(data)
    try:
        storage = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises UnpicklingError/RuntimeError with very long messages
        raise ForbiddenPickleError(f"rejected tensor storage payload: {_first_line(err)}") from None
    if not isinstance(storage, (torch.storage.TypedStorage, torch.storage.UntypedStorage)):
        raise ForbiddenPickleError(f"tensor storage payload decoded to {type(storage).__name__}, not a storage")
    if storage.nbytes() > len(data):
        raise ForbiddenPickleError("tensor storage is larger than its payload")
    return storage


def _check_storage(storage) -> None:
    if not isinstance(storage, (torch.storage.TypedStorage, torch.storage.UntypedStorage)):
        raise ForbiddenPickleError(f"tensor rebuild expects a storage, got {type(storage).__name__}")
    if storage.device.type != "cpu":
        raise ForbiddenPickleError(f"tensor storage on {storage.device} is not accepted")


def _check_hooks(hooks) -> None:
    if hooks is not None and (not isinstance(hooks, dict) or len(hooks) > 0):
        raise ForbiddenPickleError("pickled tensors with backward hooks are not accepted")


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    _check_storage(storage)
    _check_hooks(backward_hooks)
    if metadata:
        raise ForbiddenPickleError("pickled tensors with extra tensor metadata are not accepted")
    _check_layout(_storage_numel(storage), storage_offset, size, stride)
    return torch._utils._rebuild_tensor_v2(
        storage, int(storage_offset), tuple(size), tuple(stride), bool(requires_grad), OrderedDict()
    )


def _rebuild_tensor(storage, storage_offset, size, stride):
    _check_storage(storage)
    _check_layout(_storage_numel(storage), storage_offset, size, stride)
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


def allowed_globals() -> frozenset[str]:
    """The ``module.name`` globals a raw pickle may reference (every other one raises `ForbiddenPickleError`):
    the tensor and storage rebuild functions (replaced by checked versions), ``collections.OrderedDict``,
    ``_codecs.encode`` (latin-1 only), ``torch.Size``, ``torch.device`` and the ``torch`` dtypes."""
    return frozenset(f"{module}.{name}" for module, name in _ALLOWED)


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
    if data[:4] == b"PK\x03\x04":
        _check_zip_sizes(data)
    else:
        _check_legacy_sizes(data)
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


def _validate(root: Any, budget: int) -> None:
    """Second line of defence: the decoded object may only be plain data and plain dense tensors, lying
    inside their storages, whose distinct storages add up to at most `budget` bytes (the payload's size).

    ``BUILD`` opcodes can set state on objects that allowed callables returned (e.g. backward hooks on a
    tensor); anything beyond plain values is refused here, before the caller sees it.
    """
    stack, seen, storages = [root], set(), {}
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
            if obj.layout != torch.strided or obj.is_quantized or obj.is_nested or obj.device.type != "cpu":
                raise ForbiddenPickleError(f"refusing a {obj.layout} / quantized / nested / non-CPU tensor")
            storage = obj.untyped_storage()
            _check_layout(storage.nbytes() // obj.element_size(), obj.storage_offset(), obj.shape, obj.stride())
            storages[storage.data_ptr()] = storage.nbytes()
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
    if sum(storages.values()) > budget:
        raise ForbiddenPickleError(
            f"decoded tensors hold {sum(storages.values())} bytes, more than the {budget}-byte payload carried"
        )


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
        _validate(obj, len(data))
        return obj
    stream = io.BytesIO(data)
    try:
        _prescan(stream)
        obj = _RestrictedUnpickler(stream).load()
    except SafeUnpicklingError:
        raise
    except RecursionError:
        raise SafeUnpicklingError("payload is nested too deeply") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError,
            OverflowError, MemoryError, RuntimeError, UnicodeDecodeError) as err:
        raise SafeUnpicklingError(f"malformed or truncated pickle ({type(err).__name__}: {_first_line(err)})") from None
    if isinstance(obj, int) and not isinstance(obj, bool) and obj == _TORCH_LEGACY_MAGIC:
        obj = _torch_weights_only_load(data)  # legacy torch.save stream: a magic number comes first
    _validate(obj, len(data))
    return obj
