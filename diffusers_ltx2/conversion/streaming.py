"""Streaming safetensors I/O: header inspection, one-tensor-at-a-time reading, sharded writing.

Nothing here holds more than one tensor of the source in memory. The writer knows every output tensor's
shape and dtype up front (from the source header), so it writes each shard's safetensors header first and
then appends tensor bytes as they arrive: memory is bounded by the largest tensor, not by the shard size.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from ..json_files import parse_json
from .errors import ConversionError, CorruptCheckpointError

_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
_NAMES = {v: k for k, v in _DTYPES.items()}
_MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit


@dataclass(frozen=True)
class TensorInfo:
    """Shape, dtype and byte range of one tensor, read from a safetensors header."""

    dtype: torch.dtype
    shape: tuple[int, ...]
    start: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start


def dtype_name(dtype: torch.dtype) -> str:
    """safetensors' name for a torch dtype (``BF16``, ``F8_E4M3``...)."""
    try:
        return _NAMES[dtype]
    except KeyError as exc:
        raise ConversionError(f"dtype {dtype} cannot be written to safetensors") from exc


def tensor_nbytes(shape: tuple[int, ...], dtype: torch.dtype) -> int:
    """Bytes a tensor of ``shape`` and ``dtype`` occupies."""
    n = 1
    for d in shape:
        n *= d
    return n * torch.empty((), dtype=dtype).element_size()


def read_header(path: str | os.PathLike) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """Parse a safetensors header without reading tensor data and check the file is complete.

    Raises :class:`CorruptCheckpointError` for a missing, truncated or malformed file, naming the path.
    """
    path = Path(path)
    if path.is_dir():
        raise CorruptCheckpointError(f"{path} is a folder, not a .safetensors file")
    if not path.is_file():
        raise CorruptCheckpointError(f"{path}: no such file")
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) < 8:
                raise CorruptCheckpointError(f"{path}: {size} bytes is too short for a safetensors file")
            (n,) = struct.unpack("<Q", raw)
            if n > _MAX_HEADER or 8 + n > size:
                raise CorruptCheckpointError(f"{path}: header length {n} does not fit in a {size}-byte file")
            header = parse_json(f.read(n), f"{path}: safetensors header")
    except ValueError as exc:
        raise CorruptCheckpointError(f"the safetensors header is not readable ({exc})") from exc
    if not isinstance(header, dict):
        raise CorruptCheckpointError(f"{path}: the safetensors header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    tensors: dict[str, TensorInfo] = {}
    data_size = size - 8 - n
    try:
        for name, entry in header.items():
            start, end = (int(x) for x in entry["data_offsets"])
            dtype = _DTYPES[entry["dtype"]]
            shape = tuple(int(d) for d in entry["shape"])
            if not (0 <= start <= end <= data_size) or end - start != tensor_nbytes(shape, dtype):
                raise CorruptCheckpointError(
                    f"{path}: tensor {name!r} lies outside the data or has the wrong size "
                    f"(offsets {start}-{end}, {data_size} data bytes): the file is truncated or corrupt"
                )
            tensors[name] = TensorInfo(dtype, shape, start, end)
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptCheckpointError(f"{path}: malformed header entry ({exc!r})") from exc
    if tensors and max(t.end for t in tensors.values()) != data_size:
        raise CorruptCheckpointError(f"{path}: data section size does not match the header (truncated or padded)")
    return tensors, {str(k): str(v) for k, v in metadata.items()}


class StreamingReader:
    """Reads tensors one at a time through ``safe_open``.

    ``safe_open`` memory-maps the whole file; pages it touches stay resident (and count in RSS) while the
    map is open, so the reader reopens the file after every ``reopen_bytes`` read to let them go.
    """

    def __init__(self, path: str | os.PathLike, reopen_bytes: int = 1 << 30):
        self.path = str(path)
        self.reopen_bytes = reopen_bytes
        self._stack: contextlib.ExitStack | None = None
        self._handle = None
        self._since_open = 0

    def _open(self):
        self.close()
        self._stack = contextlib.ExitStack()
        try:
            self._handle = self._stack.enter_context(safe_open(self.path, framework="pt", device="cpu"))
        except Exception as exc:  # safetensors raises its own SafetensorError
            self.close()
            raise CorruptCheckpointError(f"{self.path}: cannot be opened as safetensors ({exc})") from exc
        self._since_open = 0

    def get(self, name: str) -> torch.Tensor:
        """Read one tensor (a fresh CPU tensor, not a view of the map)."""
        if self._handle is None or self._since_open >= self.reopen_bytes:
            self._open()
        try:
            t = self._handle.get_tensor(name)
        except Exception as exc:
            raise CorruptCheckpointError(f"{self.path}: reading tensor {name!r} failed ({exc})") from exc
        self._since_open += t.numel() * t.element_size()
        return t

    def close(self) -> None:
        """Release the memory map."""
        if self._stack is not None:
            self._stack.close()
        self._stack, self._handle = None, None

    def __enter__(self) -> StreamingReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class SetReader:
    """Reads tensors of a file set by their canonical names (`files.inspect_set`): one `StreamingReader` per file,
    opened on first use. A single file's set reads exactly as `StreamingReader` does."""

    def __init__(self, sources: dict[str, tuple[Path, str]], reopen_bytes: int = 1 << 30):
        self.sources = sources
        self.reopen_bytes = reopen_bytes
        self._readers: dict[Path, StreamingReader] = {}

    def get(self, name: str) -> torch.Tensor:
        """Read one tensor by its canonical name."""
        path, key = self.sources[name]
        reader = self._readers.get(path)
        if reader is None:
            reader = self._readers[path] = StreamingReader(path, self.reopen_bytes)
        return reader.get(key)

    def close(self) -> None:
        for reader in self._readers.values():
            reader.close()
        self._readers.clear()

    def __enter__(self) -> SetReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?I?B?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


def parse_size(size: int | str) -> int:
    """``"5GB"`` -> 5_000_000_000 (decimal units as in diffusers/transformers; ``GiB`` is binary)."""
    if isinstance(size, int):
        value = size
    else:
        m = _SIZE_RE.match(str(size))
        if not m or m.group(2).upper() not in _UNITS:
            raise ValueError(f"cannot parse size {size!r} (examples: 5GB, 500MB, 2GiB)")
        value = int(float(m.group(1)) * _UNITS[m.group(2).upper()])
    if value <= 0:
        raise ValueError(f"size must be positive, got {size!r}")
    return value


@dataclass
class OutputTensor:
    """One tensor of an output file: its name, dtype and shape."""

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return tensor_nbytes(self.shape, self.dtype)


def plan_shards(tensors: list[OutputTensor], max_shard_bytes: int) -> list[list[OutputTensor]]:
    """Greedy packing in order; a tensor larger than the limit gets a shard of its own."""
    shards: list[list[OutputTensor]] = []
    current: list[OutputTensor] = []
    size = 0
    for t in tensors:
        if current and size + t.nbytes > max_shard_bytes:
            shards.append(current)
            current, size = [], 0
        current.append(t)
        size += t.nbytes
    if current:
        shards.append(current)
    return shards


class SafetensorsStreamWriter:
    """Writes one safetensors file whose header is known before any tensor data.

    Tensors must then be written in the declared order with :meth:`write`; :meth:`close` checks they all came.
    """

    def __init__(self, path: str | os.PathLike, tensors: list[OutputTensor], metadata: dict[str, str] | None = None):
        self.path = Path(path)
        self._expected = list(tensors)
        self._next = 0
        header: dict = {"__metadata__": dict(metadata or {"format": "pt"})}
        offset = 0
        for t in tensors:
            header[t.name] = {"dtype": dtype_name(t.dtype), "shape": list(t.shape), "data_offsets": [offset, offset + t.nbytes]}
            offset += t.nbytes
        raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
        raw += b" " * (-len(raw) % 8)  # safetensors aligns the data section to 8 bytes
        self._file = open(self.path, "wb")
        try:
            self._file.write(struct.pack("<Q", len(raw)))
            self._file.write(raw)
        except BaseException:  # e.g. ENOSPC: no caller holds the writer yet, so close the file here
            self.abort()
            raise

    def write(self, name: str, tensor: torch.Tensor) -> None:
        """Append the bytes of the next declared tensor."""
        exp = self._expected[self._next]
        if name != exp.name or tensor.dtype != exp.dtype or tuple(tensor.shape) != exp.shape:
            raise ConversionError(
                f"writer expected {exp.name} {exp.dtype} {exp.shape}, got {name} {tensor.dtype} {tuple(tensor.shape)}"
            )
        data = tensor.detach().contiguous().reshape(-1)
        if data.numel():
            self._file.write(data.view(torch.uint8).numpy().data)
        self._next += 1

    def close(self) -> None:
        """Flush and close; raises if some declared tensors were never written (call on success only)."""
        if self._file.closed:
            return
        self._file.close()
        if self._next != len(self._expected):
            raise ConversionError(f"{self.path}: {len(self._expected) - self._next} tensors were not written")

    def abort(self) -> None:
        """Close after a failure without any check of its own, so the error in flight is the one reported.

        A second error from closing (e.g. flushing onto a full disk again) is dropped: the file is partial
        and its folder is about to be removed.
        """
        with contextlib.suppress(OSError):
            self._file.close()


WEIGHTS_NAME = "diffusion_pytorch_model"


def shard_file_names(n: int, stem: str = WEIGHTS_NAME) -> list[str]:
    """diffusers' names: one ``stem.safetensors`` or ``stem-0000i-of-0000n.safetensors`` shards."""
    if n == 1:
        return [f"{stem}.safetensors"]
    return [f"{stem}-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]


def write_index(folder: Path, shards: list[list[OutputTensor]], names: list[str], stem: str = WEIGHTS_NAME) -> None:
    """Write ``stem.safetensors.index.json`` (only for more than one shard), as diffusers expects."""
    if len(shards) < 2:
        return
    weight_map = {t.name: name for shard, name in zip(shards, names) for t in shard}
    total = sum(t.nbytes for shard in shards for t in shard)
    with open(folder / f"{stem}.safetensors.index.json", "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2, sort_keys=True)
