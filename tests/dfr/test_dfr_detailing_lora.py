"""`LTX2DFRPipeline.load_detailing_lora`: the detailing IC-LoRA is active in the detailing stage only (as 1.2's
`DFRPipeline` adds `--detailing-lora` to stage 2's LoRAs alone), at the strength given, with its reference at the
downscale factor 1.2 uses for a file without metadata (2); every LoRA layer is restored after the call and after a
call that fails inside a stage."""

from __future__ import annotations

import pytest
import torch

from dfr_files import build_dfr_pipeline, random_embeds
from diffusers_ltx2.conditioning import ReferenceVideo
from diffusers_ltx2.dfr import stages as S
from diffusers_ltx2.dfr.pipeline import DETAILING_ADAPTER, _lora_layers
from diffusers_ltx2.pipelines.refine import DISTILLED_ADAPTER
from two_stage_files import write_official_lora

H, W = 128, 192


@pytest.fixture(scope="module")
def pipe(ltx25_set, tmp_path_factory):
    pipe = build_dfr_pipeline(ltx25_set)
    pipe.load_distilled_lora(str(ltx25_set["distilled_lora"]))
    path = tmp_path_factory.mktemp("detailing") / "detailing.safetensors"
    write_official_lora(path, pipe.transformer, seed=7)
    assert pipe.load_detailing_lora(str(path), strength=0.7) == DETAILING_ADAPTER
    return pipe


def _state(pipe):
    """Each LoRA layer's active adapters and scales."""
    return [(tuple(m.active_adapters), dict(m.scaling)) for m in _lora_layers(pipe)]


def _spy(pipe, monkeypatch, seen, fail_in=None):
    """Record, per stage (`run_stage`'s stage name), the adapters active in the layers the detailing LoRA has and
    their detailing scale while the transformer runs, and the reference downscale factor of the stage's
    `ReferenceVideo`; `fail_in`: the transformer raises inside that stage (adapters switched on)."""
    current = {}
    real_run_stage = S.run_stage

    def run_stage(stage, runtime):
        current["name"] = stage.name
        ref = [c.downscale_factor for c in stage.conditions if isinstance(c, ReferenceVideo)]
        seen.setdefault(stage.name, {"active": set(), "scale": set(), "reference": ref})
        return real_run_stage(stage, runtime)

    def hook(module, args, kwargs):
        layers = [m for m in _lora_layers(pipe) if DETAILING_ADAPTER in m.scaling]
        entry = seen[current["name"]]
        entry["active"] |= {n for m in layers for n in m.active_adapters}
        entry["scale"] |= {round(m.scaling[DETAILING_ADAPTER], 6) for m in layers
                           if DETAILING_ADAPTER in m.active_adapters}
        if fail_in is not None and current["name"].startswith(fail_in):
            raise RuntimeError("stage failed")

    monkeypatch.setattr(S, "run_stage", run_stage)
    handle = pipe.transformer.register_forward_pre_hook(hook, with_kwargs=True)
    return handle


def _by_stage(seen, prefix):
    entries = [v for k, v in seen.items() if k.startswith(prefix)]
    assert entries, (prefix, list(seen))
    return entries


def test_detailing_lora_in_stage_2_only_and_restored(pipe, monkeypatch):
    before = _state(pipe)
    assert DETAILING_ADAPTER not in {n for adapters, _ in before for n in adapters}  # inactive outside the call
    seen = {}
    handle = _spy(pipe, monkeypatch, seen)
    try:
        out = pipe(prompt_embeds=random_embeds(pipe), height=H, width=W, num_frames=17, temporal_upsample_rounds=1,
                   generator=torch.Generator().manual_seed(0), output_type="latent")
    finally:
        handle.remove()
    assert out.frames.shape[2] == 5  # (17 - 1) * 2 + 1 = 33 frames
    for prefix in ("DFR base", "DFR temporal round"):  # the distilled LoRA in every stage (1.2), detailing not
        for entry in _by_stage(seen, prefix):
            assert entry["active"] == {DISTILLED_ADAPTER} and entry["reference"] == [], (prefix, entry)
    (detail,) = _by_stage(seen, "DFR detailing")
    assert detail["active"] == {DISTILLED_ADAPTER, DETAILING_ADAPTER}
    assert pipe.ic_lora_adapters[DETAILING_ADAPTER].strength == 0.7
    assert detail["scale"] == {0.7}  # one strength on every layer, the one given (alpha = rank)
    assert detail["reference"] == [2]  # no metadata: 1.2's `_detailing_downscale_factor` default
    assert _state(pipe) == before


def test_adapters_restored_after_a_failing_stage(pipe, monkeypatch):
    before, bar = _state(pipe), dict(getattr(pipe, "_progress_bar_config", {}))
    seen = {}
    handle = _spy(pipe, monkeypatch, seen, fail_in="DFR detailing")
    try:
        with pytest.raises(RuntimeError, match="stage failed"):
            pipe(prompt_embeds=random_embeds(pipe), height=H, width=W, num_frames=17,
                 generator=torch.Generator().manual_seed(0), output_type="latent")
    finally:
        handle.remove()
    assert DETAILING_ADAPTER in _by_stage(seen, "DFR detailing")[0]["active"]  # it failed with the adapter on
    assert _state(pipe) == before and dict(pipe._progress_bar_config) == bar


def test_detailing_lora_changes_the_output(pipe):
    """The same call without the adapter registered (no adapter, no reference) gives other latents: the LoRA and
    its reference take part in the detailing stage."""
    kw = dict(prompt_embeds=random_embeds(pipe), height=H, width=W, num_frames=17, output_type="latent")
    with_lora = pipe(generator=torch.Generator().manual_seed(0), **kw).frames
    info = pipe.ic_lora_adapters.pop(DETAILING_ADAPTER)
    try:
        without = pipe(generator=torch.Generator().manual_seed(0), **kw).frames
    finally:
        pipe.ic_lora_adapters[DETAILING_ADAPTER] = info
    assert with_lora.shape == without.shape and not torch.allclose(with_lora, without, atol=1e-4)
