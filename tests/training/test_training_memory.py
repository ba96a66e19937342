"""Memory options: gradient checkpointing (same gradients), int8-quanto / fp8-cast / torchao frozen bases (LoRA
trains beside the quantized layers),
bf16 autocast, and the 8-bit AdamW guard."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from diffusers_ltx2.factory import TINY, build_components
from diffusers_ltx2.training import strategies as S
from diffusers_ltx2.training.trainer import Trainer

from training_fixtures import make_config, write_dataset

T2V = {"name": "text_to_video", "with_audio": True, "first_frame_conditioning_p": 0.5}


@pytest.fixture()
def root(tmp_path):
    return write_dataset(tmp_path / "data", build_components(TINY)["transformer"], n_clips=2)


def _step(trainer, cfg):
    batch = trainer.batch_for([0, 1])
    noise = S.draw_step_noise(cfg, batch, S.sample_generators(0, [0, 1]))
    with torch.no_grad():
        for n, p in trainer.unwrapped.named_parameters():
            if "lora_B" in n:
                p.fill_(0.01)
    loss = trainer.compute_loss(batch, [0, 1], noise)
    loss.mean().backward()
    return loss.detach(), [p.grad.clone() for p in trainer.params]


def test_gradient_checkpointing_gives_the_same_gradients(tmp_path, root):
    plain_cfg = make_config(root, tmp_path / "a", T2V, optimization={"batch_size": 2})
    ckpt_cfg = make_config(root, tmp_path / "b", T2V,
                           optimization={"batch_size": 2, "enable_gradient_checkpointing": True})
    plain = Trainer(plain_cfg).setup()
    ckpt = Trainer(ckpt_cfg).setup()
    assert ckpt.unwrapped.gradient_checkpointing and not plain.unwrapped.gradient_checkpointing
    (l1, g1), (l2, g2) = _step(plain, plain_cfg), _step(ckpt, ckpt_cfg)
    torch.testing.assert_close(l1, l2)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("mode, qtype, rtol", [("int8-quanto", "qint8", 0.05), ("fp8-quanto", "qfloat8", 0.1)])
def test_quanto_base_trains_a_lora(tmp_path, root, mode, qtype, rtol):
    from optimum.quanto import QLinear

    cfg = make_config(root, tmp_path / "q", T2V, acceleration={"quantization": mode},
                      optimization={"steps": 3, "learning_rate": 1e-2, "batch_size": 2})
    trainer = Trainer(cfg).setup()
    layer = dict(trainer.unwrapped.named_modules())["transformer_blocks.0.attn1.to_q"]
    assert isinstance(layer.base_layer, QLinear) and layer.base_layer.weight.qtype.name.startswith(qtype)
    assert not any(p.requires_grad for n, p in trainer.unwrapped.named_parameters() if "lora_" not in n)
    q_loss, _ = _step(trainer, cfg)
    ref_cfg = make_config(root, tmp_path / "r", T2V, optimization={"batch_size": 2})
    ref_loss, _ = _step(Trainer(ref_cfg).setup(), ref_cfg)
    torch.testing.assert_close(q_loss, ref_loss, rtol=rtol, atol=0.0)  # quantized weights: close, not equal
    trainer.optimizer.zero_grad()
    result = trainer.train(progress=False)
    from safetensors import safe_open

    with safe_open(str(result.output), "pt") as f:
        assert any(f.get_tensor(k).abs().sum() > 0 for k in f.keys() if k.endswith("lora_B.weight"))


@pytest.mark.parametrize("mode, fmt, rtol", [("fp8-cast", "fp8-cast", 0.04), ("int8-torchao", "torchao", 0.005),
                                             ("fp8-torchao", "torchao", 0.01)])
def test_inference_formats_train_a_lora_on_their_frozen_base(tmp_path, root, mode, fmt, rtol):
    """The quantized inference formats as a frozen training base: the LoRA is a side path over the quantized
    layers (their weights never require grad), the loss is close to the unquantized one, and training moves the
    LoRA. Measured per-sample loss deviation: fp8-cast 1.8%, torchao int8 0.22%, torchao float8 (per row) 0.48%;
    bounds about twice that."""
    from diffusers_ltx2.quantization.lora import base_format, quantized_lora_linear_class

    cfg = make_config(root, tmp_path / "q", T2V, acceleration={"quantization": mode},
                      optimization={"steps": 3, "learning_rate": 1e-2, "batch_size": 2})
    trainer = Trainer(cfg).setup()
    layer = dict(trainer.unwrapped.named_modules())["transformer_blocks.0.attn1.to_q"]
    assert isinstance(layer, quantized_lora_linear_class()) and base_format(layer.base_layer).startswith(fmt)
    assert not any(p.requires_grad for n, p in trainer.unwrapped.named_parameters() if "lora_" not in n)
    q_loss, grads = _step(trainer, cfg)
    assert all(torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)
    ref_cfg = make_config(root, tmp_path / "r", T2V, optimization={"batch_size": 2})
    ref_loss, _ = _step(Trainer(ref_cfg).setup(), ref_cfg)
    torch.testing.assert_close(q_loss, ref_loss, rtol=rtol, atol=0.0)
    trainer.optimizer.zero_grad()
    result = trainer.train(progress=False)
    from safetensors import safe_open

    with safe_open(str(result.output), "pt") as f:
        assert any(f.get_tensor(k).abs().sum() > 0 for k in f.keys() if k.endswith("lora_B.weight"))


def test_an_fp8_keep_folder_trains_a_lora(tmp_path, root):
    """A transformer folder with float8 weights (an FP8 keep folder, here saved from fp8-cast) is the training
    base as it is: float8 layers, the LoRA beside them, the saved LoRA trained."""
    from diffusers_ltx2 import ClassifierFreeGuidance, LTX2AudioVideoPipeline, LTX2Scheduler
    from diffusers_ltx2.conversion.fp8 import FP8ScaledLinear
    from diffusers_ltx2.quantization import quantize_transformer_

    comps = build_components(TINY)
    quantize_transformer_(comps["transformer"], "fp8-cast")
    LTX2AudioVideoPipeline(scheduler=LTX2Scheduler(), guider=ClassifierFreeGuidance(1.0, 1.0),
                           **comps).save_pretrained(tmp_path / "fp8")
    cfg = make_config(root, tmp_path / "q", T2V, model={"model_path": str(tmp_path / "fp8")},
                      optimization={"steps": 2, "learning_rate": 1e-2, "batch_size": 2})
    trainer = Trainer(cfg).setup()
    layer = dict(trainer.unwrapped.named_modules())["transformer_blocks.0.attn1.to_q"]
    assert isinstance(layer.base_layer, FP8ScaledLinear) and layer.base_layer.weight.dtype == torch.float8_e4m3fn
    result = trainer.train(progress=False)
    from safetensors import safe_open

    with safe_open(str(result.output), "pt") as f:
        assert any(f.get_tensor(k).abs().sum() > 0 for k in f.keys() if k.endswith("lora_B.weight"))


def test_bf16_autocast_runs_close_to_fp32(tmp_path, root):
    cfg = make_config(root, tmp_path / "bf", T2V, acceleration={"mixed_precision_mode": "bf16"},
                      optimization={"batch_size": 2})
    trainer = Trainer(cfg).setup()
    loss, grads = _step(trainer, cfg)
    ref_cfg = make_config(root, tmp_path / "fp", T2V, optimization={"batch_size": 2})
    ref, _ = _step(Trainer(ref_cfg).setup(), ref_cfg)
    torch.testing.assert_close(loss, ref, rtol=0.05, atol=0.0)
    assert all(g.dtype == torch.float32 for g in grads)  # LoRA weights stay fp32


@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is not None and torch.cuda.is_available(),
                    reason="bitsandbytes and a GPU are present: 8-bit AdamW is allowed")
def test_adamw8bit_is_refused_without_bitsandbytes_and_a_gpu(tmp_path, root, monkeypatch):
    from diffusers_ltx2.training import models

    monkeypatch.setattr(models, "load_transformer", lambda *a: pytest.fail("model loaded"))
    cfg = make_config(root, tmp_path / "o", T2V, optimization={"optimizer_type": "adamw8bit"})
    with pytest.raises(ValueError, match="adamw8bit"):
        Trainer(cfg)


def test_int8_quanto_with_bf16_on_cpu_is_refused_before_loading(tmp_path, root, monkeypatch):
    """quanto's int8 x bf16 CPU kernel raised "expected scalar type BFloat16 but found Float" (or segfaulted)
    after the model loaded; the config is now refused up front, naming what works."""
    from diffusers_ltx2.training import models, trainer

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(trainer, "load_transformer", lambda *a: pytest.fail("model loaded"))
    cfg = make_config(root, tmp_path / "q", T2V,
                      acceleration={"quantization": "int8-quanto", "mixed_precision_mode": "bf16"})
    with pytest.raises(ValueError, match=r"int8-quanto with mixed_precision_mode bf16.*float32.*fp8-quanto"):
        Trainer(cfg)
    for acceleration in ({"quantization": "int8-quanto", "mixed_precision_mode": "fp16"},
                         {"quantization": "int8-quanto"},
                         {"quantization": "fp8-quanto", "mixed_precision_mode": "bf16"}):
        models.check_runtime_options(make_config(root, tmp_path / "ok", T2V, acceleration=acceleration))
