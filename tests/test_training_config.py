"""`ltx2 train` configuration: every bad input is refused with the field's path, before any model is built."""

from __future__ import annotations

import pytest
import yaml

from diffusers_ltx2.training.config import ConfigError, TrainingConfig, load_config, parse_config
from diffusers_ltx2.training.lora import TARGET_MODULE_PRESETS, resolve_target_modules


@pytest.fixture()
def root(tmp_path):
    for d in ("latents", "conditions", "reference_latents"):
        (tmp_path / "data" / d).mkdir(parents=True)
    return tmp_path / "data"


def _base(root, **extra):
    cfg = {"model": {"model_path": "factory:tiny"}, "data": {"preprocessed_data_root": str(root)}}
    cfg.update(extra)
    return cfg


def test_defaults_are_the_documented_ones(root):
    cfg = parse_config(_base(root))
    assert isinstance(cfg, TrainingConfig)
    assert cfg.training_strategy.name == "text_to_video" and cfg.training_strategy.first_frame_conditioning_p == 0.1
    assert cfg.lora.rank == 32 and cfg.lora.alpha is None and cfg.lora_target_modules() == "video"
    for d in ("audio_latents",):
        (root / d).mkdir()
    assert parse_config(_base(root, training_strategy={"with_audio": True})).lora_target_modules() == "audio_video"
    assert cfg.flow_matching.timestep_sampling_mode == "shifted_logit_normal"
    v2v = parse_config(_base(root, training_strategy={"name": "video_to_video"})).training_strategy
    assert v2v.reference_downscale_factor == 2 and v2v.control_types == ["canny"]


@pytest.mark.parametrize("patch, where", [
    ({"optimisation": {"steps": 3}}, "optimisation: unknown key"),
    ({"lora": {"rank": 4, "alhpa": 4}}, "lora.alhpa: unknown key"),
    ({"lora": {"rank": 0}}, "lora.rank"),
    ({"lora": {"target_modules": "everything"}}, "unknown target_modules preset"),
    ({"optimization": {"learning_rate": -1}}, "optimization.learning_rate"),
    ({"optimization": {"optimizer_type": "sgd"}}, "optimization.optimizer_type"),
    ({"training_strategy": {"name": "image_to_video"}}, "training_strategy"),
    ({"training_strategy": {"name": "video_to_video", "reference_downscale_factor": 0}},
     "training_strategy.reference_downscale_factor"),
    ({"training_strategy": {"name": "video_to_video", "control_types": ["canny", "normals"]}}, "control_types"),
    ({"training_strategy": {"name": "text_to_video", "first_frame_conditioning_p": 1.5}}, "first_frame_conditioning_p"),
    ({"training_strategy": {"name": "text_to_video", "with_audio": True}}, "audio_latents"),
    ({"flow_matching": {"timestep_sampling_params": {"sdt": 1.0}}}, "unknown shifted_logit_normal parameters"),
    ({"acceleration": {"quantization": "int4"}}, "acceleration.quantization"),
    ({"model": {"model_path": "/nonexistent/ltx2"}}, "model path does not exist"),
    ({"model": {"model_path": "factory:tiny", "training_mode": "full"}, "acceleration": {"quantization": "int8-quanto"}},
     "quantized base"),
])
def test_bad_config_names_the_field(root, patch, where):
    with pytest.raises(ConfigError, match="invalid training config") as err:
        parse_config(_base(root, **patch))
    assert where in str(err.value)


def test_missing_data_folder_and_yaml_errors(tmp_path, root):
    with pytest.raises(ConfigError, match="preprocessed data folder does not exist"):
        parse_config(_base(tmp_path / "nope"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "missing.yaml")
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(_base(root, lora={"rank": 8, "target_modules": ["attn1.to_q"]})))
    assert load_config(good).lora.target_modules == ["attn1.to_q"]


def test_yaml_no_is_accelerates_no_mixed_precision(tmp_path, root):
    """The documented `mixed_precision_mode: no` reads as False in YAML 1.1; it means "no" (it was refused with
    "Input should be 'no', 'fp16' or 'bf16'")."""
    path = tmp_path / "cfg.yaml"
    text = yaml.safe_dump(_base(root)) + "acceleration:\n  mixed_precision_mode: no\n"
    path.write_text(text)
    assert yaml.safe_load(text)["acceleration"]["mixed_precision_mode"] is False
    assert load_config(path).acceleration.mixed_precision_mode == "no"
    for other in ("yes", "true"):  # not a mode: still refused, naming the field
        path.write_text(yaml.safe_dump(_base(root)) + f"acceleration:\n  mixed_precision_mode: {other}\n")
        with pytest.raises(ConfigError, match="acceleration.mixed_precision_mode"):
            load_config(path)


def test_cli_rejects_bad_config_before_loading_any_model(tmp_path, root, capsys, monkeypatch):
    from diffusers_ltx2.cli import main
    from diffusers_ltx2.training import models

    def boom(*a, **k):
        raise AssertionError("a model was loaded for an invalid config")

    monkeypatch.setattr(models, "load_transformer", boom)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(_base(root, optimization={"steps": 0})))
    assert main(["train", str(bad)]) == 2
    assert "optimization.steps" in capsys.readouterr().err


def test_presets_cover_video_audio_and_cross_modal_attention():
    from diffusers_ltx2.factory import TINY, build_components
    from diffusers_ltx2.training.lora import add_lora

    t = build_components(TINY)["transformer"]
    names = add_lora(t, 2, None, 0.0, "audio_video")
    for part in ("attn1", "attn2", "audio_attn1", "audio_attn2", "audio_to_video_attn", "video_to_audio_attn"):
        assert any(f".{part}.to_q" in n for n in names), part
    assert not any(".ff." in n for n in names)
    t = build_components(TINY)["transformer"]
    video = add_lora(t, 2, None, 0.0, "video")
    assert all(".attn1." in n or ".attn2." in n or ".ff." in n for n in video) and not any("audio" in n for n in video)
    assert len(resolve_target_modules("av_full")) == len(TARGET_MODULE_PRESETS["audio_video"]) + 4
    with pytest.raises(ValueError, match="match no module"):
        add_lora(build_components(TINY)["transformer"], 2, None, 0.0, ["not_a_module"])
