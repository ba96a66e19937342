"""Per-sample attention control on diffusers' `LTX2VideoTransformer3DModel`: all guidance passes in one call.

`GuidanceAttentionControl.activate(passes, batch_size, skip_blocks)` is a context manager that, for one batched
transformer call laid out pass-major (pass k occupies rows `k*B:(k+1)*B`), temporarily installs:

- on `attn1` / `audio_attn1` of the STG blocks: per row, either the original processor (attention), or the
  STG perturbation "skip self-attention" - the output is `to_out(V)` with the per-head gate of gated-attention
  (2.3) models still applied, exactly what ltx-core's `Attention` computes for a perturbed sample (and diffusers'
  `LTX2PerturbedAttnProcessor`, which only runs when the checkpoint's config says `perturbed_attn=True`; ours
  does not depend on that flag);
- on `audio_to_video_attn` / `video_to_audio_attn` of every block: per row, the original processor or zero.
  diffusers adds `a2v_gate * attn_out`, so a zero output drops the whole residual (ltx-core's
  `SKIP_A2V_CROSS_ATTN` / `SKIP_V2A_CROSS_ATTN` perturbations, i.e. modality isolation and `cross_attn=False`);
- for a frozen modality (`GuidancePass.freeze_video` / `freeze_audio`, ltx-core's `Modality(enabled=False)`):
  zero self-attention, text cross-attention, incoming audio<->video attention and feed-forward residuals.

Rows are computed only where needed: a perturbed row never runs Q/K attention, a zeroed row runs nothing, and
passes that are identical up to a block (the conditional and STG passes share everything before the first STG
block) are computed once up to there and duplicated afterwards (block hooks; verified at run time that the
merged rows really carry equal inputs, otherwise the call runs unshared). Row ranges are handled as views
(`narrow`): the inputs of a run of rows (hidden states, RoPE tables, masks) are slices of the full tensors, each
output run is written into its slice once and only dropped rows are zeroed; a gathered copy is made only when
the rows of one treatment are not contiguous (`transformer.grouping` orders passes so that they are).
On exit every processor is put back (the same objects) and every hook removed, so the transformer is exactly as
before: LoRA layers, offload hooks and `torch.compile` are untouched.
"""

from __future__ import annotations

import inspect
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from ..guiders.base import GuidancePass
from ..guiders.multimodal import check_skip_blocks

FULL, VALUE, ZERO = "full", "value", "zero"
SELF_KINDS = ("attn1", "audio_attn1")
ATTN_KINDS = ("attn1", "audio_attn1", "attn2", "audio_attn2", "audio_to_video_attn", "video_to_audio_attn")
FF_KINDS = ("ff", "audio_ff")

#: Official STG blocks: LTX-2.0 perturbs block 29, LTX-2.3 block 28 (of 48).
STG_BLOCK_20 = 29
STG_BLOCK_23 = 28


def is_ltx23(transformer) -> bool:
    """2.3 checkpoints are the ones with gated attention / prompt cross-attention modulation."""
    cfg = transformer.config
    return any(bool(getattr(cfg, k, False)) for k in ("gated_attn", "cross_attn_mod", "audio_gated_attn",
                                                      "audio_cross_attn_mod"))


def default_skip_blocks(transformer) -> tuple[int, ...]:
    """The official STG block for this transformer (29 for LTX-2.0, 28 for 2.3), clipped to its depth so
    that small test models keep a usable default."""
    block = STG_BLOCK_23 if is_ltx23(transformer) else STG_BLOCK_20
    return (min(block, len(transformer.transformer_blocks) - 1),)


def _pass_mode(p: GuidancePass, kind: str, stg_block: bool) -> str:
    if kind == "attn1":
        return ZERO if p.freeze_video else VALUE if (p.perturb_video and stg_block) else FULL
    if kind == "audio_attn1":
        return ZERO if p.freeze_audio else VALUE if (p.perturb_audio and stg_block) else FULL
    if kind in ("attn2", "ff"):
        return ZERO if p.freeze_video else FULL
    if kind in ("audio_attn2", "audio_ff"):
        return ZERO if p.freeze_audio else FULL
    if kind == "audio_to_video_attn":
        return ZERO if (p.freeze_video or not p.a2v) else FULL
    if kind == "video_to_audio_attn":
        return ZERO if (p.freeze_audio or not p.v2a) else FULL
    raise KeyError(kind)


def _runs(values) -> list[tuple[object, int, int]]:
    """Maximal runs of equal consecutive values: `[(value, start, length), ...]`."""
    out: list[tuple[object, int, int]] = []
    for i, v in enumerate(values):
        if out and out[-1][0] == v:
            out[-1] = (v, out[-1][1], out[-1][2] + 1)
        else:
            out.append((v, i, 1))
    return out


def _spans(rows: list[int]) -> list[tuple[int, int]]:
    """`rows` as maximal ranges of consecutive indices: `[(start, length), ...]`."""
    out: list[tuple[int, int]] = []
    for r in rows:
        if out and out[-1][0] + out[-1][1] == r:
            out[-1] = (out[-1][0], out[-1][1] + 1)
        else:
            out.append((r, 1))
    return out


@dataclass
class _Groups:
    """Rows of one batch by mode: `single` when every row shares one mode, else contiguous `runs`
    `(mode, start, length)` (worked on as views) and, for the feed-forward gate, the computed rows."""

    single: str | None
    runs: list[tuple[str, int, int]] = field(default_factory=list)
    full_rows: list[int] = field(default_factory=list)


class _Activation:
    """The per-row plan of one batched call: modes per (block, module) and the shared-prefix row mapping."""

    def __init__(self, passes, batch_size: int, skip_blocks: tuple[int, ...], num_blocks: int):
        self.passes = list(passes)
        self.batch_size = batch_size
        self.num_rows = len(self.passes) * batch_size
        stg = set(skip_blocks)
        kinds = ATTN_KINDS + FF_KINDS
        self.modes = {
            (i, kind): tuple(_pass_mode(p, kind, i in stg) for p in self.passes)
            for i in range(num_blocks) for kind in kinds
        }
        self._plan_sharing(num_blocks)
        self._cache: dict = {}

    # -- shared prefix ------------------------------------------------------------------------------------
    def _twin_prefix(self, j: int, k: int, num_blocks: int) -> int:
        """Number of leading blocks in which passes j and k compute exactly the same thing."""
        if self.passes[j].negative != self.passes[k].negative:
            return 0
        for i in range(num_blocks):
            if any(self.modes[(i, kind)][j] != self.modes[(i, kind)][k] for kind in ATTN_KINDS + FF_KINDS):
                return i
        return num_blocks

    def _plan_sharing(self, num_blocks: int) -> None:
        n = len(self.passes)
        prefix = {(j, k): self._twin_prefix(j, k, num_blocks) for k in range(n) for j in range(k)}
        best, best_saving, best_rep = 0, 0, list(range(n))
        for s in sorted(set(prefix.values()) - {0}):
            rep: list[int] = []
            for k in range(n):  # merge k into the first representative it shares >= s blocks with
                rep.append(next((j for j in range(k) if rep[j] == j and prefix[(j, k)] >= s), k))
            saving = sum(r != k for k, r in enumerate(rep)) * s
            if saving > best_saving:
                best, best_saving, best_rep = s, saving, rep
        self.share_until = best
        self.sharing = best > 0
        unique = sorted(set(best_rep))
        self.unique_passes = unique
        self.pass_rep = best_rep
        b = self.batch_size
        pos = {p: i for i, p in enumerate(unique)}
        self.gather = [p * b + r for p in unique for r in range(b)]  # reduced row -> full row
        self.expand = [pos[best_rep[k]] * b + r for k in range(n) for r in range(b)]  # full row -> reduced row
        self.num_reduced = len(unique) * b

    # -- modes per batch layout ---------------------------------------------------------------------------
    def groups(self, block: int, kind: str, num_rows: int, device) -> _Groups:
        key = (block, kind, num_rows, device)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        modes = self.modes[(block, kind)]
        if num_rows == self.num_rows:
            per_pass = modes
        elif self.sharing and num_rows == self.num_reduced:
            per_pass = tuple(modes[p] for p in self.unique_passes)
        else:
            raise RuntimeError(
                f"guidance attention control expected a batch of {self.num_rows} rows "
                f"({len(self.passes)} passes x {self.batch_size}), got {num_rows}"
            )
        rows = [m for m in per_pass for _ in range(self.batch_size)]
        if len(set(rows)) == 1:
            out = _Groups(single=rows[0])
        else:
            out = _Groups(single=None, runs=_runs(rows), full_rows=[r for r, m in enumerate(rows) if m == FULL])
        self._cache[key] = out
        return out


def _narrow(obj, start: int, length: int, num_rows: int):
    """Rows `start:start+length` of every batch-first tensor (in tuples too) whose leading dim is `num_rows`, as
    views (no copy: the RoPE tables and masks of a row range are slices of the full ones)."""
    if isinstance(obj, torch.Tensor):
        return obj.narrow(0, start, length) if obj.ndim > 0 and obj.shape[0] == num_rows else obj
    if isinstance(obj, (tuple, list)):
        return type(obj)(_narrow(o, start, length, num_rows) for o in obj)
    if isinstance(obj, dict):
        return {k: _narrow(v, start, length, num_rows) for k, v in obj.items()}
    return obj


def _select_rows(x: torch.Tensor, rows: list[int]) -> torch.Tensor:
    """Rows `rows` of `x`: a view when they are one contiguous range, else one gathered copy."""
    spans = _spans(rows)
    if len(spans) == 1:
        return x.narrow(0, *spans[0])
    return x.index_select(0, torch.tensor(rows, dtype=torch.long, device=x.device))


def skip_self_attention(attn, hidden_states: torch.Tensor) -> torch.Tensor:
    """STG's perturbed self-attention: `to_out(gate * V)` - the value projection replaces the attention
    output, the per-head gate of gated-attention models is kept (ltx-core `Attention` with an all-zero
    perturbation mask)."""
    out = attn.to_v(hidden_states)
    if getattr(attn, "to_gate_logits", None) is not None:
        gates = 2.0 * torch.sigmoid(attn.to_gate_logits(hidden_states))
        out = (out.unflatten(-1, (attn.heads, -1)) * gates.unsqueeze(-1)).flatten(-2)
    return attn.to_out[1](attn.to_out[0](out))


class GuidedAttnProcessor:
    """Wraps an attention module's processor: per row, the original processor, STG's value path, or zero."""

    def __init__(self, activation: _Activation, block: int, kind: str, original):
        self.activation = activation
        self.block = block
        self.kind = kind
        self.original = original
        try:
            params = inspect.signature(original.__call__).parameters
        except (TypeError, ValueError):
            params = {}
        self._original_takes_perturbation = "perturbation_mask" in params

    # diffusers' `set_attention_backend` / context parallelism set these on every processor that has them: they
    # belong to the wrapped processor, which computes the attention (`acceleration.attention_backends`)
    @property
    def _attention_backend(self):
        return getattr(self.original, "_attention_backend", None)

    @_attention_backend.setter
    def _attention_backend(self, value):
        self.original._attention_backend = value

    @property
    def _parallel_config(self):
        return getattr(self.original, "_parallel_config", None)

    @_parallel_config.setter
    def _parallel_config(self, value):
        self.original._parallel_config = value

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                 query_rotary_emb=None, key_rotary_emb=None, perturbation_mask=None, all_perturbed=None):
        num_rows = hidden_states.shape[0]
        groups = self.activation.groups(self.block, self.kind, num_rows, hidden_states.device)
        extra = {}
        if self._original_takes_perturbation and (perturbation_mask is not None or all_perturbed):
            extra = {"perturbation_mask": perturbation_mask, "all_perturbed": all_perturbed}
        args = (hidden_states, encoder_hidden_states, attention_mask, query_rotary_emb, key_rotary_emb)
        if groups.single is not None:
            return self._compute(groups.single, attn, args, extra, num_rows)
        # Each run of rows with one mode is computed on views of the inputs and written into its slice of the
        # output; only the rows a pass drops are zeroed.
        out = None
        for mode, start, length in groups.runs:
            if mode == ZERO:
                continue
            res = self._compute(mode, attn, _narrow(args, start, length, num_rows),
                                _narrow(extra, start, length, num_rows), length)
            if out is None:
                out = res.new_empty((num_rows,) + tuple(res.shape[1:]))
            out.narrow(0, start, length).copy_(res)
        for mode, start, length in groups.runs:
            if mode == ZERO:
                out.narrow(0, start, length).zero_()
        return out

    def _compute(self, mode: str, attn, args, extra, num_rows: int) -> torch.Tensor:
        if mode == FULL:
            return self.original(attn, *args, **extra)
        hidden_states = args[0]
        if mode == VALUE:
            if args[1] is not None:
                raise RuntimeError("STG's value path applies to self-attention only")
            return skip_self_attention(attn, hidden_states)
        return hidden_states.new_zeros(num_rows, hidden_states.shape[1], attn.to_out[0].out_features)


class _FeedForwardGate:
    """Pre/post forward hooks that run a feed-forward only on non-frozen rows and return zeros elsewhere."""

    def __init__(self, activation: _Activation, block: int, kind: str):
        self.activation, self.block, self.kind = activation, block, kind
        self._pending: list = []

    def pre(self, module, args):
        x = args[0]
        groups = self.activation.groups(self.block, self.kind, x.shape[0], x.device)
        if groups.single == FULL:
            self._pending.append(None)
            return None
        rows = [] if groups.single is not None else groups.full_rows
        self._pending.append((x.shape[0], rows, groups))
        return (_select_rows(x, rows) if rows else x[:0],) + tuple(args[1:])

    def post(self, module, args, output):
        pending = self._pending.pop()
        if pending is None:
            return None
        num_rows, rows, groups = pending
        if not rows:
            return output.new_zeros((num_rows,) + tuple(output.shape[1:]))
        spans = _spans(rows)
        if len(spans) > 1:  # computed rows not contiguous: scatter (zero-filled once)
            out = output.new_zeros((num_rows,) + tuple(output.shape[1:]))
            return out.index_copy_(0, torch.tensor(rows, dtype=torch.long, device=output.device), output)
        out = output.new_empty((num_rows,) + tuple(output.shape[1:]))
        out.narrow(0, *spans[0]).copy_(output)
        for mode, start, length in groups.runs:
            if mode != FULL:
                out.narrow(0, start, length).zero_()
        return out


class _SharedPrefix:
    """Block hooks computing passes that are identical up to `share_until` once, then duplicating them."""

    def __init__(self, activation: _Activation, agree=None):
        self.act = activation
        self.agree = agree
        self._reduced: dict[int, torch.Tensor] = {}
        self.active = activation.sharing

    def _reduce(self, obj):
        if isinstance(obj, torch.Tensor):
            if obj.ndim == 0 or obj.shape[0] != self.act.num_rows:
                return obj
            key = id(obj)
            if key not in self._reduced:
                self._reduced[key] = _select_rows(obj, self.act.gather)  # a view when the kept rows are contiguous
            return self._reduced[key]
        if isinstance(obj, (tuple, list)):
            return type(obj)(self._reduce(o) for o in obj)
        return obj

    def _inputs_equal(self, tensors) -> bool:
        """Rows merged into a representative must carry identical inputs (guards callers that vary them)."""
        b = self.act.batch_size
        pairs = [(k, r) for k, r in enumerate(self.act.pass_rep) if k != r]
        return all(torch.equal(t.narrow(0, k * b, b), t.narrow(0, r * b, b)) for t in tensors for k, r in pairs)

    def pre(self, block_index: int):
        def hook(module, args, kwargs):
            if block_index == 0:
                self._reduced.clear()
                batch = [v for v in list(args) + list(kwargs.values())
                         if isinstance(v, torch.Tensor) and v.ndim > 0 and v.shape[0] == self.act.num_rows]
                self.active = self.act.sharing and bool(batch) and self._inputs_equal(batch)
                if self.agree is not None and self.act.sharing and batch:
                    self.active = self.agree(self.active)  # sequence shards see different tokens: decide together
            if not self.active:
                return None
            return self._reduce(tuple(args)), {k: self._reduce(v) for k, v in kwargs.items()}
        return hook

    def post(self, module, args, kwargs, output):
        if not self.active:
            return None
        self._reduced.clear()
        spans = _spans(self.act.expand)  # full rows as slices of the reduced rows, concatenated once
        return tuple(torch.cat([o.narrow(0, start, length) for start, length in spans]) for o in output)


class GuidanceAttentionControl:
    """Installs per-sample STG perturbation, cross-modal gating and stream freezing for batched guidance passes.

    Args:
        transformer: diffusers' `LTX2VideoTransformer3DModel` (or a `torch.compile` wrapper of it).
        default_skip_blocks: STG blocks used when a plan gives none; default: `default_skip_blocks(transformer)`.
        share_prefix: compute passes that are identical up to the first STG block only once (same results).

    Attribute `agree`: `None`, or a callable `bool -> bool` that turns this rank's shared-prefix decision into one
    every sequence shard of the call takes (set by `distributed.ParallelPasses`: shards compare their own tokens).
    """

    def __init__(self, transformer, default_skip_blocks: tuple[int, ...] | None = None, share_prefix: bool = True):
        self.transformer = transformer
        self.blocks = transformer.transformer_blocks
        self.default_skip_blocks = tuple(default_skip_blocks) if default_skip_blocks else _default(transformer)
        self.share_prefix = share_prefix
        self.agree = None
        self._busy = False

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @contextmanager
    def activate(self, passes: list[GuidancePass], batch_size: int, skip_blocks=()):
        """Make the next transformer call(s) run `passes` stacked pass-major, `batch_size` rows each."""
        if self._busy:
            raise RuntimeError("GuidanceAttentionControl.activate is not re-entrant")
        blocks = check_skip_blocks(tuple(skip_blocks) or self.default_skip_blocks, self.num_blocks)
        act = _Activation(passes, batch_size, blocks, self.num_blocks)
        if not self.share_prefix:
            act.sharing = False
        swapped, handles = [], []
        self._busy = True
        try:
            for i, block in enumerate(self.blocks):
                for kind in ATTN_KINDS:
                    if any(m != FULL for m in act.modes[(i, kind)]):
                        attn = getattr(block, kind)
                        swapped.append(_swap_processor(attn, GuidedAttnProcessor(act, i, kind, attn.processor)))
                for kind in FF_KINDS:
                    if any(m != FULL for m in act.modes[(i, kind)]):
                        gate = _FeedForwardGate(act, i, kind)
                        module = getattr(block, kind)
                        handles.append(module.register_forward_pre_hook(gate.pre))
                        handles.append(module.register_forward_hook(gate.post))
            if act.sharing:
                shared = _SharedPrefix(act, self.agree)
                for i in range(act.share_until):
                    handles.append(self.blocks[i].register_forward_pre_hook(shared.pre(i), with_kwargs=True))
                handles.append(
                    self.blocks[act.share_until - 1].register_forward_hook(shared.post, with_kwargs=True)
                )
            yield act
        finally:
            for handle in reversed(handles):
                handle.remove()
            for restore in reversed(swapped):
                restore()
            self._busy = False


def _default(transformer) -> tuple[int, ...]:
    return default_skip_blocks(getattr(transformer, "_orig_mod", transformer))


def _swap_processor(attn, new):
    """Install `new` as `attn.processor` without diffusers' `set_processor` side effects; returns the undo."""
    had = "processor" in attn.__dict__
    old = attn.__dict__.get("processor")
    attn.__dict__["processor"] = new

    def restore():
        if had:
            attn.__dict__["processor"] = old
        else:
            del attn.__dict__["processor"]

    return restore
