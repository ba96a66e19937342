"""The argument layer every `ltx2` command shares: declarations, checks naming the flag with the nearest valid
value, the order of checks against imports (asserted on what is imported when, never on seconds), `--help`, and
`resolve()` from a plain mapping as another front end would call it."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from diffusers_ltx2.cli import build_parser, commands, parse_args, resolve
from diffusers_ltx2.cli.options import Option, OptionError, number, parse_options, whole

REPO = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))


def _python(code: str, *args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=ENV, timeout=600,
                          cwd=cwd)


# ------------------------------------------------------------------------------------------- declarations


def test_an_option_is_one_declaration_checked_from_strings_or_python_values():
    options = (Option("--num-frames", "frames", whole(1), default=121),
               Option("--strength", "s", number(0, 1), default=1.0),
               Option("--mode", "m", choices=("euler", "res_2s"), default="euler"),
               Option("--lora", "l", repeat=True),
               Option("--fast", "f", switch=True))
    args = parse_options(options, {"num_frames": "9", "--strength": 0.5, "mode": "RES_2S", "lora": "a"})
    assert (args.num_frames, args.strength, args.mode, args.lora, args.fast) == (9, 0.5, "res_2s", ["a"], False)
    assert parse_options(options, {}).num_frames == 121 and parse_options(options, {}).lora == []
    for values, message in (({"num_frames": "0"}, "--num-frames: must be >= 1, got 0"),
                            ({"num_frames": 9.5}, "--num-frames: expected a whole number >= 1"),
                            ({"strength": "2"}, "--strength: must be in [0, 1], got 2"),
                            ({"strength": "nan"}, "--strength: must be in [0, 1], got nan"),
                            ({"mode": "eulr"}, "--mode: invalid choice 'eulr' (choose from euler, res_2s); did you "
                                               "mean euler?"),
                            ({"fast": "yes"}, "--fast: is a switch"),
                            ({"num_frame": 9}, "unknown option --num-frame; did you mean --num-frames?")):
        with pytest.raises(OptionError) as err:
            parse_options(options, values)
        assert message in str(err.value)
        assert isinstance(err.value, ValueError)


def test_help_states_each_default_once_and_every_option_has_help():
    """No `(default: a temporary folder) (default: None)`, no `(default: True)` on an off-switch, no option without
    help (`demo --steps`, `generate --seed`, `preprocess --height` had none); `--cpu-offload` (= `--offload model`)
    is not listed twice."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) == set(commands())
    for name, command_parser in sub.choices.items():
        text = command_parser.format_help()
        for bad in ("(default: None)", "(default: True)", "(default: False)", "(default: [])"):
            assert bad not in text, (name, bad)
        for action in command_parser._actions:
            if action.help == argparse.SUPPRESS:
                continue
            assert action.help and action.help.strip(), (name, action.option_strings or action.dest)
            assert action.help.count("(default:") <= 1, (name, action.help)
        if name in ("generate", "retake", "foley", "extend", "control"):
            assert "--cpu-offload" not in text and "--offload {model,blocks,disk}" in text
            assert "--lora PATH[:STRENGTH]" in text and "--no-progress" in text
    demo = " ".join(sub.choices["demo"].format_help().split())
    assert "where to save the tiny model (default: a temporary folder) --prompt" in demo


@pytest.mark.parametrize("argv", [
    ["encode", "--prompt", "p", "--output", "o.safetensors", "--api", "--model-id", "m", "--dtype", "bf16"],
    ["encode", "--prompt", "p", "--output", "o.safetensors", "--api", "--model-id", "m", "--dtype", "bfloat16"],
])
def test_dtype_is_spelled_alike_on_every_command(argv, tmp_path):
    command, args = parse_args(argv)
    assert args.dtype == "bfloat16"
    for spelling in ("bf16", "bfloat16", "BF16"):
        assert parse_args(["convert", "a", "b", "--dtype", spelling])[1].dtype == "bf16"
        with pytest.raises(FileNotFoundError):  # the flags pass; the model folder does not exist
            resolve("generate", {"model": str(tmp_path / "m"), "prompt": "p", "output": str(tmp_path / "o.mp4"),
                                 "dtype": spelling})


# ---------------------------------------------------------------------------------- checks before imports


_ORDER = """
import sys
from diffusers_ltx2.cli import main
code = main(sys.argv[1:])
print("CODE", code, "HEAVY", [m for m in ("torch", "diffusers", "transformers", "peft", "av") if m in sys.modules])
"""


@pytest.fixture(scope="module")
def index_only(tmp_path_factory):
    """A folder passing the model-folder check (an index, no weights), an image and a LoRA-named text file."""
    root = tmp_path_factory.mktemp("ws")
    (root / "model").mkdir()
    (root / "model" / "model_index.json").write_text('{"_class_name": "LTX2AudioVideoPipeline"}')
    (root / "clips").mkdir()
    (root / "config.yaml").write_text("model: {model_path: factory:tiny}\n")
    return root


GEN = ["generate", "--model", "model", "--prompt", "a cat", "--output", "out.mp4"]


@pytest.mark.parametrize("argv,message", [
    (GEN + ["--height", "100"], "--height must be a multiple of 32, got 100; nearest valid values: 96 or 128"),
    (GEN + ["--num-frames", "20"], "--num-frames must be 8k+1 (e.g. 121), got 20; nearest valid values: 17 or 25"),
    (GEN + ["--model", "nowhere"], "--model: model folder not found: nowhere"),
    (GEN + ["--lora", "missing.safetensors:0.5"], "--lora: LoRA file not found: missing.safetensors"),
    (GEN + ["--distilled", "--steps", "5"], "--distilled runs the 8 fixed distilled sigmas: drop --steps 5"),
    (GEN + ["--offload-folder", "w"], "--offload-folder is only used with --offload disk"),
    (GEN + ["--quantize", "in8"], "--quantize: invalid choice 'in8'"),
    (GEN + ["--two-stage", "--height", "96"], "--height must be a multiple of 64, got 96; nearest valid values: 64 "
                                              "or 128 (--two-stage generates at half size)"),
    (["preprocess", "clips", "--model", "model", "--output", "data", "--height", "100", "--width", "64",
      "--num-frames", "9"], "--height must be a multiple of 32, got 100; nearest valid values: 96 or 128"),
    (["preprocess", "clips", "--model", "model", "--output", "data", "--height", "64", "--width", "64",
      "--num-frames", "20"], "--num-frames must be 8k+1 (e.g. 121), got 20; nearest valid values: 17 or 25"),
    (["preprocess", "clips", "--model", "model", "--output", "data", "--height", "96", "--width", "64",
      "--num-frames", "9", "--reference-downscale-factor", "2"],
     "--height must be a multiple of 64, got 96; nearest valid values: 64 or 128 "
     "(32 x --reference-downscale-factor 2)"),
    (["retake", "--model", "model", "--prompt", "p", "--output", "o.mp4", "--input", "none.mp4", "--start", "0",
      "--end", "1"], "--input: file not found: none.mp4"),
    (["extend", "--model", "model", "--prompt", "p", "--output", "o.mp4", "--input", "none.mp4", "--frames", "12"],
     "--frames: must be a multiple of 8 (the VAE's 8-frame unit), got 12; nearest valid values: 8 or 16"),
    (["train", "config.yaml", "--resume", "nowhere"], "--resume nowhere: no training_state.safetensors (nor a "
                                                      "training_state.pt of an earlier version) there"),
    (GEN + ["--sampler", "heun"], "--sampler: invalid choice 'heun' (choose from euler, euler_ancestral, res_2s)"),
    (GEN + ["--stage-2-sampler", "res_2s"], "--stage-2-sampler only applies with --two-stage"),
    (GEN + ["--enhance-max-tokens", "0"], "--enhance-max-tokens: must be >= 1, got 0"),
    (GEN + ["--system-prompt", "be brief"], "--system-prompt only apply with --enhance-prompt"),
    (["generate", "--model", "model", "--conditioning", "config.yaml", "--output", "out.mp4", "--enhance-prompt"],
     "--enhance-prompt rewrites --prompt: pass --prompt (not --conditioning)"),
    (GEN + ["--num-frames", "9", "--image", "config.yaml@9"], "--image config.yaml@9: the frame does not fit in the "
                                                              "clip's frames 0..8"),
    (["encode", "--prompt", "p", "--output", "e.safetensors", "--model", "model", "--dtype", "int8"],
     "--dtype: unknown dtype 'int8'"),
])
def test_errors_are_printed_before_torch_is_imported(index_only, argv, message):
    """The flag and file mistakes of a first hour (`preprocess --height 100`, `--num-frames 20`, the IC-LoRA
    multiple-of-64 rule were reported after the model loaded; every error paid the torch import first): one
    line, exit 2, and torch / diffusers / transformers / peft / PyAV not imported."""
    done = _python(_ORDER, *argv, cwd=index_only)
    assert "CODE 2 HEAVY []" in done.stdout, done.stdout + done.stderr
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


_LOADING = """
import sys, importlib.abc
class Watch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            print("IMPORTING torch", flush=True)
            sys.meta_path.remove(self)
sys.meta_path.insert(0, Watch())
from diffusers_ltx2.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_the_loading_line_comes_before_the_heavy_imports(index_only):
    """A run that gets past the checks says what it loads before the import starts (it sat silent for 6-53 s);
    here the model folder holds no weights, so loading then fails: exit 2, one error line."""
    done = _python(_LOADING, *GEN, "--dtype", "fp32", "--device", "cpu", cwd=index_only)
    lines = done.stdout.splitlines()
    assert lines[0] == "ltx2 generate: loading PyTorch and diffusers ...", done.stdout + done.stderr
    assert lines[1] == "IMPORTING torch" and any(line.startswith("[imports] ") for line in lines)
    assert done.returncode == 2


def test_the_total_counts_from_the_start_of_the_process():
    """`ltx2`'s printed total starts at the process start (Python's start-up and the imports included; it was
    `total 2.32 s` for a 12.9 s run): the start it uses precedes the first line of the program."""
    done = _python("import time\nfirst = time.perf_counter()\nimport diffusers_ltx2.cli.timing as t\n"
                   "print(t.process_start() <= first, t.process_start() < t._IMPORTED)")
    assert done.stdout.split() == ["True", "True"], done.stdout + done.stderr
    from diffusers_ltx2.cli.timing import StageTimer

    timer = StageTimer(start=0.0)  # a start long past: the total covers it, the rest shows as "other"
    with timer.stage("imports"):
        pass
    total = timer.summary()
    other = float(total.split("other ")[1].split(" s")[0])
    assert float(total.split()[1]) >= other > 0 and "imports" in total


# ------------------------------------------------------------------------------------------- resolve()


def test_resolve_takes_a_plain_mapping_and_gives_typed_values_and_call_kwargs(tiny_pipe, tmp_path):
    """The layer a web front end reuses: a dict in, typed values and the pipeline call's keyword arguments out
    (the checks needing torch run with `call=True`; nothing is loaded)."""
    tiny_pipe.save_pretrained(tmp_path / "model")
    values = {"model": str(tmp_path / "model"), "prompt": "a cat", "output": str(tmp_path / "o.mp4"),
              "num_frames": 9, "height": "64", "width": 64, "steps": 2, "seed": 7, "device": "cpu", "cfg": 4,
              "dtype": "fp32"}
    light = resolve("generate", values)
    assert light.call is None and (light.args.num_frames, light.args.height, light.args.steps) == (9, 64, 2)
    done = resolve("generate", values, call=True)
    call = done.call
    assert (call["prompt"], call["num_frames"], call["height"], call["width"], call["num_inference_steps"]) == (
        "a cat", 9, 64, 64, 2)
    assert call["guider"].video.cfg == 4.0 and call["generator"].initial_seed() == 7 and call["sigmas"] is None
    with pytest.raises(ValueError, match="--height must be a multiple of 32, got 65"):
        resolve("generate", dict(values, height=65))
    with pytest.raises(ValueError, match="unknown command"):
        resolve("generat", values)
    assert not (tmp_path / "o.mp4").exists()
