"""`ltx2 preprocess` on the inputs users actually have (files written by PyAV and Pillow, not by the code under
test): bad arguments refused before any model loads, images among the clips, a Latin-1 caption, two sources with
one stem, a second run with other settings, and an API key pasted into a caption."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from diffusers_ltx2.cli import main
from diffusers_ltx2.cli import preprocess as cli_preprocess
from diffusers_ltx2.training.data import PrecomputedDataset, read_entry
from diffusers_ltx2.training.preprocess import check_preprocess_arguments, find_clips, preprocess_dataset

from media_files import write_video
from training_fixtures import json_report


def _frames(n: int, seed: int, height: int = 64, width: int = 80) -> np.ndarray:
    return (np.random.default_rng(seed).random((n, height, width, 3)) * 255).astype(np.uint8)


@pytest.fixture()
def pipe(tiny_components):
    from diffusers_ltx2 import LTX2ICLoRAPipeline, LTX2Scheduler

    return LTX2ICLoRAPipeline(scheduler=LTX2Scheduler(), **tiny_components)


def _cli(tmp_path, *extra, src=None, out=None):
    if src is None:
        src = tmp_path / "clips"
        src.mkdir(exist_ok=True)
        write_video(src / "a.mp4", _frames(9, 0))
        (src / "a.txt").write_text("a red fox")
    return ["preprocess", str(src), "--model", "factory:tiny", "--output", str(out or tmp_path / "data"),
            "--no-progress", *extra]


SIZE = ["--height", "64", "--width", "64", "--num-frames", "9"]
# the command line names the flag (and the nearest valid values) before anything is imported; the library's own
# messages (check_preprocess_arguments, naming its parameters) are tested below on Python values
BAD_ARGUMENTS = [
    (["--height", "64", "--width", "64", "--num-frames", "9", "--frame-rate", "0"],
     "--frame-rate: must be in [0.001, 1000], got 0"),
    (["--height", "64", "--width", "64", "--num-frames", "9", "--frame-rate", "nan"],
     "--frame-rate: must be in [0.001, 1000], got nan"),
    (["--height", "64", "--width", "64", "--num-frames", "9", "--frame-rate", "-24"],
     "--frame-rate: must be in [0.001, 1000], got -24"),
    (["--height", "64", "--width", "64", "--num-frames", "9", "--frame-rate", "inf"],
     "--frame-rate: must be in [0.001, 1000], got inf"),
    (["--height", "0", "--width", "64", "--num-frames", "9"], "--height: must be >= 1, got 0"),
    (["--height", "-32", "--width", "64", "--num-frames", "9"], "--height: must be >= 1, got -32"),
    (["--height", "48", "--width", "64", "--num-frames", "9"],
     "--height must be a multiple of 32, got 48; nearest valid values: 32 or 64"),
    (["--height", "64", "--width", "0", "--num-frames", "9"], "--width: must be >= 1, got 0"),
    (["--height", "64", "--width", "64", "--num-frames", "0"], "--num-frames: must be >= 1, got 0"),
    (["--height", "64", "--width", "64", "--num-frames", "-7"], "--num-frames: must be >= 1, got -7"),
    (["--height", "64", "--width", "64", "--num-frames", "10"],
     "--num-frames must be 8k+1 (e.g. 121), got 10; nearest valid values: 9 or 17"),
    (SIZE + ["--reference-downscale-factor", "0"], "--reference-downscale-factor: must be >= 1, got 0"),
    (["--height", "96", "--width", "64", "--num-frames", "9", "--reference-downscale-factor", "2"],
     "--height must be a multiple of 64, got 96; nearest valid values: 64 or 128 (32 x --reference-downscale-factor "
     "2)"),
    (SIZE + ["--reference-downscale-factor", "2", "--control", "canny", "--control", "canny"], "given twice"),
]


@pytest.mark.parametrize("args, message", BAD_ARGUMENTS, ids=[" ".join(a[-2:]) for a, _ in BAD_ARGUMENTS])
def test_bad_arguments_are_refused_before_any_model_loads_or_anything_is_written(tmp_path, capsys, monkeypatch,
                                                                                 args, message):
    monkeypatch.setattr(cli_preprocess, "_pipeline", lambda *a, **k: pytest.fail("a model was loaded"))
    assert main(_cli(tmp_path, *args)) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "data").exists()


def test_the_argument_checks_are_one_library_function_that_takes_python_values():
    check_preprocess_arguments(height=64, width=96, num_frames=1, frame_rate=23.976)
    for kwargs, message in (({"frame_rate": math.nan}, "frame_rate"), ({"frame_rate": True}, "frame_rate"),
                            ({"height": 64.0}, "height"), ({"num_frames": True}, "num_frames"),
                            ({"missing_audio": "drop"}, "missing_audio"),
                            ({"control_types": ["canny"]}, "need a reference_downscale_factor")):
        with pytest.raises(ValueError, match=message):
            check_preprocess_arguments(**{"height": 64, "width": 64, "num_frames": 9, **kwargs})


def test_images_among_the_clips_become_1_frame_samples_or_are_reported(tmp_path, pipe):
    from diffusers_ltx2.control.video import fit_frames

    src = tmp_path / "clips"
    src.mkdir()
    write_video(src / "walk.mp4", _frames(9, 1))
    (src / "walk.txt").write_text("a walk")
    still = _frames(1, 2, 72, 96)[0]
    Image.fromarray(still).save(src / "still.png")
    (src / "still.txt").write_text("a still")
    clips = find_clips(src)
    assert [(c.name, c.video.name) for c in clips] == [("still", "still.png"), ("walk", "walk.mp4")]

    report = preprocess_dataset(pipe, clips, tmp_path / "video", height=64, width=64, num_frames=9, progress=False)
    assert report.written == ["walk"] and dict(report.skipped)["still"].startswith("an image makes a 1-frame sample")

    report = preprocess_dataset(pipe, clips, tmp_path / "images", height=64, width=64, num_frames=1, progress=False)
    assert report.written == ["still", "walk"]
    lat, meta = read_entry(tmp_path / "images" / "latents" / "still.safetensors")
    pixels = fit_frames(torch.from_numpy(still).permute(2, 0, 1)[None].float() / 255, 1, 64, 64)
    expected = pipe.encode_pixels((pixels * 2 - 1).permute(1, 0, 2, 3)[None], 1, "cpu")[0]
    torch.testing.assert_close(lat["latents"], expected)
    assert lat["latents"].shape[1] == 1 and meta["num_frames"] == "1"
    assert PrecomputedDataset(tmp_path / "images").names == ["still", "walk"]  # and they pass the dataset checks


def test_a_latin1_caption_skips_only_that_clip(tmp_path, pipe):
    src = tmp_path / "clips"
    src.mkdir()
    for name, seed in (("cafe", 3), ("park", 4)):
        write_video(src / f"{name}.mp4", _frames(9, seed))
    (src / "cafe.txt").write_bytes("un café au lait".encode("latin-1"))
    (src / "park.txt").write_text("\ufeffa park in spring", encoding="utf-8")  # a BOM is fine
    clips = find_clips(src)
    report = preprocess_dataset(pipe, clips, tmp_path / "data", height=64, width=64, num_frames=9, progress=False)
    assert report.written == ["park"]
    reason = dict(report.skipped)["cafe"]
    assert "cafe.txt is not UTF-8" in reason
    assert read_entry(tmp_path / "data" / "conditions" / "park.safetensors")[1]["caption"] == "a park in spring"


def test_sources_sharing_a_stem_get_distinct_names(tmp_path, pipe):
    src = tmp_path / "clips"
    src.mkdir()
    write_video(src / "a.mp4", _frames(9, 5))
    write_video(src / "a.mkv", _frames(9, 6))
    write_video(src / "a_mp4.mov", _frames(9, 7))  # already the name a.mp4 would take
    (src / "a.txt").write_text("clip a")
    (src / "a_mp4.txt").write_text("clip a_mp4")
    clips = find_clips(src)
    assert sorted(c.name for c in clips) == ["a_mkv", "a_mp4", "a_mp4_2"]
    assert len({c.video for c in clips}) == 3
    report = preprocess_dataset(pipe, clips, tmp_path / "data", height=64, width=64, num_frames=9, progress=False)
    assert sorted(report.written) == ["a_mkv", "a_mp4", "a_mp4_2"]
    lat = [read_entry(tmp_path / "data" / "latents" / f"{n}.safetensors")[0]["latents"] for n in ("a_mp4", "a_mkv")]
    assert not torch.equal(lat[0], lat[1])
    # CSV rows with one stem in two folders
    (src / "x").mkdir()
    write_video(src / "x" / "a.mp4", _frames(9, 8))
    (src / "list.csv").write_text("video,caption\na.mp4,one\nx/a.mp4,two\n")
    assert [c.name for c in find_clips(src / "list.csv")] == ["a", "a_2"]


def test_a_second_run_with_other_settings_is_refused_before_anything_is_encoded(tmp_path, capsys, monkeypatch):
    assert main(_cli(tmp_path, *SIZE)) == 0
    capsys.readouterr()
    before = {p: p.read_bytes() for p in (tmp_path / "data").rglob("*.safetensors")}
    monkeypatch.setattr(cli_preprocess, "_pipeline", lambda *a, **k: pytest.fail("a model was loaded"))
    for other, setting in ((["--height", "32", "--width", "64", "--num-frames", "9"], "height 64, this run 32"),
                           (["--height", "64", "--width", "64", "--num-frames", "17"], "num_frames 9, this run 17"),
                           (SIZE + ["--frame-rate", "25"], "fps 24.0, this run 25.0")):
        assert main(_cli(tmp_path, *other, src=tmp_path / "clips")) == 2
        err = capsys.readouterr().err
        assert "already holds 1 file(s) made with other settings" in err and setting in err, err
    assert {p: p.read_bytes() for p in (tmp_path / "data").rglob("*.safetensors")} == before
    monkeypatch.undo()
    assert main(_cli(tmp_path, *SIZE, src=tmp_path / "clips")) == 0  # the same settings resume
    assert json_report(capsys.readouterr().out)["existing"] == ["a"]


def test_an_api_key_in_a_caption_is_not_written_into_the_conditions(tmp_path, pipe, monkeypatch):
    key = "ltxk-7c1e0b9a5d3f4e2b"
    monkeypatch.setenv("LTX_API_KEY", key)
    src = tmp_path / "clips"
    src.mkdir()
    write_video(src / "a.mp4", _frames(9, 9))
    (src / "a.txt").write_text(f"a fox, LTX_API_KEY={key} oops")
    preprocess_dataset(pipe, find_clips(src), tmp_path / "data", height=64, width=64, num_frames=9, progress=False)
    files = list((tmp_path / "data").rglob("*"))
    assert files and all(key.encode() not in p.read_bytes() for p in files if p.is_file())
    assert read_entry(tmp_path / "data" / "conditions" / "a.safetensors")[1]["caption"] == "a fox, LTX_API_KEY=*** oops"
