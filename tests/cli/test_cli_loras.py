"""`--lora PATH[:STRENGTH]` on every generating command, run as a user would (in-process `main` on the tiny model,
real files): the LoRA goes through `pipe.load_lora_weights` exactly as in Python, and its errors name the file
and what its metadata says about the model it was made for."""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from two_stage_files import write_official_lora
from upsampler_files import tiny_upsampler_config, write_official_upsampler

from media_files import frame_colours, tone, write_video

from diffusers_ltx2.cli import main, resolve
from diffusers_ltx2.loaders.lora import LTX2OfficialLoraLoaderMixin

FAST = ["--steps", "2", "--dtype", "fp32", "--device", "cpu", "--no-guidance", "--prompt", "a cat", "--no-progress"]
CLIP = ["--num-frames", "9", "--height", "64", "--width", "64"]
STYLE_META = {"base_model": "ltx-2-19b-dev.safetensors", "training_strategy": "text_to_video"}


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_components_master):
    """A tiny model folder, a style LoRA and an IC-LoRA for it (official format, with metadata), a clip with sound."""
    from diffusers_ltx2 import LTX2AudioVideoPipeline, LTX2Scheduler

    root = tmp_path_factory.mktemp("loras")
    LTX2AudioVideoPipeline(scheduler=LTX2Scheduler(), **tiny_components_master).save_pretrained(root / "model")
    transformer = tiny_components_master["transformer"]
    style = write_official_lora(root / "style.safetensors", transformer, seed=5, scale=0.5)
    save_file(style, str(root / "style.safetensors"), metadata=STYLE_META)
    ic = write_official_lora(root / "ic.safetensors", transformer, seed=6)
    save_file(ic, str(root / "ic.safetensors"), metadata={"reference_downscale_factor": "1"})
    # the same layers for a model twice as wide: every factor has the wrong shape
    wide = {k: torch.cat([v, v], dim=1 if k.endswith("lora_A.weight") else 0) for k, v in style.items()}
    save_file(wide, str(root / "wide.safetensors"), metadata={"base_model": "ltx-2.3-22b-dev.safetensors"})
    save_file({"transformer.proj_in.weight": torch.zeros(4, 4)}, str(root / "weights.safetensors"))
    write_video(root / "clip.mp4", frame_colours(17, 64, 64), fps=24, audio=tone(1.0, 48000, freqs=(440.0, 440.0)),
                sample_rate=48000)
    return root


def _frames(path):
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


@pytest.fixture()
def loads(monkeypatch):
    """Every `load_lora_weights` call of the run: (source, adapter_name, strength, other kwargs)."""
    calls = []
    original = LTX2OfficialLoraLoaderMixin.load_lora_weights

    def spy(self, source, adapter_name=None, hotswap=False, *, strength=1.0, **kwargs):
        calls.append((str(source), adapter_name, strength, kwargs))
        return original(self, source, adapter_name, hotswap, strength=strength, **kwargs)

    monkeypatch.setattr(LTX2OfficialLoraLoaderMixin, "load_lora_weights", spy)
    return calls


@pytest.mark.slow
def test_generate_with_a_lora_equals_python_load_lora_weights(files, tmp_path):
    """`ltx2 generate --lora style.safetensors:0.7` (a LoRA `ltx2 train` writes: official keys + metadata) gives
    the clip of `pipe.load_lora_weights(path, strength=0.7)` and the same call in Python; without it, another."""
    from diffusers_ltx2 import LTX2AudioVideoPipeline
    from diffusers_ltx2.cli.common import write_clip

    model, lora = str(files / "model"), files / "style.safetensors"
    argv = ["generate", "--model", model, *FAST, *CLIP]
    assert main([*argv, "--lora", f"{lora}:0.7", "--output", str(tmp_path / "cli.mp4")]) == 0
    assert main([*argv, "--output", str(tmp_path / "plain.mp4")]) == 0
    pipe = LTX2AudioVideoPipeline.from_pretrained(model, dtype=torch.float32)
    pipe.load_lora_weights(str(lora), strength=0.7)
    pipe.set_progress_bar_config(disable=True)
    call = resolve("generate", {"model": model, "prompt": "a cat", "output": str(tmp_path / "x.mp4"), "steps": 2,
                                "dtype": "fp32", "device": "cpu", "no_guidance": True, "num_frames": 9,
                                "height": 64, "width": 64}, call=True).call
    write_clip(pipe(**call), str(tmp_path / "python.mp4"), 24.0)
    cli, python = _frames(tmp_path / "cli.mp4"), _frames(tmp_path / "python.mp4")
    plain = _frames(tmp_path / "plain.mp4")
    assert cli.shape == (9, 64, 64, 3) and np.array_equal(cli, python)
    assert np.abs(cli.astype(int) - plain).mean() > 1.0  # the LoRA changed the clip


@pytest.mark.slow
@pytest.mark.parametrize("command,extra", [
    ("retake", ["--input", "{clip}", "--start", "0.1", "--end", "0.4"]),
    ("foley", ["--input", "{clip}"]),
    ("extend", ["--input", "{clip}", "--frames", "8", "--overlap", "8"]),
])
def test_source_clip_commands_load_loras_like_python(files, tmp_path, loads, command, extra):
    out = tmp_path / "out.mp4"
    argv = [command, "--model", str(files / "model"), *FAST, *[x.format(clip=files / "clip.mp4") for x in extra],
            "--lora", f"{files / 'style.safetensors'}:0.5", "--lora", str(files / "ic.safetensors"),
            "--output", str(out)]
    assert main(argv) == 0 and out.is_file()
    assert [(c[0], c[1], c[2]) for c in loads] == [(str(files / "style.safetensors"), "style", 0.5),
                                                   (str(files / "ic.safetensors"), "ic", 1.0)]


@pytest.mark.slow
def test_control_and_two_stage_load_loras_like_python(files, tmp_path, loads, tiny_components_master):
    from diffusers_ltx2 import LTX2ICLoRAPipeline, LTX2Scheduler

    ic_model = tmp_path / "ic_model"
    LTX2ICLoRAPipeline(scheduler=LTX2Scheduler(), **tiny_components_master).save_pretrained(ic_model)
    out = tmp_path / "control.mp4"
    assert main(["control", "--model", str(ic_model), *FAST, *CLIP, "--control-video", str(files / "clip.mp4"),
                 "--lora", f"{files / 'ic.safetensors'}:0.8", "--lora", f"{files / 'style.safetensors'}:0.3",
                 "--output", str(out)]) == 0
    assert [(c[1], c[2], c[3]) for c in loads] == [("ic", 0.8, {"reference_downscale_factor": None}),
                                                   ("style", 0.3, {"reference_downscale_factor": None})]
    loads.clear()
    up = tmp_path / "up.safetensors"
    write_official_upsampler(up, tiny_upsampler_config(tiny_components_master["vae"].config.latent_channels), seed=1)
    distilled = tmp_path / "distilled-lora.safetensors"
    write_official_lora(distilled, tiny_components_master["transformer"], seed=3)
    out = tmp_path / "two.mp4"
    assert main(["generate", "--model", str(files / "model"), *FAST, "--num-frames", "9", "--height", "128",
                 "--width", "128", "--two-stage", "--upsampler", str(up), "--distilled-lora", f"{distilled}:0.6",
                 "--lora", f"{files / 'style.safetensors'}:0.4", "--output", str(out)]) == 0
    # the user's LoRA first (both stages), then the distilled LoRA (stage 2) on top
    assert [(c[0], c[1], c[2]) for c in loads] == [(str(files / "style.safetensors"), "style", 0.4),
                                                   (str(distilled), "ltx2_distilled", 0.6)]
    assert _frames(out).shape == (9, 128, 128, 3)


@pytest.mark.parametrize("lora,message", [
    ("wide.safetensors:0.5", "--lora {root}/wide.safetensors:0.5: LoRA '{root}/wide.safetensors' does not fit"),
    ("wide.safetensors", "its metadata: base_model=ltx-2.3-22b-dev.safetensors"),
    ("weights.safetensors", "--lora {root}/weights.safetensors is not a LoRA file: none of its 1 tensors are LoRA "
                            "factors (lora_A/lora_B or lora_down/lora_up); its metadata names no base model"),
    ("missing.safetensors", "--lora: LoRA file not found: {root}/missing.safetensors"),
    ("style.safetensors:x", "--lora {root}/style.safetensors:x: bad STRENGTH ':x' after the file"),
])
def test_lora_errors_name_the_file_and_its_metadata(files, capsys, tmp_path, lora, message):
    code = main(["generate", "--model", str(files / "model"), *FAST, *CLIP, "--lora", f"{files / lora}",
                 "--output", str(tmp_path / "o.mp4")])
    err = capsys.readouterr().err
    assert code == 2 and message.format(root=files) in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "o.mp4").exists()


def test_a_file_without_lora_factors_is_not_reported_as_modules_of_nothing(tiny_pipe):
    """It read "LoRA 'default_0' does not fit LTX-2: 198 of 0 modules (198 tensors) have no valid target"."""
    state = {"transformer_blocks.0.attn1.to_q.weight": torch.zeros(4, 4), "proj_out.bias": torch.zeros(4)}
    with pytest.raises(ValueError, match=r"is not a LoRA: none of its 2 tensors is a LoRA factor \(lora_A / lora_B"):
        tiny_pipe.load_lora_weights(state)
