"""One `torch.distributed` process group for a several-rank LTX-2 job, and errors that name the failing rank.

Launchers: `torchrun --nproc-per-node N ...` and `accelerate launch --num_processes N ...` both start one process
per rank with `RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR` and `MASTER_PORT` set; `init_distributed` reads
them (`init_method="env://"`). Backend: NCCL when CUDA is available, else gloo (CPU).

Failures. Every collective of this package waits at most `timeout_s` (the process group's timeout, which gloo
applies to each collective and NCCL's watchdog enforces). A rank that raises records `"<where>: <Type>: <message>"`
in the process group's key-value store before it re-raises; a rank whose collective then fails (peer gone,
timeout) or whose status exchange reports a failed peer raises `RankFailedError` naming that rank and carrying its
message, so rank 0 prints the real cause. A rank that dies without raising (killed, segfault) leaves no record:
the others raise `PeerLostError` when their collective errors out (at once when gloo sees the closed connection,
else after the timeout).
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from .launch import LaunchEnv, launch_env  # noqa: F401 (LaunchEnv re-exported: its home before `launch`)

DEFAULT_TIMEOUT_S = 600.0
_FAILURE_KEY = "ltx2/failed/{rank}"


class DistributedJobError(RuntimeError):
    """Base of the errors a rank raises because of another rank."""


class RankFailedError(DistributedJobError):
    """Another rank raised; `rank` and `message` ("<where>: <Type>: <text>") say which and why."""

    def __init__(self, rank: int, message: str):
        super().__init__(f"rank {rank} failed: {message}")
        self.rank = rank
        self.message = message


class PeerLostError(DistributedJobError):
    """A collective failed and no rank recorded an error (a process died, or hung past the timeout)."""


@dataclass
class Runtime:
    """The initialized process group as this process sees it.

    Attributes:
        rank, world_size: global rank and number of ranks.
        device: this rank's device (`cuda:<LOCAL_RANK>` under NCCL, `cpu` under gloo).
        backend: "nccl" or "gloo".
        timeout_s: the process group's timeout in seconds.
    """

    rank: int
    world_size: int
    device: torch.device
    backend: str
    timeout_s: float

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # -- failure records ------------------------------------------------------------------------------------
    def _store(self):
        try:
            return dist.distributed_c10d._get_default_store()
        except (RuntimeError, ValueError, AttributeError):
            return None

    def record_failure(self, exc: BaseException, where: str) -> None:
        """Write this rank's failure into the store (best effort: a broken store is ignored)."""
        store = self._store()
        if store is None:
            return
        text = f"{where}: {type(exc).__name__}: {exc}".replace("\n", " ")[:2000]
        with contextlib.suppress(Exception):
            store.set(_FAILURE_KEY.format(rank=self.rank), text)

    def reported_failures(self, wait_s: float = 0.0) -> dict[int, str]:
        """Failures other ranks recorded, `{rank: message}`; polls up to `wait_s` seconds for a first one."""
        store = self._store()
        if store is None:
            return {}
        deadline = time.monotonic() + wait_s
        while True:
            found = {}
            for r in range(self.world_size):
                key = _FAILURE_KEY.format(rank=r)
                if r == self.rank:
                    continue
                with contextlib.suppress(Exception):
                    if store.check([key]):
                        found[r] = store.get(key).decode("utf-8", "replace")
            if found or time.monotonic() >= deadline:
                return found
            time.sleep(0.05)

    def failure_from_peer(self, wait_s: float = 0.0) -> RankFailedError | None:
        found = self.reported_failures(wait_s)
        if not found:
            return None
        rank = min(found)
        return RankFailedError(rank, found[rank])

    @contextlib.contextmanager
    def guard(self, where: str):
        """Run a section that makes collectives: an exception becomes `RankFailedError` when another rank recorded
        a failure, `PeerLostError` when a collective failed with no record; any other exception of this rank is
        recorded (so the others can name it) and re-raised unchanged."""
        try:
            yield
        except DistributedJobError:
            raise
        except Exception as exc:
            peer = self.failure_from_peer(wait_s=1.0 if is_communication_error(exc) else 0.0)
            if peer is not None:
                raise peer from exc
            if is_communication_error(exc):
                raise PeerLostError(
                    f"{where}: a collective failed and no rank reported an error (a rank died or stopped answering "
                    f"within the {self.timeout_s:g} s timeout): {exc}"
                ) from exc
            self.record_failure(exc, where)
            raise

    def agree(self, ok: bool, group=None, where: str = "") -> None:
        """Status exchange over `group` (default: every rank): returns when every member is ok; else raises
        `RankFailedError` naming a failed member (this rank's own error is the caller's to raise)."""
        flag = torch.tensor([0 if ok else 1], dtype=torch.int32, device=self.device)
        with self.guard(where or "status exchange"):
            dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=group)
        if ok and int(flag.item()):
            peer = self.failure_from_peer(wait_s=min(self.timeout_s, 10.0))
            raise peer or PeerLostError(f"{where}: a rank failed without recording why")


def is_communication_error(exc: BaseException) -> bool:
    """Whether `exc` comes from a collective whose peer vanished or timed out (gloo / NCCL / store errors)."""
    dist_error = getattr(dist, "DistError", ())
    if dist_error and isinstance(exc, dist_error):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(
        marker in text for marker in ("connection closed", "connection reset", "timed out", "timeout", "gloo",
                                      "nccl", "broken pipe", "socket"))


def init_distributed(*, backend: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S,
                     allow_single: bool = False) -> Runtime:
    """Initialize (or adopt) the default process group from the launcher's environment.

    Args:
        backend: "nccl" / "gloo"; default NCCL when CUDA is available, else gloo.
        timeout_s: collective timeout in seconds (> 0): a rank that stops answering ends the job after it.
        allow_single: without a launcher environment, make a one-rank gloo group in memory (a prompt list run as
            a plain process) instead of raising.

    Returns:
        `Runtime` of this process. An already initialized group (e.g. by `accelerate`) is used as it is.

    Raises:
        ValueError: bad `timeout_s` / `backend`, or no launcher environment (not started by torchrun /
            accelerate), no initialized group and not `allow_single`.
    """
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
    if backend not in (None, "nccl", "gloo"):
        raise ValueError(f"backend must be 'nccl' or 'gloo', got {backend!r}")
    if not dist.is_initialized():
        env = launch_env()
        if env is None and allow_single:
            dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1,
                                    timeout=timedelta(seconds=timeout_s))
            return Runtime(rank=0, world_size=1, device=torch.device("cpu"), backend="gloo",
                           timeout_s=float(timeout_s))
        if env is None:
            raise ValueError("no process group: start the job with `torchrun --nproc-per-node N` or "
                             "`accelerate launch --num_processes N` (they set RANK / WORLD_SIZE)")
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        if backend == "nccl":
            torch.cuda.set_device(env.local_rank)
        dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
    backend = dist.get_backend()
    local = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
    device = torch.device("cuda", local) if backend == "nccl" else torch.device("cpu")
    return Runtime(rank=dist.get_rank(), world_size=dist.get_world_size(), device=device, backend=backend,
                   timeout_s=float(timeout_s))
