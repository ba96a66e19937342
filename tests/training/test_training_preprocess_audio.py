"""`ltx2 preprocess` with audio tracks and with the LTX API / prompt cache, on real MP4s (PyAV-written, AAC tones)
and a real HTTP server on 127.0.0.1: the stored audio latents are what the pipeline's audio-to-video encoding
gives for the same file and window, and a text-to-video-with-audio run trains on them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from diffusers_ltx2.latents import layout as L
from diffusers_ltx2.training.data import PrecomputedDataset, read_entry
from diffusers_ltx2.training.preprocess import find_clips, preprocess_dataset

from media_files import frame_colours, tone, write_video
from training_fixtures import json_report
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


def _pipeline_audio_tokens(pipe, audio, **kw):
    """What the pipeline freezes as the audio of a 9-frame 24 fps call with `AudioCondition(audio, **kw)`."""
    from diffusers_ltx2.conditioning import AudioCondition, encode_audio_tokens

    g = pipe.clip_geometry(1, NUM_FRAMES, 64, 64, FPS)
    cond = AudioCondition(audio, **kw)
    return encode_audio_tokens(pipe, cond.clip_waveform(g), cond.sample_rate, g.audio_latent_length)


def _write_shifted(path, video_start: int, audio_start: int):
    """An MP4 whose first video frame is at `video_start / 24` s and first audio sample (before the AAC encoder
    delay) at `audio_start / 48000` s: streams that do not start together."""
    import av

    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=FPS, options={"crf": "0"})
        video.height = video.width = 64
        video.pix_fmt = "yuv444p"
        audio = container.add_stream("aac", rate=48000, layout="stereo")
        for i, f in enumerate(frame_colours(12, 64, 64)):
            frame = av.VideoFrame.from_ndarray(f, format="rgb24")
            frame.pts = video_start + i
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        wave = tone(1.0, 48000)
        for s in range(0, wave.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(wave[:, s : s + 1024]), format="fltp",
                                               layout="stereo")
            frame.sample_rate, frame.pts = 48000, audio_start + s
            for packet in audio.encode(frame):
                container.mux(packet)
        for packet in audio.encode():
            container.mux(packet)
    with av.open(str(path)) as container:
        v, a = container.streams.video[0], container.streams.audio[0]
        return float(v.start_time * v.time_base), float(a.start_time * a.time_base)


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
    expected = _pipeline_audio_tokens(ic_pipe, str(src / "tone.mp4"))
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



def test_text_to_video_with_audio_trains_on_the_preprocessed_audio(tmp_path, ic_pipe):
    from diffusers_ltx2.factory import TINY, build_components
    from diffusers_ltx2.training import objective
    from diffusers_ltx2.training import strategies as S
    from diffusers_ltx2.training.trainer import Trainer

    from training_fixtures import make_config

    out = tmp_path / "data"
    report = preprocess_dataset(ic_pipe, find_clips(_clips(tmp_path / "clips")), out, height=64, width=64,
                                num_frames=NUM_FRAMES, frame_rate=FPS, with_audio=True, progress=False)
    assert report.written == ["tone"]
    cfg = make_config(out, tmp_path / "out", {"name": "text_to_video", "with_audio": True},
                      optimization={"steps": 2, "learning_rate": 1e-3, "batch_size": 1})
    trainer = Trainer(cfg, transformer=build_components(TINY)["transformer"]).setup()
    batch = trainer.batch_for([0])
    noise = S.draw_step_noise(cfg, batch, S.sample_generators(0, [0]))
    inputs = S.build_inputs(cfg, trainer.unwrapped, batch, noise)
    stored = read_entry(out / "audio_latents" / "tone.safetensors")[0]["latents"]
    # the audio tokens trained on are the stored latents, and the loss has an audio term
    assert inputs.audio_target is not None and not inputs.isolate_audio
    torch.testing.assert_close(inputs.audio_target, noise.audio_noise - L.pack_audio(stored[None]))
    with torch.no_grad():
        video_pred, audio_pred = S.predict_velocity(trainer.unwrapped, inputs)
        loss = S.compute_loss(inputs, video_pred, audio_pred)
    video_term = objective.masked_mse(video_pred[:, : inputs.video.num_target_tokens], inputs.video_target,
                                      inputs.video_loss_mask)
    assert float(loss - video_term) > 0.01  # the audio MSE
    torch.testing.assert_close(loss - video_term, objective.masked_mse(audio_pred, inputs.audio_target,
                                                                       inputs.audio_loss_mask))
    result = trainer.train(progress=False)
    assert result.output.is_file()
    assert np.isfinite([float(r.split(",")[1]) for r in (tmp_path / "out" / "loss.csv").read_text().split()[1:]]).all()


def _wide_api(server, width):
    """The fake LTX API answering with `width`-channel contexts (the tiny model's), after its own checks."""
    def reply(request):
        checked = FakeLTXAPI.default(server, request)
        if checked.status != 200:
            return checked
        return Reply(200, conditioning_pickle(json.loads(request["body"])["prompt"], width=width))
    return reply


def test_preprocess_cli_encodes_captions_with_the_api_and_cache_then_trains_with_audio(tmp_path, monkeypatch, capsys,
                                                                                     tiny_components):
    import yaml

    from diffusers_ltx2.cli import main
    from diffusers_ltx2.loaders.identity import context_dims

    server = FakeLTXAPI()
    server.default = _wide_api(server, 64)
    server.thread.start()
    try:
        src = _clips(tmp_path / "clips")
        args = ["preprocess", str(src), "--model", "factory:tiny", "--height", "64", "--width", "64", "--num-frames",
                "9", "--with-audio", "--missing-audio", "video_only", "--api", "--model-id", MODEL_ID,
                "--base-url", server.url, "--cache-dir", str(tmp_path / "cache"), "--no-progress"]

        # checked before any model loads or any request: no key, a factory model without a model id, flags
        # of the other encoder
        monkeypatch.delenv("LTX_API_KEY", raising=False)
        assert main([*args, "--output", str(tmp_path / "x")]) == 2
        assert "LTX_API_KEY" in capsys.readouterr().err
        monkeypatch.setenv("LTX_API_KEY", KEY)
        no_id = [a for a in args if a not in ("--model-id", MODEL_ID)]
        assert main([*no_id, "--output", str(tmp_path / "x")]) == 2
        assert "--model-id" in capsys.readouterr().err
        assert main([*args, "--max-sequence-length", "64", "--output", str(tmp_path / "x")]) == 2
        assert "local encoding only" in capsys.readouterr().err
        assert server.requests == [] and not (tmp_path / "x").exists()

        assert main([*args, "--output", str(tmp_path / "data")]) == 0
        report = json_report(capsys.readouterr().out)
        assert report["written"] == ["ntsc", "silent_film", "tone"]
        assert [r["clip"] for r in report["no_audio"]] == ["ntsc", "silent_film"]
        assert len(server.requests) == 3
        cond, meta = read_entry(tmp_path / "data" / "conditions" / "tone.safetensors")
        reply = reference_tensor("a sound called tone", width=64)[0]
        vd = context_dims(tiny_components["transformer"])[0]
        torch.testing.assert_close(cond["video_context"], reply[:, :vd].float())
        torch.testing.assert_close(cond["audio_context"], reply[:, vd:].float())
        assert meta["model_identity"] == MODEL_ID

        # the cache serves a second dataset without asking the API again
        assert main([*args, "--output", str(tmp_path / "data2")]) == 0
        capsys.readouterr()
        assert len(server.requests) == 3
        cond2, _ = read_entry(tmp_path / "data2" / "conditions" / "tone.safetensors")
        torch.testing.assert_close(cond2["video_context"], cond["video_context"])
    finally:
        server.server.shutdown()
        server.server.server_close()

    cfg = {"model": {"model_path": "factory:tiny"}, "data": {"preprocessed_data_root": str(tmp_path / "data")},
           "training_strategy": {"name": "text_to_video", "with_audio": True}, "lora": {"rank": 2},
           "optimization": {"steps": 1}, "output_dir": str(tmp_path / "out")}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", str(tmp_path / "cfg.yaml"), "--no-progress"]) == 0
    assert json_report(capsys.readouterr().out)["steps"] == 1


def test_preprocess_cli_local_gemma_with_cache_gives_the_pipelines_embeddings(tmp_path, capsys, ic_pipe):
    from diffusers_ltx2.cli import main

    src = _clips(tmp_path / "clips")
    args = ["preprocess", str(src), "--model", "factory:tiny", "--height", "64", "--width", "64", "--num-frames", "9",
            "--cache-dir", str(tmp_path / "cache"), "--no-progress"]
    for out in ("data", "data2"):
        assert main([*args, "--output", str(tmp_path / out)]) == 0
        report = json_report(capsys.readouterr().out)
        assert report["written"] == ["ntsc", "silent_film", "tone"]
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 3
    # factory:tiny is the fixture's model (seed 0): the stored contexts are the pipeline call's own
    expected = ic_pipe.encode_text_contexts(["a sound called tone"], None, need_negative=False, device="cpu").positive
    for out in ("data", "data2"):
        cond, meta = read_entry(tmp_path / out / "conditions" / "tone.safetensors")
        torch.testing.assert_close(cond["video_context"], expected.video_context[0])
        torch.testing.assert_close(cond["audio_context"], expected.audio_context[0])
        assert meta["model_identity"] in ic_pipe.model_identities()
    assert main([*args, "--output", str(tmp_path / "x"), "--enhance-prompt"]) == 2
    assert "--enhance-prompt applies with --api only" in capsys.readouterr().err


def test_the_audio_window_starts_at_the_first_frame_when_the_streams_do_not_start_together(tmp_path, ic_pipe):
    from diffusers_ltx2.media import load_audio

    src = tmp_path / "clips"
    src.mkdir()
    video_at, audio_at = _write_shifted(src / "early_audio.mp4", video_start=6, audio_start=0)
    assert video_at == 0.25 and audio_at == 0.0
    video_at2, audio_at2 = _write_shifted(src / "late_audio.mp4", video_start=0, audio_start=12000)
    assert video_at2 == 0.0 and 0.2 < audio_at2 < 0.25
    for name in ("early_audio", "late_audio"):
        (src / f"{name}.txt").write_text(name)
    out = tmp_path / "data"
    report = preprocess_dataset(ic_pipe, find_clips(src), out, height=64, width=64, num_frames=NUM_FRAMES,
                                frame_rate=FPS, with_audio=True, progress=False)
    assert report.written == ["early_audio", "late_audio"]
    stored = {n: L.pack_audio(read_entry(out / "audio_latents" / f"{n}.safetensors")[0]["latents"][None])
              for n in report.written}
    # audio before the first frame is not the clip's: A2V from the first frame's time
    torch.testing.assert_close(stored["early_audio"],
                               _pipeline_audio_tokens(ic_pipe, str(src / "early_audio.mp4"), start_time=0.25))
    assert not torch.allclose(stored["early_audio"], _pipeline_audio_tokens(ic_pipe, str(src / "early_audio.mp4")))
    # audio starting after the first frame: silence until it starts
    wave, rate = load_audio(str(src / "late_audio.mp4"))
    padded = torch.nn.functional.pad(wave, (round(audio_at2 * rate), 0))
    torch.testing.assert_close(stored["late_audio"], _pipeline_audio_tokens(ic_pipe, padded, sample_rate=rate))


def test_preprocess_cli_api_on_a_pipeline_folder_needs_no_gemma(tmp_path, monkeypatch, capsys, tiny_components):
    import shutil

    from diffusers_ltx2 import LTX2ICLoRAPipeline, LTX2Scheduler
    from diffusers_ltx2.cli import main

    folder = tmp_path / "model"
    LTX2ICLoRAPipeline(scheduler=LTX2Scheduler(), model_identity=MODEL_ID, **tiny_components).save_pretrained(folder)
    shutil.rmtree(folder / "text_encoder")  # Gemma absent: --api must neither need nor load it
    src = _clips(tmp_path / "clips")
    args = ["preprocess", str(src), "--model", str(folder), "--height", "64", "--width", "64", "--num-frames", "9",
            "--no-progress"]
    assert main([*args, "--output", str(tmp_path / "x")]) == 2  # local encoding needs the text encoder
    assert "text_encoder" in capsys.readouterr().err and not (tmp_path / "x").exists()

    server = FakeLTXAPI()
    server.default = _wide_api(server, 64)
    server.thread.start()
    monkeypatch.setenv("LTX_API_KEY", KEY)
    try:  # the model id comes from the folder
        assert main([*args, "--api", "--base-url", server.url, "--output", str(tmp_path / "data")]) == 0
    finally:
        server.server.shutdown()
        server.server.server_close()
    assert json_report(capsys.readouterr().out)["written"] == ["ntsc", "silent_film", "tone"]
    assert len(server.requests) == 3
    assert read_entry(tmp_path / "data" / "conditions" / "tone.safetensors")[1]["model_identity"] == MODEL_ID
