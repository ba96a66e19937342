"""`ltx2 generate --dfr` on a converted tiny official LTX-2.5 set: the clip written (frames and frame rate after
the temporal rounds, read back by PyAV), the pipeline it loads (temporal upscaler from the folder, distilled and
detailing LoRAs) and the call it makes, and every misuse refused in one line with exit 2 before a model loads (and,
for argument errors, before torch is imported)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import av
import pytest
import torch
from PIL import Image

from dfr_files import random_embeds
from diffusers_ltx2 import LTX2DFRPipeline
from diffusers_ltx2.cli import main
from diffusers_ltx2.dfr.pipeline import DETAILING_ADAPTER
from diffusers_ltx2.loaders.conditioning_file import save_conditioning
from diffusers_ltx2.pipelines.refine import DISTILLED_ADAPTER
from two_stage_files import write_official_lora

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def files(ltx25_set, tmp_path_factory):
    """The converted folder, its distilled LoRA, a conditioning file (the tiny set's Gemma-4 tokenizer has no
    <bos>, so prompts come from a file as `ltx2 encode` writes) and a detailing LoRA."""
    tmp = tmp_path_factory.mktemp("dfr_cli")
    folder = tmp / "LTX-2.5"
    assert main(["convert", str(ltx25_set["folder"]), str(folder), "--no-progress"]) == 0
    assert (folder / "temporal_latent_upsampler").is_dir()
    pipe = LTX2DFRPipeline.from_pretrained(folder, dtype=torch.float32)
    save_conditioning(tmp / "cond.safetensors", random_embeds(pipe))
    write_official_lora(tmp / "detailing.safetensors", pipe.transformer, seed=7)
    Image.new("RGB", (96, 64), (10, 120, 200)).save(tmp / "image.png")
    return {"image": tmp / "image.png", "folder": folder, "distilled": next((folder / "loras").glob("*.safetensors")),
            "cond": tmp / "cond.safetensors", "detailing": tmp / "detailing.safetensors"}


def _argv(files, out, *extra):
    return ["generate", "--model", str(files["folder"]), "--dfr", "--distilled-lora", str(files["distilled"]),
            "--conditioning", str(files["cond"]), "--height", "128", "--width", "192", "--num-frames", "17",
            "--dtype", "fp32", "--device", "cpu", "--no-progress", "--output", str(out), *extra]


def test_generate_dfr_writes_the_temporally_upsampled_clip(files, tmp_path, monkeypatch):
    # --video-decoder conv: the conv VAE decodes (the 2.5 diffusion decoder, tested in test_ltx25_*, takes ~70 s on
    # 2 CPU cores); the folder has a diffusion decoder, which must then not run
    from diffusers_ltx2.pipelines import diffusion_decode

    def fail(*a, **k):
        raise AssertionError("the diffusion decoder ran despite --video-decoder conv")

    monkeypatch.setattr(diffusion_decode, "diffusion_decode", fail)
    out = tmp_path / "dfr.mp4"
    assert main(_argv(files, out, "--temporal-upsample-rounds", "1", "--video-decoder", "conv")) == 0
    with av.open(str(out)) as container:
        video = container.streams.video[0]
        frames = sum(1 for _ in container.decode(video=0))
        assert (video.width, video.height) == (192, 128) and float(video.average_rate) == 48.0
    assert frames == 33  # (17 - 1) * 2 + 1
    with av.open(str(out)) as container:
        assert container.streams.audio, "the clip carries stage 1's audio"


class _Stop(Exception):
    pass


def test_loading_and_call(files, tmp_path, monkeypatch):
    """The loaded pipeline has the folder's temporal upscaler, the distilled LoRA and the detailing LoRA at its
    strength; the call passes the DFR arguments (and nothing of the guided one-stage call)."""
    seen = {}

    def spy(self, **kwargs):
        seen.update(kwargs, pipe=self)
        raise _Stop

    monkeypatch.setattr(LTX2DFRPipeline, "__call__", spy)
    with pytest.raises(_Stop):
        main(_argv(files, tmp_path / "a.mp4", "--temporal-upsample-rounds", "2", "--seed", "5",
                   "--detailing-lora", f"{files['detailing']}:0.6"))
    pipe = seen.pop("pipe")
    assert pipe.temporal_latent_upsampler is not None and pipe.latent_upsampler is not None
    assert pipe.distilled_lora_loaded and pipe.ic_lora_adapters[DETAILING_ADAPTER].strength == 0.6
    assert DISTILLED_ADAPTER in pipe.ic_lora_adapters
    generator = seen.pop("generator")
    assert generator.initial_seed() == 5
    assert seen == {"prompt": None, "prompt_embeds": str(files["cond"]), "height": 128, "width": 192,
                    "num_frames": 17, "frame_rate": 24.0, "max_sequence_length": None,
                    "temporal_upsample_rounds": 2}


def test_images_reach_the_call_as_conditions(files, tmp_path, monkeypatch):
    """`--dfr --image PATH[@FRAME[:STRENGTH]]` (generate's image syntax) becomes `conditions=` of `VideoCondition`s at
    pixel frames of the requested clip, the model's CRF unless `--image-crf`; an end-to-end call with them writes
    the clip."""
    from diffusers_ltx2.conditioning import VideoCondition

    img = tmp_path / "key.png"
    Image.new("RGB", (96, 64), (200, 40, 10)).save(img)
    seen = {}

    def spy(self, **kwargs):
        seen.update(kwargs)
        raise _Stop

    with monkeypatch.context() as m:
        m.setattr(LTX2DFRPipeline, "__call__", spy)
        with pytest.raises(_Stop):
            main(_argv(files, tmp_path / "a.mp4", "--image", str(img), "--image", f"{img}@-1:0.5",
                       "--image-crf", "0"))
    conditions = seen["conditions"]
    assert all(isinstance(c, VideoCondition) for c in conditions)
    assert [(c.frame_index, c.strength, c.crf) for c in conditions] == [(0, 1.0, 0), (16, 0.5, 0)]
    monkeypatch.setattr(LTX2DFRPipeline, "video_decoder", "conv")
    out = tmp_path / "dfr_image.mp4"
    assert main(_argv(files, out, "--image", f"{img}@8:0.8")) == 0
    with av.open(str(out)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 17


@pytest.mark.parametrize("extra, message", [
    (["--cfg", "3"], "--dfr runs the official DFR recipe"),
    (["--steps", "4"], "not take --steps"),
    (["--two-stage"], "not take --two-stage"),
    (["--window", "17"], "not take --window"),
    (["--temporal-upsample-rounds", "3"], "--temporal-upsample-rounds"),
    (["--num-frames", "20"], "--num-frames"),
    (["--height", "96"], "--height"),
    (["--temporal-upsampler", "missing.safetensors", "--temporal-upsample-rounds", "1"], "not found"),
    (["--temporal-upsampler", "missing.safetensors"], "--temporal-upsample-rounds 1 or 2 only"),
    (["--detailing-lora", "missing.safetensors"], "--detailing-lora not found"),
    (["--detailing-lora", "DETAILING:0"], "STRENGTH must be a positive number"),
    (["--prompts", "prompts.txt"], "--dfr runs in one process"),
    (["--video", "clip.mp4"], "not take --video"),
    (["--audio", "sound.wav"], "not take --audio"),
    (["--image", "missing.png"], "missing.png"),
    (["--image", "IMAGE@17"], "does not fit in the clip's frames 0..16"),
    (["--image", "IMAGE@0:1.5"], "STRENGTH"),
])
def test_misuse_is_refused_in_one_line(files, tmp_path, capsys, extra, message):
    extra = [str(files["detailing"]) + ":0" if e == "DETAILING:0" else e for e in extra]
    extra = [e.replace("IMAGE", str(files["image"])) for e in extra]
    assert main(_argv(files, tmp_path / "a.mp4", *extra)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "a.mp4").exists()


def test_refusals_without_dfr_and_without_a_distilled_lora(files, tmp_path, capsys):
    base = ["generate", "--model", str(files["folder"]), "--prompt", "a", "--output", str(tmp_path / "a.mp4")]
    for extra, message in ((["--temporal-upsample-rounds", "1"], "only apply with --dfr"),
                           (["--detailing-lora", str(files["detailing"])], "only apply with --dfr"),
                           (["--dfr"], "--dfr refines with the distilled LoRA")):
        assert main(base + extra) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (extra, err)


def test_a_checkpoint_before_25_is_refused(tmp_path, capsys):
    folder = tmp_path / "LTX-2"
    (folder / "transformer").mkdir(parents=True)
    (folder / "model_index.json").write_text("{}")
    (folder / "transformer" / "config.json").write_text('{"use_keyframes_abs_pos_embedding": false}')
    argv = ["generate", "--model", str(folder), "--prompt", "a", "--output", str(tmp_path / "a.mp4"), "--dfr"]
    assert main(argv) == 2
    assert "needs an LTX-2.5 checkpoint" in capsys.readouterr().err


def test_refusal_imports_neither_torch_nor_diffusers(files, tmp_path):
    code = ("import sys\nfrom diffusers_ltx2.cli import main\ncode = main(sys.argv[1:])\n"
            "print('CODE', code, [m for m in ('torch', 'diffusers') if m in sys.modules])")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-c", code, *_argv(files, tmp_path / "a.mp4", "--temporal-upsample-rounds",
                                                                 "1", "--num-frames", "20")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert "CODE 2 []" in done.stdout, done.stdout + done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "--num-frames" in done.stderr
    done = subprocess.run([sys.executable, "-c", code, *_argv(files, tmp_path / "a.mp4", "--image",
                                                                 f"{files['image']}@17")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert "CODE 2 []" in done.stdout, done.stdout + done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "0..16" in done.stderr
