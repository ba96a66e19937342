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


def _nested(path: str, value):
    """`"a.b.c", v` -> `{"a": {"b": {"c": v}}}`."""
    for key in reversed(path.split(".")):
        value = {key: value}
    return value


# (dotted field, value, text the error must contain): every probe is a config a user could write that cannot
# train as meant, and each must be refused when the file is read - before any model loads.
INF, NAN = float("inf"), float("nan")
REFUSED_PROBES = [
    ("optimization.learning_rate", INF, "optimization.learning_rate"),
    ("optimization.learning_rate", NAN, "optimization.learning_rate"),
    ("optimization.learning_rate", -1e-4, "optimization.learning_rate"),
    ("optimization.learning_rate", 0, "optimization.learning_rate"),
    ("optimization.learning_rate", True, "optimization.learning_rate"),
    ("optimization.learning_rate", ".nan", "optimization.learning_rate"),
    ("optimization.steps", True, "optimization.steps"),
    ("optimization.steps", 3.5, "optimization.steps"),
    ("optimization.steps", "100", "optimization.steps"),
    ("optimization.steps", -1, "optimization.steps"),
    ("optimization.steps", 0, "optimization.steps"),
    ("optimization.batch_size", 0, "optimization.batch_size"),
    ("optimization.batch_size", False, "optimization.batch_size"),
    ("optimization.gradient_accumulation_steps", 0, "optimization.gradient_accumulation_steps"),
    ("optimization.gradient_accumulation_steps", 2.0, "optimization.gradient_accumulation_steps"),
    ("optimization.max_grad_norm", -1.0, "optimization.max_grad_norm"),
    ("optimization.max_grad_norm", INF, "optimization.max_grad_norm"),
    ("optimization.weight_decay", -0.01, "optimization.weight_decay"),
    ("optimization.weight_decay", NAN, "optimization.weight_decay"),
    ("optimization.enable_gradient_checkpointing", "yes", "optimization.enable_gradient_checkpointing"),
    ("optimization.on_nonfinite_loss", "ignore", "optimization.on_nonfinite_loss"),
    ("lora.rank", 0, "lora.rank"),
    ("lora.rank", -4, "lora.rank"),
    ("lora.rank", 8.0, "lora.rank"),
    ("lora.rank", True, "lora.rank"),
    ("lora.alpha", -1.0, "lora.alpha"),
    ("lora.alpha", INF, "lora.alpha"),
    ("lora.dropout", -0.1, "lora.dropout"),
    ("lora.dropout", 1.0, "lora.dropout"),
    ("lora.dropout", NAN, "lora.dropout"),
    ("lora.target_modules", [], "target_modules"),
    ("lora.target_modules", [""], "target_modules"),
    ("training_strategy.first_frame_conditioning_p", -0.1, "first_frame_conditioning_p"),
    ("training_strategy.first_frame_conditioning_p", NAN, "first_frame_conditioning_p"),
    ("training_strategy.with_audio", 1, "training_strategy.with_audio"),
    ("seed", 2 ** 70, "seed"),
    ("seed", -1, "seed"),
    ("seed", 2 ** 32, "seed"),
    ("seed", 4.2, "seed"),
    ("seed", True, "seed"),
    ("validation.seed", -5, "validation.seed"),
    ("validation.seed", 2 ** 64, "validation.seed"),
    ("validation.video_dims", [0, 0, 1], "validation.video_dims"),
    ("validation.video_dims", [64, 64, 0], "validation.video_dims"),
    ("validation.video_dims", [-64, 64, 9], "validation.video_dims"),
    ("validation.video_dims", [64, 48, 9], "video_dims"),
    ("validation.video_dims", [64, 64, 10], "video_dims"),
    ("validation.video_dims", [64.0, 64, 9], "validation.video_dims"),
    ("validation.frame_rate", 0, "validation.frame_rate"),
    ("validation.frame_rate", -24, "validation.frame_rate"),
    ("validation.frame_rate", INF, "validation.frame_rate"),
    ("validation.frame_rate", NAN, "validation.frame_rate"),
    ("validation.inference_steps", 1, "validation.inference_steps"),
    ("validation.interval", 0, "validation.interval"),
    ("checkpoints.keep_last_n", 0, "keep_last_n 0 would delete every checkpoint"),
    ("checkpoints.keep_last_n", -2, "checkpoints.keep_last_n"),
    ("checkpoints.keep_last_n", 1.5, "checkpoints.keep_last_n"),
    ("checkpoints.interval", 0, "checkpoints.interval"),
    ("checkpoints.interval", -10, "checkpoints.interval"),
    ("checkpoints.interval", True, "checkpoints.interval"),
    ("output_dir", "", "output_dir must name a folder"),
    ("output_dir", "   ", "output_dir must name a folder"),
    ("output_dir", 5, "output_dir"),
    ("model.load_checkpoint", "/nonexistent/lora.safetensors", "load_checkpoint is not a file"),
    ("flow_matching.timestep_sampling_params", {"std": INF}, "timestep_sampling_params.std"),
    ("flow_matching.timestep_sampling_params", {"std": NAN}, "timestep_sampling_params.std"),
    ("flow_matching.timestep_sampling_params", {"std": 0.0}, "std must be > 0"),
    ("flow_matching.timestep_sampling_params", {"std": -1.0}, "std must be > 0"),
    ("flow_matching.timestep_sampling_params", {"eps": -0.1}, "eps must lie in [0, 1)"),
    ("flow_matching.timestep_sampling_params", {"uniform_prob": 1.5}, "uniform_prob must lie in [0, 1]"),
    ("flow_matching.timestep_sampling_params", {"uniform_prob": True}, "timestep_sampling_params.uniform_prob"),
]
UNIFORM = {"timestep_sampling_mode": "uniform"}
REFUSED_PROBES += [
    ("flow_matching", {**UNIFORM, "timestep_sampling_params": {"min_value": 0.8, "max_value": 0.2}},
     "min_value <= max_value"),
    ("flow_matching", {**UNIFORM, "timestep_sampling_params": {"min_value": -0.5}}, "0 <= min_value"),
    ("flow_matching", {**UNIFORM, "timestep_sampling_params": {"max_value": 2.0}}, "max_value <= 1"),
    ("flow_matching", {**UNIFORM, "timestep_sampling_params": {"max_value": INF}},
     "timestep_sampling_params.max_value"),
]


@pytest.mark.parametrize("field, value, message", REFUSED_PROBES, ids=[f"{p[0]}={p[1]!r}" for p in REFUSED_PROBES])
def test_config_probe_is_refused_naming_the_field(root, tmp_path, field, value, message):
    """Each probe goes through YAML as a user's file would (`.inf`, `.nan`, `true` are YAML's own spellings)."""
    patch = _nested(field, value)
    section = field.split(".")[0]
    config = _base(root)
    value = patch[section]
    config[section] = {**config.get(section, {}), **value} if isinstance(value, dict) else value
    path = tmp_path / "probe.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert message in str(err.value), str(err.value)


ACCEPTED_PROBES = [
    ("optimization.learning_rate", "1e-4", 1e-4),  # YAML reads 1e-4 (no dot) as text: still the number meant
    ("optimization.learning_rate", 2, 2.0),
    ("optimization.max_grad_norm", 0, 0.0),
    ("checkpoints.keep_last_n", -1, -1),
    ("seed", 2 ** 32 - 1, 2 ** 32 - 1),
    ("seed", 0, 0),
    ("optimization.on_nonfinite_loss", "skip", "skip"),
]


@pytest.mark.parametrize("field, value, parsed", ACCEPTED_PROBES, ids=[f"{p[0]}={p[1]!r}" for p in ACCEPTED_PROBES])
def test_config_probe_at_the_edge_is_accepted(root, field, value, parsed):
    patch = _nested(field, value)
    config = parse_config(_base(root, **patch))
    got = config
    for key in field.split("."):
        got = getattr(got, key)
    assert got == parsed and type(got) is type(parsed)


def test_every_refused_probe_leaves_the_model_unloaded(tmp_path, root, capsys, monkeypatch):
    """The CLI refuses the probes with exit 2 and one line per problem, no model built (a few representative)."""
    from diffusers_ltx2.cli import main
    from diffusers_ltx2.training import trainer

    monkeypatch.setattr(trainer.Trainer, "__init__", lambda *a, **k: pytest.fail("the trainer was built"))
    for text in ("optimization: {steps: true}\n", "optimization: {learning_rate: .inf}\n",
                 "seed: 1180591620717411303424\n",
                 "output_dir: ''\n", "checkpoints: {keep_last_n: 0}\n", "validation: {video_dims: [0, 0, 1]}\n"):
        path = tmp_path / "c.yaml"
        path.write_text(yaml.safe_dump(_base(root)) + text)
        assert main(["train", str(path)]) == 2
        err = capsys.readouterr().err
        assert "invalid training config" in err and "Traceback" not in err
