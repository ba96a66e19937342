"""Sequence parallel: the video tokens of one pass split over shards, through diffusers' context parallelism.

`enable_sequence_parallel(transformer, context)` calls diffusers' `ModelMixin.enable_parallelism` with a
`ContextParallelConfig` on the context's device mesh and an LTX-2 plan of our own, then routes each attention:

- video self-attention (`attn1`): diffusers' Ulysses (or ring) attention through the processor's
  `_parallel_config`; a call carrying an attention mask (the IC-LoRA attention-strength bias,
  `transformer.attention_bias`) or `sequence_attention="allgather"` instead gathers the other shards' normalized
  hidden states as keys/values and runs the stock processor on the local queries (the bias rows of the local
  queries, all key columns);
- video-to-audio attention (queries audio, keys video): the same, the audio queries (whole on every shard) passing
  through Ulysses' all-to-all as they are (each shard gets its own copy back), or the video keys gathered;
- prompt cross-attention, audio self/prompt attention and audio-to-video attention need no other shard (the
  prompt and the audio stream are not split) and run the stock processors without context parallelism.

Why not diffusers' own `_cp_plan` and processors as they are (diffusers 0.42.1, torch 2.13, checked on gloo):
`enable_parallelism` divides by `torch.accelerator.device_count()`, which is 0 on a CPU-only machine; the plan
splits the RoPE tables as 3-D tensors, but LTX-2's "split" RoPE is `(B, H, N, D/2)`, so they stay whole and the
first attention fails; it does not split the cross-attention RoPE of the video nor per-token timesteps
(conditioned tokens); and Ulysses attention with a mask fails (the mask keeps all heads while the queries carry
`H / shards`), which every prompt cross-attention has. Ring attention needs a backend returning the log-sum-exp
(flash, cuDNN, sage: CUDA only); PyTorch's native SDPA, the only CPU backend, does not.

Per-token timesteps (conditioned tokens): a forward pre-hook of the transformer cuts a `(B, N)` video timestep to
the shard's tokens; a shared `(B, 1)` one stays as it is (diffusers' plan cannot split only the per-token kind).
The same hook cuts LTX-2.5's per-token keyframe marker (`video_keyframes_mask`).

STG, modality isolation and frozen streams (`transformer.attention`) act per row and per token, so they hold on
shards unchanged; their shared-prefix decision is agreed over the shards (`ParallelPasses`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .layout import ParallelContext

__all__ = ["SequenceShard", "enable_sequence_parallel", "disable_sequence_parallel", "ltx2_context_parallel_plan",
           "sequence_shard"]

_ATTR = "_ltx2_sequence_shard"


@dataclass
class SequenceShard:
    """Which part of the video tokens this rank holds: shard `index` of `size`, talking over `group`."""

    index: int
    size: int
    group: object
    attention: str  # "ulysses", "ring" or "allgather"


def sequence_shard(transformer) -> SequenceShard | None:
    """The `SequenceShard` installed on `transformer` (or its `torch.compile` original), else `None`."""
    model = getattr(transformer, "_orig_mod", transformer)
    return getattr(model, _ATTR, None)


def _rope_split(transformer) -> tuple[int, int]:
    """(sequence dim, ndim) of the video RoPE tables: "split" RoPE is (B, H, N, D/2), "interleaved" (B, N, D)."""
    return (2, 4) if transformer.config.rope_type == "split" else (1, 3)


def ltx2_context_parallel_plan(transformer) -> dict:
    """The context-parallel plan of diffusers' `LTX2VideoTransformer3DModel` as this package runs it: video tokens
    split at the input (per-token timesteps by `_timestep_shard`), the video RoPE tables (self and cross-modal)
    split where they are made, the video output gathered; prompt and audio stay whole."""
    from diffusers.models._modeling_parallel import ContextParallelInput, ContextParallelOutput

    dim, ndim = _rope_split(transformer)
    rope = {i: ContextParallelInput(split_dim=dim, expected_dims=ndim, split_output=True) for i in (0, 1)}
    return {
        "": {
            "hidden_states": ContextParallelInput(split_dim=1, expected_dims=3, split_output=False),
        },
        "rope": rope,
        "cross_attn_rope": dict(rope),
        "proj_out": ContextParallelOutput(gather_dim=1, expected_dims=3),
    }


def gather_tokens(x: torch.Tensor, dim: int, shard: SequenceShard) -> torch.Tensor:
    """All-gather `x` along its token dimension `dim` over the shards (shard order)."""
    x = x.contiguous()
    parts = [torch.empty_like(x) for _ in range(shard.size)]
    dist.all_gather(parts, x, group=shard.group)
    return torch.cat(parts, dim=dim)


class _Gathered:
    """Per-forward cache of gathered RoPE tables (the same tables serve every block)."""

    def __init__(self, shard: SequenceShard, dim: int):
        self.shard, self.dim = shard, dim
        self._cache: dict[int, tuple] = {}

    def clear(self, *_args, **_kwargs):
        self._cache.clear()

    def rope(self, rope):
        if rope is None:
            return None
        key = id(rope[0])
        hit = self._cache.get(key)
        if hit is None or hit[0] is not rope[0]:
            hit = (rope[0], tuple(gather_tokens(t, self.dim, self.shard) for t in rope))
            self._cache[key] = hit
        return hit[1]


def _call(processor, *args, **kwargs):
    """Call `processor` with the keyword arguments it accepts (as `LTX2Attention.forward` filters them)."""
    import inspect

    params = inspect.signature(processor.__call__).parameters
    if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
        kwargs = {k: v for k, v in kwargs.items() if k in params}
    return processor(*args, **kwargs)


class ShardedSelfAttention:
    """Processor of `attn1` under sequence parallelism (see the module docstring)."""

    def __init__(self, parallel, plain, shard: SequenceShard, gathered: _Gathered):
        self.parallel, self.plain, self.shard, self.gathered = parallel, plain, shard, gathered

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, query_rotary_emb=None,
                 key_rotary_emb=None, **kwargs):
        if encoder_hidden_states is not None:
            raise RuntimeError("attn1 is a self-attention; got encoder_hidden_states")
        if attention_mask is None and self.shard.attention != "allgather":
            return _call(self.parallel, attn, hidden_states, None, None, query_rotary_emb, key_rotary_emb, **kwargs)
        keys = gather_tokens(hidden_states, 1, self.shard)
        key_rope = self.gathered.rope(key_rotary_emb if key_rotary_emb is not None else query_rotary_emb)
        return _call(self.plain, attn, hidden_states, keys, attention_mask, query_rotary_emb, key_rope, **kwargs)


class GatheredKeysAttention:
    """Processor of `video_to_audio_attn` (audio queries, video keys): diffusers' Ulysses through `parallel` (the
    audio queries, whole on every shard, go through the all-to-all as they are), or the video keys of every shard
    gathered (`sequence_attention="allgather"`, or a mask)."""

    def __init__(self, parallel, plain, shard: SequenceShard, gathered: _Gathered):
        self.parallel, self.plain, self.shard, self.gathered = parallel, plain, shard, gathered

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, query_rotary_emb=None,
                 key_rotary_emb=None, **kwargs):
        if attention_mask is None and self.shard.attention != "allgather":
            return _call(self.parallel, attn, hidden_states, encoder_hidden_states, None, query_rotary_emb,
                         key_rotary_emb, **kwargs)
        keys = gather_tokens(encoder_hidden_states, 1, self.shard)
        return _call(self.plain, attn, hidden_states, keys, attention_mask, query_rotary_emb,
                     self.gathered.rope(key_rotary_emb), **kwargs)


def _plain(processor):
    plain = copy.copy(processor)
    plain._parallel_config = None
    return plain


def _timestep_shard(shard: SequenceShard):
    """Forward pre-hook: a per-token video timestep `(B, N)` and the LTX-2.5 keyframe marker `(B, N, 1)`
    (`video_keyframes_mask`, `transformer.inputs.keyframes_mask`) are cut to this shard's tokens, as the
    tokens are (a shared `(B, 1)` timestep stays whole: AdaLN then runs once per row, not once per token)."""

    def hook(module, args, kwargs):
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        if hidden is None:
            return None
        n = hidden.shape[1]
        kwargs = dict(kwargs)
        changed = False
        t = kwargs.get("timestep")
        if t is not None and t.ndim == 2 and t.shape[1] != 1 and t.shape[1] == n:
            kwargs["timestep"] = t.chunk(shard.size, dim=1)[shard.index]
            changed = True
        marker = kwargs.get("video_keyframes_mask")
        if marker is not None and marker.ndim >= 2 and marker.shape[1] == n:
            kwargs["video_keyframes_mask"] = marker.chunk(shard.size, dim=1)[shard.index]
            changed = True
        return (args, kwargs) if changed else None

    return hook


def _choose_attention(transformer, layout) -> str:
    """Ulysses splits the heads of the video self-attention and of the video-to-audio attention over the shards."""
    cfg = transformer.config
    heads = (cfg.num_attention_heads, cfg.audio_num_attention_heads)
    divides = all(h % layout.sequence == 0 for h in heads)
    wanted = layout.sequence_attention
    if wanted == "auto":
        return "ulysses" if divides else "allgather"
    if wanted == "ulysses" and not divides:
        raise ValueError(f"Ulysses attention splits the video / audio heads {heads} over {layout.sequence} shards: "
                         "use a shard count dividing both, or sequence_attention='allgather'")
    return wanted


def enable_sequence_parallel(transformer, context: ParallelContext) -> SequenceShard:
    """Split the video tokens of every call of `transformer` over the context's sequence shards.

    Every rank of a shard group must call it (collectives inside each call). Idempotent for one context.

    Raises:
        ValueError: the layout has one shard, the attention choice cannot run here (Ulysses with heads not
            divisible by the shard count; ring on CPU, where no attention backend returns the log-sum-exp).
    """
    from diffusers.models._modeling_parallel import ContextParallelConfig, ParallelConfig

    layout = context.layout
    if layout.sequence < 2:
        raise ValueError("sequence parallelism needs a layout with sequence >= 2")
    model = getattr(transformer, "_orig_mod", transformer)
    existing = getattr(model, _ATTR, None)
    if existing is not None:
        return existing
    attention = _choose_attention(model, layout)
    if attention == "ring" and context.device.type == "cpu":
        raise ValueError("ring attention needs an attention backend returning the log-sum-exp (flash / cuDNN / sage "
                         "on CUDA); on CPU use sequence_attention='ulysses' or 'allgather'")
    ring = layout.sequence if attention == "ring" else 1
    cp = ContextParallelConfig(ring_degree=ring, ulysses_degree=layout.sequence // ring, mesh=context.mesh)
    config = ParallelConfig(context_parallel_config=cp)
    runtime = context.runtime

    def resolve(cfg):  # diffusers' own resolver divides by the accelerator count (0 on CPU-only machines)
        cfg.setup(runtime.rank, runtime.world_size, runtime.device, mesh=context.mesh)
        model._parallel_config = cfg
        return cfg

    model.__dict__["_resolve_parallel_config"] = resolve
    try:
        model.enable_parallelism(config=config, cp_plan=ltx2_context_parallel_plan(model))
    finally:
        model.__dict__.pop("_resolve_parallel_config", None)
    shard = SequenceShard(index=context.shard_index, size=layout.sequence, group=context.shard_group,
                          attention=attention)
    gathered = _Gathered(shard, _rope_split(model)[0])
    restore = []
    for block in model.transformer_blocks:
        for name in ("attn1", "attn2", "audio_attn1", "audio_attn2", "audio_to_video_attn", "video_to_audio_attn"):
            attn = getattr(block, name)
            original = attn.processor
            if name == "attn1":
                new = ShardedSelfAttention(original, _plain(original), shard, gathered)
            elif name == "video_to_audio_attn":
                new = GatheredKeysAttention(original, _plain(original), shard, gathered)
            else:
                new = _plain(original)
            restore.append((attn, "processor" in attn.__dict__, original))
            attn.__dict__["processor"] = new
    handles = [model.register_forward_pre_hook(_timestep_shard(shard), with_kwargs=True),
               model.register_forward_pre_hook(gathered.clear)]
    model.__dict__["_ltx2_sequence_restore"] = (restore, handles)
    setattr(model, _ATTR, shard)
    return shard


def disable_sequence_parallel(transformer) -> None:
    """Undo `enable_sequence_parallel`: processors, hooks and diffusers' context-parallel hooks removed."""
    from diffusers.hooks.context_parallel import remove_context_parallel

    model = getattr(transformer, "_orig_mod", transformer)
    if getattr(model, _ATTR, None) is None:
        return
    restore, handles = model.__dict__.pop("_ltx2_sequence_restore")
    for handle in handles:
        handle.remove()
    for attn, had, original in reversed(restore):
        if had:
            attn.__dict__["processor"] = original
        else:
            attn.__dict__.pop("processor", None)
        original._parallel_config = None
    remove_context_parallel(model, ltx2_context_parallel_plan(model))
    model._parallel_config = None
    delattr(model, _ATTR)
