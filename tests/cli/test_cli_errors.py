"""What a new user hits first on the command line: every mistake is one line on stderr with exit code 2, found
before any model loads; `--help` and argument errors answer without importing torch or diffusers; importing the
package stays cheap yet diffusers still resolves its pipelines."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from diffusers_ltx2.cli import main

REPO = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))


def _python(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=ENV, timeout=300)


# ----------------------------------------------------------------------------------- import cost


_HELP = """
import sys
from diffusers_ltx2.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exit:
    code = exit.code
heavy = [m for m in ("torch", "diffusers", "transformers", "numpy", "av") if m in sys.modules]
print("CODE", code, "HEAVY", heavy)
"""


@pytest.mark.parametrize("argv", [
    ["--help"],
    ["generate", "--help"],
    ["control", "--help"],
    ["encode", "--help"],
    ["convert", "--help"],
    ["generate", "--model", "m", "--prompt", "p", "--output", "o.mp4", "--steps", "0"],
    ["generate", "--model", "m", "--prompt", "p", "--output", "o.mp4", "--frame-rate", "0"],
    ["convert", "no-such-transformer.safetensors", "no-such-vae.safetensors", "out"],  # a 2.5 set, files one by one
    ["no-such-command"],
])
def test_help_and_argument_errors_import_neither_torch_nor_diffusers(argv):
    done = _python(_HELP, *argv)
    code = 0 if argv[-1] == "--help" else 2
    assert f"CODE {code} HEAVY []" in done.stdout, done.stdout + done.stderr
    if code == 2:
        assert len(done.stderr.strip().splitlines()) == 1 and "error:" in done.stderr


_REGISTRATION = """
import sys
order, folder = sys.argv[1], sys.argv[2]
if order == "diffusers_ltx2 first":
    import diffusers_ltx2
    import diffusers
else:
    import diffusers
    import diffusers_ltx2
assert "diffusers_ltx2.pipelines" not in sys.modules, "import diffusers_ltx2 must stay cheap"
pipe = diffusers.DiffusionPipeline.from_pretrained(folder)
print(type(pipe).__module__, type(pipe).__name__, type(pipe.scheduler).__name__, type(pipe.guider).__name__)
"""


@pytest.mark.slow
@pytest.mark.parametrize("order", ["diffusers_ltx2 first", "diffusers first"])
def test_diffusers_resolves_our_pipelines_after_import_diffusers_ltx2(tiny_pipe, tmp_path, order):
    tiny_pipe.save_pretrained(tmp_path / "model")
    done = _python(_REGISTRATION, order, str(tmp_path / "model"))
    assert done.returncode == 0, done.stderr
    module, pipeline, scheduler, guider = done.stdout.split()[-4:]
    assert module.startswith("diffusers_ltx2.") and pipeline == "LTX2AudioVideoPipeline"
    assert (scheduler, guider) == ("LTX2Scheduler", "ClassifierFreeGuidance")


def test_public_names_resolve_lazily():
    import diffusers

    import diffusers_ltx2

    assert diffusers_ltx2.LTX2AudioVideoPipeline.__name__ == "LTX2AudioVideoPipeline"
    assert diffusers.LTX2AudioVideoPipeline is diffusers_ltx2.LTX2AudioVideoPipeline
    assert diffusers.LTX2ICLoRAPipeline is diffusers_ltx2.LTX2ICLoRAPipeline
    assert set(diffusers_ltx2.__all__) <= set(dir(diffusers_ltx2))
    with pytest.raises(AttributeError):
        diffusers_ltx2.NoSuchName  # noqa: B018
    assert diffusers_ltx2.control.CannyPreprocessor.__name__ == "CannyPreprocessor"  # subpackages as attributes


# ----------------------------------------------------------------------------------- user errors before loading


@pytest.fixture()
def workspace(tmp_path, monkeypatch):
    """A folder with a (fake) pipeline folder, an image, a LoRA, a video; model loading is made to fail loudly."""
    import diffusers
    from PIL import Image

    monkeypatch.chdir(tmp_path)
    model = tmp_path / "model"
    model.mkdir()
    (model / "model_index.json").write_text('{"_class_name": "LTX2AudioVideoPipeline"}')
    for sub in ("tokenizer", "text_encoder", "connectors"):
        (model / sub).mkdir()
    (tmp_path / "not_a_model").mkdir()
    (tmp_path / "incomplete").mkdir()
    (tmp_path / "incomplete" / "model_index.json").write_text(
        '{"_class_name": "LTX2AudioVideoPipeline", "transformer": ["diffusers", "LTX2VideoTransformer3DModel"], '
        '"vae": ["diffusers", "AutoencoderKLLTX2Video"], "text_encoder": [null, null]}')
    Image.new("RGB", (64, 64)).save(tmp_path / "image.png")
    (tmp_path / "notes.png").write_text("not an image")
    save_file({"diffusion_model.a.lora_A.weight": torch.zeros(2, 4),
               "diffusion_model.a.lora_B.weight": torch.zeros(4, 2)}, str(tmp_path / "lora.safetensors"))
    save_file({"transformer.weight": torch.zeros(2)}, str(tmp_path / "weights.safetensors"))
    (tmp_path / "text.safetensors").write_text("hello")
    (tmp_path / "folder.mp4").mkdir()
    from diffusers_ltx2.export import export_to_video_with_audio

    export_to_video_with_audio(torch.zeros(9, 64, 64, 3), None, tmp_path / "control.mp4", fps=24)

    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded before the arguments were checked")

    monkeypatch.setattr(diffusers.DiffusionPipeline, "from_pretrained", classmethod(no_loading))
    return tmp_path


GENERATE = ["generate", "--model", "model", "--prompt", "a cat", "--output", "out.mp4"]
CONTROL = ["control", "--model", "model", "--prompt", "a cat", "--output", "out.mp4", "--lora", "lora.safetensors",
           "--control-video", "control.mp4"]
ENCODE = ["encode", "--model", "model", "--prompt", "a cat"]


def _replace(argv: list[str], flag: str, value: str) -> list[str]:
    argv = list(argv)
    if flag in argv:
        argv[argv.index(flag) + 1] = value
    else:
        argv += [flag, value]
    return argv


@pytest.mark.parametrize("argv,message", [
    (_replace(GENERATE, "--steps", "0"), "--steps: must be >= 1"),
    (_replace(GENERATE, "--frame-rate", "0"), "--frame-rate: must be in [0.001, 1000], got 0"),
    (_replace(GENERATE, "--frame-rate", "1e-6"), "--frame-rate: must be in [0.001, 1000], got 1e-6"),
    (_replace(GENERATE, "--num-frames", "-9"), "--num-frames: must be >= 1"),
    (_replace(GENERATE, "--image-strength", "2"), "--image-strength: must be in [0, 1]"),
    (_replace(GENERATE, "--max-sequence-length", "0"), "--max-sequence-length: must be >= 1"),
    (_replace(GENERATE, "--output", "folder.mp4"), "is a folder"),
    (_replace(GENERATE, "--output", "clip.gif"), ".mp4"),
    (_replace(GENERATE, "--model", "not_a_model"), "not a diffusers pipeline folder"),
    (_replace(GENERATE, "--model", "missing"), "model folder not found"),
    (_replace(GENERATE, "--model", "incomplete"), "lists transformer, vae but the folder has no transformer/, vae/"),
    (["convert", "model", "out", "--no-progress"], "is a folder, not a .safetensors file"),
    (_replace(GENERATE, "--device", "banana"), "--device: invalid device 'banana'"),
    (_replace(GENERATE, "--device", "cuda:99"), "--device cuda:99"),
    *([(_replace(GENERATE, "--device", "cuda"), "CUDA")] if not torch.cuda.is_available() else []),
    (_replace(GENERATE, "--image", "notes.png"), "is not a readable image"),
    (_replace(GENERATE, "--image", "nope.png"), "image file not found"),
    (_replace(GENERATE[:-4] + ["--output", "out.mp4"], "--conditioning", "text.safetensors"), "text.safetensors"),
    (_replace(GENERATE, "--rescale", "3"), "rescale"),
    (GENERATE + ["--cpu-offload", "--offload", "blocks"], "pass either --cpu-offload or --offload"),
    (_replace(CONTROL, "--lora", "weights.safetensors"), "is not a LoRA file"),
    (_replace(CONTROL, "--lora", "text.safetensors"), "is not a LoRA .safetensors file"),
    (_replace(CONTROL, "--control-video", "notes.png"), "is not a readable video"),
    (_replace(CONTROL, "--reference-downscale-factor", "0"), "--reference-downscale-factor: must be >= 1"),
    (_replace(CONTROL, "--lora", "lora.safetensors:nan"), "bad STRENGTH ':nan' after the file lora.safetensors"),
    (CONTROL + ["--lora-strength", "0.5"], "--lora-strength was replaced by --lora PATH:STRENGTH"),
    (ENCODE + ["--output", "x.mp4"], "must be a .safetensors file"),
    (ENCODE + ["--output", "e.safetensors", "--cache-dir", "image.png"], "is a file, not a folder"),
    (ENCODE + ["--output", "model"], "is a folder"),
    (ENCODE + ["--output", "e.safetensors", "--max-sequence-length", "0"], "must be >= 1"),
    (ENCODE + ["--output", "e.safetensors", "--device", "cuda:99"], "--device cuda:99"),
    (["encode", "--model", "not_a_model", "--prompt", "p", "--output", "e.safetensors"], "missing tokenizer/"),
    (["demo", "--steps", "0"], "--steps: must be >= 1"),
    (["demo", "--model-dir", "not_a_model_with_files", "--output", "d.mp4"], "non-empty folder"),
])
def test_user_errors_are_one_line_exit_2_before_any_model_loads(workspace, capsys, argv, message):
    if "not_a_model_with_files" in argv:
        (workspace / "not_a_model_with_files").mkdir()
        (workspace / "not_a_model_with_files" / "thesis.tex").write_text("years of work")
    try:
        code = main(argv)
    except SystemExit as exit:  # argparse
        code = exit.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert not (workspace / "out.mp4").exists() and not (workspace / "e.safetensors").exists()
    if "thesis.tex" in str(list(workspace.rglob("*"))):
        assert (workspace / "not_a_model_with_files" / "thesis.tex").read_text() == "years of work"
