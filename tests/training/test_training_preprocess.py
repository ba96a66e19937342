"""`ltx2 preprocess` on real MP4 files: latents, conditions and references as the pipelines make them; bad clips
reported and skipped; resumable; the result trains."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from diffusers_ltx2.export import export_to_video_with_audio
from diffusers_ltx2.training.data import PrecomputedDataset, read_entry
from diffusers_ltx2.training.preprocess import find_clips, preprocess_dataset
from training_fixtures import json_report


def _write_clips(folder, sizes):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, frames in sizes.items():
        video = (rng.random((frames, 80, 96, 3)) * 255).astype(np.uint8)
        export_to_video_with_audio(video, None, folder / f"{name}.mp4", fps=24)
        (folder / f"{name}.txt").write_text(f"a red fox {name}")
    (folder / "corrupt.mp4").write_bytes(b"\x00\x01 not a video" * 50)
    (folder / "corrupt.txt").write_text("a broken clip")
    return folder


def _fake_depth(frames):  # a stand-in second control type: luminance inverted, three channels
    return (1 - frames.mean(dim=1, keepdim=True)).expand_as(frames).contiguous()


@pytest.fixture()
def ic_pipe(tiny_components):
    from diffusers_ltx2 import LTX2ICLoRAPipeline, LTX2Scheduler

    return LTX2ICLoRAPipeline(scheduler=LTX2Scheduler(), **tiny_components)


def test_preprocess_writes_what_the_pipelines_compute_and_skips_bad_clips(tmp_path, ic_pipe, caplog):
    from diffusers_ltx2.control import CannyPreprocessor

    src = _write_clips(tmp_path / "clips", {"a": 12, "b": 9, "short": 5})
    clips = find_clips(src)
    assert [c.name for c in clips] == ["a", "b", "corrupt", "short"]
    out = tmp_path / "data"
    kw = dict(height=64, width=64, num_frames=9, reference_downscale_factor=2, control_types=["canny", "depth"],
              preprocessors={"canny": CannyPreprocessor(), "depth": _fake_depth}, progress=False)
    report = preprocess_dataset(ic_pipe, clips, out, **kw)
    assert report.written == ["a", "b"]
    reasons = dict(report.skipped)
    assert set(reasons) == {"corrupt", "short"} and "too short" in reasons["short"]
    assert json.loads((out / "preprocess_report.json").read_text())["skipped"][0]["clip"] == "corrupt"

    # the target latents and the reference are what LTX2ICLoRAPipeline computes for the same video at inference
    lat, meta = read_entry(out / "latents" / "a.safetensors")
    from diffusers_ltx2.control.video import read_video

    video = read_video(src / "a.mp4")
    expected = ic_pipe.encode_video(ic_pipe.fit_control_video(video, 9, 64, 64), 1, "cpu")[0]
    torch.testing.assert_close(lat["latents"], expected)
    assert meta["fps"] == "24.0" and lat["latents"].shape[1:] == (2, 2, 2)
    for name, ctype, pre in (("a", "canny", CannyPreprocessor()), ("b", "depth", _fake_depth)):
        ref, rmeta = read_entry(out / "reference_latents" / f"{name}.safetensors")
        control = ic_pipe.run_preprocessor(pre, ic_pipe.fit_control_video(read_video(src / f"{name}.mp4"), 9, 32, 32))
        torch.testing.assert_close(ref["latents"], ic_pipe.encode_video(control, 1, "cpu")[0])
        assert rmeta == {"control_type": ctype, "reference_downscale_factor": "2"}
    cond, cmeta = read_entry(out / "conditions" / "a.safetensors")
    # the pipeline call's own prompt step (its default prompt length: min(1024, the tokenizer's maximum))
    embeds = ic_pipe.encode_text_contexts(["a red fox a"], None, need_negative=False, device="cpu").positive
    torch.testing.assert_close(cond["video_context"], embeds.video_context[0])
    assert cmeta["caption"] == "a red fox a"

    # resumable: a second run writes nothing new
    again = preprocess_dataset(ic_pipe, clips, out, **kw)
    assert again.written == [] and again.existing == ["a", "b"]
    ds = PrecomputedDataset(out, with_reference=True, control_types=["canny", "depth"])
    assert ds.names == ["a", "b"] and {ds[i]["control_type"] for i in range(2)} == {"canny", "depth"}


def test_preprocess_cli_then_train_cli(tmp_path, capsys):
    import yaml

    from diffusers_ltx2.cli import main

    src = _write_clips(tmp_path / "clips", {"a": 9, "b": 9})
    rc = main(["preprocess", str(src), "--model", "factory:tiny", "--output", str(tmp_path / "data"), "--height", "64",
               "--width", "64", "--num-frames", "9", "--reference-downscale-factor", "2", "--control", "canny",
               "--no-progress"])
    assert rc == 0
    report = json_report(capsys.readouterr().out)
    assert report["written"] == ["a", "b"] and report["skipped"][0]["clip"] == "corrupt"
    cfg = {"model": {"model_path": "factory:tiny"}, "data": {"preprocessed_data_root": str(tmp_path / "data")},
           "training_strategy": {"name": "video_to_video"}, "lora": {"rank": 2, "target_modules": "video"},
           "optimization": {"steps": 2}, "output_dir": str(tmp_path / "out")}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", str(tmp_path / "cfg.yaml"), "--no-progress"]) == 0
    result = json_report(capsys.readouterr().out)
    assert result["steps"] == 2 and (tmp_path / "out" / "lora_weights.safetensors").is_file()


def test_preprocess_refuses_bad_arguments_before_encoding(tmp_path, ic_pipe):
    clips = find_clips(_write_clips(tmp_path / "clips", {"a": 9}))
    with pytest.raises(ValueError, match="8k \\+ 1"):
        preprocess_dataset(ic_pipe, clips, tmp_path / "o", height=64, width=64, num_frames=10)
    with pytest.raises(ValueError, match="multiple of 64"):
        preprocess_dataset(ic_pipe, clips, tmp_path / "o", height=96, width=64, num_frames=9, reference_downscale_factor=2)
    with pytest.raises(ValueError, match="local model path"):
        preprocess_dataset(ic_pipe, clips, tmp_path / "o", height=64, width=64, num_frames=9,
                           reference_downscale_factor=2, control_types=["depth"])
    assert not (tmp_path / "o").exists()
