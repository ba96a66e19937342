"""Conversion never destroys data and never masks an error: destinations that hold the source, `--overwrite`
onto folders this tool did not write, interrupts, full disks, read-only folders, wrong dtypes, NaN weights.

Faults are real where the machine allows: Ctrl-C is a real SIGINT, a full disk a tiny tmpfs (or a file-size
limit in a subprocess when mounting is not permitted), a read-only folder a read-only mount (or a folder
without write permission for a non-root user).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from official_checkpoints import CONFIGS, official_state_dict, write_official_checkpoint
from safetensors.torch import save_file

from diffusers_ltx2.cli import main
from diffusers_ltx2.conversion import ConversionError, convert_single_file
from diffusers_ltx2.conversion import output_dir as O
from diffusers_ltx2.conversion.streaming import StreamingReader

REPO = Path(__file__).resolve().parents[2]


def _tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes (hidden ones included)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _hidden(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("src") / "ckpt.safetensors"
    write_official_checkpoint(path, "2.0")
    return path


@pytest.fixture()
def models(tmp_path, checkpoint) -> Path:
    """A user's `models/` folder: the checkpoint plus unrelated files."""
    folder = tmp_path / "models"
    (folder / "loras").mkdir(parents=True)
    (folder / "ckpt.safetensors").write_bytes(checkpoint.read_bytes())
    (folder / "notes.txt").write_text("mine")
    (folder / "loras" / "style.safetensors").write_bytes(b"lora bytes")
    return folder


# ----------------------------------------------------------------------------------- destinations and --overwrite


@pytest.mark.parametrize("looks_converted", [False, True])
@pytest.mark.parametrize("dst", [".", "..", "ckpt.safetensors"])
def test_overwrite_never_removes_the_source_or_its_siblings(models, capsys, dst, looks_converted):
    if looks_converted:  # even a folder this tool wrote is refused when the source lies inside it
        for folder in (models, models.parent):
            (folder / "model_index.json").write_text(json.dumps({"_class_name": "LTX2AudioVideoPipeline"}))
    before = _tree(models.parent)
    code = main(["convert", str(models / "ckpt.safetensors"), str(models / dst), "--overwrite", "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert "source" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert _tree(models.parent) == before  # source, siblings, nothing added (no hidden leftovers either)


def test_a_gemma_folder_inside_the_destination_is_protected_too(tmp_path, checkpoint):
    out = tmp_path / "out"
    convert_single_file(checkpoint, out, progress=False)
    (out / "gemma").mkdir()
    (out / "gemma" / "config.json").write_text("{}")
    with pytest.raises(ConversionError, match="contains the source"):
        convert_single_file(checkpoint, out, progress=False, overwrite=True, gemma_path=out / "gemma")
    assert (out / "gemma" / "config.json").read_text() == "{}"


def test_overwrite_replaces_only_a_folder_this_tool_wrote(tmp_path, checkpoint, capsys):
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "cat.jpg").write_bytes(b"jpeg")
    assert main(["convert", str(checkpoint), str(foreign), "--overwrite", "--no-progress"]) == 2
    assert "not a folder written by ltx2 convert" in capsys.readouterr().err
    assert _tree(foreign) == {"cat.jpg": b"jpeg"}

    a_file = tmp_path / "model.bin"
    a_file.write_bytes(b"keep")
    assert main(["convert", str(checkpoint), str(a_file), "--overwrite", "--no-progress"]) == 2
    assert "is a file" in capsys.readouterr().err
    assert a_file.read_bytes() == b"keep"

    link = tmp_path / "link"
    link.symlink_to(foreign)
    assert main(["convert", str(checkpoint), str(link), "--overwrite", "--no-progress"]) == 2
    assert "symbolic link" in capsys.readouterr().err and _tree(foreign) == {"cat.jpg": b"jpeg"}
    assert _hidden(tmp_path) == []

    out = tmp_path / "out"
    assert main(["convert", str(checkpoint), str(out), "--no-progress"]) == 0
    (out / "stale.txt").write_text("from the old output")
    assert main(["convert", str(checkpoint), str(out), "--overwrite", "--dtype", "bf16", "--no-progress"]) == 0
    assert not (out / "stale.txt").exists()
    config = json.loads((out / "transformer" / "config.json").read_text())
    assert config["_class_name"] == "LTX2VideoTransformer3DModel"
    assert _hidden(tmp_path) == []


def test_convert_lora_refuses_its_own_source_and_folders(tmp_path, capsys):
    lora = tmp_path / "lora.safetensors"
    save_file({"diffusion_model.transformer_blocks.0.attn1.to_q.lora_A.weight": torch.zeros(2, 8),
               "diffusion_model.transformer_blocks.0.attn1.to_q.lora_B.weight": torch.zeros(8, 2)}, str(lora))
    before = lora.read_bytes()
    assert main(["convert-lora", str(lora), str(lora), "--overwrite"]) == 2
    assert "is the source" in capsys.readouterr().err and lora.read_bytes() == before
    assert main(["convert-lora", str(lora), str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    assert main(["convert-lora", str(lora), str(notes), "--overwrite"]) == 2
    assert "not a .safetensors file" in capsys.readouterr().err and notes.read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lora.safetensors", "notes.txt"]


# ----------------------------------------------------------------------------------- crash-safe replace


def _converted(folder: Path, marker: str) -> Path:
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "LTX2AudioVideoPipeline"}))
    (folder / "marker").write_text(marker)
    return folder


def test_replace_is_one_atomic_exchange(tmp_path, monkeypatch):
    """Between the old and the new output there is no moment without a destination: the swap is one call."""
    dst = _converted(tmp_path / "out", "old")
    seen = []
    real_exchange = O._exchange

    def spy(a, b):
        swapped = real_exchange(a, b)
        seen.append((swapped, (b / "marker").read_text() if swapped else None))
        return swapped

    monkeypatch.setattr(O, "_exchange", spy)
    with O.atomic_output_dir(dst, overwrite=True) as tmp:
        (tmp / "model_index.json").write_text(json.dumps({"_class_name": "LTX2AudioVideoPipeline"}))
        (tmp / "marker").write_text("new")
    assert seen in ([(True, "new")], [(False, None)])  # False only where the file system cannot exchange
    assert (dst / "marker").read_text() == "new" and _hidden(tmp_path) == []


def test_ctrl_c_during_the_replace_is_held_until_the_folder_is_consistent(tmp_path, monkeypatch):
    dst = _converted(tmp_path / "out", "old")
    real_replace = O._replace

    def interrupted_replace(tmp, d):
        os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C, arriving mid-replace
        return real_replace(tmp, d)

    monkeypatch.setattr(O, "_replace", interrupted_replace)
    with pytest.raises(KeyboardInterrupt):
        with O.atomic_output_dir(dst, overwrite=True) as tmp:
            _converted(tmp / "x", "unused")
            (tmp / "model_index.json").write_text(json.dumps({"_class_name": "LTX2AudioVideoPipeline"}))
            (tmp / "marker").write_text("new")
    assert (dst / "marker").read_text() == "new"  # complete new output, old one removed
    assert _hidden(tmp_path) == []


def test_two_rename_fallback_rolls_back_when_the_second_rename_fails(tmp_path, monkeypatch):
    dst = _converted(tmp_path / "out", "old")
    monkeypatch.setattr(O, "_exchange", lambda a, b: False)  # a system without renameat2
    real_rename = os.rename
    calls = []

    def rename(a, b):
        calls.append((Path(a).name, Path(b).name))
        if len(calls) == 2:
            raise OSError(5, "Input/output error")
        real_rename(a, b)

    monkeypatch.setattr(O.os, "rename", rename)
    with pytest.raises(OSError, match="Input/output error"):
        with O.atomic_output_dir(dst, overwrite=True) as tmp:
            (tmp / "marker").write_text("new")
    assert (dst / "marker").read_text() == "old"
    assert _hidden(tmp_path) == []


def test_a_failed_cleanup_is_reported_not_swallowed(tmp_path, monkeypatch):
    monkeypatch.setattr(O, "_remove_tree", lambda path: [f"{path}: simulated EBUSY"])
    with pytest.raises(RuntimeError) as info:
        with O.atomic_output_dir(tmp_path / "out"):
            raise RuntimeError("conversion failed")
    if sys.version_info >= (3, 11):  # older Pythons get a RuntimeWarning instead of a note
        assert any("simulated EBUSY" in note for note in info.value.__notes__)
        from diffusers_ltx2.cli import describe_error

        assert "simulated EBUSY" in describe_error(info.value)  # the CLI prints it with the error
    dst = _converted(tmp_path / "out2", "old")
    with pytest.warns(RuntimeWarning, match="could not be removed"):
        with O.atomic_output_dir(dst, overwrite=True) as tmp:
            (tmp / "marker").write_text("new")


# ----------------------------------------------------------------------------------- errors are not masked


def test_ctrl_c_while_writing_shards_propagates_and_the_cli_exits_130(tmp_path, checkpoint, monkeypatch, capsys):
    real_get = StreamingReader.get
    count = {"n": 0}

    def get(self, name):
        count["n"] += 1
        if count["n"] == 5:
            os.kill(os.getpid(), signal.SIGINT)  # real Ctrl-C in the middle of the first shard
        return real_get(self, name)

    monkeypatch.setattr(StreamingReader, "get", get)
    with pytest.raises(KeyboardInterrupt):
        convert_single_file(checkpoint, tmp_path / "out", progress=False, max_shard_size="100KB")
    assert _hidden(tmp_path) == [] and not (tmp_path / "out").exists()
    count["n"] = 0
    assert main(["convert", str(checkpoint), str(tmp_path / "out"), "--no-progress"]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert _hidden(tmp_path) == [] and not (tmp_path / "out").exists()


@contextlib.contextmanager
def _tmpfs(path: Path, options: str):
    path.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    if done.returncode != 0:
        yield None
        return
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


_CONVERT_WITH_FSIZE_LIMIT = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write then fails with EFBIG instead of killing us
resource.setrlimit(resource.RLIMIT_FSIZE, (262144, 262144))
from diffusers_ltx2.cli import main
sys.exit(main(["convert", sys.argv[1], sys.argv[2], "--no-progress"]))
"""


def test_a_full_disk_is_named_not_masked(tmp_path, checkpoint, capsys):
    with _tmpfs(tmp_path / "small", "size=1m") as disk:
        if disk is not None:
            code = main(["convert", str(checkpoint), str(disk / "out"), "--no-progress"])
            err = capsys.readouterr().err
            assert code == 2 and "No space left on device (ENOSPC)" in err, err
            assert "were not written" not in err and "Traceback" not in err
            assert list(disk.iterdir()) == []  # the partial output is gone
            return
    # no permission to mount: the same fault through a file-size limit in a child process
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-c", _CONVERT_WITH_FSIZE_LIMIT, str(checkpoint), str(tmp_path / "out")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 2 and "File too large (EFBIG)" in done.stderr, done.stderr
    assert "were not written" not in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists() and _hidden(tmp_path) == []


_CONVERT_AS_NOBODY = """
import os, sys
os.setgid(65534); os.setuid(65534)
from diffusers_ltx2.cli import main
sys.exit(main(["convert", sys.argv[1], sys.argv[2], "--no-progress"]))
"""


def test_a_read_only_destination_is_one_clean_error(tmp_path, checkpoint, capsys):
    if os.geteuid() != 0:
        folder = tmp_path / "ro"
        folder.mkdir()
        folder.chmod(0o555)
        try:
            code = main(["convert", str(checkpoint), str(folder / "out"), "--no-progress"])
        finally:
            folder.chmod(0o755)
        err = capsys.readouterr().err
        assert code == 2 and "Permission denied (EACCES)" in err and "Traceback" not in err
        return
    with _tmpfs(tmp_path / "ro", "ro,size=1m") as folder:
        if folder is not None:
            code = main(["convert", str(checkpoint), str(folder / "out"), "--no-progress"])
            err = capsys.readouterr().err
            assert code == 2 and "Read-only file system (EROFS)" in err and "Traceback" not in err, err
            return
    # root without mount permission: drop to nobody, for whom a 0555 folder is read-only
    folder = tmp_path / "ro"
    folder.chmod(0o555)
    for parent in (tmp_path, *tmp_path.parents):
        if parent.stat().st_mode & 0o001 == 0:
            parent.chmod(parent.stat().st_mode | 0o001)
    checkpoint.chmod(0o644)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-c", _CONVERT_AS_NOBODY, str(checkpoint), str(folder / "out")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 2 and "Permission denied (EACCES)" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


# ----------------------------------------------------------------------------------- tensor contents


def _checkpoint_with(tmp_path: Path, change) -> Path:
    config = CONFIGS["2.0"]
    sd = official_state_dict(config)
    change(sd)
    path = tmp_path / "changed.safetensors"
    save_file(sd, str(path), metadata={"config": json.dumps(config), "model_version": "2.0.0"})
    return path


def test_an_integer_weight_is_refused(tmp_path, capsys):
    key = "model.diffusion_model.transformer_blocks.0.attn1.to_q.weight"

    def to_int(sd):
        sd[key] = sd[key].round().to(torch.int32)

    src = _checkpoint_with(tmp_path, to_int)
    with pytest.raises(ConversionError, match=r"to_q\.weight: integer \(int32\).*floating-point"):
        convert_single_file(src, tmp_path / "out", progress=False)
    assert main(["convert", str(src), str(tmp_path / "out"), "--no-progress"]) == 2
    assert "dtype that does not fit" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and _hidden(tmp_path) == []


def test_nan_and_inf_weights_are_named_from_the_single_streaming_pass(tmp_path, monkeypatch):
    nan_key = "model.diffusion_model.transformer_blocks.0.attn1.to_q.weight"
    inf_key = "vocoder.conv_post.weight"

    def poison(sd):
        sd[nan_key][0, 0] = float("nan")
        sd[inf_key].view(-1)[3] = float("inf")

    src = _checkpoint_with(tmp_path, poison)
    reads = []
    real_get = StreamingReader.get
    monkeypatch.setattr(StreamingReader, "get", lambda self, name: reads.append(name) or real_get(self, name))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        convert_single_file(src, tmp_path / "out", progress=False)
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1 and "2 tensor(s) contain NaN or inf" in messages[0]
    assert nan_key in messages[0] and inf_key in messages[0]
    assert len(reads) == len(set(reads))  # every tensor read once: the check rode on the conversion's read
    assert (tmp_path / "out" / "model_index.json").is_file()


def test_float8_nan_patterns_are_detected():
    from diffusers_ltx2.conversion.loading import has_nonfinite

    clean = torch.tensor([0.5, -2.0, 448.0]).to(torch.float8_e4m3fn)
    assert not has_nonfinite(clean)
    assert has_nonfinite(torch.tensor([0.5, float("nan")]).to(torch.float8_e4m3fn))
    assert has_nonfinite(torch.tensor([0.5, float("inf")]).to(torch.float8_e5m2))
    assert not has_nonfinite(torch.tensor([1, 2, 3]))
    big = torch.full((1000,), 60000.0, dtype=torch.float16)  # finite, but its fp16 sum overflows to inf
    assert not has_nonfinite(big)
    big[7] = float("-inf")
    assert has_nonfinite(big)
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        t = torch.randn(300, dtype=dtype)
        assert not has_nonfinite(t)
        t[123] = float("nan")
        assert has_nonfinite(t)
