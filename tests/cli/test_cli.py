"""The `ltx2` command line, run as a user would: in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys

import av
import pytest

ENV = dict(os.environ, PYTHONUNBUFFERED="1")


def _ltx2(*args, cwd=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "diffusers_ltx2", *args], capture_output=True, text=True,
                          cwd=cwd, env=ENV, timeout=timeout)


def _streams(path):
    with av.open(str(path)) as container:
        video = [s for s in container.streams if s.type == "video"]
        audio = [s for s in container.streams if s.type == "audio"]
        frames = sum(1 for _ in container.decode(video=0))
        return len(video), len(audio), frames, audio[0].codec_context.sample_rate


@pytest.mark.slow
def test_demo_writes_playable_mp4_with_audio(tmp_path):
    out = tmp_path / "demo.mp4"
    model_dir = tmp_path / "tiny"
    result = _ltx2("demo", "--output", str(out), "--model-dir", str(model_dir), "--steps", "2")
    assert result.returncode == 0, result.stderr
    assert "RANDOM" in result.stdout and str(out) in result.stdout
    for stage in ("save_pretrained", "from_pretrained", "generate", "write mp4"):
        assert f"[{stage}]" in result.stdout
    assert _streams(out) == (1, 1, 25, 24000)
    assert (model_dir / "model_index.json").is_file()

    assert "loading PyTorch and diffusers ..." in result.stdout.splitlines()[0]
    last = result.stdout.strip().splitlines()[-1]  # the total covers the run from the process start: imports too
    assert last.startswith("total ") and "imports" in last and "other" in last

    # generate from the folder the demo saved (in this process: the subprocess above is the user's path)
    from diffusers_ltx2.cli import main

    clip = tmp_path / "gen.mp4"
    assert main(["generate", "--model", str(model_dir), "--prompt", "a cat", "--output", str(clip), "--num-frames",
                 "9", "--height", "64", "--width", "96", "--steps", "2", "--dtype", "fp32", "--device", "cpu"]) == 0
    assert _streams(clip)[:3] == (1, 1, 9)


@pytest.mark.parametrize("args,message", [
    (["--num-frames", "10"], "8k+1"),
    (["--height", "100"], "--height must be a multiple of 32, got 100; nearest valid values: 96 or 128"),
    (["--output", "clip.gif"], ".mp4"),
    (["--model", "/nonexistent/model"], "model folder not found"),
    (["--dtype", "int8"], "--dtype: unknown dtype 'int8'; choose bf16, fp16 or fp32"),
])
def test_generate_rejects_bad_arguments_before_loading(tmp_path, monkeypatch, capsys, args, message):
    from diffusers_ltx2.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "model_index.json").write_text('{"_class_name": "LTX2AudioVideoPipeline"}')
    base = {"--model": str(tmp_path), "--prompt": "a cat", "--output": str(tmp_path / "o.mp4")}
    for flag, value in zip(args[::2], args[1::2]):
        base[flag] = value
    flat = [x for kv in base.items() for x in kv]
    assert main(["generate", *flat]) == 2
    assert message in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "o.mp4")


def test_help_lists_subcommands():
    result = _ltx2("--help")
    assert result.returncode == 0
    for name in ("generate", "demo"):
        assert name in result.stdout


def test_encode_then_generate_from_conditioning(tiny_pipe, tmp_path, monkeypatch):
    """`ltx2 encode` (local Gemma) then `ltx2 generate --conditioning` on the same folder: Gemma's output is
    reused and the clip is the same as with `--prompt`."""
    from diffusers_ltx2.cli import main

    monkeypatch.chdir(tmp_path)
    model = tmp_path / "model"
    tiny_pipe.save_pretrained(model)
    common = ["--model", str(model), "--num-frames", "9", "--height", "64", "--width", "64", "--steps", "2",
              "--dtype", "fp32", "--device", "cpu", "--max-sequence-length", "128"]
    assert main(["encode", "--model", str(model), "--prompt", "a cat", "--output", "pos.safetensors",
                 "--max-sequence-length", "128"]) == 0
    assert main(["encode", "--model", str(model), "--prompt", "", "--output", "neg.safetensors",
                 "--max-sequence-length", "128"]) == 0
    assert main(["generate", *common, "--prompt", "a cat", "--negative-prompt", "", "--output", "from_prompt.mp4"]) == 0
    # every prompt comes from a file: Gemma is not loaded (its weights may as well be unreadable)
    for weights in (model / "text_encoder").glob("*.safetensors"):
        weights.write_bytes(b"not a safetensors file")
    assert main(["generate", *common, "--conditioning", "pos.safetensors", "--negative-conditioning",
                 "neg.safetensors", "--output", "from_file.mp4"]) == 0
    frames = {}
    for name in ("from_file", "from_prompt"):
        with av.open(f"{name}.mp4") as container:
            frames[name] = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames["from_file"]) == 9
    assert all((a == b).all() for a, b in zip(frames["from_file"], frames["from_prompt"]))


def test_no_guidance_flag_turns_every_dial_off():
    from diffusers_ltx2.cli import parse_args
    from diffusers_ltx2.cli.guidance_args import guider_from_args

    base = ["generate", "--model", "m", "--prompt", "p", "--output", "o.mp4"]
    default = guider_from_args(parse_args(base)[1])
    assert len(default.plan(0, 8, 1.0).passes) == 4 and default.uses_negative_prompt
    off = guider_from_args(parse_args([*base, "--no-guidance", "--cfg", "5"])[1])
    assert [p.name for p in off.plan(0, 8, 1.0).passes] == ["cond"] and not off.uses_negative_prompt
