"""media.video: decoding real H.264 files written with PyAV; windows, frame rate, metadata and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from media_files import frame_colours, tone, write_audio, write_video

from diffusers_ltx2.media import load_video, probe_video


@pytest.fixture()
def clip(tmp_path):
    frames = frame_colours(17, 32, 48)
    path = write_video(tmp_path / "clip.mp4", frames, fps=25, audio=tone(0.7, 48000), sample_rate=48000)
    return path, frames


def test_load_video_returns_frames_in_order_with_fps(clip):
    path, frames = clip
    video, fps = load_video(path)
    assert video.dtype == torch.float32 and video.shape == (17, 32, 48, 3) and fps == 25.0
    # lossless H.264 (yuv444): only the RGB<->YUV rounding remains
    assert (video * 255 - torch.from_numpy(frames).float()).abs().max() <= 2.0


def test_load_video_window(clip):
    path, frames = clip
    video, _ = load_video(path, start_frame=3, num_frames=9)
    assert video.shape[0] == 9
    expected = torch.from_numpy(frames[3:12]).float() / 255
    assert (video - expected).abs().max() <= 2 / 255
    tail, _ = load_video(path, start_frame=16)
    assert tail.shape[0] == 1


def test_probe_video(clip):
    path, _ = clip
    info = probe_video(path)
    assert (info.fps, info.num_frames, info.height, info.width, info.has_audio) == (25.0, 17, 32, 48, True)
    assert info.duration_s == pytest.approx(17 / 25)


@pytest.mark.parametrize("kwargs,message", [
    (dict(start_frame=17), "has 17 frames: start_frame 17 is past the end"),
    (dict(start_frame=10, num_frames=9), "9 frames from frame 10 were asked for, only 7 are there"),
    (dict(num_frames=0), "num_frames must be a positive integer"),
    (dict(start_frame=-1), "start_frame must be a non-negative integer"),
])
def test_load_video_rejects_bad_windows(clip, kwargs, message):
    path, _ = clip
    with pytest.raises(ValueError, match=message):
        load_video(path, **kwargs)


def test_unreadable_files_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        load_video(tmp_path / "missing.mp4")
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"this is not a video")
    with pytest.raises(ValueError, match="bad.mp4"):
        load_video(bad)
    with pytest.raises(ValueError, match="bad.mp4"):
        probe_video(bad)
    sound = write_audio(tmp_path / "sound.wav", tone(0.2, 16000), 16000)
    with pytest.raises(ValueError, match="sound.wav has no video stream"):
        load_video(sound)
    with pytest.raises(ValueError, match="sound.wav has no video stream"):
        probe_video(sound)


def test_control_read_video_uses_the_same_decoder(clip):
    from diffusers_ltx2.control import read_video

    path, _ = clip
    video, _ = load_video(path)
    assert torch.equal(read_video(path), video.permute(0, 3, 1, 2))
    assert torch.equal(read_video(path, max_frames=5), video[:5].permute(0, 3, 1, 2))
    assert np.isclose(float(video.mean()), float(read_video(path).mean()))
