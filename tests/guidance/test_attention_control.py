"""`GuidanceAttentionControl` on diffusers' transformer: per-row perturbation / gating in one batched call, equal to
one-pass-at-a-time execution, independent of the `perturbed_attn` config flag, and leaving no trace."""

from __future__ import annotations

import logging

import pytest
import torch
from diffusers import LTX2VideoTransformer3DModel

from diffusers_ltx2.guiders import GuidancePass, StepPlan
from diffusers_ltx2.transformer import GuidanceAttentionControl
from diffusers_ltx2.loaders.prompt_embeddings import PromptEmbeddings
from diffusers_ltx2.latents.state import ModalityLatents
from diffusers_ltx2.transformer.passes import TextContexts, TransformerPasses

ALL_PASSES = (
    GuidancePass("cond"),
    GuidancePass("uncond", negative=True),
    GuidancePass("stg", perturb_video=True, perturb_audio=True),
    GuidancePass("stg_video", perturb_video=True),
    GuidancePass("stg_audio", perturb_audio=True),
    GuidancePass("isolated", a2v=False, v2a=False),
    GuidancePass("no_a2v", a2v=False),
    GuidancePass("no_v2a", v2a=False),
    GuidancePass("frozen_video", freeze_video=True),
    GuidancePass("frozen_audio", freeze_audio=True, perturb_video=True),
)
GUIDED = tuple(p for p in ALL_PASSES if p.name in ("cond", "uncond", "stg", "isolated"))


def make_inputs(transformer, batch=2, seed=0, frames=2, h=2, w=3, audio_len=5, text_len=7):
    """Random noisy latents, positions and prompt contexts for `transformer` (fp32)."""
    g = torch.Generator().manual_seed(seed)
    cfg = transformer.config
    n = frames * h * w
    mask = torch.ones(batch, n)
    mask[:, :2] = 0.25  # partially conditioned tokens: per-token timesteps
    video = ModalityLatents(
        latent=torch.randn(batch, n, cfg.in_channels, generator=g), clean=torch.zeros(batch, n, cfg.in_channels),
        denoise_mask=mask, coords=transformer.rope.prepare_video_coords(batch, frames, h, w, "cpu", fps=24.0),
        num_target_tokens=n,
    )
    audio = ModalityLatents(
        latent=torch.randn(batch, audio_len, cfg.audio_in_channels, generator=g),
        clean=torch.zeros(batch, audio_len, cfg.audio_in_channels), denoise_mask=torch.ones(batch, audio_len),
        coords=transformer.audio_rope.prepare_audio_coords(batch, audio_len, "cpu"), num_target_tokens=audio_len,
    )

    def ctx():
        c = cfg.caption_channels
        return PromptEmbeddings(torch.randn(batch, text_len, c, generator=g), torch.randn(batch, text_len, c, generator=g),
                                torch.ones(batch, text_len, dtype=torch.long))

    return video, audio, TextContexts(ctx(), ctx())


def run_passes(transformer, passes, inputs, *, skip_blocks=(1,), max_batch_passes=None, share_prefix=True):
    control = GuidanceAttentionControl(transformer, share_prefix=share_prefix)
    runner = TransformerPasses(transformer, attention_control=control, max_batch_passes=max_batch_passes)
    with torch.no_grad():
        out = runner(StepPlan(tuple(passes), skip_blocks=skip_blocks), *inputs, torch.tensor(0.6))
    return out, runner.num_calls


def _state(transformer):
    procs = {name: id(m.processor) for name, m in transformer.named_modules() if hasattr(m, "processor")}
    hooks = {name: (len(m._forward_hooks), len(m._forward_pre_hooks)) for name, m in transformer.named_modules()}
    dicts = {name: sorted(m.__dict__) for name, m in transformer.named_modules()}
    return procs, hooks, dicts


def test_batched_equals_sequential_and_each_pass_differs(tiny_components):
    tr = tiny_components["transformer"]
    inputs = make_inputs(tr)
    batched, calls = run_passes(tr, ALL_PASSES, inputs)
    sequential, seq_calls = run_passes(tr, ALL_PASSES, inputs, max_batch_passes=1)
    assert (calls, seq_calls) == (1, len(ALL_PASSES))
    worst = 0.0
    for p in ALL_PASSES:
        for attr in ("video", "audio"):
            a, b = getattr(batched[p.name], attr), getattr(sequential[p.name], attr)
            worst = max(worst, (a - b).abs().max().item())
    # Only the matmul batch size differs (row subsets, n*B vs B rows): fp32 rounding, observed <= ~1e-6.
    assert worst <= 1e-5, worst
    cond = batched["cond"]
    for p in ALL_PASSES[1:]:  # every kind of pass really changes the prediction
        diff = max((batched[p.name].video - cond.video).abs().max(), (batched[p.name].audio - cond.audio).abs().max())
        assert diff > 1e-3, p.name


def test_unperturbed_rows_are_unchanged_by_installed_processors(tiny_components):
    tr = tiny_components["transformer"]
    inputs = make_inputs(tr)
    plain, _ = run_passes(tr, (GuidancePass("cond"),), inputs)
    mixed, _ = run_passes(tr, (GuidancePass("cond"), GuidancePass("isolated", a2v=False, v2a=False),
                               GuidancePass("stg", perturb_video=True, perturb_audio=True)), inputs)
    # cond rows go through the original processors on a row subset: equal up to matmul rounding
    # (a few fp32 ulps of values of magnitude ~1-10).
    torch.testing.assert_close(mixed["cond"].video, plain["cond"].video, rtol=1e-6, atol=2e-6)
    torch.testing.assert_close(mixed["cond"].audio, plain["cond"].audio, rtol=1e-6, atol=2e-6)


def test_activation_leaves_transformer_exactly_as_it_was(tiny_components):
    tr = tiny_components["transformer"]
    inputs = make_inputs(tr)
    before_state = _state(tr)
    weights = {k: v.clone() for k, v in tr.state_dict().items()}
    reference, _ = run_passes(tr, (GuidancePass("cond"),), inputs)
    run_passes(tr, ALL_PASSES, inputs)
    control = GuidanceAttentionControl(tr)
    with pytest.raises(RuntimeError, match="boom"):
        with control.activate(list(ALL_PASSES), 2, (1,)):
            assert _state(tr) != before_state  # something was installed...
            raise RuntimeError("boom")
    assert _state(tr) == before_state  # ...and everything is gone, even after an exception
    assert all(torch.equal(v, tr.state_dict()[k]) for k, v in weights.items())
    after, _ = run_passes(tr, (GuidancePass("cond"),), inputs)
    assert torch.equal(after["cond"].video, reference["cond"].video)
    with control.activate([GuidancePass("cond")], 1, ()):
        with pytest.raises(RuntimeError, match="re-entrant"):
            with control.activate([GuidancePass("cond")], 1, ()):
                pass
    with pytest.raises(ValueError, match="outside"):
        with control.activate([GuidancePass("stg", perturb_video=True)], 1, (5,)):
            pass


def _rows_seen(transformer):
    seen = []
    handles = [b.ff.register_forward_pre_hook(lambda m, a, i=i: seen.append((i, a[0].shape[0])))
               for i, b in enumerate(transformer.transformer_blocks)]
    return seen, handles


def test_shared_prefix_computes_identical_passes_once(tiny_components):
    tr = tiny_components["transformer"]
    inputs = make_inputs(tr)
    seen, handles = _rows_seen(tr)
    shared, _ = run_passes(tr, GUIDED, inputs)
    rows_shared = list(seen)
    seen.clear()
    unshared, _ = run_passes(tr, GUIDED, inputs, share_prefix=False)
    rows_unshared = list(seen)
    for h in handles:
        h.remove()
    # cond and stg differ only from the STG block (1) on: block 0 runs 3 passes x 2 rows instead of 4 x 2
    assert rows_shared == [(0, 6), (1, 8)] and rows_unshared == [(0, 8), (1, 8)]
    for p in GUIDED:
        torch.testing.assert_close(shared[p.name].video, unshared[p.name].video, rtol=0, atol=1e-5)
        torch.testing.assert_close(shared[p.name].audio, unshared[p.name].audio, rtol=0, atol=1e-5)


def test_shared_prefix_falls_back_when_rows_differ(tiny_components):
    """A caller that feeds different inputs to passes the plan would merge still gets exact results."""
    tr = tiny_components["transformer"]
    video, audio, ctx = make_inputs(tr, batch=1)
    passes = [GuidancePass("cond"), GuidancePass("stg", perturb_video=True)]
    lat = torch.cat([video.latent, video.latent + 0.5])  # pass 2 gets a different latent
    kwargs = dict(
        audio_hidden_states=audio.latent.repeat(2, 1, 1), encoder_hidden_states=ctx.positive.video_context.repeat(2, 1, 1),
        audio_encoder_hidden_states=ctx.positive.audio_context.repeat(2, 1, 1), timestep=torch.full((2, 1), 600.0),
        sigma=torch.full((2,), 600.0), video_coords=video.coords.repeat(2, 1, 1, 1),
        audio_coords=audio.coords.repeat(2, 1, 1, 1), return_dict=False,
    )
    seen, handles = _rows_seen(tr)
    with torch.no_grad():
        with GuidanceAttentionControl(tr).activate(passes, 1, (1,)):
            got = tr(hidden_states=lat, **kwargs)
        with GuidanceAttentionControl(tr, share_prefix=False).activate(passes, 1, (1,)):
            ref = tr(hidden_states=lat, **kwargs)
    for h in handles:
        h.remove()
    assert seen[0] == (0, 2)  # not merged
    torch.testing.assert_close(got[0], ref[0], rtol=0, atol=0)


def _with_perturbed_attn_flag(transformer, flag):
    twin = LTX2VideoTransformer3DModel.from_config({**transformer.config, "perturbed_attn": flag}).eval()
    twin.load_state_dict(transformer.state_dict())
    return twin


def test_independent_of_perturbed_attn_config_and_matches_diffusers_stg(tiny_components, caplog):
    tr = tiny_components["transformer"]
    assert tr.config.perturbed_attn is False
    flagged = _with_perturbed_attn_flag(tr, True)
    inputs = make_inputs(tr, batch=1)
    passes = (GuidancePass("cond"), GuidancePass("stg", perturb_video=True, perturb_audio=True))
    with caplog.at_level(logging.WARNING):
        ours_plain, _ = run_passes(tr, passes, inputs)
        ours_flagged, _ = run_passes(flagged, passes, inputs)
    assert not [r for r in caplog.records if "not expected" in r.getMessage()]
    for name in ("cond", "stg"):
        torch.testing.assert_close(ours_plain[name].video, ours_flagged[name].video, rtol=0, atol=1e-6)

    video, audio, ctx = inputs
    t = video.timesteps(torch.tensor(0.6))

    def diffusers_stg(model):
        with torch.no_grad():
            v, a = model(hidden_states=video.latent, audio_hidden_states=audio.latent,
                         encoder_hidden_states=ctx.positive.video_context,
                         audio_encoder_hidden_states=ctx.positive.audio_context, timestep=t * 1000,
                         audio_timestep=audio.timesteps(torch.tensor(0.6)) * 1000, sigma=torch.tensor([600.0]),
                         video_coords=video.coords, audio_coords=audio.coords, use_cross_timestep=True,
                         spatio_temporal_guidance_blocks=[1], return_dict=False)
        return video.latent - t.unsqueeze(-1) * v, audio.latent - 0.6 * a

    # diffusers' own STG (only active with perturbed_attn=True) computes what our STG pass computes...
    dv, da = diffusers_stg(flagged)
    torch.testing.assert_close(dv, ours_plain["stg"].video, rtol=0, atol=1e-5)
    torch.testing.assert_close(da, ours_plain["stg"].audio, rtol=0, atol=1e-5)
    # ...and is a silent no-op on the factory / LTX-2.0-conversion config, where ours still perturbs.
    nv, na = diffusers_stg(tr)
    torch.testing.assert_close(nv, ours_plain["cond"].video, rtol=0, atol=1e-5)
    assert (ours_plain["stg"].video - ours_plain["cond"].video).abs().max() > 1e-2


def test_works_with_lora_and_torch_compile(tiny_components):
    from peft import LoraConfig

    tr = tiny_components["transformer"]
    inputs = make_inputs(tr, batch=1)
    base, _ = run_passes(tr, GUIDED, inputs)
    tr.add_adapter(LoraConfig(r=2, lora_alpha=2, target_modules=["to_q", "to_k", "to_v", "to_out.0"],
                              init_lora_weights=False))
    before = _state(tr)
    lora, _ = run_passes(tr, GUIDED, inputs)
    assert _state(tr) == before
    assert (lora["stg"].video - base["stg"].video).abs().max() > 1e-3  # the LoRA acts inside the STG value path
    lora_seq, _ = run_passes(tr, GUIDED, inputs, max_batch_passes=1)
    for p in GUIDED:
        torch.testing.assert_close(lora[p.name].video, lora_seq[p.name].video, rtol=0, atol=1e-5)

    compiled = torch.compile(tr, backend="eager")  # dynamo traces our processors and hooks
    before = _state(tr)  # torch.compile marks the module itself; only our own traces must be gone
    got, _ = run_passes(compiled, GUIDED, inputs)
    for p in GUIDED:
        torch.testing.assert_close(got[p.name].video, lora[p.name].video, rtol=0, atol=1e-6)
        torch.testing.assert_close(got[p.name].audio, lora[p.name].audio, rtol=0, atol=1e-6)
    assert _state(tr) == before


def test_works_with_offload_hooks(tiny_components):
    """accelerate's cpu_offload (weights on the meta device, loaded by module hooks per forward) and diffusers'
    leaf-level group offloading: the STG value path calls the hooked modules, so both keep working."""
    from accelerate import cpu_offload

    tr = tiny_components["transformer"]
    inputs = make_inputs(tr, batch=1)
    ref, _ = run_passes(tr, GUIDED, inputs)
    grouped = LTX2VideoTransformer3DModel.from_config(tr.config).eval()
    grouped.load_state_dict(tr.state_dict())
    grouped.enable_group_offload(onload_device=torch.device("cpu"), offload_device=torch.device("cpu"),
                                 offload_type="leaf_level")
    cpu_offload(tr, execution_device=torch.device("cpu"))
    assert next(tr.parameters()).device.type == "meta"
    for model in (tr, grouped):
        before = _state(model)
        got, _ = run_passes(model, GUIDED, inputs)
        assert _state(model) == before
        for p in GUIDED:
            torch.testing.assert_close(got[p.name].video, ref[p.name].video, rtol=0, atol=1e-6)
            torch.testing.assert_close(got[p.name].audio, ref[p.name].audio, rtol=0, atol=1e-6)
