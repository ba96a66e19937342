"""`ltx2 preprocess` with audio tracks and with the LTX API / prompt cache, on real MP4s (PyAV-written, AAC tones)
and a real HTTP server on 127.0.0.1: the stored audio latents are what the pipeline's audio-to-video encoding
gives for the same file and window, and a text-to-video-with-audio run trains on them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from diffusers_ltx2.pipelines import latents as L
from diffusers_ltx2.training.data import PrecomputedDataset, read_entry
from diffusers_ltx2.training.preprocess import find_clips, preprocess_dataset

from media_files import frame_colours, tone, write_video
from test_api_encoder import KEY, MODEL_ID, FakeLTXAPI, Reply, conditioning_pickle, reference_tensor

NUM_FRAMES, FPS = 9, 24


def _clips(folder):
    """`tone` (24 fps, stereo AAC 48 kHz), `silent_film` (no audio track) and `ntsc` (30 fps, mono 44.1 kHz)."""
    folder.mkdir(parents=True, exist_ok=True)
    frames = frame_colours(12, 64, 64)
    write_video(folder / "tone.mp4", frames, fps=FPS, audio=tone(1.0, 48000), sample_rate=48000)
    write_video(folder / "silent_film.mp4", frames, fps=FPS)
    write_video(folder / "ntsc.mp4", frames, fps=30, audio=tone(1.0, 44100, freqs=(330.0,)), sample_rate=44100)
    for name in ("tone", "silent_film", "ntsc"):
        (folder / f"{name}.txt").write_text(f"a sound called {name}")
    return folder


@pytest.fixture()
def ic_pipe(tiny_components):
    from diffusers_ltx2 import LTX2ICLoRAPipeline, LTX2Scheduler

    return LTX2ICLoRAPipeline(scheduler=LTX2Scheduler(), **tiny_components)


def _pipeline_audio_tokens(pipe, path):
    """What the pipeline freezes as the audio of a 9-frame 24 fps call with `AudioCondition(path)`."""
    from diffusers_ltx2.conditioning import AudioCondition, encode_audio_tokens
    from diffusers_ltx2.conditioning.apply import geometry_for

    g = geometry_for(pipe, 1, NUM_FRAMES, 64, 64, FPS)
    cond = AudioCondition(str(path))
    return encode_audio_tokens(pipe, cond.clip_waveform(g), cond.sample_rate, g.audio_latent_length)


def test_audio_latents_are_what_audio_condition_encodes_and_clips_without_audio_follow_the_policy(tmp_path, ic_pipe):
    src = _clips(tmp_path / "clips")
    clips = find_clips(src)
    kw = dict(height=64, width=64, num_frames=NUM_FRAMES, frame_rate=FPS, progress=False)

    # a dataset made without audio first; running again with audio adds only audio_latents/
    out = tmp_path / "data"
    assert preprocess_dataset(ic_pipe, clips, out, **kw).written == ["ntsc", "silent_film", "tone"]
    latents_file = out / "latents" / "tone.safetensors"
    before = latents_file.stat().st_mtime_ns
    report = preprocess_dataset(ic_pipe, clips, out, with_audio=True, **kw)
    assert report.written == ["tone"] and report.existing == [] and report.no_audio == []
    reasons = dict(report.skipped)
    assert reasons["silent_film"] == "audio: no audio track"
    assert "30 fps" in reasons["ntsc"] and "--frame-rate 30" in reasons["ntsc"]
    assert latents_file.stat().st_mtime_ns == before  # the video was not encoded again

    stored = read_entry(out / "audio_latents" / "tone.safetensors")[0]["latents"]
    expected = _pipeline_audio_tokens(ic_pipe, src / "tone.mp4")
    assert stored.shape == (2, 9, 16) and expected.shape == (1, 9, 32)  # round(9 / 24 * 25) latent frames
    # the trainer packs (C, T, M) back into the tokens the pipeline uses
    torch.testing.assert_close(L.pack_audio(stored[None]), expected, rtol=0, atol=0)
    # the sound was read: not what silence encodes to (tone is half amplitude, so far from zero)
    from diffusers_ltx2.conditioning import encode_audio_tokens

    silence = encode_audio_tokens(ic_pipe, torch.zeros(2, 18000), 48000, 9)
    assert (expected - silence).abs().mean() > 0.05

    # video_only: clips without usable audio keep their video, are reported, and audio training leaves them out
    kept = tmp_path / "kept"
    report = preprocess_dataset(ic_pipe, clips, kept, with_audio=True, missing_audio="video_only", **kw)
    assert report.written == ["ntsc", "silent_film", "tone"] and dict(report.no_audio).keys() == {"ntsc", "silent_film"}
    assert json.loads((kept / "preprocess_report.json").read_text())["no_audio"][0]["clip"] == "ntsc"
    assert PrecomputedDataset(kept, with_audio=True).names == ["tone"]
    assert PrecomputedDataset(kept).names == ["ntsc", "silent_film", "tone"]

    with pytest.raises(ValueError, match="missing_audio"):
        preprocess_dataset(ic_pipe, clips, tmp_path / "bad", with_audio=True, missing_audio="ignore", **kw)
    assert not (tmp_path / "bad").exists()

