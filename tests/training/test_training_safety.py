"""Training never runs code from a file and never loses a checkpoint: weights-only resume state, non-finite
losses, checkpoint ordering and pruning, a full disk, and resumes that do not fit the run."""

from __future__ import annotations

import contextlib
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors import safe_open

from diffusers_ltx2.cli import main
from diffusers_ltx2.factory import TINY, build_components
from diffusers_ltx2.training import checkpoints as C
from diffusers_ltx2.training.trainer import CheckpointError, NonFiniteLossError, Trainer

from training_fixtures import make_config, write_dataset

REPO = Path(__file__).resolve().parents[2]
T2V = {"name": "text_to_video", "first_frame_conditioning_p": 0.5}


@pytest.fixture()
def root(tmp_path):
    return write_dataset(tmp_path / "data", build_components(TINY)["transformer"], n_clips=3)


def _yaml(path: Path, root, out, **overrides) -> Path:
    cfg = {"model": {"model_path": "factory:tiny"}, "data": {"preprocessed_data_root": str(root)},
           "training_strategy": T2V, "lora": {"rank": 4, "alpha": 8},
           "optimization": {"steps": 4, "learning_rate": 1e-3}, "output_dir": str(out)}
    for key, value in overrides.items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
    path.write_text(yaml.safe_dump(cfg))
    return path


def _tensors(path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def _all_finite(path) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in _tensors(path).values() if t.is_floating_point())


def _leftovers(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.name.startswith(".") or ".tmp" in p.name)


# -- resume state: no code runs ---------------------------------------------------------------------------------
class _WritesAFile:
    """A pickle payload that, if unpickled by a full unpickler, creates `path`."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("how", ["torch.save", "pickle"])
def test_a_crafted_training_state_pt_is_refused_without_running_code(tmp_path, root, capsys, how):
    cfg = _yaml(tmp_path / "c.yaml", root, tmp_path / "out", checkpoints={"interval": 2})
    assert main(["train", str(cfg), "--max-steps", "2", "--no-progress"]) == 0
    folder = tmp_path / "out" / "checkpoints" / "step_00002"
    (folder / C.STATE_FILE).unlink()  # an older-version checkpoint: only training_state.pt
    marker = tmp_path / "pwned"
    payload = {"weights": _WritesAFile(marker), "step": 2, "micro_step": 2, "num_processes": 1}
    if how == "torch.save":
        torch.save(payload, folder / C.LEGACY_STATE_FILE)
    else:
        (folder / C.LEGACY_STATE_FILE).write_bytes(pickle.dumps(payload))
    code = main(["train", str(cfg), "--resume", "latest", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and str(folder / C.LEGACY_STATE_FILE) in err and "weights-only" in err, err
    assert "Traceback" not in err and not marker.exists()
    if how == "pickle":  # proof the payload is live: the plain unpickler creates the file
        pickle.loads((folder / C.LEGACY_STATE_FILE).read_bytes())
        assert marker.exists()


def test_an_earlier_versions_plain_training_state_pt_still_resumes_exactly(tmp_path, root):
    common = dict(optimization={"steps": 4, "learning_rate": 1e-2, "batch_size": 1, "scheduler_type": "linear"},
                  checkpoints={"interval": 2, "keep_last_n": -1})
    straight = Trainer(make_config(root, tmp_path / "a", T2V, **common)).train(progress=False)
    Trainer(make_config(root, tmp_path / "b", T2V, **common)).train(max_steps=2, progress=False)
    folder = tmp_path / "b" / "checkpoints" / "step_00002"
    state = C.load_state(folder)
    torch.save({"weights": state.weights, "optimizer": state.optimizer, "scheduler": state.scheduler,
                "step": 2, "micro_step": 2, "num_processes": 1}, folder / C.LEGACY_STATE_FILE)
    (folder / C.STATE_FILE).unlink()
    resumed = Trainer(make_config(root, tmp_path / "b", T2V, **common)).train(resume_from="latest", progress=False)
    a, b = _tensors(straight.output), _tensors(resumed.output)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_state_file_is_safetensors_with_json_and_round_trips(tmp_path, root):
    trainer = Trainer(make_config(root, tmp_path / "out", T2V, checkpoints={"interval": 1}))
    trainer.train(max_steps=1, progress=False)
    path = tmp_path / "out" / "checkpoints" / "step_00001" / C.STATE_FILE
    assert path.read_bytes()[8:9] == b"{"  # a safetensors header, not a zip / pickle
    state = C.load_state(path.parent)
    live = trainer.optimizer.state_dict()
    assert state.counters == {"step": 1, "micro_step": 1}
    assert state.run["lora"]["rank"] == 4 and state.run["num_processes"] == 1
    assert state.optimizer["param_groups"][0]["betas"] == live["param_groups"][0]["betas"]
    assert isinstance(state.optimizer["param_groups"][0]["betas"], tuple)
    for k, v in live["state"].items():
        for name, t in v.items():
            assert torch.equal(state.optimizer["state"][k][name], t)
    assert state.scheduler == trainer.scheduler.state_dict()


# -- non-finite losses --------------------------------------------------------------------------------------------
def test_a_diverging_run_stops_keeps_its_finite_checkpoints_and_writes_no_nan_lora(tmp_path, root, capsys):
    """learning_rate 1e30: before, training went on, wrote a NaN LoRA and pruned the last finite checkpoints."""
    cfg = _yaml(tmp_path / "c.yaml", root, tmp_path / "out", optimization={"steps": 6, "learning_rate": 1e30},
                checkpoints={"interval": 1, "keep_last_n": 1})
    code = main(["train", str(cfg), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "training stopped at step" in err and "NaN / inf" in err and "Traceback" not in err, err
    found = C.list_checkpoints(tmp_path / "out" / "checkpoints")
    assert found, "the last good checkpoint was removed"
    for _, folder in found:
        assert _all_finite(folder / "lora_weights.safetensors") and _all_finite(folder / C.STATE_FILE)
    assert str(found[-1][1]) in err
    assert not (tmp_path / "out" / "lora_weights.safetensors").exists()


def _nan_at(monkeypatch, micro_steps: set[int]):
    """Make the loss NaN at the given micro steps (differentiably: its gradients are NaN too)."""
    real = Trainer.compute_loss

    def compute_loss(self, batch, indices, noise=None):
        loss = real(self, batch, indices, noise)
        return loss * float("nan") if self.micro_step in micro_steps else loss

    monkeypatch.setattr(Trainer, "compute_loss", compute_loss)


@pytest.mark.parametrize("accumulation", [1, 2])
def test_skip_drops_exactly_the_poisoned_step(tmp_path, root, monkeypatch, caplog, accumulation):
    """`on_nonfinite_loss: skip` with a NaN loss in the last optimizer step: the LoRA equals the run that stopped one
    step earlier (no update applied), the step is listed and warned about, and the scheduler did not advance."""
    opt = {"steps": 3, "learning_rate": 1e-2, "gradient_accumulation_steps": accumulation,
           "on_nonfinite_loss": "skip"}
    shorter = Trainer(make_config(root, tmp_path / "a", T2V, optimization={**opt, "steps": 2})).train(progress=False)
    _nan_at(monkeypatch, {2 * accumulation})  # the first micro step of optimizer step 3
    trainer = Trainer(make_config(root, tmp_path / "b", T2V, optimization=opt))
    with caplog.at_level("WARNING"):
        result = trainer.train(progress=False)
    assert result.skipped_steps == [3] and result.step == 3 and "step 3 skipped" in caplog.text
    a, b = _tensors(shorter.output), _tensors(result.output)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert trainer.scheduler.state_dict()["last_epoch"] == 2
    assert [r.split(",")[0] for r in (tmp_path / "b" / "loss.csv").read_text().split()[1:]] == ["1", "2"]


def test_stop_is_the_default_and_leaves_the_weights_of_the_last_good_step(tmp_path, root, monkeypatch):
    cfg = make_config(root, tmp_path / "out", T2V, optimization={"steps": 4, "learning_rate": 1e-2},
                      checkpoints={"interval": 1, "keep_last_n": -1})
    _nan_at(monkeypatch, {2})
    trainer = Trainer(cfg)
    with pytest.raises(NonFiniteLossError, match="training stopped at step 3.*step_00002"):
        trainer.train(progress=False)
    saved = C.load_state(tmp_path / "out" / "checkpoints" / "step_00002").weights
    now = trainer._trainable_state()
    assert all(torch.equal(saved[k], now[k]) for k in saved)
    assert [p.name for p in (tmp_path / "out" / "checkpoints").iterdir()] != [] and \
        not (tmp_path / "out" / "checkpoints" / "step_00003").exists()


@pytest.mark.parametrize("max_grad_norm", [1.0, 0.0])
def test_a_non_finite_gradient_with_a_finite_loss_is_caught_too(tmp_path, root, max_grad_norm):
    trainer = Trainer(make_config(root, tmp_path / "out", T2V,
                                  optimization={"steps": 3, "max_grad_norm": max_grad_norm})).setup()
    before = trainer._trainable_state()
    trainer.params[0].register_hook(lambda g: g * float("inf"))
    with pytest.raises(NonFiniteLossError, match="gradient norm"):
        trainer.train(progress=False)
    assert all(torch.equal(before[k], v) for k, v in trainer._trainable_state().items())


def test_a_lora_with_nan_is_never_written(tmp_path, root):
    trainer = Trainer(make_config(root, tmp_path / "out", T2V)).setup()
    with torch.no_grad():
        trainer.params[0].fill_(float("nan"))
    with pytest.raises(ValueError, match="refusing to write the LoRA"):
        trainer.save_weights(tmp_path / "out" / "lora.safetensors")
    with pytest.raises(ValueError, match="refusing to write"):
        trainer.save_checkpoint()
    assert not (tmp_path / "out" / "lora.safetensors").exists() and _leftovers(tmp_path / "out") == []
    assert C.list_checkpoints(tmp_path / "out" / "checkpoints") == []


# -- checkpoint order and pruning ---------------------------------------------------------------------------------
def _fake_checkpoints(root: Path, steps) -> None:
    for s in steps:
        folder = root / C.checkpoint_name(s)
        folder.mkdir(parents=True)
        (folder / C.STATE_FILE).write_bytes(b"")


def test_checkpoints_are_ordered_by_step_number_not_by_name(tmp_path):
    root = tmp_path / "checkpoints"
    _fake_checkpoints(root, [99999, 100000, 5, 10])
    (root / "step_00007").mkdir()  # incomplete (no state): neither latest nor counted
    (root / "step_notanumber").mkdir()
    assert [s for s, _ in C.list_checkpoints(root)] == [5, 10, 99999, 100000]
    assert C.find_checkpoint("latest", root) == root / "step_100000"
    removed = C.prune_checkpoints(root, 2)
    assert sorted(p.name for p in removed) == ["step_00005", "step_00010"]
    assert [s for s, _ in C.list_checkpoints(root)] == [99999, 100000]
    # the checkpoint just written is never pruned, even when an older run left higher-numbered ones
    _fake_checkpoints(root, [3])
    C.prune_checkpoints(root, 1, protect=root / "step_00003")
    assert [s for s, _ in C.list_checkpoints(root)] == [3, 100000]
    with pytest.raises(ValueError, match="keep_last_n 0"):
        C.prune_checkpoints(root, 0)


def test_keep_last_n_keeps_the_newest_checkpoints_of_a_run(tmp_path, root):
    Trainer(make_config(root, tmp_path / "out", T2V, optimization={"steps": 5},
                        checkpoints={"interval": 1, "keep_last_n": 2})).train(progress=False)
    assert [s for s, _ in C.list_checkpoints(tmp_path / "out" / "checkpoints")] == [4, 5]
    assert _leftovers(tmp_path / "out") == []


# -- full disk ------------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _small_tmpfs(path: Path, size: str):
    path.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    try:
        yield path if done.returncode == 0 else None
    finally:
        if done.returncode == 0 and subprocess.run(["umount", str(path)]).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], check=True)  # a file left open by a failed test
            pytest.fail(f"a file on {path} was still open after the test")


def _fill(folder: Path) -> None:
    """Fill the file system of `folder` to the last byte."""
    with open(folder / "filler", "wb", buffering=0) as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 4096)


_TRAIN_WITH_FSIZE_LIMIT = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), int(sys.argv[2])))
from diffusers_ltx2.cli import main
sys.exit(main(["train", sys.argv[1], "--resume", "latest", "--no-progress"]))
"""


def test_a_full_disk_during_a_save_is_named_exits_2_and_leaves_no_temporary_file(tmp_path, root, capsys):
    with _small_tmpfs(tmp_path / "disk", "2m") as disk:
        out = (disk or tmp_path) / "out"
        cfg = _yaml(tmp_path / "c.yaml", root, out, optimization={"steps": 4}, checkpoints={"interval": 1,
                                                                                           "keep_last_n": 1})
        assert main(["train", str(cfg), "--max-steps", "1", "--no-progress"]) == 0
        first = out / "checkpoints" / "step_00001"
        before = {p.name: p.read_bytes() for p in first.iterdir()}
        if disk is not None:
            _fill(disk)
            code = main(["train", str(cfg), "--resume", "latest", "--no-progress"])
            err = capsys.readouterr().err
            assert code == 2 and "No space left on device (ENOSPC)" in err, err
        else:  # no permission to mount: the same fault through a file-size limit in a child process
            size = len(before["lora_weights.safetensors"]) - 1
            env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
            done = subprocess.run([sys.executable, "-c", _TRAIN_WITH_FSIZE_LIMIT, str(cfg), str(size)],
                                  capture_output=True, text=True, env=env, timeout=600)
            code, err = done.returncode, done.stderr
            assert code == 2 and "File too large (EFBIG)" in err, err
        assert "Traceback" not in err and "step_00002" in err
        assert _leftovers(out) == []  # no .tmp file or folder anywhere
        assert {p.name: p.read_bytes() for p in first.iterdir()} == before  # the last checkpoint is untouched
        assert [s for s, _ in C.list_checkpoints(out / "checkpoints")] == [1]


_TRAIN_FINAL_WITH_FSIZE_LIMIT = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), int(sys.argv[2])))
from diffusers_ltx2.cli import main
sys.exit(main(["train", sys.argv[1], "--no-progress"]))
"""


def test_a_write_error_on_the_final_lora_leaves_no_temporary_file(tmp_path, root):
    """The final LoRA larger than the file-size limit (EFBIG, the same write path as ENOSPC): exit 2, the error
    names the LoRA, no temporary file, nothing under the LoRA's name."""
    probe = Trainer(make_config(root, tmp_path / "probe", T2V, optimization={"steps": 1})).train(progress=False)
    cfg = _yaml(tmp_path / "c.yaml", root, tmp_path / "out", optimization={"steps": 1})
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-c", _TRAIN_FINAL_WITH_FSIZE_LIMIT, str(cfg),
                           str(probe.output.stat().st_size - 1)], capture_output=True, text=True, env=env, timeout=600)
    lora = tmp_path / "out" / "lora_weights.safetensors"
    assert done.returncode == 2 and f"File too large (EFBIG): {lora}" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and not lora.exists() and _leftovers(tmp_path / "out") == []


# -- resumes that do not fit ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("change, message", [
    ({"lora": {"rank": 8, "alpha": 8}}, "lora {'rank': 4"),
    ({"optimization": {"steps": 4, "batch_size": 2}}, "batch_size 1 in the checkpoint, 2 in this run"),
    ({"optimization": {"steps": 4, "gradient_accumulation_steps": 2}},
     "gradient_accumulation_steps 1 in the checkpoint, 2 in this run"),
    ({"seed": 7}, "seed 42 in the checkpoint, 7 in this run"),
])
def test_a_resume_with_other_settings_names_the_file_and_the_mismatch(tmp_path, root, capsys, change, message):
    base = _yaml(tmp_path / "a.yaml", root, tmp_path / "out", checkpoints={"interval": 1})
    assert main(["train", str(base), "--max-steps", "1", "--no-progress"]) == 0
    other = _yaml(tmp_path / "b.yaml", root, tmp_path / "out", checkpoints={"interval": 1}, **change)
    assert main(["train", str(other), "--resume", "latest", "--no-progress"]) == 2
    err = capsys.readouterr().err
    state = tmp_path / "out" / "checkpoints" / "step_00001" / C.STATE_FILE
    assert f"{state} cannot be resumed by this run" in err and message in err and "Traceback" not in err, err


def test_another_rank_is_named_by_the_weight_shapes_too(tmp_path, root):
    Trainer(make_config(root, tmp_path / "out", T2V, checkpoints={"interval": 1})).train(max_steps=1, progress=False)
    folder = tmp_path / "out" / "checkpoints" / "step_00001"
    trainer = Trainer(make_config(root, tmp_path / "out", T2V, lora={"rank": 8, "alpha": 8})).setup()
    with pytest.raises(CheckpointError, match=r"weight shapes differ \(e.g. .*lora_A.*\(4, 16\) in the checkpoint, "
                                              r"\(8, 16\) in this run"):
        trainer.load_state(folder)


@pytest.mark.parametrize("cut", [0.5, 0.99])
def test_a_truncated_state_is_named(tmp_path, root, capsys, cut):
    cfg = _yaml(tmp_path / "c.yaml", root, tmp_path / "out", checkpoints={"interval": 1})
    assert main(["train", str(cfg), "--max-steps", "1", "--no-progress"]) == 0
    state = tmp_path / "out" / "checkpoints" / "step_00001" / C.STATE_FILE
    data = state.read_bytes()
    state.write_bytes(data[: int(len(data) * cut)])
    assert main(["train", str(cfg), "--resume", "latest", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert str(state) in err and "truncated" in err and "Traceback" not in err, err
