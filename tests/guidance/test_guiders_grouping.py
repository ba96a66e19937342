"""Pass grouping by shared computation (`transformer.grouping`) and the view-based attention control.

Exactness: a pass's result is the same whichever rows share its call up to fp32 rounding only. Bit-identity across
*different call sizes* is not attainable on this CPU: the timestep-embedding linears run with M = rows of the
call, and MKL picks M-dependent kernels (observed: `audio_time_embed.linear` differs by 3e-8 between M=2 and M=4,
in float64 too). So groupings are compared with sequential execution at 1e-5 (observed <= 1e-6), while calls of
the same size whose rows are laid out differently (contiguous runs, split runs, gathered fallbacks) are compared
bit for bit.
"""

from __future__ import annotations

import itertools
import random

import pytest
import torch

from diffusers_ltx2.guiders import GuidancePass, StepPlan
from diffusers_ltx2.transformer import GuidanceAttentionControl
from diffusers_ltx2.transformer.grouping import auto_batch_passes, estimate_pass_bytes, group_passes, prefix_key
from diffusers_ltx2.transformer.passes import TransformerPasses

from test_attention_control import ALL_PASSES, GUIDED, _rows_seen, make_inputs, run_passes

COND, UNCOND, PERT, ISO = GUIDED


def names(calls):
    return [[p.name for p in call] for call in calls]


def test_group_passes_keeps_prefix_sharing_passes_together_for_every_limit():
    assert names(group_passes(GUIDED, 2)) == [["cond", "stg"], ["isolated", "uncond"]]
    assert names(group_passes(GUIDED, None)) == [["isolated", "uncond", "cond", "stg"]]
    assert names(group_passes(GUIDED, 1)) == [["cond"], ["stg"], ["uncond"], ["isolated"]]
    for passes in (GUIDED, ALL_PASSES):
        for limit in [None, *range(1, len(passes) + 2)]:
            calls = group_passes(passes, limit)
            flat = [p.name for call in calls for p in call]
            assert sorted(flat) == sorted(p.name for p in passes)  # each pass exactly once
            assert all(1 <= len(call) <= (limit or len(passes)) for call in calls)
            clusters = {}
            for p in passes:
                clusters.setdefault(prefix_key(p), []).append(p.name)
            for members in clusters.values():  # a cluster that fits a call is never split
                if len(members) <= (limit or len(passes)):
                    assert any(set(members) <= {p.name for p in call} for call in calls), (limit, members)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "all"])
def test_bad_max_batch_passes_is_refused(bad):
    with pytest.raises(ValueError, match="max_batch_passes"):
        group_passes(GUIDED, bad)
    with pytest.raises(ValueError, match="max_batch_passes"):
        TransformerPasses(object(), max_batch_passes=bad)
    with pytest.raises(ValueError, match="memory_fraction"):
        TransformerPasses(object(), max_batch_passes="auto", memory_fraction=0.0)


def test_auto_batch_passes_is_the_largest_grouping_within_budget(tiny_components):
    assert auto_batch_passes(4, pass_bytes=100, budget_bytes=250) == 2
    assert auto_batch_passes(4, pass_bytes=100, budget_bytes=10_000) == 4
    assert auto_batch_passes(4, pass_bytes=100, budget_bytes=10) == 1  # sequential is the floor
    tr = tiny_components["transformer"]
    small = estimate_pass_bytes(tr, 288, 50, 1, 128)
    assert estimate_pass_bytes(tr, 576, 50, 1, 128) > small and estimate_pass_bytes(tr, 288, 50, 2, 128) == 2 * small


@pytest.mark.parametrize("passes", [GUIDED, ALL_PASSES], ids=["guided", "all"])
def test_every_grouping_equals_sequential(tiny_components, passes):
    tr = tiny_components["transformer"]
    inputs = make_inputs(tr)
    sequential, _ = run_passes(tr, passes, inputs, max_batch_passes=1)
    for limit in (None, 2, 3, "auto"):
        got, calls = run_passes(tr, passes, inputs, max_batch_passes=limit)
        if limit == 2:
            assert calls == len(group_passes(passes, 2))
        for p in passes:
            for attr in ("video", "audio"):
                torch.testing.assert_close(getattr(got[p.name], attr), getattr(sequential[p.name], attr),
                                           rtol=0, atol=1e-5, msg=f"{limit} {p.name} {attr}")


def test_max_batch_passes_2_keeps_the_shared_prefix(tiny_components):
    tr = tiny_components["transformer"]
    inputs = make_inputs(tr)  # batch 2; STG block 1
    seen, handles = _rows_seen(tr)
    run_passes(tr, GUIDED, inputs, max_batch_passes=2)
    for h in handles:
        h.remove()
    # call 1 [cond, stg]: block 0 computes the pair once (2 rows), block 1 both (4); call 2 [isolated, uncond]
    assert seen == [(0, 2), (1, 4), (0, 4), (1, 4)]


def _one_call(tr, order, inputs, share_prefix=True):
    video, audio, ctx = inputs
    n, b = len(order), video.batch_size
    negatives = [ctx.negative if p.negative else ctx.positive for p in order]
    t = video.timesteps(torch.tensor(0.6)).repeat(n, 1) * 1000
    ta = audio.timesteps(torch.tensor(0.6)).repeat(n, 1) * 1000
    with torch.no_grad(), GuidanceAttentionControl(tr, share_prefix=share_prefix).activate(list(order), b, (1,)):
        v, a = tr(hidden_states=video.latent.repeat(n, 1, 1), audio_hidden_states=audio.latent.repeat(n, 1, 1),
                  encoder_hidden_states=torch.cat([c.video_context for c in negatives]),
                  audio_encoder_hidden_states=torch.cat([c.audio_context for c in negatives]),
                  encoder_attention_mask=torch.cat([c.attention_mask for c in negatives]),
                  audio_encoder_attention_mask=torch.cat([c.attention_mask for c in negatives]),
                  timestep=t, audio_timestep=ta, sigma=torch.full((n * b,), 600.0),
                  audio_sigma=torch.full((n * b,), 600.0), video_coords=video.coords.repeat(n, 1, 1, 1),
                  audio_coords=audio.coords.repeat(n, 1, 1, 1), return_dict=False)
    return {p.name: (v[i * b:(i + 1) * b], a[i * b:(i + 1) * b]) for i, p in enumerate(order)}


def test_row_layout_does_not_change_any_bit(tiny_components):
    """Same call size, different pass orders: contiguous runs (views), split runs, gathered fallbacks
    (non-contiguous shared rows and feed-forward rows) all give bit-identical per-pass results."""
    tr = tiny_components["transformer"]
    inputs = make_inputs(tr)
    rng = random.Random(0)
    orders = [list(ALL_PASSES), list(reversed(ALL_PASSES))] + [rng.sample(ALL_PASSES, len(ALL_PASSES)) for _ in range(2)]
    orders.append([p for call in group_passes(ALL_PASSES, None) for p in call])
    reference = _one_call(tr, orders[0], inputs)
    for order in orders[1:]:
        got = _one_call(tr, order, inputs)
        for name, (v, a) in reference.items():
            assert torch.equal(got[name][0], v) and torch.equal(got[name][1], a), name
    ref = _one_call(tr, GUIDED, inputs)
    for order in itertools.permutations(GUIDED):  # and the four guided passes in every order
        got = _one_call(tr, order, inputs)
        for name in ref:
            assert torch.equal(got[name][0], ref[name][0]) and torch.equal(got[name][1], ref[name][1]), name


def test_mixed_rows_reach_the_processor_as_views_not_copies(tiny_components):
    """In the STG block the [isolated, uncond, cond] rows run attention and the perturbed rows the value path: the
    attention processor gets its hidden states and RoPE tables as slices (views) of the full ones, not copies."""
    tr = tiny_components["transformer"]
    attn = tr.transformer_blocks[1].attn1
    original, seen = attn.processor, []

    def spy(module, hidden_states, encoder_hidden_states=None, attention_mask=None, query_rotary_emb=None,
            key_rotary_emb=None, **kwargs):
        seen.append((hidden_states, query_rotary_emb))
        return original(module, hidden_states, encoder_hidden_states, attention_mask, query_rotary_emb,
                        key_rotary_emb, **kwargs)

    attn.__dict__["processor"] = spy
    try:
        run_passes(tr, GUIDED, make_inputs(tr))  # batch 2: 8 rows, 6 of them attend
    finally:
        attn.__dict__["processor"] = original
    (hidden, rope), = seen
    assert hidden.shape[0] == 6 and hidden._is_view()
    assert all(t.shape[0] == 6 and t._is_view() for t in rope)
