"""Which guidance passes go into which transformer call: grouping by shared computation (pure functions).

Two passes share every block before the first STG block when they differ only in their STG perturbation
(same prompt, same audio<->video gates, same frozen streams): `GuidanceAttentionControl` then computes those
blocks once for both. Splitting the passes of a step into calls in plan order can separate such a pair
(`max_batch_passes=2` on [cond, uncond, perturbed, isolated] used to run [cond, uncond] + [perturbed, isolated]);
`group_passes` keeps them together: [cond, perturbed] + [isolated, uncond] (clusters of prefix-sharing passes
packed first-fit-decreasing into calls of at most `max_batch_passes` passes), and orders each call so that rows
with the same treatment are contiguous (the attention control then works on views, not copies); all four in one
call are ordered [isolated, uncond, cond, perturbed].

`auto_batch_passes` picks the largest number of passes per call whose estimated activation memory fits a budget
(`max_batch_passes="auto"`).
"""

from __future__ import annotations

import os
from typing import Sequence

import torch

from ..guiders.base import GuidancePass

AUTO = "auto"


def prefix_key(p: GuidancePass) -> tuple:
    """Passes with equal keys compute the same thing in every block before the first STG block."""
    return (p.negative, p.a2v, p.v2a, p.freeze_video, p.freeze_audio)


def _call_order(p: GuidancePass, cluster_size: int) -> tuple:
    # cross-modal-gated / frozen passes first, prefix-sharing clusters last, unperturbed before perturbed:
    # [isolated, uncond, cond, perturbed] -> the shared rows are one contiguous prefix and every module's
    # FULL rows form one run.
    perturbed = p.perturb_video or p.perturb_audio
    gated = not (p.a2v and p.v2a) or p.freeze_video or p.freeze_audio
    return (not gated, cluster_size > 1, perturbed)


def group_passes(passes: Sequence[GuidancePass], max_batch_passes: int | None) -> list[list[GuidancePass]]:
    """Split `passes` into transformer calls of at most `max_batch_passes` passes (`None`: one call).

    Prefix-sharing passes (equal `prefix_key`) stay in one call whenever the cluster fits; clusters are packed
    first-fit-decreasing (fewest calls for the usual plans); a cluster larger than `max_batch_passes` is split.
    Within a call, passes are ordered so that rows treated alike are contiguous. Every pass appears exactly once.

    Raises:
        ValueError: `max_batch_passes` is not None and < 1.
    """
    passes = list(passes)
    if max_batch_passes is not None and (isinstance(max_batch_passes, bool) or not isinstance(max_batch_passes, int)
                                         or max_batch_passes < 1):
        raise ValueError(f"max_batch_passes must be an integer >= 1, 'auto' or None, got {max_batch_passes!r}")
    if not passes:
        return []
    limit = len(passes) if max_batch_passes is None else max_batch_passes
    clusters: dict[tuple, list[GuidancePass]] = {}
    for p in passes:
        clusters.setdefault(prefix_key(p), []).append(p)
    pieces: list[list[GuidancePass]] = []
    for members in clusters.values():
        pieces += [members[i : i + limit] for i in range(0, len(members), limit)]
    pieces.sort(key=len, reverse=True)  # stable: plan order among equal sizes
    calls: list[list[list[GuidancePass]]] = []
    for piece in pieces:
        target = next((c for c in calls if sum(map(len, c)) + len(piece) <= limit), None)
        if target is None:
            calls.append([piece])
        else:
            target.append(piece)
    out = []
    for call in calls:
        ordered = [(p, len(piece)) for piece in call for p in piece]
        ordered.sort(key=lambda item: _call_order(*item))
        out.append([p for p, _ in ordered])
    return out


def estimate_pass_bytes(transformer, num_video_tokens: int, num_audio_tokens: int, batch_size: int,
                        text_tokens: int = 0) -> int:
    """Rough peak activation memory of one guidance pass (batch `batch_size`) in one transformer call, in bytes.

    Model: inside a block the largest live tensors are the feed-forward hidden layer (4x the width) plus a few
    width-sized residual/normalized copies per token, and - when the attention backend materialises scores
    (math SDPA) - one `heads x N x N` score matrix per row. Weights are not counted (they are shared by all
    passes). The estimate is deliberately generous (x1.5) and documented as an estimate; `max_batch_passes`
    takes an explicit integer when the caller knows better.
    """
    cfg = transformer.config
    v_dim = cfg.num_attention_heads * cfg.attention_head_dim
    a_dim = cfg.audio_num_attention_heads * cfg.audio_attention_head_dim
    itemsize = torch.empty((), dtype=transformer.dtype).element_size()
    per_token = 10  # FF hidden (4x) + ~6 width-sized intermediates
    tokens = num_video_tokens * v_dim + num_audio_tokens * a_dim + text_tokens * (v_dim + a_dim)
    scores = cfg.num_attention_heads * num_video_tokens ** 2 + cfg.audio_num_attention_heads * num_audio_tokens ** 2
    return int(1.5 * batch_size * (per_token * tokens + scores) * itemsize)


def available_memory_bytes(device: torch.device) -> int:
    """Free memory for activations: CUDA's free memory on a CUDA device, else the host's available memory
    (`/proc/meminfo` MemAvailable, else physical memory)."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def auto_batch_passes(num_passes: int, pass_bytes: int, budget_bytes: int) -> int:
    """The largest number of passes per call (1..num_passes) with `n * pass_bytes <= budget_bytes`; at least 1
    (sequential execution is the floor: a single pass runs whatever the estimate says)."""
    if num_passes < 1:
        return 1
    fit = budget_bytes // max(pass_bytes, 1)
    return int(max(1, min(num_passes, fit)))
