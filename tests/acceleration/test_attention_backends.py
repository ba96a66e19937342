"""Attention backends through diffusers' dispatcher under every guidance pass layout: the native backend equals the
default path, the selected backend is really called (a spy registered in diffusers' registry), a mask-free
backend (flash / sage) gets its masks dropped where exact and the masked attentions routed to native SDPA where
not (padded prompts, IC-LoRA attention strength). The real flash / sage kernels need a GPU and their packages."""

from __future__ import annotations

import inspect
import logging

import pytest
import torch

from diffusers_ltx2 import (
    ClassifierFreeGuidance, LTX2AudioVideoPipeline, LTX2ICLoRAPipeline, LTX2Scheduler, MultimodalGuider,
    PromptEmbeddings,
)
from diffusers_ltx2.acceleration.attention_backends import (
    backend_name, check_attention_backend, current_backend, takes_attention_mask,
)
from diffusers_ltx2.factory import TINY_CLIP
from diffusers_ltx2.loaders.identity import context_dims

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


@pytest.fixture()
def registry(monkeypatch):
    """diffusers' backend registry with its global state restored after the test, spies on native and a fake
    mask-free "flash" (SDPA underneath; refuses masks as flash-attn does) whose requirement check passes."""
    from diffusers.models import attention_dispatch as ad

    reg = ad._AttentionBackendRegistry
    monkeypatch.setattr(reg, "_active_backend", reg._active_backend)
    native = reg._backends[ad.AttentionBackendName.NATIVE]
    calls = {"native": [], "flash": []}

    def spy_native(*args, **kwargs):
        calls["native"].append(kwargs.get("attn_mask") is not None)
        return native(*args, **kwargs)

    def fake_flash(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                   window_size=(-1, -1), return_lse=False, _parallel_config=None):
        if attn_mask is not None:
            raise ValueError("`attn_mask` is not supported for flash-attn 2.")
        calls["flash"].append(query.shape[0])
        out = torch.nn.functional.scaled_dot_product_attention(query.transpose(1, 2), key.transpose(1, 2),
                                                               value.transpose(1, 2), scale=scale)
        return out.transpose(1, 2)

    spy_native.__signature__ = inspect.signature(native)
    monkeypatch.setitem(reg._backends, ad.AttentionBackendName.NATIVE, spy_native)
    monkeypatch.setitem(reg._backends, ad.AttentionBackendName.FLASH, fake_flash)
    monkeypatch.setitem(reg._supported_arg_names, ad.AttentionBackendName.FLASH,
                        set(inspect.signature(fake_flash).parameters))
    monkeypatch.setattr(ad, "_check_attention_backend_requirements", lambda backend: None)
    return calls


def _pipe(components, guider=None, cls=LTX2AudioVideoPipeline):
    pipe = cls(scheduler=LTX2Scheduler(), guider=guider or MultimodalGuider(), **components)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _run(pipe, **kw):
    args = dict(prompt="a cat", negative_prompt="dark") if "prompt_embeds" not in kw else {}
    out = pipe(num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="latent",
               **{**TINY_CLIP, **args, **kw})
    return torch.cat([out.frames.flatten(), out.audio.flatten()])


def test_names_and_mask_support():
    assert backend_name("native") == "native" and backend_name("native-cudnn") == "_native_cudnn"
    assert backend_name("_native_math") == "_native_math"  # diffusers' own names pass through
    with pytest.raises(ValueError, match="unknown attention backend 'fast'.*native, flash"):
        backend_name("fast")
    assert takes_attention_mask("native") and takes_attention_mask("flex") and takes_attention_mask(None)
    assert not takes_attention_mask("flash") and not takes_attention_mask("sage")
    assert not takes_attention_mask("_native_flash") and takes_attention_mask("flash_varlen")


def test_native_equals_the_default_path_under_every_layout(tiny_components_master, registry):
    """cfg + STG (value path in block 1) + modality isolation, 4 passes batched with a shared prefix: native
    selected explicitly gives the default result bit for bit, and every computed attention went through it."""
    import copy

    default = _run(_pipe(copy.deepcopy(tiny_components_master)))
    assert registry["native"]  # the default path is diffusers' dispatcher too
    registry["native"].clear()
    pipe = _pipe(copy.deepcopy(tiny_components_master))
    pipe.set_attention_backend("native")
    assert current_backend(pipe.transformer) == "native"
    torch.testing.assert_close(_run(pipe), default, rtol=0, atol=0)
    assert registry["native"] and not registry["flash"]


def test_a_mask_free_backend_is_called_for_every_attention_with_an_all_valid_mask(tiny_components_master,
                                                                                   registry):
    import copy

    ref = _run(_pipe(copy.deepcopy(tiny_components_master)))
    registry["native"].clear()
    pipe = _pipe(copy.deepcopy(tiny_components_master))
    pipe.set_attention_backend("flash")
    got = _run(pipe)
    # every transformer attention, text cross-attention included, went to flash; native SDPA saw only the text
    # connectors' masked calls (the prompt and the negative x the video and audio connector's one block)
    assert registry["flash"] and registry["native"] == [True] * 4
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)  # a dropped all-zero bias: SDPA kernel noise
    # the guidance control's wrapper forwards the backend to the processor it wraps
    from diffusers_ltx2.guiders import GuidancePass
    from diffusers_ltx2.transformer import GuidanceAttentionControl

    control = GuidanceAttentionControl(pipe.transformer)
    with control.activate([GuidancePass("c"), GuidancePass("p", perturb_video=True)], 1, (1,)):
        attn = pipe.transformer.transformer_blocks[1].attn1
        assert type(attn.processor).__name__ == "GuidedAttnProcessor"
        assert attn.processor._attention_backend.value == "flash"
        pipe.transformer.set_attention_backend("native")
        assert attn.processor.original._attention_backend.value == "native"
    assert attn.processor._attention_backend.value == "native"


def test_padded_masks_and_attention_strength_route_to_native(tiny_components_master, registry, caplog):
    """A padded prompt mask: text cross-attention runs on native SDPA with the mask, the rest on the selected
    backend; results equal the native run. An IC-LoRA attention-strength bias: video self-attention likewise."""
    import copy

    widths = context_dims(tiny_components_master["transformer"])
    g = torch.Generator().manual_seed(0)
    mask = torch.ones(1, 12, dtype=torch.int64)
    mask[:, :5] = 0
    embeds = PromptEmbeddings(torch.randn(1, 12, widths[0], generator=g), torch.randn(1, 12, widths[1], generator=g),
                              mask)
    kw = dict(prompt_embeds=embeds, guider=ClassifierFreeGuidance(1.0, 1.0))
    ref = _run(_pipe(copy.deepcopy(tiny_components_master)), **kw)
    registry["native"].clear()
    pipe = _pipe(copy.deepcopy(tiny_components_master))
    pipe.set_attention_backend("flash")
    with caplog.at_level(logging.WARNING, logger="diffusers_ltx2.acceleration.attention_backends"):
        from diffusers_ltx2.acceleration import attention_backends as ab

        ab._WARNED.clear()
        got = _run(pipe, **kw)
    assert "takes no attention mask" in caplog.text and "attn2" in caplog.text
    assert registry["flash"] and registry["native"] and all(registry["native"])  # native only with masks
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    assert pipe.transformer.transformer_blocks[0].attn2.processor._attention_backend.value == "flash"  # restored

    from test_ic_lora_pipeline import moving_square

    ic = _pipe(copy.deepcopy(tiny_components_master), ClassifierFreeGuidance(1.0, 1.0), cls=LTX2ICLoRAPipeline)
    ic_kw = dict(control_video=moving_square(frames=9, size=64), conditioning_attention_strength=0.5)
    ic_ref = _run(ic, **ic_kw)
    ic.set_attention_backend("flash")
    registry["native"].clear()
    registry["flash"].clear()
    torch.testing.assert_close(_run(ic, **ic_kw), ic_ref, rtol=1e-5, atol=1e-5)
    assert registry["flash"] and any(registry["native"])


def test_unavailable_backends_are_refused_before_loading(tmp_path, tiny_pipe, capsys):
    """flash-attn / SageAttention are not installed here: refused with diffusers' reason, at the API and as one
    line with exit code 2 on the CLI (before the model loads)."""
    from diffusers_ltx2.cli import main

    import importlib.util

    if importlib.util.find_spec("flash_attn") is not None:
        pytest.skip("flash-attn is installed here")
    with pytest.raises(ValueError, match="attention backend 'flash'.*flash-attn"):
        check_attention_backend("flash")
    tiny_pipe.save_pretrained(tmp_path / "m")
    capsys.readouterr()
    rc = main(["generate", "--model", str(tmp_path / "m"), "--prompt", "a cat", "--output", str(tmp_path / "o.mp4"),
               "--attention", "flash", "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "flash-attn" in err[0]
    assert not (tmp_path / "o.mp4").exists()
