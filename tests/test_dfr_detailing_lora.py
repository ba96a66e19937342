"""`LTX2DFRPipeline.load_detailing_lora`: the detailing IC-LoRA is active in the detailing stage only (as 1.2's
`DFRPipeline` adds `--detailing-lora` to stage 2's LoRAs alone), at the strength given, with its reference at the
downscale factor 1.2 uses for a file without metadata (2); every LoRA layer is restored after the call and after a
call that fails inside a stage."""

from __future__ import annotations

import pytest
import torch

from dfr_files import build_dfr_pipeline, random_embeds
from diffusers_ltx2.dfr import stages as S
from diffusers_ltx2.dfr.pipeline import DETAILING_ADAPTER, _lora_layers
from diffusers_ltx2.pipelines.two_stage import DISTILLED_ADAPTER
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


def _spy(monkeypatch, seen, fail_in=None):
    """Wrap the three stages: record the adapters active in the layers the detailing LoRA has (and the reference
    factor stage 2 gets); `fail_in` raises inside that stage."""
    for name in ("base_stage", "detail_stage", "temporal_round"):
        real = getattr(S, name)

        def wrapped(pipe, *args, _real=real, _name=name, **kwargs):
            layers = [m for m in _lora_layers(pipe) if DETAILING_ADAPTER in m.scaling]
            active = {n for m in layers for n in m.active_adapters}
            scale = {m.scaling[DETAILING_ADAPTER] for m in layers if DETAILING_ADAPTER in m.active_adapters}
            seen[_name] = (active, scale, kwargs.get("reference_downscale_factor"))
            if _name == fail_in:
                raise RuntimeError("stage failed")
            return _real(pipe, *args, **kwargs)

        monkeypatch.setattr(S, name, wrapped)


def test_detailing_lora_in_stage_2_only_and_restored(pipe, monkeypatch):
    before = _state(pipe)
    assert DETAILING_ADAPTER not in {n for adapters, _ in before for n in adapters}  # inactive outside the call
    seen = {}
    _spy(monkeypatch, seen)
    out = pipe(prompt_embeds=random_embeds(pipe), height=H, width=W, num_frames=17, temporal_upsample_rounds=1,
               generator=torch.Generator().manual_seed(0), output_type="latent")
    assert out.frames.shape[2] == 5  # (17 - 1) * 2 + 1 = 33 frames
    base, detail, temporal = seen["base_stage"], seen["detail_stage"], seen["temporal_round"]
    assert base[0] == temporal[0] == {DISTILLED_ADAPTER}  # the distilled LoRA in every stage (1.2)
    assert detail[0] == {DISTILLED_ADAPTER, DETAILING_ADAPTER}
    scale = pipe.ic_lora_adapters[DETAILING_ADAPTER].strength
    assert scale == 0.7 and len(detail[1]) == 1  # one strength on every layer, the one given (alpha = rank)
    assert abs(next(iter(detail[1])) - 0.7) < 1e-6
    assert detail[2] == 2  # no metadata: 1.2's `_detailing_downscale_factor` default
    assert _state(pipe) == before


def test_adapters_restored_after_a_failing_stage(pipe, monkeypatch):
    before, bar = _state(pipe), dict(getattr(pipe, "_progress_bar_config", {}))
    seen = {}
    _spy(monkeypatch, seen, fail_in="detail_stage")
    with pytest.raises(RuntimeError, match="stage failed"):
        pipe(prompt_embeds=random_embeds(pipe), height=H, width=W, num_frames=17,
             generator=torch.Generator().manual_seed(0), output_type="latent")
    assert DETAILING_ADAPTER in seen["detail_stage"][0]  # it failed with the adapter added
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
