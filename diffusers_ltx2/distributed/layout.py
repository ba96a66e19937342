"""How the ranks of a job are arranged: clip groups x pass groups x sequence shards.

A job of `world_size` ranks makes clips in `world_size / layout.size` independent *clip groups* (a prompt list is
spread over them; one clip uses one group). Inside a clip group of `passes * sequence` ranks, rank
`(p, s)` runs the guidance passes of pass group `p` (`passes.assign_passes`) on sequence shard `s` of the video
tokens (`sequence.enable_sequence_parallel`). Global rank = `(clip_group * passes + p) * sequence + s`, so the
ranks of one sequence group are neighbours (one node, fast links) and pass groups come next.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # this module is imported by the CLI parser: no torch at import
    import torch

    from .runtime import Runtime

MODES = ("passes", "sequence", "passes+sequence")
SEQUENCE_ATTENTION = ("auto", "ulysses", "ring", "allgather")


@dataclass(frozen=True)
class ParallelLayout:
    """Ranks per clip: `passes` pass groups x `sequence` shards (both >= 1).

    `sequence_attention` (used when `sequence > 1`): how the video self-attention of a shard reaches the other
    shards' tokens. "ulysses" / "ring": diffusers' context-parallel attention (`ContextParallelConfig`; Ulysses
    needs the video and the audio head counts divisible by `sequence`; ring needs an attention backend that
    returns the log-sum-exp, i.e. flash / cuDNN / sage on CUDA, not PyTorch's native SDPA); "allgather": every
    shard gathers the other shards' normalized hidden states as keys/values (any backend, any head count);
    "auto": Ulysses when the heads divide, else allgather.
    """

    passes: int = 1
    sequence: int = 1
    sequence_attention: str = "auto"

    def __post_init__(self):
        for name in ("passes", "sequence"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if self.sequence_attention not in SEQUENCE_ATTENTION:
            raise ValueError(f"sequence_attention must be one of {SEQUENCE_ATTENTION}, got {self.sequence_attention!r}")

    @property
    def size(self) -> int:
        """Ranks one clip uses."""
        return self.passes * self.sequence

    @classmethod
    def from_mode(cls, mode: str | None, ranks: int, sequence_attention: str = "auto") -> "ParallelLayout":
        """The layout of `ltx2 generate --parallel MODE` over `ranks` ranks per clip.

        "passes": `ranks` pass groups; "sequence": `ranks` shards; "passes+sequence": 2 pass groups x
        `ranks / 2` shards (`ranks` even and >= 4); `None`: one rank per clip (prompt lists only).

        Raises:
            ValueError: unknown mode, or a rank count the mode cannot use.
        """
        if mode is None:
            return cls(1, 1, sequence_attention)
        if mode not in MODES:
            raise ValueError(f"--parallel must be one of {', '.join(MODES)}, got {mode!r}")
        if ranks < 2:
            raise ValueError(f"--parallel {mode} needs at least 2 ranks, the job has {ranks}")
        if mode == "passes":
            return cls(ranks, 1, sequence_attention)
        if mode == "sequence":
            return cls(1, ranks, sequence_attention)
        if ranks % 2 or ranks < 4:
            raise ValueError(f"--parallel passes+sequence runs 2 pass groups x N/2 shards: it needs an even number "
                             f">= 4 of ranks, the job has {ranks}")
        return cls(2, ranks // 2, sequence_attention)

    def coordinates(self, rank: int) -> tuple[int, int, int]:
        """`(clip_group, pass_group, shard)` of global `rank`."""
        return rank // self.size, (rank // self.sequence) % self.passes, rank % self.sequence

    def describe(self) -> str:
        parts = []
        if self.passes > 1:
            parts.append(f"{self.passes} pass groups")
        if self.sequence > 1:
            parts.append(f"{self.sequence} sequence shards ({self.sequence_attention})")
        return " x ".join(parts) or "one rank per clip"


@dataclass
class ParallelContext:
    """This rank's place in the layout and the process groups it talks over.

    Attributes:
        runtime: the initialized `Runtime`.
        layout: the `ParallelLayout`.
        clip_index, pass_index, shard_index: this rank's coordinates (`ParallelLayout.coordinates`).
        num_clip_groups: `world_size / layout.size`.
        clip_ranks / clip_group: the ranks making this rank's clips.
        pass_ranks / pass_group: the ranks of this clip group with this shard index, one per pass group
            (x0 predictions are all-gathered over them).
        shard_ranks / shard_group: the ranks of this pass group, one per sequence shard.
        mesh: the `DeviceMesh` ("replica", "ring", "ulysses") diffusers' context parallelism runs on, or `None`.
    """

    runtime: "Runtime"
    layout: ParallelLayout
    clip_index: int
    pass_index: int
    shard_index: int
    num_clip_groups: int
    clip_ranks: list[int]
    pass_ranks: list[int]
    shard_ranks: list[int]
    clip_group: object = None
    pass_group: object = None
    shard_group: object = None
    mesh: object = field(default=None, repr=False)

    @property
    def device(self) -> "torch.device":
        return self.runtime.device

    @property
    def clip_leader(self) -> int:
        """Global rank that encodes prompts and writes the files of this clip group."""
        return self.clip_ranks[0]

    @property
    def is_clip_leader(self) -> bool:
        return self.runtime.rank == self.clip_leader


def _new_group(ranks: list[int]):
    import torch.distributed as dist

    return dist.new_group(ranks)


def build_context(runtime: "Runtime", layout: ParallelLayout) -> ParallelContext:
    """Create the process groups of `layout` (every rank must call this, in the same order of calls).

    Raises:
        ValueError: the world size is not a multiple of `layout.size`.
    """
    world = runtime.world_size
    if world % layout.size:
        raise ValueError(f"the job has {world} ranks, not a multiple of the {layout.size} ranks per clip "
                         f"({layout.describe()})")
    clips = world // layout.size
    P, S = layout.passes, layout.sequence
    rank_of = lambda c, p, s: (c * P + p) * S + s  # noqa: E731
    mine = layout.coordinates(runtime.rank)
    groups: dict[str, tuple[list[int], object]] = {}
    # every rank creates every group, in one order (torch.distributed requires it)
    for c in range(clips):
        ranks = [rank_of(c, p, s) for p in range(P) for s in range(S)]
        g = _new_group(ranks)
        if c == mine[0]:
            groups["clip"] = (ranks, g)
        for s in range(S):
            ranks = [rank_of(c, p, s) for p in range(P)]
            g = _new_group(ranks)
            if (c, s) == (mine[0], mine[2]):
                groups["pass"] = (ranks, g)
        for p in range(P):
            ranks = [rank_of(c, p, s) for s in range(S)]
            g = _new_group(ranks)
            if (c, p) == (mine[0], mine[1]):
                groups["shard"] = (ranks, g)
    mesh = None
    if S > 1:
        from torch.distributed.device_mesh import init_device_mesh

        ring = S if layout.sequence_attention == "ring" else 1
        mesh = init_device_mesh(runtime.device.type, (world // S, ring, S // ring),
                                mesh_dim_names=("replica", "ring", "ulysses"))
    return ParallelContext(
        runtime=runtime, layout=layout, clip_index=mine[0], pass_index=mine[1], shard_index=mine[2],
        num_clip_groups=clips, clip_ranks=groups["clip"][0], clip_group=groups["clip"][1],
        pass_ranks=groups["pass"][0], pass_group=groups["pass"][1], shard_ranks=groups["shard"][0],
        shard_group=groups["shard"][1], mesh=mesh,
    )
