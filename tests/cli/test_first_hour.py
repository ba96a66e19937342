"""What a new user met in a first hour with the package (issue 20), each as they met it: commands that did
something other than asked, changes made silently, noise and silence while working, files and folders that other
tools could not use. Runs on the tiny model with real media files."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import warnings
from pathlib import Path

import av
import pytest
import torch
import yaml

from media_files import frame_colours, write_video
from training_fixtures import write_dataset

from diffusers_ltx2.cli import main, resolve
from diffusers_ltx2.conditioning import VideoCondition

REPO = Path(__file__).resolve().parents[2]
FAST = ["--steps", "1", "--dtype", "fp32", "--device", "cpu", "--no-guidance", "--prompt", "a cat"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_components_master):
    from diffusers_ltx2 import LTX2AudioVideoPipeline, LTX2Scheduler

    folder = tmp_path_factory.mktemp("tiny") / "model"
    LTX2AudioVideoPipeline(scheduler=LTX2Scheduler(), **tiny_components_master).save_pretrained(folder)
    return folder


def _streams(path):
    with av.open(str(path)) as container:
        return sorted(s.type for s in container.streams)


# -------------------------------------------------------------------------------- saying what is done


def test_the_source_clip_commands_say_how_they_crop_and_trim_the_input(tmp_path, model_dir, capsys):
    """176x100, 60 frames became 160x96, 57 frames and only the new size was said."""
    clip = write_video(tmp_path / "in.mp4", frame_colours(60, 100, 176), fps=24)
    for command, extra in (("foley", []), ("retake", ["--start", "0.5", "--end", "1"])):
        resolve(command, {"model": str(model_dir), "prompt": "a cat", "input": clip, "output": str(tmp_path / "o.mp4"),
                          "device": "cpu", **dict(zip(extra[::2], extra[1::2]))}, call=True)  # checks, loads no model
        out = capsys.readouterr().out
        assert ("176x100, 60 frames at 24 fps -> 160x96 (resized and centre-cropped), its first 57 frames (8k+1; "
                "the last 3 dropped)") in out, out
    exact = write_video(tmp_path / "exact.mp4", frame_colours(17, 64, 96), fps=24)
    resolve("foley", {"model": str(model_dir), "prompt": "a cat", "input": exact, "output": str(tmp_path / "o.mp4"),
                      "device": "cpu"}, call=True)
    assert "96x64, 17 frames at 24 fps (used as is)" in capsys.readouterr().out


@pytest.mark.slow
def test_retake_no_audio_keeps_a_silent_input_silent(tmp_path, model_dir, capsys):
    """`retake --no-audio` ("keep the whole audio") on a clip without sound generated a soundtrack."""
    silent = write_video(tmp_path / "silent.mp4", frame_colours(9, 64, 64), fps=24)
    out = tmp_path / "retake.mp4"
    assert main(["retake", "--model", str(model_dir), *FAST, "--input", silent, "--start", "0.1", "--end", "0.3",
                 "--no-audio", "--output", str(out)]) == 0
    assert "--no-audio keeps it silent (the output has no sound)" in capsys.readouterr().out
    assert _streams(out) == ["video"]
    sound = tmp_path / "sound.mp4"  # without --no-audio the sound is generated, as before
    assert main(["retake", "--model", str(model_dir), *FAST, "--input", silent, "--start", "0.1", "--end", "0.3",
                 "--output", str(sound)]) == 0
    assert _streams(sound) == ["audio", "video"]


# -------------------------------------------------------------------------------- progress and noise


def test_every_long_step_has_a_named_progress_bar(tiny_pipe, capsys):
    """The one-stage denoising bar had no label (two-stage's did); nothing showed while decoding."""
    tiny_pipe("a cat", num_frames=9, height=64, width=64, num_inference_steps=2, output_type="np",
              generator=torch.Generator().manual_seed(0))
    err = capsys.readouterr().err
    assert "denoise: 100%" in err and "2/2" in err and "decode: 100%" in err


@pytest.mark.slow
def test_generate_prints_its_own_lines_not_nested_loading_bars_or_deprecations(model_dir, tmp_path, capsys):
    argv = ["generate", "--model", str(model_dir), *FAST, "--num-frames", "9", "--height", "64", "--width", "64",
            "--quantize", "int8"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main([*argv, "--output", str(tmp_path / "a.mp4")]) == 0
    out, err = capsys.readouterr()
    assert not [w for w in caught if "Quanto" in str(w.message)], [str(w.message) for w in caught]
    assert "Loading pipeline components" not in err and "Loading checkpoint shards" not in err
    assert f"loading {model_dir} ..." in out and "denoise: 100%" in err
    assert main([*argv, "--no-progress", "--output", str(tmp_path / "b.mp4")]) == 0
    out, err = capsys.readouterr()
    assert "denoise" not in err and "decode" not in err and "%|" not in err
    last = out.strip().splitlines()[-1]
    assert last.startswith(f"wrote {tmp_path / 'b.mp4'} (total ") and "imports" in last and "load" in last


# -------------------------------------------------------------------------------- preprocess -> train


def _clips(folder, sizes):
    folder.mkdir(parents=True, exist_ok=True)
    for name, frames in sizes.items():
        write_video(folder / f"{name}.mp4", frame_colours(frames, 64, 64), fps=24)
        (folder / f"{name}.txt").write_text(f"a clip called {name}")
    return folder


def test_preprocess_fails_when_every_clip_is_skipped(tmp_path, capsys):
    """It exited 0 and the next `ltx2 train` said "run ltx2 preprocess first"."""
    src = _clips(tmp_path / "short", {"a": 9, "b": 9})
    assert main(["preprocess", str(src), "--model", "factory:tiny", "--output", str(tmp_path / "data"),
                 "--height", "64", "--width", "64", "--num-frames", "17", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "no clip was encoded: all 2 were skipped (a: " in err and "`ltx2 train` would find no data" in err


@pytest.mark.slow
def test_preprocessed_files_and_the_lora_have_the_usual_mode_and_train_says_where_it_wrote(tmp_path, capsys):
    """Preprocessed files were 0600 unlike every other output; `ltx2 train` ended in a bare JSON line; `--resume
    latest --max-steps 4` after a finished run trained nothing and reported `first_loss: null`."""
    umask = os.umask(0o022)
    os.umask(umask)
    usual = 0o666 & ~umask
    src = _clips(tmp_path / "clips", {"a": 9})
    assert main(["preprocess", str(src), "--model", "factory:tiny", "--output", str(tmp_path / "data"),
                 "--height", "64", "--width", "64", "--num-frames", "9", "--no-progress"]) == 0
    assert "dataset written to" in capsys.readouterr().out
    for sub in ("latents", "conditions"):
        assert stat.S_IMODE(os.stat(tmp_path / "data" / sub / "a.safetensors").st_mode) == usual
    cfg = {"model": {"model_path": "factory:tiny"}, "data": {"preprocessed_data_root": str(tmp_path / "data")},
           "lora": {"rank": 2}, "optimization": {"steps": 2}, "checkpoints": {"interval": 2},
           "output_dir": str(tmp_path / "out")}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", str(tmp_path / "cfg.yaml"), "--no-progress"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    lora = tmp_path / "out" / "lora_weights.safetensors"
    assert last.startswith(f"LoRA written to {lora} (step 2; loss ") and "total" in last
    assert stat.S_IMODE(os.stat(lora).st_mode) == usual
    assert main(["train", str(tmp_path / "cfg.yaml"), "--resume", "latest", "--max-steps", "4"]) == 2
    err = capsys.readouterr().err
    assert "--resume latest: checkpoint step_00002 is at step 2, the config's optimization.steps is 2: the run is " \
           "finished, nothing to train (raise optimization.steps" in err


def test_a_replaced_training_file_keeps_its_mode_and_a_new_one_gets_open_s(tmp_path):
    """`training.data.write_entry` (preprocessed files, LoRAs) writes through a temporary sibling: a new file gets
    the mode `open()` gives (safetensors' own writer gave 0600), a replaced one keeps its bits, as `open()` would."""
    from diffusers_ltx2.training.data import read_entry, write_entry

    umask = os.umask(0o022)
    os.umask(umask)
    path = tmp_path / "a.safetensors"
    write_entry(path, {"x": torch.zeros(2)}, {"k": "v"})
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~umask
    os.chmod(path, 0o640)
    write_entry(path, {"x": torch.ones(2)})
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    assert torch.equal(read_entry(path)[0]["x"], torch.ones(2)) and sorted(os.listdir(tmp_path)) == ["a.safetensors"]


def test_a_finished_run_is_refused_before_any_model_loads(tmp_path, capsys, monkeypatch, tiny_components_master):
    from diffusers_ltx2.training import trainer

    root = write_dataset(tmp_path / "data", tiny_components_master["transformer"])
    step = tmp_path / "out" / "checkpoints" / "step_00010"
    step.mkdir(parents=True)
    (step / "training_state.pt").write_bytes(b"not read: the folder name gives the step")
    cfg = {"model": {"model_path": "factory:tiny"}, "data": {"preprocessed_data_root": str(root)},
           "optimization": {"steps": 10}, "output_dir": str(tmp_path / "out")}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    monkeypatch.setattr(trainer, "Trainer", lambda *a, **k: pytest.fail("a trainer was built"))
    assert main(["train", str(tmp_path / "cfg.yaml"), "--resume", str(step)]) == 2
    assert "checkpoint step_00010 is at step 10" in capsys.readouterr().err
    # its state file names the same checkpoint (training.checkpoints.find_checkpoint takes either)
    assert main(["train", str(tmp_path / "cfg.yaml"), "--resume", str(step / "training_state.pt")]) == 2
    assert "checkpoint step_00010 is at step 10" in capsys.readouterr().err


def test_train_checks_resume_with_the_trainers_state_file_names():
    """`ltx2 train` checks `--resume` before importing torch, so it names the state files itself."""
    from diffusers_ltx2.cli.train import STATE_FILES
    from diffusers_ltx2.training.checkpoints import LEGACY_STATE_FILE, STATE_FILE

    assert STATE_FILES == (STATE_FILE, LEGACY_STATE_FILE)


# -------------------------------------------------------------------------------- inputs and outputs


def test_image_takes_a_path_like_videocondition_and_the_cli(tiny_pipe, tmp_path):
    import PIL.Image

    image = frame_colours(1, 64, 64)[0]
    PIL.Image.fromarray(image).save(tmp_path / "photo.png")
    run = dict(num_frames=9, height=64, width=64, num_inference_steps=1, output_type="latent")
    by_path = tiny_pipe("a cat", image=str(tmp_path / "photo.png"), generator=torch.Generator().manual_seed(0), **run)
    # as VideoCondition (and --image) takes the file: the official image path, re-compressed at CRF 33 (an array
    # is taken as prepared pixels unless image_crf is given: main's image= semantics)
    by_condition = tiny_pipe("a cat", conditions=[VideoCondition(str(tmp_path / "photo.png"), 0)],
                             generator=torch.Generator().manual_seed(0), **run)
    by_array = tiny_pipe("a cat", image=image, image_crf=33, generator=torch.Generator().manual_seed(0), **run)
    torch.testing.assert_close(by_path.frames, by_condition.frames, rtol=0, atol=0)
    torch.testing.assert_close(by_path.frames, by_array.frames, rtol=0, atol=0)
    with pytest.raises(FileNotFoundError, match="nope.png"):
        tiny_pipe("a cat", image=str(tmp_path / "nope.png"), **run)


_PLAIN = """
import sys
import diffusers
folder = sys.argv[1]
try:
    diffusers.DiffusionPipeline.from_pretrained(folder)
except Exception as err:
    print("REFUSED", type(err).__name__, str(err).replace(chr(10), " "))
assert not any(m.startswith("diffusers_ltx2") for m in sys.modules), "diffusers_ltx2 was imported"
pipe = diffusers.DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)
print("LOADED", type(pipe).__module__, type(pipe).__name__, type(pipe.guider).__name__)
"""


@pytest.mark.slow
def test_plain_diffusers_says_how_to_load_a_folder_we_saved(model_dir, tmp_path):
    """Without `import diffusers_ltx2` the folder failed with a bare `AttributeError: module diffusers has no
    attribute LTX2AudioVideoPipeline`; now diffusers names the file that says to import diffusers_ltx2, and
    `trust_remote_code=True` loads our pipeline. (With our import no custom code runs:
    test_cli_errors::test_diffusers_resolves_our_pipelines_after_import_diffusers_ltx2.)"""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
               HF_MODULES_CACHE=str(tmp_path / "modules"))
    done = subprocess.run([sys.executable, "-c", _PLAIN, str(model_dir)], capture_output=True, text=True, env=env,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    refused = next(line for line in done.stdout.splitlines() if line.startswith("REFUSED"))
    assert "ValueError" in refused and "diffusers_ltx2_pipeline.py" in refused and "trust_remote_code=True" in refused
    assert "import diffusers_ltx2" in (model_dir / "diffusers_ltx2_pipeline.py").read_text()
    assert "LOADED diffusers_ltx2.pipelines.pipeline_ltx2 LTX2AudioVideoPipeline" in done.stdout
    index = json.loads((model_dir / "model_index.json").read_text())
    assert index["_class_name"] == ["diffusers_ltx2_pipeline", "LTX2AudioVideoPipeline"]


def test_memory_figures_are_scaled_binary_units():
    """`--vram-budget` plans printed `0.00 GiB` on small models and mixed GB and GiB."""
    from diffusers_ltx2.memory.budget import GiB, format_bytes

    assert [format_bytes(n) for n in (512, 3 * 1024 + 512, int(1.5 * 2**20), 37 * GiB + GiB // 4)] == [
        "512 B", "3.50 KiB", "1.50 MiB", "37.25 GiB"]
