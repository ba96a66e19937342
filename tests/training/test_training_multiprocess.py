"""Data-parallel training: `accelerate launch --multi_gpu --num_processes 2` on a machine without GPUs (gloo, MULTI_CPU) gives the weights of one process
with the doubled batch."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors import safe_open

from diffusers_ltx2.factory import TINY, build_components
from diffusers_ltx2.training.config import parse_config
from diffusers_ltx2.training.trainer import Trainer

from training_fixtures import json_report, write_dataset

REPO = Path(__file__).resolve().parents[2]


def _weights(path):
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("accelerate") is None, reason="the accelerate launcher is not on PATH")
def test_two_processes_equal_one_process_with_the_doubled_batch(tmp_path):
    root = write_dataset(tmp_path / "data", build_components(TINY)["transformer"], n_clips=4)
    base = {"model": {"model_path": "factory:tiny"}, "data": {"preprocessed_data_root": str(root)},
            "training_strategy": {"name": "text_to_video", "with_audio": True, "first_frame_conditioning_p": 0.5},
            "lora": {"rank": 4}, "optimization": {"steps": 3, "learning_rate": 1e-2, "max_grad_norm": 0.5}}
    two = {**base, "optimization": {**base["optimization"], "batch_size": 1}, "output_dir": str(tmp_path / "two")}
    (tmp_path / "two.yaml").write_text(yaml.safe_dump(two))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [shutil.which("accelerate"), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "diffusers_ltx2", "train",
         str(tmp_path / "two.yaml"), "--no-progress"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json_report(proc.stdout)
    assert report["num_processes"] == 2 and report["steps"] == 3
    # the workers share one unbuffered pipe: rank 0 alone reports, each line whole (CI once saw rank 1's
    # "[train] ..." land between rank 0's text and its newline, which hid the JSON line)
    lines = proc.stdout.splitlines()
    assert sum(line.startswith("ltx2 train: loading") for line in lines) == 1, proc.stdout
    assert all(line.startswith(("ltx2 train: loading", "[", "{", "LoRA written to")) for line in lines if line), \
        proc.stdout

    one = {**base, "optimization": {**base["optimization"], "batch_size": 2}, "output_dir": str(tmp_path / "one")}
    single = Trainer(parse_config(one)).train(progress=False)
    a, b = _weights(single.output), _weights(report["output"])
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    assert any(a[k].abs().sum() > 0 for k in a if "lora_B" in k)
    assert report["last_loss"] == pytest.approx(single.losses[-1], rel=1e-5)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("accelerate") is None, reason="the accelerate launcher is not on PATH")
def test_a_diverging_two_process_run_stops_on_both_processes_and_keeps_its_checkpoint(tmp_path):
    """Every process sees the non-finite loss of any process (one rank stopping alone would leave the other
    waiting forever in the next collective): both exit, the finite checkpoint stays, no LoRA is written."""
    from diffusers_ltx2.training import checkpoints as C

    root = write_dataset(tmp_path / "data", build_components(TINY)["transformer"], n_clips=4)
    cfg = {"model": {"model_path": "factory:tiny"}, "data": {"preprocessed_data_root": str(root)},
           "training_strategy": {"name": "text_to_video"}, "lora": {"rank": 4},
           "optimization": {"steps": 6, "learning_rate": 1e30, "batch_size": 1},
           "checkpoints": {"interval": 1, "keep_last_n": 1}, "output_dir": str(tmp_path / "out")}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [shutil.which("accelerate"), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "diffusers_ltx2", "train",
         str(tmp_path / "c.yaml"), "--no-progress"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode != 0
    assert proc.stderr.count("ltx2 train: error: training stopped at step") == 2, proc.stderr[-3000:]
    found = C.list_checkpoints(tmp_path / "out" / "checkpoints")
    assert found and all(torch.isfinite(t).all() for t in _weights(found[-1][1] / C.STATE_FILE).values()
                         if t.is_floating_point())
    assert not (tmp_path / "out" / "lora_weights.safetensors").exists()
