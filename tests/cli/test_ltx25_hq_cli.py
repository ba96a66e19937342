"""`ltx2 generate --two-stage --preset hq` (the official HQ recipe on the command line) on a converted tiny LTX-2.5
folder: the call it makes equals `generate_hq`'s, flags given win over the preset, and wrong combinations are
refused in one line before torch is imported."""

from __future__ import annotations

import pytest
import torch

from diffusers_ltx2.cli import main
from diffusers_ltx2.cli.generate import COMMAND
from diffusers_ltx2.pipelines.two_stage import LTX2TwoStagePipeline
from diffusers_ltx2.presets import HQ_TWO_STAGE


@pytest.fixture(scope="module")
def converted(ltx25_set, tmp_path_factory):
    dst = tmp_path_factory.mktemp("hq_cli") / "LTX-2.5"
    assert main(["convert", str(ltx25_set["folder"]), str(dst), "--no-progress"]) == 0
    lora = next((dst / "loras").glob("*.safetensors"))
    return dst, lora


def _argv(folder, lora, out, *extra):
    return ["generate", "--model", str(folder), "--prompt", "a fox", "--output", str(out), "--two-stage",
            "--preset", "hq", "--distilled-lora", str(lora), "--dtype", "fp32", "--device", "cpu",
            "--max-sequence-length", "128", "--num-frames", "9", "--height", "128", "--width", "192", "--steps", "3",
            *extra]


class _Stop(Exception):
    pass


def _captured_call(monkeypatch, argv):
    """The keywords `LTX2TwoStagePipeline.__call__` receives from the command line (the run stops there)."""
    seen = {}

    def spy(self, **kwargs):
        seen.update(kwargs)
        raise _Stop

    monkeypatch.setattr(LTX2TwoStagePipeline, "__call__", spy)
    with pytest.raises(_Stop):
        main(argv)
    return seen


@pytest.mark.slow
def test_cli_preset_call_equals_generate_hq(converted, tmp_path, monkeypatch):
    folder, lora = converted
    cli = _captured_call(monkeypatch, _argv(folder, lora, tmp_path / "a.mp4"))
    pipe = LTX2TwoStagePipeline.from_pretrained(folder, dtype=torch.float32)
    pipe.load_distilled_lora(str(lora))
    seen = {}

    def spy(self, **kwargs):
        seen.update(kwargs)
        raise _Stop

    monkeypatch.setattr(LTX2TwoStagePipeline, "__call__", spy)
    with pytest.raises(_Stop):
        pipe.generate_hq("a fox", num_frames=9, height=128, width=192, num_inference_steps=3)
    for key in ("sigmas", "sampler", "stage_2_sampler", "stage_1_distilled_lora_strength", "distilled_lora_strength",
                "refine_audio", "negative_prompt", "height", "width", "num_frames", "frame_rate"):
        assert cli[key] == seen[key], key
    assert cli["generator"].initial_seed() == seen["generator"].initial_seed() == HQ_TWO_STAGE.seed
    assert cli["guider"].video == seen["guider"].video and cli["guider"].audio == seen["guider"].audio
    assert (cli["sampler"], cli["refine_audio"], cli["stage_1_distilled_lora_strength"]) == ("res_2s", False, 0.25)
    assert seen["distilled_lora_strength"] == 0.5


@pytest.mark.slow
def test_cli_flags_win_over_the_preset(converted, tmp_path, monkeypatch):
    folder, lora = converted
    call = _captured_call(monkeypatch, _argv(folder, f"{lora}:0.8", tmp_path / "a.mp4", "--cfg", "2",
                                             "--stage-2-sampler", "euler", "--seed", "4"))
    assert call["guider"].video.cfg == 2.0 and call["guider"].audio.cfg == HQ_TWO_STAGE.audio["cfg"]
    assert call["guider"].video.rescale == HQ_TWO_STAGE.video["rescale"]
    assert call["stage_2_sampler"] == "euler" and call["sampler"] == "res_2s"
    assert call["distilled_lora_strength"] == 0.8 and call["generator"].initial_seed() == 4


def test_preset_defaults_fill_what_is_not_given(converted, tmp_path):
    folder, lora = converted
    args = COMMAND.resolve({"model": str(folder), "prompt": "a fox", "output": str(tmp_path / "a.mp4"),
                            "two_stage": True, "preset": "hq", "distilled_lora": str(lora)}).args
    assert (args.height, args.width, args.steps, args.seed) == (1088, 1920, 15, 10)
    assert (args.video_stg, args.video_rescale, args.audio_rescale) == (0.0, 0.45, 1.0)


@pytest.mark.parametrize("extra,message", [
    (["--preset", "hq"], "--upsampler / --preset only apply with --two-stage"),
    (["--two-stage", "--preset", "hq", "--distilled"], "--preset hq runs the dev checkpoint"),
    (["--two-stage", "--preset", "best"], "--preset"),
])
def test_preset_misuse_is_refused_in_one_line(converted, tmp_path, capsys, extra, message):
    folder, lora = converted
    argv = ["generate", "--model", str(folder), "--prompt", "a", "--output", str(tmp_path / "a.mp4"),
            "--upsampler", str(folder / "latent_upsampler"), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
