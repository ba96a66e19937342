"""Guidance-pass parallel: the passes of a denoising step spread over pass groups, x0 predictions all-gathered.

A step of the full multimodal guider runs up to four passes (conditional, negative, STG-perturbed, modality-
isolated). `ParallelPasses` replaces the per-step pass executor (`transformer.TransformerPasses`): each
pass group runs its share of the step's passes with its own `TransformerPasses` (same batching, same attention
control), then the x0 predictions of all shares are all-gathered over the pass groups, so every rank hands the
guider the same predictions, runs the same combine and holds the same latents. The split is recomputed every
step from the plan, so skip_step, frozen modalities and sigma-scheduled guiders that drop passes just shrink the
shares (a group with no pass that step only takes part in the gather).
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
import torch.distributed as dist

from ..guiders.base import GuidancePass, Prediction, StepPlan
from ..transformer.grouping import group_passes
from .layout import ParallelContext

__all__ = ["ParallelPasses", "assign_passes", "pass_gather_bytes"]


def assign_passes(passes: list[GuidancePass], num_groups: int) -> list[list[GuidancePass]]:
    """Split a step's passes over `num_groups` pass groups (pure function).

    Calls are formed as `transformer.grouping.group_passes` forms them with at most `ceil(n / num_groups)` passes
    per call - passes sharing the blocks before the STG block (conditional and perturbed) stay in one call -
    and the calls are dealt largest first to the group with the fewest passes (ties: lowest index). Every pass
    is in exactly one share; shares may be empty when there are fewer passes than groups.

    Raises:
        ValueError: `num_groups < 1`.
    """
    if isinstance(num_groups, bool) or not isinstance(num_groups, int) or num_groups < 1:
        raise ValueError(f"num_groups must be an integer >= 1, got {num_groups!r}")
    shares: list[list[GuidancePass]] = [[] for _ in range(num_groups)]
    if not passes:
        return shares
    calls = group_passes(list(passes), math.ceil(len(passes) / num_groups))
    for call in sorted(calls, key=len, reverse=True):
        target = min(range(num_groups), key=lambda g: (len(shares[g]), g))
        shares[target].extend(call)
    return shares


def _pass_numel(plan: StepPlan, video_shape, audio_shape) -> int:
    v = math.prod(video_shape) if plan.video else 0
    a = math.prod(audio_shape) if plan.audio else 0
    return v + a


def pass_gather_bytes(shares: list[list[GuidancePass]], plan: StepPlan, video_shape, audio_shape) -> dict:
    """Exact bytes of one step's x0 all-gather (float32), from the shares and the token shapes `(B, N, C)`.

    Returns `{"buffer": bytes each rank contributes (the largest share, padded), "received": bytes each rank
    receives from the others, "total": bytes all ranks receive together}`.
    """
    groups = len(shares)
    largest = max((len(s) for s in shares), default=0)
    buffer = largest * _pass_numel(plan, video_shape, audio_shape) * 4
    received = (groups - 1) * buffer
    return {"buffer": buffer, "received": received, "total": groups * received}


class ParallelPasses:
    """Distributed pass executor: the drop-in for `TransformerPasses` under a `ParallelContext`.

    Args:
        local: this rank's `TransformerPasses` (its batching, attention control and LoRA scale are used for
            the rank's share).
        context: the rank's `ParallelContext` (pass groups; sequence shards when the transformer has sequence
            parallelism enabled).

    Attributes:
        last_shares: the split of the most recent step (for logging and tests).
        bytes_gathered: float32 bytes this rank received in x0 all-gathers so far.
    """

    def __init__(self, local, context: ParallelContext):
        self.local = local
        self.context = context
        self.last_shares: list[list[GuidancePass]] = []
        self.bytes_gathered = 0
        control = getattr(local, "attention_control", None)
        if control is not None and context.layout.sequence > 1:
            control.agree = self._agree_on_shards  # the shared-prefix decision must match on every shard

    def __getattr__(self, name):  # num_calls, transformer, ... of the local executor
        return getattr(self.local, name)

    def _agree_on_shards(self, value: bool) -> bool:
        flag = torch.tensor([1 if value else 0], dtype=torch.int32, device=self.context.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN, group=self.context.shard_group)
        return bool(flag.item())

    def __call__(self, plan: StepPlan, video, audio, contexts, sigma) -> dict[str, Prediction]:
        ctx = self.context
        keyed = list(plan.passes)
        if not self.local.cross_modal:  # grouping keys as the local executor will see them
            keyed = [replace(p, a2v=False, v2a=False) for p in keyed]
        by_name = {p.name: p for p in plan.passes}
        shares = [[by_name[p.name] for p in share] for share in assign_passes(keyed, ctx.layout.passes)]
        self.last_shares = shares
        mine = shares[ctx.pass_index]
        runtime = ctx.runtime
        local: dict[str, Prediction] = {}
        error = None
        with runtime.guard("denoising step"):
            try:
                if ctx.layout.sequence > 1:
                    check_sequence_divisible(video.latent.shape[1], ctx.layout.sequence)
                if mine:
                    local = self.local(replace(plan, passes=tuple(mine)), video, audio, contexts, sigma)
            except Exception as exc:  # noqa: BLE001 - every rank must learn that this one failed
                if isinstance(exc, dist.DistError) or runtime.failure_from_peer() is not None:
                    raise
                runtime.record_failure(exc, "denoising step")
                if ctx.layout.sequence > 1:
                    # shard peers may be blocked inside the transformer's collectives: entering another
                    # collective could pair with theirs; they fail on our exit (or their timeout) and read
                    # the record
                    raise
                error = exc
            runtime.agree(error is None, ctx.clip_group, "denoising step")
        if error is not None:
            raise error
        if ctx.layout.passes == 1:
            return {p.name: local[p.name] for p in plan.passes}
        with runtime.guard("x0 all-gather"):
            gathered = self._gather(shares, local, plan, video.latent.shape, audio.latent.shape)
        return {p.name: gathered[p.name] for p in plan.passes}

    def _gather(self, shares, local, plan: StepPlan, video_shape, audio_shape) -> dict[str, Prediction]:
        ctx = self.context
        per_pass = _pass_numel(plan, video_shape, audio_shape)
        largest = max(len(s) for s in shares)
        device = ctx.device
        buffer = torch.zeros(largest * per_pass, dtype=torch.float32, device=device)
        offset = 0
        for p in shares[ctx.pass_index]:
            for x in (local[p.name].video if plan.video else None, local[p.name].audio if plan.audio else None):
                if x is not None:
                    buffer[offset: offset + x.numel()] = x.reshape(-1).to(device=device, dtype=torch.float32)
                    offset += x.numel()
        received = [torch.empty_like(buffer) for _ in range(ctx.layout.passes)]
        dist.all_gather(received, buffer, group=ctx.pass_group)
        self.bytes_gathered += (ctx.layout.passes - 1) * buffer.numel() * 4
        out: dict[str, Prediction] = {}
        v_n = math.prod(video_shape) if plan.video else 0
        for share, flat in zip(shares, received):
            for k, p in enumerate(share):
                start = k * per_pass
                video = flat[start: start + v_n].view(video_shape) if plan.video else None
                audio = flat[start + v_n: start + per_pass].view(audio_shape) if plan.audio else None
                out[p.name] = Prediction(video=video, audio=audio)
        return out


def check_sequence_divisible(num_tokens: int, shards: int) -> None:
    """Sequence parallelism splits the video tokens (target + appended conditioning) into equal shards.

    Raises:
        ValueError: `num_tokens` is not a multiple of `shards`.
    """
    if num_tokens % shards:
        raise ValueError(f"sequence parallel over {shards} shards needs the number of video tokens to be a multiple "
                         f"of {shards}, got {num_tokens} (target tokens plus appended keyframes / references): "
                         "change the size or frame count, or use --parallel passes")
