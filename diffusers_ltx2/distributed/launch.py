"""What a launcher (torchrun / accelerate launch) told this process, read from the environment without importing
torch: the CLI checks the rank layout in its check stage, before the heavy imports (`cli.parallel`)."""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["LaunchEnv", "launch_env"]

_ENV_NAMES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class LaunchEnv:
    """What a launcher told this process: its global `rank`, the `world_size` and its `local_rank` on the node."""

    rank: int
    world_size: int
    local_rank: int


def launch_env(environ=None) -> LaunchEnv | None:
    """The torchrun / accelerate variables of `environ` (default `os.environ`); `None` when `WORLD_SIZE` is unset
    (a plain single-process run).

    Raises:
        ValueError: a variable is missing or malformed (not an integer, rank outside `[0, WORLD_SIZE)`).
    """
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" not in env:
        return None
    missing = [name for name in _ENV_NAMES if not env.get(name)]
    if missing:
        raise ValueError(f"WORLD_SIZE is set but {', '.join(missing)} is not: launch with `torchrun "
                         "--nproc-per-node N` or `accelerate launch --num_processes N`")
    try:
        rank, world, local = int(env["RANK"]), int(env["WORLD_SIZE"]), int(env["LOCAL_RANK"])
    except ValueError:
        raise ValueError(f"RANK / WORLD_SIZE / LOCAL_RANK must be integers, got {env['RANK']!r}, "
                         f"{env['WORLD_SIZE']!r}, {env['LOCAL_RANK']!r}") from None
    if world < 1 or not 0 <= rank < world or local < 0:
        raise ValueError(f"RANK {rank} is not in [0, WORLD_SIZE={world}) or LOCAL_RANK {local} < 0")
    return LaunchEnv(rank, world, local)
