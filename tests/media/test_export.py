"""Tests for the MP4 (H.264 + AAC) exporter: written files are read back with PyAV."""

from fractions import Fraction

import av
import numpy as np
import pytest
import torch
from PIL import Image

import diffusers_ltx2.export as export_module
from diffusers_ltx2.export import export_to_video_with_audio

NUM_FRAMES, HEIGHT, WIDTH, FPS = 9, 64, 96, 24
AAC_FRAME = 1024


def make_frames(seed=0):
    """Smooth float frames in [0, 1] (a moving gradient) that survive lossy compression well."""
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    frames = []
    for i in range(NUM_FRAMES):
        r = (x / WIDTH + i / NUM_FRAMES) % 1.0
        g = y / HEIGHT
        b = np.full_like(r, 0.25 + 0.05 * seed)
        frames.append(np.stack([r, g, b], axis=-1))
    return np.stack(frames)


def make_audio(sample_rate, channels=2):
    """A quiet stereo tone lasting exactly the clip duration, shape (channels, samples)."""
    n = NUM_FRAMES * sample_rate // FPS
    t = np.arange(n, dtype=np.float32) / sample_rate
    tone = 0.3 * np.sin(2 * np.pi * 440 * t)
    return np.stack([tone] * channels).astype(np.float32)


def read_back(path):
    """Return (stream summary, decoded RGB frames, audio sample count, audio rate, video rate)."""
    with av.open(str(path)) as container:
        kinds = sorted(s.type for s in container.streams)
        video = container.streams.video[0]
        info = dict(kinds=kinds, rate=video.average_rate, codec=video.codec_context.name,
                    pix_fmt=video.codec_context.pix_fmt, size=(video.width, video.height))
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    samples, audio_rate, layout = 0, None, None
    if "audio" in kinds:
        with av.open(str(path)) as container:
            stream = container.streams.audio[0]
            audio_rate, layout, info["audio_codec"] = stream.sample_rate, stream.layout.name, stream.codec_context.name
            samples = sum(f.samples for f in container.decode(audio=0))
    info.update(samples=samples, audio_rate=audio_rate, layout=layout)
    return info, np.stack(frames)


def test_video_with_stereo_audio(tmp_path):
    path = tmp_path / "clip.mp4"
    frames = make_frames()
    out = export_to_video_with_audio(frames, make_audio(24000), path, fps=FPS, sample_rate=24000)
    assert out == str(path)
    info, decoded = read_back(path)
    assert info["kinds"] == ["audio", "video"]
    assert info["codec"] == "h264" and info["pix_fmt"] == "yuv420p" and info["audio_codec"] == "aac"
    assert info["size"] == (WIDTH, HEIGHT)
    assert decoded.shape == (NUM_FRAMES, HEIGHT, WIDTH, 3)
    assert info["rate"] == Fraction(FPS)
    assert info["audio_rate"] == 24000 and info["layout"] == "stereo"
    clip_seconds = NUM_FRAMES / FPS
    assert abs(info["samples"] / 24000 - clip_seconds) <= AAC_FRAME / 24000
    # Lossy, but the picture must be the one we wrote (mean error of a few 8-bit levels).
    assert np.abs(decoded.astype(np.float32) - frames * 255).mean() < 6
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_audio_layouts_and_tensor_inputs(tmp_path):
    path = tmp_path / "clip.mp4"
    frames = torch.from_numpy(make_frames()).to(torch.bfloat16)
    audio = torch.from_numpy(make_audio(48000).T.copy())  # (samples, channels)
    export_to_video_with_audio(frames, audio, path, fps=FPS, sample_rate=48000)
    info, _ = read_back(path)
    assert info["audio_rate"] == 48000 and info["layout"] == "stereo"
    assert abs(info["samples"] / 48000 - NUM_FRAMES / FPS) <= AAC_FRAME / 48000
    export_to_video_with_audio(make_frames(), make_audio(24000, channels=1)[0], path, fps=FPS, sample_rate=24000)
    info, _ = read_back(path)
    assert info["layout"] == "mono"


def test_unsupported_sample_rate_is_resampled(tmp_path):
    path = tmp_path / "clip.mp4"
    export_to_video_with_audio(make_frames(), make_audio(22000), path, fps=FPS, sample_rate=22000)
    info, _ = read_back(path)
    assert info["audio_rate"] == 48000
    assert abs(info["samples"] / 48000 - NUM_FRAMES / FPS) <= 2 * AAC_FRAME / 48000


def test_video_only_uint8_pil_and_fractional_fps(tmp_path):
    frames = (make_frames() * 255).round().astype(np.uint8)
    path = tmp_path / "silent.mp4"
    export_to_video_with_audio(frames, None, path, fps=24000 / 1001, sample_rate=None)
    info, decoded = read_back(path)
    assert info["kinds"] == ["video"] and len(decoded) == NUM_FRAMES
    assert info["rate"] == Fraction(24000, 1001)
    pil_path = tmp_path / "pil.mp4"
    export_to_video_with_audio([Image.fromarray(f) for f in frames], None, pil_path, fps=8, sample_rate=None)
    info, decoded = read_back(pil_path)
    assert len(decoded) == NUM_FRAMES and info["rate"] == 8


def test_existing_file_is_replaced(tmp_path):
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"old")
    export_to_video_with_audio(make_frames(), None, path, fps=FPS, sample_rate=None)
    assert path.read_bytes()[4:8] == b"ftyp"


@pytest.mark.parametrize(
    "frames, audio, kwargs, message",
    [
        (np.zeros((9, 63, 96, 3), np.float32), None, {}, "even"),
        (np.zeros((9, 64, 95, 3), np.float32), None, {}, "even"),
        (np.zeros((64, 96, 3), np.float32), None, {}, "shape"),
        (np.zeros((9, 4, 64, 96), np.float32), None, {}, "shape"),
        (np.zeros((2, 9, 64, 96, 3), np.float32), None, {}, "batch of 2"),
        (np.zeros((0, 64, 96, 3), np.float32), None, {}, "at least one"),
        (np.zeros((9, 64, 96, 3), np.int32), None, {}, "dtype"),
        (np.full((9, 64, 96, 3), np.nan, np.float32), None, {}, "NaN"),
        ("frames", None, {}, "frames"),
        (None, None, dict(fps=0), "fps"),
        (None, None, dict(fps=-24), "fps"),
        (None, np.zeros((2, 9000), np.float32), dict(sample_rate=0), "sample_rate"),
        (None, np.zeros((2, 9000), np.float32), dict(sample_rate=-24000), "sample_rate"),
        (None, np.zeros((2, 9000), np.float32), dict(sample_rate=None), "sample_rate"),
        (None, np.zeros((3, 9000), np.float32), {}, "mono or stereo"),
        (None, np.zeros((2, 2, 9000), np.float32), {}, "shape"),
        (None, np.zeros((2, 9000), np.int16), {}, "dtype"),
        (None, None, dict(crf=60), "crf"),
    ],
)
def test_bad_input_raises_value_error(tmp_path, frames, audio, kwargs, message):
    frames = make_frames() if frames is None else frames
    args = dict(fps=FPS, sample_rate=24000)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        export_to_video_with_audio(frames, audio, tmp_path / "bad.mp4", **args)
    assert list(tmp_path.iterdir()) == []


def test_missing_parent_folder(tmp_path):
    with pytest.raises(ValueError, match="parent folder"):
        export_to_video_with_audio(make_frames(), None, tmp_path / "nope" / "clip.mp4", fps=FPS, sample_rate=None)
    assert list(tmp_path.iterdir()) == []


def test_failure_mid_write_leaves_nothing(tmp_path, monkeypatch):
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"previous")
    calls = {"n": 0}
    real_encode = export_module._encode

    def failing_encode(container, stream, frame):
        calls["n"] += 1
        if calls["n"] == 5:
            raise RuntimeError("simulated encoder crash")
        real_encode(container, stream, frame)

    monkeypatch.setattr(export_module, "_encode", failing_encode)
    with pytest.raises(RuntimeError, match="simulated"):
        export_to_video_with_audio(make_frames(), make_audio(24000), path, fps=FPS, sample_rate=24000)
    assert calls["n"] == 5
    assert path.read_bytes() == b"previous"  # the old file is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]  # temp file removed


# ------------------------------------------------------------------------------------- file mode, ranges, types


def test_new_file_gets_the_umask_mode_and_a_replaced_file_keeps_its_mode(tmp_path):
    import os
    import stat

    old = os.umask(0o027)
    try:
        new = tmp_path / "new.mp4"
        export_to_video_with_audio(make_frames(), None, new, fps=FPS)
        assert stat.S_IMODE(new.stat().st_mode) == 0o640  # 0o666 & ~0o027, as open() would give
        existing = tmp_path / "existing.mp4"
        existing.write_bytes(b"old")
        existing.chmod(0o644)
        export_to_video_with_audio(make_frames(), None, existing, fps=FPS)
        assert stat.S_IMODE(existing.stat().st_mode) == 0o644
        assert existing.stat().st_size > 3
    finally:
        os.umask(old)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing.mp4", "new.mp4"]


@pytest.mark.parametrize("kwargs,message", [
    (dict(fps=1e-6), r"fps.*\[0.001, 1000\] frames per second"),
    (dict(fps=0), r"\[0.001, 1000\]"),
    (dict(fps=1e6), r"\[0.001, 1000\]"),
    (dict(fps=float("nan")), r"\[0.001, 1000\]"),
    (dict(sample_rate=1), r"sample_rate.*\[1000, 384000\] Hz"),
    (dict(sample_rate=10**12), r"\[1000, 384000\] Hz"),
    (dict(sample_rate=24000.5), "whole number"),
])
def test_fps_and_sample_rate_outside_their_range_name_the_range(tmp_path, kwargs, message):
    args = {"fps": FPS, "sample_rate": 24000, **kwargs}
    with pytest.raises(ValueError, match=message):
        export_to_video_with_audio(make_frames(), make_audio(24000), tmp_path / "x.mp4", **args)
    assert list(tmp_path.iterdir()) == []


def test_range_edges_are_written(tmp_path):
    frames = make_frames()[:2]
    export_to_video_with_audio(frames, None, tmp_path / "slow.mp4", fps=0.001)
    export_to_video_with_audio(frames, np.zeros((2, 1000), np.float32), tmp_path / "low.mp4", fps=FPS,
                               sample_rate=1000)
    assert read_back(tmp_path / "slow.mp4")[1].shape[0] == 2
    assert read_back(tmp_path / "low.mp4")[0]["samples"] > 0


@pytest.mark.slow
def test_every_output_type_of_the_pipeline_is_accepted(tiny_pipe, tmp_path):
    """`output.frames[0]` / `output.audio[0]` of output_type np, pt and pil (and the batch of one itself) give
    the same MP4 frames."""
    decoded = {}
    for output_type in ("np", "pt", "pil"):
        out = tiny_pipe("a cat", num_frames=9, height=64, width=64, num_inference_steps=1, output_type=output_type,
                        generator=torch.Generator().manual_seed(0))
        for label, frames, audio in ((output_type, out.frames[0], out.audio[0]),
                                     (f"{output_type} batch", out.frames, out.audio)):
            path = tmp_path / f"{label.replace(' ', '_')}.mp4"
            export_to_video_with_audio(frames, audio, path, fps=FPS, sample_rate=out.sample_rate)
            info, decoded[label] = read_back(path)
            assert info["kinds"] == ["audio", "video"] and decoded[label].shape == (9, 64, 64, 3)
    assert isinstance(tiny_pipe("a cat", num_frames=9, height=64, width=64, num_inference_steps=1,
                                output_type="pt").frames, torch.Tensor)
    reference = decoded["np"].astype(int)
    for label, frames in decoded.items():
        assert np.abs(frames.astype(int) - reference).max() <= 2, label  # pil rounds to uint8 first


def _decoded_audio(path) -> np.ndarray:
    """`(C, N)` float samples of the file's audio, decoded by FFmpeg (priming skipped by the MP4 edit list)."""
    with av.open(str(path)) as container:
        return np.concatenate([f.to_ndarray() for f in container.decode(audio=0)], axis=1)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x))))


@pytest.mark.parametrize("factor", [0.5, 2.0])
def test_audio_is_padded_or_trimmed_to_the_video_by_default_and_kept_on_request(tmp_path, factor):
    video_samples = NUM_FRAMES * 24000 // FPS  # 9000
    given = int(video_samples * factor)
    t = np.arange(given, dtype=np.float32) / 24000
    audio = np.stack([0.3 * np.sin(2 * np.pi * 440 * t)] * 2).astype(np.float32)
    fitted, kept = tmp_path / "fitted.mp4", tmp_path / "kept.mp4"
    export_to_video_with_audio(make_frames(), audio, fitted, fps=FPS, sample_rate=24000)
    export_to_video_with_audio(make_frames(), audio, kept, fps=FPS, sample_rate=24000, fit_audio_to_video=False)
    fitted_audio, kept_audio = _decoded_audio(fitted), _decoded_audio(kept)
    assert abs(fitted_audio.shape[1] - video_samples) <= AAC_FRAME  # the two streams end together
    assert abs(kept_audio.shape[1] - given) <= AAC_FRAME  # as given
    with av.open(str(fitted)) as container:
        video, sound = container.streams.video[0], container.streams.audio[0]
        assert abs(float(video.duration * video.time_base) - float(sound.duration * sound.time_base)) <= \
            AAC_FRAME / 24000 + 1 / FPS
    tone_rms = 0.3 / np.sqrt(2)
    assert abs(_rms(fitted_audio[:, 1000:4000]) - tone_rms) < 0.03  # the sound itself is kept
    if factor < 1:  # silence after the given sound, up to the video's end
        assert _rms(fitted_audio[:, given + 2 * AAC_FRAME: video_samples - AAC_FRAME]) < 0.01


def test_fit_audio_to_video_must_be_a_bool(tmp_path):
    with pytest.raises(ValueError, match="fit_audio_to_video"):
        export_to_video_with_audio(make_frames(), make_audio(24000), tmp_path / "x.mp4", fps=FPS,
                                   sample_rate=24000, fit_audio_to_video="no")
    assert not list(tmp_path.iterdir())


def test_the_command_line_writer_fits_the_audio_to_the_video(tmp_path):
    from types import SimpleNamespace

    from diffusers_ltx2.cli.common import write_clip

    video_samples = NUM_FRAMES * 24000 // FPS
    out = SimpleNamespace(frames=torch.from_numpy(make_frames())[None], sample_rate=24000,
                          audio=torch.from_numpy(np.tile(make_audio(24000), (1, 3)))[None])  # 3x too long
    write_clip(out, str(tmp_path / "cli.mp4"), FPS)
    assert abs(_decoded_audio(tmp_path / "cli.mp4").shape[1] - video_samples) <= AAC_FRAME
