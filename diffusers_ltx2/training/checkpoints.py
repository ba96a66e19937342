"""Training checkpoints on disk: the resume state as safetensors + JSON (no pickle), atomic checkpoint folders,
numeric ordering and pruning.

A checkpoint is `output_dir/checkpoints/step_N/` (N zero-padded to at least 5 digits, ordered by its number, so
`step_100000` comes after `step_99999`) holding the LoRA (or full weights) file and `training_state.safetensors`:
every tensor of the state (trainable weights, optimizer moments and step counts) stored under its path
(`weights/<parameter>`, `optimizer/state/<index>/<key>`) and everything else (counters, scheduler state, optimizer
hyper-parameters, the run's settings) as JSON in the file's metadata. Reading it runs no code, whatever the file
holds. A checkpoint written by an earlier version (`training_state.pt`) is read with
`torch.load(weights_only=True)`, which refuses any pickle that would import or call something.

The folder is written under a hidden temporary name and renamed into place only when complete, so a crash or a full
disk never leaves a half-written checkpoint, and no temporary file survives a failure (the error, e.g. ENOSPC, is
raised as an `OSError` naming the checkpoint).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

logger = logging.getLogger(__name__)

__all__ = ["CheckpointError", "TrainingState", "STATE_FILE", "LEGACY_STATE_FILE", "checkpoint_name",
           "list_checkpoints", "find_checkpoint", "write_checkpoint", "prune_checkpoints", "save_state", "load_state",
           "check_finite"]

STATE_FILE = "training_state.safetensors"
LEGACY_STATE_FILE = "training_state.pt"
_FORMAT = "ltx2-training-state/1"
_META_KEY = "ltx2_training_state"
_NAME = re.compile(r"^step_(\d+)$")


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from (unreadable, truncated, unsafe, or made by a different run);
    the message names the file and what does not match."""


@dataclass
class TrainingState:
    """What a checkpoint restores: `weights` (trainable parameter name -> tensor), the optimizer's and the LR
    scheduler's `state_dict`s, `counters` (`step`, `micro_step`) and `run` (the settings the data order and the
    weights' shapes depend on: `num_processes`, `batch_size`, `gradient_accumulation_steps`, LoRA settings...)."""

    weights: dict[str, torch.Tensor]
    optimizer: dict
    scheduler: dict
    counters: dict = field(default_factory=dict)
    run: dict = field(default_factory=dict)


def checkpoint_name(step: int) -> str:
    """`step_00042` (at least five digits; more when the step needs them)."""
    return f"step_{step:05d}"


def list_checkpoints(root: str | os.PathLike) -> list[tuple[int, Path]]:
    """Complete checkpoints under `root` (folders `step_N` holding a state file) as `(N, folder)`, ordered by N."""
    root = Path(root)
    found = []
    if root.is_dir():
        for p in root.iterdir():
            m = _NAME.match(p.name)
            if m and p.is_dir() and ((p / STATE_FILE).is_file() or (p / LEGACY_STATE_FILE).is_file()):
                found.append((int(m.group(1)), p))
    return sorted(found)


def find_checkpoint(where: str | os.PathLike, root: str | os.PathLike) -> Path:
    """The checkpoint folder to resume from: `"latest"` (the highest step under `root`), a checkpoint folder, or
    its state file. Raises `FileNotFoundError`."""
    if str(where) == "latest":
        found = list_checkpoints(root)
        if not found:
            raise FileNotFoundError(f"no checkpoint under {root} to resume from")
        return found[-1][1]
    path = Path(where)
    if path.is_file() and path.name in (STATE_FILE, LEGACY_STATE_FILE):
        return path.parent
    if not ((path / STATE_FILE).is_file() or (path / LEGACY_STATE_FILE).is_file()):
        raise FileNotFoundError(f"{path} holds no {STATE_FILE} (nor a {LEGACY_STATE_FILE} of an earlier version)")
    return path


def _named_os_error(err: OSError, tmp: Path, folder: Path) -> OSError:
    """The same OS error naming the checkpoint `folder` instead of its temporary name (or naming it at all: a write
    error from a file object carries no file name)."""
    if err.errno is None or (err.filename and str(tmp) not in str(err.filename)):
        return err
    where = str(err.filename).replace(str(tmp), str(folder)) if err.filename else str(folder)
    return OSError(err.errno, err.strerror or os.strerror(err.errno), where)


def write_checkpoint(folder: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Create the checkpoint `folder` atomically: `write(tmp)` fills a hidden temporary sibling, which is then
    renamed to `folder` (an existing `folder` is replaced only after that). On any failure the temporary folder is
    removed and an `OSError` names `folder`."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}")
    old = None
    try:
        tmp.mkdir()
        write(tmp)
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(folder, old)
        os.replace(tmp, folder)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not folder.exists():
            os.replace(old, folder)  # put the previous checkpoint back
        named = _named_os_error(err, tmp, folder) if isinstance(err, OSError) else err
        if named is err:
            raise
        raise named from err
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return folder


def prune_checkpoints(root: str | os.PathLike, keep: int, protect: Path | None = None) -> list[Path]:
    """Remove all but the `keep` newest checkpoints (by step number; `keep < 0`: none removed); `protect` (the one
    just written) is never removed. Returns the removed folders."""
    if keep == 0:
        raise ValueError("keep_last_n 0 would remove every checkpoint")
    if keep < 0:
        return []
    folders = [p for _, p in list_checkpoints(root)]
    removed = []
    for old in folders[: max(0, len(folders) - keep)]:
        if protect is not None and old.resolve() == Path(protect).resolve():
            continue
        shutil.rmtree(old, ignore_errors=True)
        removed.append(old)
    return removed


def check_finite(tensors: dict[str, torch.Tensor], what: str) -> None:
    """Raise `ValueError` naming the first tensor with a NaN / inf (nothing non-finite is ever written)."""
    for name, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ValueError(f"refusing to write {what}: {name} holds NaN or inf values")


# -- the state file -------------------------------------------------------------------------------------------
def _pack(obj, path: str, tensors: dict[str, torch.Tensor]):
    """JSON-able form of a state dict; tensors go to `tensors` under their path."""
    if isinstance(obj, torch.Tensor):
        if path in tensors:
            raise TypeError(f"two state entries share the path {path!r}")
        tensors[path] = obj.detach().cpu().contiguous()
        return {"__tensor__": path}
    if isinstance(obj, dict):
        return {"__dict__": [[_pack(k, f"{path}/key", {}), _pack(v, f"{path}/{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_pack(v, f"{path}/{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_pack(v, f"{path}/{i}", tensors) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else {"__float__": repr(obj)}
    raise TypeError(f"cannot store a {type(obj).__name__} ({path}) in a training state")


def _unpack(obj, tensors, source: Path):
    if isinstance(obj, list):
        return [_unpack(v, tensors, source) for v in obj]
    if isinstance(obj, dict):
        if set(obj) == {"__tensor__"}:
            if obj["__tensor__"] not in tensors:
                raise CheckpointError(f"{source}: tensor {obj['__tensor__']!r} is missing from the file")
            return tensors[obj["__tensor__"]]
        if set(obj) == {"__tuple__"}:
            return tuple(_unpack(v, tensors, source) for v in obj["__tuple__"])
        if set(obj) == {"__float__"}:
            return float(obj["__float__"])
        if set(obj) == {"__dict__"}:
            return {_unpack(k, tensors, source): _unpack(v, tensors, source) for k, v in obj["__dict__"]}
        raise CheckpointError(f"{source}: malformed state entry {sorted(obj)[:3]}")
    return obj


def save_state(path: str | os.PathLike, state: TrainingState) -> Path:
    """Write `state` as one safetensors file (tensors) whose metadata holds the rest as JSON. Non-finite weights
    or optimizer moments are refused (`ValueError`); a write error is an `OSError` (e.g. ENOSPC)."""
    from ..conversion.streaming import OutputTensor, SafetensorsStreamWriter

    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    body = {"format": _FORMAT, "counters": state.counters, "run": state.run,
            "weights": _pack(state.weights, "weights", tensors),
            "optimizer": _pack(state.optimizer, "optimizer", tensors),
            "scheduler": _pack(state.scheduler, "scheduler", tensors)}
    check_finite(tensors, f"the training state {path}")
    order = sorted(tensors)
    writer = SafetensorsStreamWriter(path, [OutputTensor(k, tensors[k].dtype, tuple(tensors[k].shape)) for k in order],
                                     {"format": "pt", _META_KEY: json.dumps(body)})
    try:
        for k in order:
            writer.write(k, tensors[k])
        writer.close()
    except BaseException:
        writer.abort()
        raise
    return path


def load_state(folder: str | os.PathLike) -> TrainingState:
    """Read the state of a checkpoint folder without running any code from it. Raises `CheckpointError` (a
    `ValueError`) naming the file for a truncated, malformed or unsafe state."""
    folder = Path(folder)
    path = folder / STATE_FILE
    if not path.is_file() and (folder / LEGACY_STATE_FILE).is_file():
        return _load_legacy(folder / LEGACY_STATE_FILE)
    from safetensors import safe_open

    from ..conversion.errors import ConversionError
    from ..json_files import parse_json
    from ..conversion.streaming import read_header

    try:
        _, meta = read_header(path)  # a truncated or padded file is named here, before any tensor is read
        body = parse_json(meta[_META_KEY], path)
        if body.get("format") != _FORMAT:
            raise CheckpointError(f"{path}: unknown training state format {body.get('format')!r}")
        with safe_open(str(path), framework="pt", device="cpu") as f:  # copies: the optimizer keeps them, and a
            tensors = {k: f.get_tensor(k).clone() for k in f.keys()}  # mapped file could not be pruned cleanly
        weights = _unpack(body["weights"], tensors, path)
        optimizer = _unpack(body["optimizer"], tensors, path)
        scheduler = _unpack(body["scheduler"], tensors, path)
        counters, run = dict(body["counters"]), dict(body["run"])
    except CheckpointError:
        raise
    except (ConversionError, KeyError, TypeError, ValueError, AttributeError, OSError) as err:
        raise CheckpointError(f"{path} is not a readable training state ({err})") from None
    except Exception as err:  # safetensors' own SafetensorError
        raise CheckpointError(f"{path} is not a readable training state ({err})") from None
    if not isinstance(weights, dict) or not isinstance(optimizer, dict) or not isinstance(scheduler, dict):
        raise CheckpointError(f"{path}: malformed training state")
    return TrainingState(weights, optimizer, scheduler, counters, run)


def _load_legacy(path: Path) -> TrainingState:
    """A `training_state.pt` of an earlier version, through torch's weights-only unpickler (no imports, no
    calls: a crafted pickle is refused, never run)."""
    import pickle

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError, AttributeError) as err:
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
        detail = next((ln for ln in lines if "Unsupported" in ln or "global" in ln.lower()), lines[-1] if lines else
                      type(err).__name__).split(" Please use")[0]
        raise CheckpointError(f"{path} is refused: it is not a plain weights-only state (torch.load with "
                              f"weights_only=True: {detail})") from None
    try:
        return TrainingState(dict(state["weights"]), state["optimizer"], state["scheduler"],
                             {"step": int(state["step"]), "micro_step": int(state["micro_step"])},
                             {"num_processes": int(state["num_processes"])})
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: malformed training state ({err!r})") from None
