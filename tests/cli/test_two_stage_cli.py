"""`ltx2 convert --upsampler` and `ltx2 generate --two-stage` on tiny files, run as a user would (in-process
`main`, real files, a real MP4)."""

from __future__ import annotations

import json
import os

import av
import PIL.Image
import pytest
from two_stage_files import write_official_lora
from upsampler_files import tiny_upsampler_config, write_official_upsampler

from diffusers_ltx2.cli import main


@pytest.fixture()
def model(tiny_pipe, tmp_path):
    folder = tmp_path / "model"
    tiny_pipe.save_pretrained(folder)
    up = tmp_path / "ltx-2-spatial-upscaler-x2.safetensors"
    write_official_upsampler(up, tiny_upsampler_config(tiny_pipe.vae.config.latent_channels), seed=1)
    lora = tmp_path / "distilled-lora.safetensors"
    write_official_lora(lora, tiny_pipe.transformer, seed=3)
    return folder, up, lora


def _base(folder, out, *extra):
    steps = [] if "--distilled" in extra else ["--steps", "2"]  # --distilled: the fixed 8 + 3 steps (no --steps)
    return ["generate", "--model", str(folder), "--prompt", "a cat", "--output", str(out), "--num-frames", "9",
            "--height", "128", "--width", "128", *steps, "--dtype", "fp32", "--device", "cpu",
            "--max-sequence-length", "128", *extra]


@pytest.mark.slow
def test_generate_two_stage_writes_full_size_clip_with_named_stages(model, tmp_path, capsys):
    folder, up, lora = model
    out = tmp_path / "two.mp4"
    assert main(_base(folder, out, "--two-stage", "--upsampler", str(up), "--distilled-lora", f"{lora}:0.7")) == 0
    err = capsys.readouterr().err
    assert "stage 1/2 (64x64)" in err and "stage 2/2 (128x128, refine)" in err
    with av.open(str(out)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        assert len([s for s in c.streams if s.type == "audio"]) == 1
    assert len(frames) == 9 and frames[0].shape == (128, 128, 3)
    out = tmp_path / "distilled.mp4"
    image = tmp_path / "key.png"
    PIL.Image.fromarray(frames[0]).save(image)
    # distilled recipe with keyframes (first and last frame), re-encoded at 128x128 for stage 2
    assert main(_base(folder, out, "--two-stage", "--distilled", "--upsampler", str(up), "--image", str(image),
                      "--image", f"{image}@-1")) == 0
    assert "stage 1/2 (64x64, distilled)" in capsys.readouterr().err
    assert out.is_file()


@pytest.mark.parametrize("extra,message", [
    (["--two-stage", "--height", "96"], "multiple of 64, got 96; nearest valid values: 64 or 128"),
    (["--two-stage", "--upsampler", "UP"], "--distilled-lora PATH"),
    (["--two-stage", "--upsampler", "UP", "--distilled-lora", "/nope.safetensors"], "not found: /nope.safetensors"),
    (["--two-stage", "--upsampler", "UP", "--distilled", "--distilled-lora", "LORA"], "drop --distilled-lora"),
    (["--two-stage"], "needs a latent upsampler"),
    (["--upsampler", "UP"], "only apply with --two-stage"),
    (["--two-stage", "--upsampler", "UP", "--distilled-lora", "LORA:-1"], "must be"),
    (["--two-stage", "--upsampler", "UP", "--distilled-lora", "LORA:abc"],
     "bad STRENGTH ':abc' after the file LORA; expected PATH[:STRENGTH]"),
])
def test_two_stage_flags_refused_before_loading(model, tmp_path, capsys, extra, message):
    folder, up, lora = model
    out = tmp_path / "o.mp4"
    extra = [str(up) if x == "UP" else x.replace("LORA", str(lora)) for x in extra]
    assert main(_base(folder, out, *extra)) == 2
    assert message.replace("LORA", str(lora)) in capsys.readouterr().err
    assert not out.exists()


def test_convert_adds_the_upsampler_component(tmp_path):
    import ltx_reference  # noqa: F401
    import torch
    from safetensors.torch import save_file
    from official_checkpoints import write_official_checkpoint

    from diffusers_ltx2 import LTX2TwoStagePipeline

    src = tmp_path / "official.safetensors"
    write_official_checkpoint(src, "2.0", seed=0)
    up = tmp_path / "up.safetensors"
    write_official_upsampler(up, tiny_upsampler_config(8), seed=1)  # the tiny official VAE's 8 latent channels
    bad = tmp_path / "bad.safetensors"
    save_file({"initial_conv.weight": torch.zeros(1), "final_conv.weight": torch.zeros(1)}, str(bad),
              metadata={"config": json.dumps(tiny_upsampler_config(32))})  # truncated: keys missing
    assert main(["convert", str(src), str(tmp_path / "nope"), "--upsampler", str(bad), "--no-progress"]) == 2
    assert not (tmp_path / "nope").exists()  # refused before the main conversion wrote anything
    assert main(["convert", str(src), str(tmp_path / "out"), "--upsampler", str(up), "--no-progress"]) == 0
    index = json.loads((tmp_path / "out" / "model_index.json").read_text())
    assert index["latent_upsampler"] == ["ltx2", "LTX2LatentUpsamplerModel"]
    pipe = LTX2TwoStagePipeline.from_pretrained(tmp_path / "out")
    assert type(pipe.latent_upsampler).__name__ == "LTX2LatentUpsamplerModel"
    assert main(["convert", str(up), str(tmp_path / "alone"), "--no-progress"]) == 0  # an upsampler file alone
    assert os.path.isfile(tmp_path / "alone" / "config.json")
