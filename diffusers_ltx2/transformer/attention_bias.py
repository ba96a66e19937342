"""Additive video self-attention bias on diffusers' `LTX2VideoTransformer3DModel`, official semantics.

The official IC-LoRA code (ltx-core `ConditioningItemAttentionStrengthWrapper`) describes how strongly appended
reference tokens and generated tokens see each other with a `[0, 1]` matrix `M` of shape `(B, N, N)` and
adds `log(M)` to the self-attention scores (`M == 0` -> the dtype's most negative value; the states hold that
bias, built by `latents.attention`). diffusers'
`video_self_attention_mask` instead adds `-10000 * (1 - M)`, which agrees only at 0 and 1, so this package
never uses it: `self_attention_bias` installs the official bias directly.

How it is installed (only during one transformer call, everything restored on exit):

- a forward pre-hook on `attn1` of every block puts the bias into the `attention_mask` argument, expanded to
  the rows of that call (guidance passes are stacked pass-major, so row `r` belongs to sample `r % B`; this
  also holds when rows are merged by `transformer.attention`'s shared prefix). Because it acts on the module's
  arguments and not on its processor, it composes with any processor, including the per-row STG / gating
  wrappers of `transformer.attention.GuidanceAttentionControl` in either nesting order: rows computed with the
  STG value path skip Q/K attention and so ignore the bias, rows computed with attention receive their slice;
- `prepare_attention_mask` of those modules broadcasts the `(rows, 1, N, N)` bias over heads as a view, so
  the mask is never materialized per head (diffusers' default repeats it `heads` times).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

__all__ = ["self_attention_bias"]


def _rows(bias: torch.Tensor, num_rows: int) -> torch.Tensor:
    """`(B, N, N)` bias -> `(num_rows, 1, N, N)`, row `r` taking sample `r % B`."""
    b = bias.shape[0]
    if num_rows % b:
        raise RuntimeError(f"self-attention bias for {b} samples cannot cover a batch of {num_rows} rows")
    out = bias.unsqueeze(1)
    if num_rows == b:
        return out
    if b == 1:
        return out.expand(num_rows, -1, -1, -1)
    return out.repeat(num_rows // b, 1, 1, 1)


@contextmanager
def self_attention_bias(transformer, bias: torch.Tensor | None):
    """Add `bias` (`(B, N, N)`, float32, additive) to the video self-attention scores of every block of
    `transformer` for the calls made inside this context. `None` is a no-op."""
    if bias is None:
        yield
        return
    model = getattr(transformer, "_orig_mod", transformer)
    dtype = next(model.parameters()).dtype
    finfo = torch.finfo(dtype)
    cache: dict = {}

    # under sequence parallelism (`diffusers_ltx2.distributed.sequence`) a shard holds the queries
    # `index * n : (index + 1) * n` of the video and attends to all keys: it takes those rows of the bias
    shard = getattr(model, "_ltx2_sequence_shard", None)

    def rows_for(num_rows: int, device, n: int) -> torch.Tensor:
        key = (num_rows, device, n)
        if key not in cache:
            local = bias if shard is None else bias.narrow(1, shard.index * n, n)
            cast = local.to(device=device).clamp(min=finfo.min).to(dtype)
            cache[key] = _rows(cast, num_rows)
        return cache[key]

    def pre_hook(module, args, kwargs):
        hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        n = hidden.shape[1]
        total = n * (shard.size if shard is not None else 1)
        if bias.shape[-1] != total:
            raise RuntimeError(f"self-attention bias covers {bias.shape[-1]} tokens but the video has {total}")
        extra = rows_for(hidden.shape[0], hidden.device, n)
        existing = kwargs.get("attention_mask")
        if existing is None and len(args) > 2:
            existing = args[2]
        if existing is not None:  # a caller-provided additive (B, N, N) mask: combine both
            if shard is not None:
                raise RuntimeError("a caller's video self-attention mask cannot be combined with the bias under "
                                   "sequence parallelism")
            extra = extra + existing.reshape(existing.shape[0], -1, n, n).to(extra.dtype)
        kwargs = dict(kwargs)
        if len(args) > 2:
            args = args[:2] + (extra,) + args[3:]
        else:
            kwargs["attention_mask"] = extra
        return args, kwargs

    handles, patched = [], []
    try:
        for block in model.transformer_blocks:
            attn = block.attn1
            handles.append(attn.register_forward_pre_hook(pre_hook, with_kwargs=True))
            patched.append(attn)
            attn.__dict__["prepare_attention_mask"] = _head_broadcasting_prepare(attn)
        yield
    finally:
        for handle in handles:
            handle.remove()
        for attn in patched:
            attn.__dict__.pop("prepare_attention_mask", None)


def _head_broadcasting_prepare(attn):
    """`prepare_attention_mask` that broadcasts a `(rows, 1, N, N)` bias over heads without copying; any other
    mask goes through the class's own implementation."""
    original = type(attn).prepare_attention_mask

    def prepare(attention_mask, target_length, batch_size, out_dim=3):
        if (
            attention_mask is not None and attention_mask.ndim == 4 and attention_mask.shape[1] == 1
            and attention_mask.shape[0] == batch_size and attention_mask.shape[-1] == target_length
        ):
            return attention_mask.expand(-1, attn.heads, -1, -1)
        return original(attn, attention_mask, target_length, batch_size, out_dim)

    return prepare
