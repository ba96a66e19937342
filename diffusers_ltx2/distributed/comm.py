"""Communication bytes: counted at every collective from its tensors' shapes (`CommCounter`), and the per-step
formulas of the two layouts (`sequence_call_bytes`; the x0 all-gather is `passes.pass_gather_bytes`).

Bytes are what one rank *receives* in the collective's logical data movement: all-gather `(n - 1) x` its
input, all-to-all `(n - 1) / n` of its input, broadcast the tensor on every rank but the source, all-reduce
`(n - 1) x` its input (a status flag of 4 bytes here). Wire traffic of a particular algorithm (ring, tree) is a
small multiple of these.
"""

from __future__ import annotations

import contextlib
from collections import Counter

import torch
import torch.distributed as dist

__all__ = ["CommCounter", "sequence_call_bytes"]


def _size(group) -> int:
    try:
        return dist.get_world_size(group)
    except (RuntimeError, ValueError, TypeError):
        return dist.get_world_size()


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


class CommCounter:
    """Context manager counting the bytes this rank receives in collectives, by kind (`bytes["all_gather"]`, ...),
    including diffusers' context-parallel all-to-all and all-gather. `calls` counts the collectives."""

    def __init__(self):
        self.bytes: Counter = Counter()
        self.calls: Counter = Counter()
        self._stack = contextlib.ExitStack()

    def _add(self, kind: str, n: int) -> None:
        self.bytes[kind] += int(n)
        self.calls[kind] += 1

    @property
    def total(self) -> int:
        return sum(self.bytes.values())

    def __enter__(self):
        from diffusers.models import attention_dispatch
        from torch.distributed import _functional_collectives as funcol

        counter = self

        def wrap(owner, name, received):
            original = getattr(owner, name)

            def counted(*args, **kwargs):
                counter._add(name, received(*args, **kwargs))
                return original(*args, **kwargs)

            setattr(owner, name, counted)
            self._stack.callback(setattr, owner, name, original)

        wrap(dist, "all_gather", lambda out, t, group=None, **kw: (_size(group) - 1) * _nbytes(t))
        wrap(dist, "all_reduce", lambda t, op=None, group=None, **kw: (_size(group) - 1) * _nbytes(t))
        wrap(dist, "broadcast", lambda t, src, group=None, **kw: 0 if dist.get_rank() == src else _nbytes(t))
        wrap(funcol, "all_gather_tensor",
             lambda t, gather_dim, group, **kw: (_size(group) - 1) * _nbytes(t))
        wrap(attention_dispatch, "_all_to_all_single",
             lambda x, group, **kw: _nbytes(x) * (_size(group) - 1) // _size(group))
        return self

    def __exit__(self, *exc):
        self._stack.close()
        return False


def sequence_call_bytes(config, *, rows: int, video_tokens: int, audio_tokens: int, shards: int, itemsize: int,
                        attention: str = "ulysses") -> dict[str, int]:
    """Bytes one rank receives in one transformer call under sequence parallelism, every row computing every
    module (no STG / isolation rows, no shared prefix) and no attention mask (pure function).

    Args:
        config: the transformer's config (`num_attention_heads`, `attention_head_dim`, `audio_num_attention_heads`,
            `audio_attention_head_dim`, `audio_cross_attention_dim`, `out_channels`, `num_layers`), a mapping or an
            object.
        rows: batch rows of the call (passes x videos); video_tokens: all video tokens (a multiple of `shards`);
            audio_tokens: the audio tokens (whole on every shard).
        itemsize: bytes per model-dtype element (the RoPE tables are float32).
        attention: "ulysses" or "allgather" (how `attn1` and `video_to_audio_attn` cross shards).

    Returns:
        `{"attn1": ..., "v2a": ..., "rope": ..., "proj_out": ..., "total": ...}`.
    """
    get = (lambda k: config[k]) if isinstance(config, dict) else (lambda k: getattr(config, k))
    s = shards
    local = rows * (video_tokens // s)
    width = get("num_attention_heads") * get("attention_head_dim")
    audio_width = get("audio_num_attention_heads") * get("audio_attention_head_dim")
    blocks = get("num_layers")

    def all_to_all(numel: int) -> int:
        return (numel * itemsize) * (s - 1) // s

    if attention == "ulysses":
        attn1 = 4 * all_to_all(local * width) * blocks  # q, k, v of the local tokens, the output back
        # audio queries (whole) and the output back; video keys / values projected to the audio width
        v2a = (2 * all_to_all(rows * audio_tokens * audio_width) + 2 * all_to_all(local * audio_width)) * blocks
        rope = 0
    else:  # the local normalized video hidden states to every other shard, the RoPE tables once per call
        attn1 = (s - 1) * local * width * itemsize * blocks
        v2a = (s - 1) * local * width * itemsize * blocks
        rope = 2 * (s - 1) * local * (width // 2 + get("audio_cross_attention_dim") // 2) * 4
    proj_out = (s - 1) * local * get("out_channels") * itemsize
    total = attn1 + v2a + rope + proj_out
    return {"attn1": attn1, "v2a": v2a, "rope": rope, "proj_out": proj_out, "total": total}
