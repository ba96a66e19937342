"""The conversion's output folder: refused when it could destroy data, replaced crash-safely.

Rules (checked before anything is written):

- a destination that is, or contains, one of the conversion's sources (the checkpoint, a ``--gemma``
  folder) is refused, with or without ``overwrite``: replacing it would delete the source;
- an existing destination is replaced only with ``overwrite``, and only when it is a folder this tool
  wrote (it holds a ``model_index.json`` naming an LTX-2 pipeline) - never an arbitrary folder, a file or
  a symbolic link.

The new output is assembled in a hidden sibling folder. On success it takes the destination's place with one
atomic ``renameat2(RENAME_EXCHANGE)`` on Linux (so no moment exists without a destination, even on a crash),
falling back to two renames with rollback elsewhere; Ctrl-C during that final step and during cleanup is held
back until the folder is consistent, then re-raised. A cleanup that fails is reported (a warning naming the
leftover path, or a note on the error in flight), never ignored.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import sys
import threading
import uuid
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

from .._plain_diffusers import class_name_of
from ..json_files import read_json
from .errors import ConversionError

#: ``_class_name`` values of a folder this package writes (``ltx2 convert`` / ``save_pretrained``).
PIPELINE_CLASSES = ("LTX2AudioVideoPipeline", "LTX2ICLoRAPipeline")


def _inside(path: Path, folder: Path) -> bool:
    """True when ``path`` is ``folder`` or lies below it (both resolved)."""
    return path == folder or folder in path.parents


def is_converted_folder(folder: Path) -> bool:
    """True when ``folder`` is a real folder whose ``model_index.json`` names an LTX-2 pipeline."""
    index = folder / "model_index.json"
    if folder.is_symlink() or not folder.is_dir() or not index.is_file():
        return False
    try:
        return class_name_of(read_json(index)) in PIPELINE_CLASSES
    except (OSError, ValueError, AttributeError):
        return False


def check_destination(dst: str | os.PathLike, sources: Iterable[str | os.PathLike] = (), *,
                      overwrite: bool = False) -> Path:
    """Refuse a destination whose (re)placement could destroy data; returns ``dst`` as an absolute path.

    Raises:
        ConversionError: ``dst`` is or contains a source; ``dst`` exists without ``overwrite``; or ``dst``
            exists and is not a folder written by this tool (a file, a symlink, a folder without an LTX-2
            ``model_index.json``).
    """
    dst = Path(dst).absolute()
    real = Path(os.path.realpath(dst))
    for src in sources:
        src_real = Path(os.path.realpath(src))
        if _inside(src_real, real):
            raise ConversionError(
                f"the destination {dst} {'is' if src_real == real else 'contains'} the source {src}: "
                "writing there could destroy it; choose a new folder"
            )
    if not (dst.exists() or dst.is_symlink()):
        return dst
    if not overwrite:
        raise ConversionError(f"{dst} already exists (pass overwrite=True / --overwrite to replace it)")
    if dst.is_symlink() or not dst.is_dir():
        kind = "a symbolic link" if dst.is_symlink() else "a file"
        raise ConversionError(f"{dst} is {kind}; --overwrite only replaces a folder written by ltx2 convert")
    if not is_converted_folder(dst):
        raise ConversionError(
            f"{dst} is not a folder written by ltx2 convert (no model_index.json naming an LTX-2 pipeline); "
            "--overwrite never replaces other folders: choose a new folder or remove it yourself"
        )
    return dst


@contextlib.contextmanager
def deferred_interrupt() -> Iterator[None]:
    """Hold back SIGINT (Ctrl-C) inside the block and raise ``KeyboardInterrupt`` after it.

    Only in the main thread (elsewhere Python delivers no SIGINT, and the block runs as is).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux ``renameat2``); False when that did not happen for any reason (no such
    call, a file system without exchange, a sandbox refusing the call): the caller then uses plain renames,
    which report a real error themselves."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0


def _remove_tree(path: Path) -> list[str]:
    """``rmtree`` that returns its failures (``"path: error"``) instead of ignoring them."""
    failures: list[str] = []

    def record(func, failed, error):
        failures.append(f"{failed}: {error[1] if isinstance(error, tuple) else error}")

    if path.exists() or path.is_symlink():
        if sys.version_info >= (3, 12):
            shutil.rmtree(path, onexc=record)
        else:
            shutil.rmtree(path, onerror=record)
    return failures


def _replace(tmp: Path, dst: Path) -> Path | None:
    """Put ``tmp`` at ``dst``; returns the path now holding the old output (to remove), if any."""
    if not dst.exists():
        os.rename(tmp, dst)
        return None
    if _exchange(tmp, dst):
        return tmp
    old = dst.parent / f".{dst.name}.old-{uuid.uuid4().hex[:8]}"
    os.rename(dst, old)
    try:
        os.rename(tmp, dst)
    except BaseException:
        os.rename(old, dst)  # roll back: the old output returns to its place
        raise
    return old


@contextlib.contextmanager
def atomic_output_dir(dst: str | os.PathLike, overwrite: bool = False,
                      sources: Iterable[str | os.PathLike] = ()) -> Iterator[Path]:
    """Yield a temporary sibling folder that becomes ``dst`` only if the block finishes.

    ``dst`` is checked first with :func:`check_destination` (``sources``: paths the conversion reads).
    Any exception, including ``KeyboardInterrupt``, removes the temporary folder and leaves ``dst`` as it was;
    the original exception propagates (a failed cleanup is added to it as a note). An existing ``dst`` is
    replaced only after success, atomically where the system allows.
    """
    dst = check_destination(dst, sources, overwrite=overwrite)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.parent / f".{dst.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        check_destination(dst, sources, overwrite=overwrite)  # unchanged while we were writing?
        with deferred_interrupt():
            old = _replace(tmp, dst)
            failures = _remove_tree(old) if old is not None else []
    except BaseException as exc:
        with deferred_interrupt():
            failures = _remove_tree(tmp)
        if failures:
            note = "could not remove the partial output: " + "; ".join(failures[:5])
            if hasattr(exc, "add_note"):  # Python >= 3.11
                exc.add_note(note)
            else:
                warnings.warn(note, RuntimeWarning, stacklevel=3)
        raise
    if failures:
        warnings.warn(f"{dst} was written, but the previous output could not be removed completely: "
                      + "; ".join(failures[:5]), RuntimeWarning, stacklevel=3)
