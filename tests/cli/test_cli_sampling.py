"""`ltx2 generate --sampler / --stage-2-sampler / --enhance-prompt` on a saved tiny model, run in-process as a user
would."""

from __future__ import annotations

import av
import pytest

from diffusers_ltx2.cli import main


@pytest.fixture()
def model(tiny_pipe, tmp_path):
    folder = tmp_path / "model"
    tiny_pipe.save_pretrained(folder)
    return folder


def _base(folder, out, *extra):
    return ["generate", "--model", str(folder), "--prompt", "a cat", "--output", str(out), "--num-frames", "9",
            "--height", "64", "--width", "64", "--steps", "2", "--dtype", "fp32", "--device", "cpu",
            "--max-sequence-length", "128", "--no-guidance", *extra]


def _frames(path):
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def test_sampler_flag_reaches_the_pipeline(model, tmp_path, monkeypatch):
    from diffusers_ltx2 import LTX2AudioVideoPipeline

    seen = []
    original = LTX2AudioVideoPipeline.__call__

    def spy(self, *args, **kwargs):
        seen.append(kwargs.get("sampler"))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(LTX2AudioVideoPipeline, "__call__", spy)
    outs = {}
    for name in ("euler", "res_2s"):
        outs[name] = tmp_path / f"{name}.mp4"
        assert main(_base(model, outs[name], "--sampler", name)) == 0
    assert seen == ["euler", "res_2s"]
    a, b = _frames(outs["euler"]), _frames(outs["res_2s"])
    assert len(a) == len(b) == 9 and any((x != y).any() for x, y in zip(a, b))


@pytest.mark.parametrize("extra,message", [
    (["--sampler", "heun"], "--sampler: invalid choice 'heun' (choose from euler, euler_ancestral, res_2s)"),
    (["--stage-2-sampler", "res"], "--stage-2-sampler: invalid choice 'res' (choose from euler, euler_ancestral, "
                                   "res_2s); did you mean res_2s?"),
    (["--stage-2-sampler", "res_2s"], "--stage-2-sampler only applies with --two-stage"),
    (["--system-prompt", "be brief"], "--system-prompt only apply with --enhance-prompt"),
    (["--enhance-prompt", "--enhance-max-tokens", "0"], "--enhance-max-tokens: must be >= 1, got 0"),
])
def test_bad_sampler_flags_refused_before_loading(model, tmp_path, capsys, extra, message, monkeypatch):
    """One line naming the flag, exit 2, nothing loaded or written (the argument layer's checks)."""
    from diffusers_ltx2 import LTX2AudioVideoPipeline

    monkeypatch.setattr(LTX2AudioVideoPipeline, "from_pretrained", lambda *a, **k: pytest.fail("a model loaded"))
    out = tmp_path / "o.mp4"
    assert main(_base(model, out, *extra)) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_enhance_prompt_prints_the_rewritten_prompt(tiny_components, tmp_path, capsys):
    """The tiny Gemma-3 (with a chat template) rewrites the prompt, seeded by --seed: the same run twice prints the
    same enhanced prompt, the one `pipe.enhance_prompt` gives with that seed."""
    from diffusers_ltx2 import LTX2AudioVideoPipeline, LTX2Scheduler
    from diffusers_ltx2.factory_gemma import with_chat_template

    with_chat_template(tiny_components["tokenizer"])
    pipe = LTX2AudioVideoPipeline(scheduler=LTX2Scheduler(), **tiny_components)
    folder = tmp_path / "model"
    pipe.save_pretrained(folder)
    printed = []
    for name in ("a", "b"):
        assert main(_base(folder, tmp_path / f"{name}.mp4", "--enhance-prompt", "--enhance-max-tokens", "6",
                          "--seed", "4")) == 0
        printed.append([l for l in capsys.readouterr().out.splitlines() if l.startswith("enhanced prompt: ")])
    expected = pipe.enhance_prompt("a cat", seed=4, max_new_tokens=6)[0]
    assert printed[0] == printed[1] == [f"enhanced prompt: {expected}"]


def test_cli_sampler_names_are_the_library_ones():
    from diffusers_ltx2.cli.sampling_args import SAMPLER_NAMES
    from diffusers_ltx2.schedulers import SAMPLERS

    assert SAMPLER_NAMES == SAMPLERS
