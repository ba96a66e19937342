"""IC-LoRA loading: official-format files (lora_A/B, lora_down/up, connector blocks) through the pipeline's
`load_lora_weights`, metadata factors, adapter names / strengths and fusion equal to the official
`W + strength * B @ A` (no alpha scaling)."""

from __future__ import annotations

import logging

import pytest
import torch
from safetensors.torch import save_file

from diffusers_ltx2 import ClassifierFreeGuidance, LTX2ICLoRAPipeline, LTX2Scheduler

RANK = 4
TARGETS = ["attn1.to_q", "attn1.to_v", "ff.net.0.proj"]


def _factors(module, shapes, gen, scale=0.3):
    out_f, in_f = shapes
    return torch.randn(RANK, in_f, generator=gen) * scale, torch.randn(out_f, RANK, generator=gen) * scale


def write_lora(path, transformer, *, metadata=None, down_up=False, connector=None, seed=0, blocks=(0, 1)):
    """A tiny official-format LoRA for `transformer` (and optionally a connector block)."""
    gen = torch.Generator().manual_seed(seed)
    a_key, b_key = ("lora_down", "lora_up") if down_up else ("lora_A", "lora_B")
    sd, truth = {}, {}
    for i in blocks:
        for t in TARGETS:
            w = transformer.get_submodule(f"transformer_blocks.{i}.{t}").weight
            a, b = _factors(t, w.shape, gen)
            sd[f"diffusion_model.transformer_blocks.{i}.{t}.{a_key}.weight"] = a
            sd[f"diffusion_model.transformer_blocks.{i}.{t}.{b_key}.weight"] = b
            truth[("transformer", f"transformer_blocks.{i}.{t}")] = (a, b)
    if connector is not None:
        w = connector.get_submodule("video_connector.transformer_blocks.0.attn1.to_q").weight
        a, b = _factors("c", w.shape, gen)
        sd[f"diffusion_model.video_embeddings_connector.transformer_1d_blocks.0.attn1.to_q.{a_key}.weight"] = a
        sd[f"diffusion_model.video_embeddings_connector.transformer_1d_blocks.0.attn1.to_q.{b_key}.weight"] = b
        truth[("connectors", "video_connector.transformer_blocks.0.attn1.to_q")] = (a, b)
    save_file(sd, str(path), metadata=metadata)
    return truth


@pytest.fixture()
def ic_pipe(tiny_components):
    return LTX2ICLoRAPipeline(scheduler=LTX2Scheduler(), guider=ClassifierFreeGuidance(1.0, 1.0), **tiny_components)


def _base_weight(layer) -> torch.Tensor:
    return (layer.base_layer if hasattr(layer, "base_layer") else layer).weight


def test_factor_read_from_metadata(ic_pipe, tmp_path):
    path = tmp_path / "ic.safetensors"
    write_lora(path, ic_pipe.transformer, metadata={"reference_downscale_factor": "2"})
    name = ic_pipe.load_lora_weights(str(path), adapter_name="ic")
    assert name == "ic"
    assert ic_pipe.reference_downscale_factor == 2
    assert ic_pipe.ic_lora_adapters["ic"].from_metadata
    assert ic_pipe.reference_temporal_scale_factor == 1
    ic_pipe.delete_adapters("ic")
    assert ic_pipe.reference_downscale_factor == 1


def test_explicit_factor_overrides_and_missing_warns(ic_pipe, tmp_path, caplog):
    path = tmp_path / "ic.safetensors"
    write_lora(path, ic_pipe.transformer, metadata={"reference_downscale_factor": "2",
                                                    "reference_temporal_scale_factor": "1"})
    ic_pipe.load_lora_weights(str(path), adapter_name="a", reference_downscale_factor=4)
    assert ic_pipe.reference_downscale_factor == 4
    plain = tmp_path / "plain.safetensors"
    write_lora(plain, ic_pipe.transformer, seed=1)
    with caplog.at_level(logging.WARNING, logger="diffusers_ltx2.loaders.lora"):
        ic_pipe.load_lora_weights(str(plain), adapter_name="b")
    assert "no reference_downscale_factor" in caplog.text
    assert ic_pipe.ic_lora_adapters["b"].reference_downscale_factor == 1
    assert ic_pipe.reference_downscale_factor == 4  # a factor-1 LoRA does not conflict


def test_conflicting_factors_are_refused(ic_pipe, tmp_path):
    p2, p3 = tmp_path / "two.safetensors", tmp_path / "three.safetensors"
    write_lora(p2, ic_pipe.transformer, metadata={"reference_downscale_factor": "2"})
    write_lora(p3, ic_pipe.transformer, metadata={"reference_downscale_factor": "3"}, seed=2)
    ic_pipe.load_lora_weights(str(p2), adapter_name="two")
    with pytest.raises(ValueError, match="different reference scales"):
        ic_pipe.load_lora_weights(str(p3), adapter_name="three")
    assert "three" not in (ic_pipe.transformer.peft_config or {})  # refused before touching the model
    with pytest.raises(ValueError, match="positive integer"):
        ic_pipe.load_lora_weights(str(p3), adapter_name="x", reference_downscale_factor=0)
    bad = tmp_path / "bad.safetensors"
    write_lora(bad, ic_pipe.transformer, metadata={"reference_downscale_factor": "half"})
    with pytest.raises(ValueError, match="not a number"):
        ic_pipe.load_lora_weights(str(bad), adapter_name="bad")


@torch.no_grad()
@pytest.mark.parametrize("down_up", [False, True], ids=["lora_A_B", "lora_down_up"])
def test_fusion_matches_official_formula(ic_pipe, tmp_path, down_up):
    """Fused weights == W + strength * B @ A (official `apply_loras`, no alpha scaling), incl. connector blocks;
    the unfused adapter gives the same transformer output as the fused weights; unfuse restores W."""
    path = tmp_path / "lora.safetensors"
    truth = write_lora(path, ic_pipe.transformer, down_up=down_up, connector=ic_pipe.connectors)
    originals = {k: _base_weight(getattr(ic_pipe, k[0]).get_submodule(k[1])).clone() for k in truth}
    strength = 0.7
    ic_pipe.load_lora_weights(str(path), adapter_name="ctl", strength=strength)
    assert "ctl" in ic_pipe.connectors.peft_config  # connector-block LoRA landed in the connectors

    x = torch.randn(2, 5, 16)
    layer = ic_pipe.transformer.get_submodule("transformer_blocks.0.attn1.to_q")
    adapter_out = layer(x)
    ic_pipe.fuse_lora()
    errors = []
    for (component, module), (a, b) in truth.items():
        fused = _base_weight(getattr(ic_pipe, component).get_submodule(module))
        expected = originals[(component, module)] + strength * (b @ a)
        errors.append((fused - expected).abs().max().item())
    print(f"fusion max error ({'down/up' if down_up else 'A/B'}): {max(errors):.2e}")
    assert max(errors) < 1e-6  # fp32 matmul of rank-4 factors, same formula
    torch.testing.assert_close(layer(x), adapter_out, rtol=0, atol=1e-5)
    ic_pipe.unfuse_lora()
    for key, w in originals.items():
        torch.testing.assert_close(_base_weight(getattr(ic_pipe, key[0]).get_submodule(key[1])), w,
                                   rtol=0, atol=1e-6)


@torch.no_grad()
def test_adapter_strengths_combine(ic_pipe, tmp_path):
    p1, p2 = tmp_path / "one.safetensors", tmp_path / "two.safetensors"
    t1 = write_lora(p1, ic_pipe.transformer, seed=1)
    t2 = write_lora(p2, ic_pipe.transformer, seed=2)
    key = ("transformer", "transformer_blocks.1.attn1.to_v")
    w = _base_weight(ic_pipe.transformer.get_submodule(key[1])).clone()
    ic_pipe.load_lora_weights(str(p1), adapter_name="one")
    ic_pipe.load_lora_weights(str(p2), adapter_name="two")
    layer = ic_pipe.transformer.get_submodule(key[1])
    ic_pipe.set_adapters(["one", "two"], [0.5, 1.5])
    x = torch.randn(3, 16)
    (a1, b1), (a2, b2) = t1[key], t2[key]
    expected = torch.nn.functional.linear(x, w + 0.5 * b1 @ a1 + 1.5 * b2 @ a2, layer.base_layer.bias)
    torch.testing.assert_close(layer(x), expected, rtol=0, atol=1e-5)
    assert ic_pipe.ic_lora_adapters["one"].strength == 0.5


def test_lora_changes_pipeline_output(ic_pipe, tmp_path):
    """An official-format LoRA changes the generated latents (it is really applied in the call)."""
    from diffusers_ltx2.factory import TINY_CLIP

    path = tmp_path / "ic.safetensors"
    write_lora(path, ic_pipe.transformer, metadata={"reference_downscale_factor": "1"})
    control = torch.rand(9, 3, 64, 64)
    kw = dict(control_video=control, num_inference_steps=2, max_sequence_length=128, output_type="latent",
              **TINY_CLIP)
    before = ic_pipe("a cat", generator=torch.Generator().manual_seed(0), **kw).frames
    ic_pipe.load_lora_weights(str(path), adapter_name="ic")
    after = ic_pipe("a cat", generator=torch.Generator().manual_seed(0), **kw).frames
    assert (after - before).abs().max() > 1e-3
