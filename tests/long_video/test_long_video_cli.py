"""`ltx2 generate --window N [--overlap O] [--prompt-schedule FILE]`: a long clip from the command line, every
window flag checked before torch is imported (one line, exit 2), the schedule's prompts reaching their windows."""

from __future__ import annotations

import subprocess
import sys

import av
import pytest

from diffusers_ltx2.cli import main

SHOTS = "0s a red fox trots through snow\n1s the fox stops\n  and looks at the camera\n"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_components_master):
    from diffusers_ltx2 import LTX2AudioVideoPipeline, LTX2Scheduler

    folder = tmp_path_factory.mktemp("tiny") / "model"
    LTX2AudioVideoPipeline(scheduler=LTX2Scheduler(), **tiny_components_master).save_pretrained(folder)
    return str(folder)


def _argv(model, out, *extra):
    return ["generate", "--model", model, "--steps", "2", "--dtype", "fp32", "--device", "cpu", "--height", "64",
            "--width", "64", "--no-progress", "--output", str(out), *extra]


def test_long_clip_from_a_prompt_schedule(model_dir, tmp_path, monkeypatch, capsys):
    from diffusers_ltx2.pipelines import LTX2AudioVideoPipeline

    shots = tmp_path / "shots.txt"
    shots.write_text(SHOTS)
    prompts = []
    original = LTX2AudioVideoPipeline.__call__

    def spy(self, prompt=None, *args, **kwargs):
        prompts.append(prompt)
        return original(self, prompt, *args, **kwargs)

    monkeypatch.setattr(LTX2AudioVideoPipeline, "__call__", spy)
    out = tmp_path / "long.mp4"
    assert main(_argv(model_dir, out, "--num-frames", "57", "--window", "25", "--overlap", "16",
                      "--prompt-schedule", str(shots))) == 0
    assert "57 frames in 3 windows of 25 frames (overlap 16): 25, 25, 25 frames" in capsys.readouterr().out
    # 1 s = frame 24: window 0 owns frames 0..24 (24 of them before 1 s), windows 1 and 2 frames 25..56
    assert prompts == ["a red fox trots through snow", "the fox stops and looks at the camera",
                       "the fox stops and looks at the camera"]
    with av.open(str(out)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 57
        stream = container.streams.audio[0]
        assert abs(float(stream.duration * stream.time_base) - 57 / 24) < 0.05


_CHECK = """
import sys
from diffusers_ltx2.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exit:
    code = exit.code
print("CODE", code, "HEAVY", [m for m in ("torch", "diffusers", "numpy") if m in sys.modules])
"""


@pytest.mark.parametrize("extra,message", [
    (["--window", "120"], "--window must be 8k+1"),
    (["--window", "121", "--overlap", "20"], "got 20; nearest valid values for window 121: 16 or 24"),
    (["--window", "121", "--overlap", "121"], "got 121; nearest valid value for window 121: 112\n"),
    (["--window", "121", "--overlap", "8"], "--overlap: must be >= 16"),
    (["--window", "25", "--overlap", "24"], "window (25 frames) must be at least overlap + 9"),
    (["--overlap", "16"], "--overlap applies to sliding windows: add --window"),
    (["--window", "121", "--overlap-strength", "2"], "--overlap-strength: must be in [0, 1]"),
    (["--window", "121", "--prompt-schedule", "missing.txt"], "--prompt-schedule: prompt schedule not found"),
    (["--window", "121", "--prompt", "p", "--prompt-schedule", "shots.txt"], "replaces --prompt"),
    (["--window", "121", "--prompt-schedule", "bad.txt"], "first prompt segment must start at 0"),
    (["--window", "121", "--prompt-schedule", "short.txt"], "is not the main prompt of any window"),
    (["--window", "121", "--prompt", "p", "--two-stage"], "--window does not combine with --two-stage"),
])
def test_window_flags_are_checked_before_torch(model_dir, tmp_path, extra, message):
    (tmp_path / "shots.txt").write_text(SHOTS)
    (tmp_path / "bad.txt").write_text("1s late start\n")
    (tmp_path / "short.txt").write_text("0s a\n5s b\n5.5s c\n")
    if "--prompt" not in extra and "--prompt-schedule" not in extra:
        extra = ["--prompt", "p", *extra]
    argv = ["generate", "--model", model_dir, "--output", "o.mp4", "--num-frames", "481", *extra]
    done = subprocess.run([sys.executable, "-c", _CHECK, *argv], capture_output=True, text=True, cwd=tmp_path)
    assert "CODE 2 HEAVY []" in done.stdout, done.stdout + done.stderr
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


@pytest.mark.slow
def test_readme_long_video_example_runs_as_written(model_dir, tmp_path, monkeypatch, capsys):
    """The README's "Long video" Python example, with only the model folder swapped for the tiny model."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = text[text.index("## Long video"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert 'from_pretrained("tiny")' in code, "the README example changed; update this test"
    monkeypatch.chdir(tmp_path)
    exec(compile(code.replace('"tiny"', repr(model_dir)), "README.md", "exec"), {"__name__": "readme_long_video"})
    assert "481 torch.Size([1, 2, 480240])" in capsys.readouterr().out


def test_the_resolved_command_generates_in_windows_as_the_command_line_does(model_dir, tmp_path):
    """`cli.resolve` + `Command.generate` (the web UI's path) runs `--window` through `generate_long_video` and
    `--preset hq` through `generate_hq`, as the command line does, not `pipe(**call)` with the window flags."""
    from diffusers_ltx2 import cli

    class Recorder:
        def __init__(self):
            self.used = []

        def __call__(self, **kw):
            self.used.append("__call__")

        def generate_long_video(self, **kw):
            self.used.append(("generate_long_video", kw["window"], kw["overlap"]))

        def generate_hq(self, **kw):
            self.used.append("generate_hq")

    values = {"model": model_dir, "prompt": "a fox", "num_frames": 105, "height": 64, "width": 64, "steps": 2,
              "output": str(tmp_path / "a.mp4"), "window": 49, "overlap": 24}
    resolved = cli.resolve("generate", values, call=True)
    pipe = Recorder()
    cli.commands()["generate"].generate(pipe, resolved.args, resolved.call)
    assert pipe.used == [("generate_long_video", 49, 24)]
