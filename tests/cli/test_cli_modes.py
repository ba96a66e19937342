"""`ltx2 generate --image/--video/--audio/--audio-only`, `ltx2 retake`, `ltx2 foley` on the tiny model, with real
media files; every bad argument fails with exit code 2 and a clear message before any model loads."""

from __future__ import annotations

import av
import numpy as np
import PIL.Image
import pytest

from media_files import frame_colours, tone, write_audio, write_video

from diffusers_ltx2.cli import main
from diffusers_ltx2.cli.media_args import MediaSpec, parse_media_spec, resolve_frame

FAST = ["--steps", "2", "--dtype", "fp32", "--device", "cpu", "--no-guidance", "--prompt", "a cat"]
CLIP = ["--num-frames", "9", "--height", "64", "--width", "64"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_components_master):
    from diffusers_ltx2 import LTX2AudioVideoPipeline, LTX2Scheduler

    folder = tmp_path_factory.mktemp("tiny") / "model"
    LTX2AudioVideoPipeline(scheduler=LTX2Scheduler(), **tiny_components_master).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """A 17-frame 64x96 clip with a 440 Hz soundtrack, a silent clip, a 96x48 clip, an image and a 440 Hz WAV."""
    folder = tmp_path_factory.mktemp("media")
    files = {
        "clip": write_video(folder / "clip.mp4", frame_colours(17, 64, 96), fps=24,
                            audio=tone(1.0, 48000, freqs=(440.0, 440.0)), sample_rate=48000),
        "silent": write_video(folder / "silent.mp4", frame_colours(9, 64, 64), fps=24),
        "small": write_video(folder / "small.mp4", frame_colours(9, 48, 96), fps=24),
        "wav": write_audio(folder / "tone.wav", tone(1.0, 44100, freqs=(440.0, 440.0)), 44100),
        "image": str(folder / "key.png"),
    }
    PIL.Image.fromarray(frame_colours(3, 80, 100)[2]).save(files["image"])
    return files


def _read(path):
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    with av.open(str(path)) as container:
        rate = container.streams.audio[0].codec_context.sample_rate
        audio = np.concatenate([f.to_ndarray() for f in container.decode(audio=0)], axis=-1)
    return np.stack(frames), audio, rate


def _peak_hz(audio, rate):
    spectrum = np.abs(np.fft.rfft(audio[0]))
    return spectrum.argmax() * rate / audio.shape[-1]


# ---------------------------------------------------------------- spec parsing


@pytest.mark.parametrize("text,spec", [
    ("key.png", MediaSpec("key.png", None, None)),
    ("key.png@40", MediaSpec("key.png", 40, None)),
    ("key.png@-1:0.8", MediaSpec("key.png", -1, 0.8)),
    ("me@home.png", MediaSpec("me@home.png", None, None)),
    ("dir@2/x.png@8:1", MediaSpec("dir@2/x.png", 8, 1.0)),
])
def test_parse_media_spec(text, spec):
    assert parse_media_spec(text, "--image") == spec


def test_resolve_frame_counts_negative_frames_from_the_end():
    assert resolve_frame(MediaSpec("a", -1, None), "--image", 121) == 120
    assert resolve_frame(MediaSpec("a", None, None), "--image", 121) == 0
    assert resolve_frame(MediaSpec("a", -1, None), "--video", 121, length=17) == 104
    with pytest.raises(ValueError, match="does not fit in the clip's frames 0..120"):
        resolve_frame(MediaSpec("a", 121, None), "--image", 121)


# ---------------------------------------------------------------- bad arguments, before any model loads


def _index_only(tmp_path) -> str:
    """A folder that passes the CLI's model-folder check but holds no model: reaching the loader would fail
    differently from the messages expected here."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "model_index.json").write_text('{"_class_name": "LTX2AudioVideoPipeline"}')
    return str(model)


def _bad(capsys, tmp_path, argv, message):
    out = tmp_path / "out.mp4"
    code = main([*argv, "--output", str(out)] if "--output" not in argv else argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err, err
    assert not out.exists()


@pytest.mark.parametrize("extra,message", [
    (["--image", "missing.png"], "image file not found: missing.png"),
    (["--height", "32"], "height must be at least 64 (two latent pixels), got 32; nearest valid value: 64"),
    (["--image", "{image}@9"], "the frame does not fit in the clip's frames 0..8"),
    (["--image", "{image}@0:1.5"], "key.png@0:1.5: STRENGTH must be in [0, 1]"),
    # a malformed suffix on an existing file is named as such, not as a missing "key.png@abc"
    (["--image", "{image}@abc"], "key.png@abc: bad FRAME/STRENGTH '@abc' after the file"),
    (["--image", "{image}@1.5"], "bad FRAME/STRENGTH '@1.5' after the file"),
    (["--image", "{image}@8:0.5:3"], "bad FRAME/STRENGTH '@8:0.5:3' after the file"),
    (["--video", "{clip}@x"], "clip.mp4@x: bad FRAME/STRENGTH '@x' after the file"),
    (["--image", "{image}@abc"], "expected PATH[@FRAME[:STRENGTH]] (FRAME an integer"),
    (["--image", "{image}@0", "--image", "{image}"], "more than one condition at frame 0"),
    (["--image", "{image}", "--image-crf", "60"], "--image-crf: must be <= 51, got 60"),
    (["--video", "{clip}@-2"], "FRAME must be >= 0 for clips"),
    (["--video", "{wav}@0"], "tone.wav has no video stream"),
    (["--audio", "missing.wav"], "--audio: file not found: missing.wav"),
    (["--audio", "{silent}"], "silent.mp4 has no audio stream"),
    (["--audio", "{wav}", "--audio-start", "5"], "--audio-start 5 s is outside the audio (the audio lasts 1.000 s)"),
    # the sound must last the clip: 0.3 s from 0.8 s of a 1 s file is not 9 frames at 24 fps (0.375 s)
    (["--audio", "{wav}", "--audio-start", "0.8"], "the rest would be silence; use --audio-start 0.62 or less"),
    (["--audio", "{wav}", "--num-frames", "33"], "the whole sound lasts 1.00 s: use --num-frames 17 or fewer"),
    (["--audio-start", "0.5"], "--audio-start applies with --audio only"),
    (["--audio-only", "--output", "{tmp}/out.mp4"], "--output must be a .wav or .flac file"),
    (["--audio-only", "--image", "{image}", "--output", "{tmp}/out.wav"], "it takes no --image"),
])
def test_generate_modes_reject_bad_arguments_before_loading(tmp_path, capsys, media, extra, message):
    fill = dict(media, tmp=str(tmp_path))
    argv = ["generate", "--model", _index_only(tmp_path), *FAST, *CLIP, *[x.format(**fill) for x in extra]]
    _bad(capsys, tmp_path, argv, message)
    assert not (tmp_path / "out.wav").exists()


@pytest.mark.parametrize("command,extra,message", [
    ("retake", ["--input", "{clip}", "--start", "0.5", "--end", "2.0"],
     "--end 2 is past the end of the clip, which lasts 0.7083 s (17 frames at 24 fps)"),
    ("retake", ["--input", "{clip}", "--start", "0.5", "--end", "0.2"], "--start 0.5 must be before --end 0.2"),
    ("retake", ["--input", "{silent}", "--start", "0.1", "--end", "0.2", "--no-video"],
     "silent.mp4 has no audio track to retake"),
    ("retake", ["--input", "{clip}", "--start", "0.1", "--end", "0.2", "--ramp", "-1"],
     "--ramp: must be a finite number >= 0, got -1"),
    ("retake", ["--input", "{clip}", "--start", "0.1", "--end", "0.2", "--num-frames", "25"],
     "--num-frames 25 is more than --input"),
    ("extend", ["--input", "{clip}", "--frames", "12"], "--frames: must be a multiple of 8 (the VAE's 8-frame unit), "
                                                        "got 12; nearest valid values: 8 or 16"),
    ("extend", ["--input", "{clip}", "--frames", "8", "--overlap", "24"],
     "--overlap 24 needs a clip of at least 25 frames; --input"),
    ("extend", ["--input", "{clip}", "--frames", "8", "--overlap-strength", "2"],
     "--overlap-strength: must be in [0, 1]"),
    # an image is not a clip to continue or edit (it was a 1-frame MP4)
    ("foley", ["--input", "{image}"], "key.png is an image: this command continues or edits a video clip"),
    ("extend", ["--input", "{image}", "--frames", "8"], "is an image"),
    ("extend", ["--input", "{clip}", "--frames", "8", "--num-frames", "25"], "takes --frames (frames to add)"),
    ("foley", ["--input", "missing.mp4"], "--input: file not found: missing.mp4"),
    ("foley", ["--input", "{wav}"], "tone.wav has no video stream"),
    ("foley", ["--input", "{clip}", "--num-frames", "10"],
     "--num-frames must be 8k+1 (e.g. 121), got 10; nearest valid values: 9 or 17"),
    ("foley", ["--input", "{clip}", "--height", "100"], "--height must be a multiple of 32, got 100; nearest valid "
                                                        "values: 96 or 128"),
    # 48 px rounds down to 32: a 1-pixel latent the VAE cannot decode
    ("retake", ["--input", "{small}", "--start", "0.1", "--end", "0.2"],
     "small.mp4 is 96x48: too small for the model (at least 64 pixels per side)"),
    ("extend", ["--input", "{small}", "--frames", "8"], "too small for the model (at least 64 pixels per side)"),
])
def test_source_clip_modes_reject_bad_arguments_before_loading(tmp_path, capsys, media, command, extra, message):
    argv = [command, "--model", _index_only(tmp_path), *FAST, *[x.format(**media) for x in extra]]
    _bad(capsys, tmp_path, argv, message)


def test_retake_no_video_and_no_audio_are_exclusive(tmp_path, media, capsys):
    assert main(["retake", "--model", str(tmp_path), *FAST, "--input", media["clip"], "--start", "0", "--end", "0.2",
                 "--no-video", "--no-audio", "--output", str(tmp_path / "o.mp4")]) == 2
    assert "pass at most one of --no-video / --no-audio" in capsys.readouterr().err


# ---------------------------------------------------------------- runs on the tiny model


@pytest.mark.slow
def test_generate_with_keyframes_and_a_clip(model_dir, media, tmp_path):
    out = tmp_path / "keys.mp4"
    assert main(["generate", "--model", model_dir, *FAST, *CLIP, "--image", media["image"],
                 "--image", f"{media['image']}@-1:0.5", "--video", f"{media['clip']}@0:0.3",
                 "--output", str(out)]) == 2  # two conditions at frame 0
    assert main(["generate", "--model", model_dir, *FAST, *CLIP, "--image", media["image"],
                 "--image", f"{media['image']}@-1:0.5", "--output", str(out)]) == 0
    frames, _, _ = _read(out)
    assert frames.shape == (9, 64, 64, 3)
    clip_out = tmp_path / "clip.mp4"
    assert main(["generate", "--model", model_dir, *FAST, *CLIP, "--video", f"{media['clip']}@0",
                 "--output", str(clip_out)]) == 0
    assert _read(clip_out)[0].shape == (9, 64, 64, 3)


@pytest.mark.slow
def test_audio_to_video_carries_the_input_sound(model_dir, media, tmp_path):
    out = tmp_path / "a2v.mp4"
    assert main(["generate", "--model", model_dir, *FAST, *CLIP, "--audio", media["wav"], "--output", str(out)]) == 0
    frames, audio, rate = _read(out)
    assert frames.shape[0] == 9 and rate == 24000
    assert abs(_peak_hz(audio, rate) - 440.0) < 5.0   # the random vocoder would not produce a clean 440 Hz tone


@pytest.mark.slow
def test_audio_only_writes_a_wav(model_dir, tmp_path):
    from diffusers_ltx2.media import load_audio

    out = tmp_path / "sound.wav"
    assert main(["generate", "--model", model_dir, *FAST, *CLIP, "--audio-only", "--output", str(out)]) == 0
    wave, rate = load_audio(out)
    assert rate == 24000 and wave.shape[0] == 2
    assert wave.shape[1] == pytest.approx(9 / 24 * 24000, rel=0.25)


@pytest.mark.slow
def test_foley_keeps_the_input_frames(model_dir, media, tmp_path):
    out = tmp_path / "foley.mp4"
    assert main(["foley", "--model", model_dir, *FAST, "--input", media["clip"], "--output", str(out)]) == 0
    frames, audio, rate = _read(out)
    source = frame_colours(17, 64, 96)
    assert frames.shape == source.shape   # 17 frames (8k+1), 96x64 (multiples of 32) taken from the input
    assert np.abs(frames.astype(int) - source).mean() < 3.0   # the given pixels, through the MP4 encoder only
    assert audio.shape[0] == 2 and rate == 24000


@pytest.mark.slow
def test_retake_keeps_the_frozen_modality(model_dir, media, tmp_path):
    source = frame_colours(17, 64, 96)
    keep_video = tmp_path / "audio_retake.mp4"
    assert main(["retake", "--model", model_dir, *FAST, "--input", media["clip"], "--start", "0.2", "--end", "0.5",
                 "--no-video", "--output", str(keep_video)]) == 0
    frames, _, _ = _read(keep_video)
    assert np.abs(frames.astype(int) - source).mean() < 3.0
    keep_audio = tmp_path / "video_retake.mp4"
    assert main(["retake", "--model", model_dir, *FAST, "--input", media["clip"], "--start", "0.2", "--end", "0.5",
                 "--no-audio", "--output", str(keep_audio)]) == 0
    frames, audio, rate = _read(keep_audio)
    assert frames.shape == source.shape and abs(_peak_hz(audio, rate) - 440.0) < 5.0
    silent = tmp_path / "silent_retake.mp4"  # no source sound: the video is retaken, the sound generated
    assert main(["retake", "--model", model_dir, *FAST, "--input", media["silent"], "--start", "0.1", "--end", "0.2",
                 "--output", str(silent)]) == 0
    assert _read(silent)[0].shape == (9, 64, 64, 3)
    both = tmp_path / "retake.mp4"
    assert main(["retake", "--model", model_dir, *FAST, "--input", media["clip"], "--start", "0.2", "--end", "0.5",
                 "--ramp", "0.1", "--output", str(both)]) == 0
    assert _read(both)[0].shape == source.shape


@pytest.mark.slow
def test_extend_continues_the_clip_and_its_sound(model_dir, media, tmp_path):
    out = tmp_path / "longer.mp4"
    assert main(["extend", "--model", model_dir, *FAST, "--input", media["clip"], "--frames", "16", "--overlap", "8",
                 "--output", str(out)]) == 0
    frames, audio, rate = _read(out)
    source = frame_colours(17, 64, 96)
    assert frames.shape == (17 + 16, 64, 96, 3)
    kept = 17 - 9  # frames before the 9-frame overlap are the input's
    assert np.abs(frames[:kept].astype(int) - source[:kept]).mean() < 3.0
    head = audio[:, : round(kept / 24 * rate)]  # the input's sound up to the overlap
    assert abs(_peak_hz(head, rate) - 440.0) < 15.0


def test_help_lists_the_mode_subcommands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for name in ("retake", "foley", "extend"):
        assert name in text


@pytest.mark.parametrize("command,extra", [
    ("retake", ["--start", "0.1", "--end", "0.2"]), ("foley", []), ("extend", ["--frames", "8"])])
def test_source_clip_modes_refuse_to_overwrite_their_input(tmp_path, capsys, media, command, extra):
    import shutil

    source = tmp_path / "clip.mp4"
    shutil.copy(media["clip"], source)
    before = source.read_bytes()
    link = tmp_path / "link.mp4"
    link.symlink_to(source)
    for output in (str(source), str(tmp_path / "." / "clip.mp4"), str(link)):
        code = main([command, "--model", _index_only(tmp_path) if not (tmp_path / "model").exists()
                     else str(tmp_path / "model"), *FAST, "--input", str(source), *extra, "--output", output])
        assert code == 2
        assert "is the --input clip: it would be overwritten" in capsys.readouterr().err
    assert source.read_bytes() == before
