"""Start N gloo ranks on this machine, as a launcher would, and collect what each returned or raised.

Each rank is a separate `spawn`ed process with RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT set
(what torchrun sets), running `module:function(*args)`; its return value (or its exception's type and message)
comes back through a file. Ranks are watched individually, so a test can see rank 0's error after another rank
died, and a rank still running after `timeout` is killed and reported as timed out.
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import socket
import tempfile
import time
import traceback
from pathlib import Path

import torch


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _child(target: str, rank: int, world: int, port: int, args: tuple, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    torch.set_num_threads(1)
    start = time.monotonic()
    try:
        module, name = target.split(":")
        result = getattr(importlib.import_module(module), name)(*args)
        record = {"ok": True, "result": result}
    except BaseException as exc:  # noqa: BLE001 - reported to the test
        record = {"ok": False, "type": type(exc).__name__, "message": str(exc),
                  "traceback": traceback.format_exc()[-4000:]}
    record["elapsed"] = time.monotonic() - start
    torch.save(record, out)
    try:
        import torch.distributed as dist

        if dist.is_initialized() and record["ok"]:
            dist.destroy_process_group()
    except Exception:  # noqa: BLE001
        pass


def run_ranks(target: str, world: int, *args, timeout: float = 600.0) -> list[dict]:
    """Run `target` ("module:function") on `world` ranks; one dict per rank: `ok`, `result` or `type` /
    `message` / `traceback`, `elapsed` (seconds inside the rank), `exitcode`, `timed_out`."""
    ctx = multiprocessing.get_context("spawn")
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        outs = [str(Path(tmp) / f"rank{r}.pt") for r in range(world)]
        procs = [ctx.Process(target=_child, args=(target, r, world, port, args, outs[r]), daemon=True)
                 for r in range(world)]
        for p in procs:
            p.start()
        deadline = time.monotonic() + timeout
        for p in procs:
            p.join(max(0.0, deadline - time.monotonic()))
        results = []
        for r, p in enumerate(procs):
            timed_out = p.is_alive()
            if timed_out:
                p.kill()
                p.join()
            record = torch.load(outs[r], weights_only=False) if os.path.exists(outs[r]) else {"ok": False}
            record.update(exitcode=p.exitcode, timed_out=timed_out)
            results.append(record)
        return results


def unwrap(results: list[dict]) -> list:
    """The ranks' return values; AssertionError with every failed rank's traceback otherwise."""
    failed = [f"rank {r}: {res.get('traceback') or res}" for r, res in enumerate(results) if not res["ok"]]
    assert not failed, "\n".join(failed)
    return [res["result"] for res in results]
