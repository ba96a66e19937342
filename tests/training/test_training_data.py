"""The precomputed dataset is checked when it is indexed: every bad file is named before any model loads (before,
some crashed mid-run and some trained to a NaN LoRA with exit status 0)."""

from __future__ import annotations

import pytest
import torch
import yaml

from diffusers_ltx2.cli import main
from diffusers_ltx2.factory import TINY, build_components
from diffusers_ltx2.training import trainer as trainer_module
from diffusers_ltx2.training.data import DatasetError, read_entry, write_entry
from diffusers_ltx2.training.trainer import Trainer

from training_fixtures import make_config, write_dataset

TINY_T = build_components(TINY)["transformer"]
NAN = float("nan")


def _rewrite(path, key=None, value=None, **meta):
    """Rewrite one entry with tensor `key` replaced (a callable gets the old tensor) and metadata updated."""
    tensors, old = read_entry(path)
    if key is not None:
        tensors[key] = value(tensors[key]) if callable(value) else value
    write_entry(path, tensors, {**old, **meta})


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 16])


def _with_nan(t):
    t = t.clone()
    t.view(-1)[3] = NAN
    return t


# (what, folder of the bad file, how to break clip1, text the error must contain)
CORRUPTIONS = [
    ("truncated latents", "latents", lambda p: _truncate(p), "truncated"),
    ("NaN latents", "latents", lambda p: _rewrite(p, "latents", _with_nan), "latents holds NaN or inf"),
    ("inf latents", "latents", lambda p: _rewrite(p, "latents", lambda t: t / 0.0), "latents holds NaN or inf"),
    ("wrong-channel latents", "latents", lambda p: _rewrite(p, "latents", lambda t: torch.cat([t, t[:1]])),
     "channels 17, the model's is 16"),
    ("wrong-width latents", "latents", lambda p: _rewrite(p, "latents", lambda t: torch.cat([t, t], dim=3)),
     "latent width 4 (128 px at 32x), but its metadata says width 64"),
    ("wrong-height metadata", "latents", lambda p: _rewrite(p, height=96), "its metadata says height 96"),
    ("frame count vs metadata", "latents", lambda p: _rewrite(p, num_frames=17),
     "2 latent frames, but its metadata says num_frames 17"),
    ("num_frames not 8k+1", "latents", lambda p: _rewrite(p, num_frames=10), "metadata says num_frames 10"),
    ("fps nan", "latents", lambda p: _rewrite(p, fps="nan"), "metadata fps = 'nan' is not a positive number"),
    ("fps 0", "latents", lambda p: _rewrite(p, fps=0), "metadata fps = '0' is not a positive number"),
    ("fps text", "latents", lambda p: _rewrite(p, fps="fast"), "metadata fps = 'fast'"),
    ("latents of rank 3", "latents", lambda p: _rewrite(p, "latents", lambda t: t[0]), "expected 4 dimensions"),
    ("no latents tensor", "latents", lambda p: write_entry(p, {"x": torch.zeros(1)}), "no 'latents' tensor"),
    ("not safetensors", "latents", lambda p: p.write_bytes(b"garbage" * 10), "latents/clip1.safetensors"),
    ("truncated conditions", "conditions", lambda p: _truncate(p), "truncated"),
    ("NaN conditions", "conditions", lambda p: _rewrite(p, "video_context", _with_nan), "video_context holds NaN"),
    ("NaN audio context", "conditions", lambda p: _rewrite(p, "audio_context", _with_nan), "audio_context holds NaN"),
    ("wrong-width conditions", "conditions", lambda p: _rewrite(p, "video_context", lambda t: t[:, :31]),
     "video_context width 31, the model's is 32"),
    ("conditions of other lengths", "conditions", lambda p: _rewrite(p, "attention_mask", lambda t: t[:5]),
     "differ in length"),
    ("mask not 0/1", "conditions", lambda p: _rewrite(p, "attention_mask", lambda t: t * 2),
     "attention_mask holds values other than 0 and 1"),
    ("NaN audio latents", "audio_latents", lambda p: _rewrite(p, "latents", _with_nan), "latents holds NaN"),
    ("wrong-channel audio", "audio_latents", lambda p: _rewrite(p, "latents", lambda t: t[:, :, :8]),
     "channels x mel bins 16, the model's is 32"),
    ("audio length vs metadata", "audio_latents", lambda p: _rewrite(p, fps=24.0, num_frames=17),
     "9 audio latents, but num_frames 17 at fps 24 need 18"),
    ("truncated audio latents", "audio_latents", lambda p: _truncate(p), "truncated"),
]


@pytest.mark.parametrize("what, folder, corrupt, message", CORRUPTIONS, ids=[c[0] for c in CORRUPTIONS])
def test_a_bad_file_is_named_when_the_dataset_is_indexed(tmp_path, monkeypatch, what, folder, corrupt, message):
    root = write_dataset(tmp_path / "data", TINY_T, n_clips=3)
    bad = root / folder / "clip1.safetensors"
    corrupt(bad)
    monkeypatch.setattr(trainer_module, "load_transformer", lambda *a: pytest.fail("a model was loaded"))
    cfg = make_config(root, tmp_path / "out", {"name": "text_to_video", "with_audio": True})
    with pytest.raises(DatasetError) as err:
        Trainer(cfg)
    text = str(err.value)
    assert str(bad) in text and message in text, text
    assert "clip0" not in text and "clip2" not in text  # only the bad clip is named


@pytest.mark.parametrize("grid, factor, message", [
    ((2, 1, 1), 2, "reference grid 1x1 times reference_downscale_factor 2 is not the target's 2x3"),
    ((2, 2, 2), 1, "reference grid 2x2 times reference_downscale_factor 1 is not the target's 2x3"),
])
def test_a_reference_of_the_wrong_size_is_named(tmp_path, grid, factor, message):
    root = write_dataset(tmp_path / "data", TINY_T, n_clips=2, grid=(2, 2, 3), factor=None)
    for i in range(2):
        write_entry(root / "reference_latents" / f"clip{i}.safetensors", {"latents": torch.randn(16, *grid)},
                    {"control_type": "canny"})
    cfg = make_config(root, tmp_path / "out", {"name": "video_to_video", "reference_downscale_factor": factor})
    with pytest.raises(DatasetError, match=message):
        Trainer(cfg)


def test_when_the_model_config_is_not_readable_beforehand_setup_names_the_files(tmp_path, monkeypatch):
    """A single-file checkpoint's config is known only once it loads: clips that agree with each other but not
    with the model are named then, before any training step."""
    root = write_dataset(tmp_path / "data", TINY_T, n_clips=2)
    for i in range(2):
        _rewrite(root / "conditions" / f"clip{i}.safetensors", "video_context", lambda t: t[:, :24])
    monkeypatch.setattr(trainer_module, "transformer_config", lambda path: None)
    trainer = Trainer(make_config(root, tmp_path / "out", {"name": "text_to_video"}))
    with pytest.raises(DatasetError, match="does not fit the model") as err:
        trainer.setup()
    assert all(str(root / "conditions" / f"clip{i}.safetensors") in str(err.value) for i in range(2))
    assert "video_context width 24, the model's is 32" in str(err.value)


def test_without_the_model_the_odd_clip_out_is_named(tmp_path):
    from diffusers_ltx2.training.data import PrecomputedDataset

    root = write_dataset(tmp_path / "data", TINY_T, n_clips=3)
    _rewrite(root / "latents" / "clip2.safetensors", "latents", lambda t: t[:8])
    with pytest.raises(DatasetError, match="clip2.safetensors: channels 8, the other clips' is 16"):
        PrecomputedDataset(root)


def test_the_cli_refuses_a_nan_dataset_with_exit_2_and_writes_nothing(tmp_path, capsys):
    root = write_dataset(tmp_path / "data", TINY_T, n_clips=2)
    _rewrite(root / "latents" / "clip0.safetensors", "latents", _with_nan)
    cfg = {"model": {"model_path": "factory:tiny"}, "data": {"preprocessed_data_root": str(root)},
           "lora": {"rank": 4}, "optimization": {"steps": 2}, "output_dir": str(tmp_path / "out")}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", str(tmp_path / "c.yaml"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "clip0.safetensors: latents holds NaN or inf values" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_a_good_dataset_still_trains(tmp_path):
    root = write_dataset(tmp_path / "data", TINY_T, n_clips=2, factor=2)
    Trainer(make_config(root, tmp_path / "a", {"name": "text_to_video", "with_audio": True}))
    Trainer(make_config(root, tmp_path / "b", {"name": "video_to_video"}))
