"""Every bad conditioning input fails with a clear error before any model (text encoder, connectors, VAEs,
transformer) runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffusers_ltx2.conditioning import AudioCondition, FrozenVideo, ReferenceVideo, TemporalRegion, VideoCondition
from diffusers_ltx2.factory import TINY_CLIP

CLIP = dict(TINY_CLIP, num_frames=17)  # 17 frames at 24 fps: 0.708 s
IMG = np.zeros((64, 64, 3), dtype=np.uint8)


def _wave(seconds=1.0, rate=16000):
    return torch.zeros(2, int(seconds * rate)), rate


@pytest.fixture()
def guarded_pipe(tiny_pipe, monkeypatch):
    """`tiny_pipe` whose models raise if anything runs them."""
    def boom(*args, **kwargs):
        raise AssertionError("a model ran before the input was rejected")

    for name in ("transformer", "connectors", "text_encoder", "vocoder"):
        monkeypatch.setattr(getattr(tiny_pipe, name), "forward", boom)
    for name in ("vae", "audio_vae"):
        monkeypatch.setattr(getattr(tiny_pipe, name), "encode", boom)
        monkeypatch.setattr(getattr(tiny_pipe, name), "decode", boom)
    return tiny_pipe


def _call(pipe, conditions=None, **kw):
    return pipe("a cat", num_inference_steps=2, conditions=conditions, output_type="latent", **{**CLIP, **kw})


@pytest.mark.parametrize("conditions,match", [
    ([VideoCondition(np.zeros((4, 64, 64, 3), np.uint8), 8)], "1 or 8k\\+1 frames"),
    ([VideoCondition(IMG, 17)], "outside the clip's frames 0..16"),
    ([VideoCondition(np.zeros((9, 64, 64, 3), np.uint8), 9)], "ends at frame 17, outside"),
    ([VideoCondition(IMG, 0), VideoCondition(IMG, 0)], "more than one condition at frame 0"),
    ([FrozenVideo(np.zeros((9, 64, 64, 3), np.uint8))], "FrozenVideo has 9 frames but the clip has num_frames=17"),
    ([TemporalRegion(0.2, 0.9), FrozenVideo(np.zeros((17, 8, 8, 3), np.uint8)), AudioCondition(*_wave())],
     "ends outside the clip, which lasts 0.7083 s"),
    ([FrozenVideo(np.zeros((17, 8, 8, 3), np.uint8)), TemporalRegion(0.1, 0.3)],
     "regenerates \\['audio'\\] but no source was given: add AudioCondition"),
    ([TemporalRegion(0.1, 0.3, audio=False)], "add FrozenVideo"),
    ([AudioCondition(*_wave()), AudioCondition(*_wave())], "two conditions give the source audio"),
    ([FrozenVideo(np.zeros((17, 8, 8, 3), np.uint8)), AudioCondition(*_wave()), TemporalRegion(0.1, 0.2),
      TemporalRegion(0.3, 0.4)], "only one TemporalRegion"),
    ("not a list", "conditions must be a list"),
    ([IMG], "conditions must be condition objects"),
    ([ReferenceVideo(torch.rand(9, 3, 32, 32)), VideoCondition(IMG, 0), VideoCondition(IMG, 0)],
     "more than one condition at frame 0"),
])
def test_bad_condition_combinations_fail_before_any_model(guarded_pipe, conditions, match):
    with pytest.raises(ValueError, match=match):
        _call(guarded_pipe, conditions)


@pytest.mark.parametrize("make,match", [
    (lambda: [ReferenceVideo(torch.rand(9, 3, 32, 32), downscale_factor=4)], "multiples of 128"),
    (lambda: [ReferenceVideo(torch.rand(9, 3, 32, 32), attention_mask=torch.ones(1, 5))], "attention_mask must be"),
    (lambda: [ReferenceVideo(torch.rand(9, 3, 32, 32), strength=1.5)], "strength must be a number in \\[0, 1\\]"),
    (lambda: [ReferenceVideo()], "takes a video"),
    (lambda: [ReferenceVideo(torch.rand(9, 3, 32, 32))], "audio-only generation takes no video conditions"),
])
def test_bad_references_fail_before_any_model(guarded_pipe, make, match):
    kwargs = dict(output_modalities=("audio",)) if "audio-only" in match else {}
    with pytest.raises(ValueError, match=match):
        _call(guarded_pipe, make(), **kwargs)


def test_audio_only_refuses_video_noise(guarded_pipe):
    with pytest.raises(ValueError, match="pass audio_latents, not latents"):
        _call(guarded_pipe, output_modalities=("audio",), latents=torch.zeros(1, 12, 16))


def test_image_and_frame_0_condition_conflict(guarded_pipe):
    with pytest.raises(ValueError, match="more than one condition at frame 0"):
        _call(guarded_pipe, [VideoCondition(IMG, 0)], image=torch.zeros(3, 64, 64))


@pytest.mark.parametrize("modalities,conditions,match", [
    (("video",), None, "video-only output is not supported"),
    (("sound",), None, "non-empty tuple of 'video' / 'audio'"),
    ((), None, "non-empty tuple"),
    (("audio",), [VideoCondition(IMG, 8)], "audio-only generation takes no video conditions"),
    (("audio",), [AudioCondition(*_wave())], "has nothing to generate"),
    (("audio",), [AudioCondition(*_wave()), TemporalRegion(0.1, 0.2)], "TemporalRegion\\(..., video=False\\)"),
])
def test_bad_output_modalities_fail_before_any_model(guarded_pipe, modalities, conditions, match):
    with pytest.raises(ValueError, match=match):
        _call(guarded_pipe, conditions, output_modalities=modalities)


@pytest.mark.parametrize("make,error,match", [
    (lambda: VideoCondition(IMG, True), ValueError, "frame_index must be an integer"),  # -1: from the end
    (lambda: VideoCondition(IMG, 1.5), ValueError, "frame_index must be an integer"),
    (lambda: VideoCondition(IMG, 0, strength=1.5), ValueError, "strength must be a number in \\[0, 1\\]"),
    (lambda: VideoCondition(IMG, 0, crf=60), ValueError, "crf must be an integer in \\[0, 51\\]"),
    (lambda: VideoCondition(np.zeros((64, 64)), 0), ValueError, "channels-last"),
    (lambda: VideoCondition(np.full((64, 64, 3), 2.0), 0), ValueError, "in \\[0, 1\\]"),
    (lambda: VideoCondition("/nonexistent/key.png", 0), FileNotFoundError, "file not found"),
    (lambda: VideoCondition(object(), 0), ValueError, "expected a path, PIL image"),
    (lambda: FrozenVideo("/nonexistent/clip.mp4"), FileNotFoundError, "file not found"),
    (lambda: AudioCondition(torch.zeros(2, 100)), ValueError, "needs its sample_rate"),
    (lambda: AudioCondition(torch.zeros(2, 1600), 16000, start_time=-1), ValueError, "start_time must be"),
    (lambda: AudioCondition(torch.zeros(2, 1600), 16000, start_time=5.0), ValueError, "outside the waveform"),
    (lambda: AudioCondition("/nonexistent/song.wav"), FileNotFoundError, "not found"),
    (lambda: AudioCondition(3.0, 16000), ValueError, "must be a path, tensor or array"),
    (lambda: TemporalRegion(0.5, 0.2), ValueError, "0 <= start_s < end_s"),
    (lambda: TemporalRegion(-0.1, 0.2), ValueError, "0 <= start_s < end_s"),
    (lambda: TemporalRegion(0.1, 0.2, ramp_s=-1), ValueError, "ramp_s must be >= 0"),
    (lambda: TemporalRegion(0.1, 0.2, video=False, audio=False), ValueError, "regenerates nothing"),
    (lambda: TemporalRegion("1", 2), ValueError, "must be a number of seconds"),
])
def test_bad_condition_arguments_fail_at_construction(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_unreadable_media_files_fail_with_their_name(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(ValueError, match="broken.mp4"):
        FrozenVideo(str(bad))
    wav = tmp_path / "broken.wav"
    wav.write_bytes(b"RIFF nonsense")
    with pytest.raises(ValueError, match="broken.wav"):
        AudioCondition(str(wav))
