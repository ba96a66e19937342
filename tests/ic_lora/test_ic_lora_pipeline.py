"""`LTX2ICLoRAPipeline` on the tiny factory: reference geometry, control-video fitting and errors, the union
workflow end to end (canny-preprocessed control video file -> MP4 with audio), `from_pipe`, and `ltx2 control`."""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch

from diffusers_ltx2 import ClassifierFreeGuidance, LTX2AudioVideoPipeline, LTX2ICLoRAPipeline, LTX2Scheduler
from diffusers_ltx2.control import CannyPreprocessor

from test_ic_lora_loading import write_lora

CLIP = dict(height=128, width=128, num_frames=9, frame_rate=24.0)
FAST = dict(num_inference_steps=2, max_sequence_length=128)


@pytest.fixture()
def ic_pipe(tiny_components):
    return LTX2ICLoRAPipeline(scheduler=LTX2Scheduler(), guider=ClassifierFreeGuidance(1.0, 1.0), **tiny_components)


def moving_square(frames=9, size=96, side=32) -> np.ndarray:
    """(F, H, W, 3) uint8: a white square moving right on a dark background."""
    video = np.full((frames, size, size, 3), 20, dtype=np.uint8)
    for i in range(frames):
        x = 8 + 4 * i
        video[i, 32 : 32 + side, x : x + side] = 235
    return video


def write_video(path, frames: np.ndarray, fps=24):
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def test_reference_tokens_quarter_at_factor_2_and_span_target(ic_pipe, tmp_path, reference_spy):
    control = torch.rand(9, 3, 128, 128)
    counts = {}
    for factor in (1, 2):
        ic_pipe("a cat", control_video=control, reference_downscale_factor=factor, output_type="latent",
                **CLIP, **FAST)
        target, full = reference_spy[-1]
        n = target.num_target_tokens
        counts[factor] = full.latent.shape[1] - n
        ref, tgt = full.coords[:, :, n:], target.coords
        for axis in (1, 2):  # h and w boxes of the reference cover the same pixel range as the target's
            assert ref[0, axis, :, 0].min() == tgt[0, axis, :, 0].min()
            assert ref[0, axis, :, 1].max() == tgt[0, axis, :, 1].max()
        # same latent frames at the same times (time is not scaled)
        assert torch.equal(ref[0, 0].unique(dim=0), tgt[0, 0].unique(dim=0))
        assert torch.equal(full.denoise_mask[:, n:], torch.zeros(1, counts[factor]))
    assert counts[1] == 32 and counts[2] == counts[1] // 4


def test_factor_from_lora_metadata_is_used(ic_pipe, tmp_path, reference_spy):
    path = tmp_path / "ic.safetensors"
    write_lora(path, ic_pipe.transformer, metadata={"reference_downscale_factor": "2"})
    ic_pipe.load_lora_weights(str(path), adapter_name="ic")
    ic_pipe("a cat", control_video=torch.rand(9, 3, 128, 128), output_type="latent", **CLIP, **FAST)
    before, after = reference_spy[-1]
    assert after.latent.shape[1] - before.num_target_tokens == 8  # 2 x 2 x 2 at f = 2
    other = LTX2AudioVideoPipeline.from_pipe(ic_pipe)
    back = LTX2ICLoRAPipeline.from_pipe(other)
    assert back.reference_downscale_factor == 2 and back.transformer is ic_pipe.transformer


def test_union_workflow_end_to_end_with_canny(ic_pipe, tmp_path):
    """Official-format union LoRA (factor 2 in its metadata) + canny-preprocessed control video file -> MP4."""
    from diffusers_ltx2 import export_to_video_with_audio

    control_path = tmp_path / "control.mp4"
    write_video(control_path, moving_square(frames=13, size=96))
    lora = tmp_path / "union.safetensors"
    write_lora(lora, ic_pipe.transformer, metadata={"reference_downscale_factor": "2"}, connector=ic_pipe.connectors)
    ic_pipe.load_lora_weights(str(lora), adapter_name="union")
    seen_frames = {}
    canny = CannyPreprocessor()

    def preprocess(frames):
        seen_frames["in"] = frames
        seen_frames["out"] = canny(frames)
        return seen_frames["out"]

    out = ic_pipe("a dog runs", control_video=str(control_path), control_preprocessor=preprocess,
                  conditioning_attention_strength=0.8, generator=torch.Generator().manual_seed(0), output_type="np",
                  **CLIP, **FAST)
    assert seen_frames["in"].shape == (9, 3, 64, 64)  # trimmed to 9 frames, fitted to (H/2, W/2)
    edges = seen_frames["out"]
    assert set(edges.unique().tolist()) == {0.0, 1.0} and 0 < edges.mean() < 0.3
    assert out.frames.shape == (1, 9, 128, 128, 3) and np.isfinite(out.frames).all()
    assert out.audio.shape[:2] == (1, 2)
    mp4 = export_to_video_with_audio(out.frames[0], out.audio[0], str(tmp_path / "out.mp4"), fps=24,
                                     sample_rate=out.sample_rate)
    with av.open(str(mp4)) as f:
        assert len(f.streams.video) == 1 and len(f.streams.audio) == 1


def test_control_video_fitting(ic_pipe, caplog):
    wide = torch.rand(30, 3, 50, 100)
    fitted = ic_pipe.fit_control_video(wide, 17, 64, 64)
    assert fitted.shape == (17, 3, 64, 64)
    short = ic_pipe.fit_control_video(list(map(lambda a: __import__("PIL.Image").Image.fromarray(a),
                                               moving_square(12))), 17, 64, 64)
    assert short.shape[0] == 9 and "usable frames" in caplog.text
    single = ic_pipe.fit_control_video(np.zeros((64, 64, 3), np.uint8), 17, 64, 64)
    assert single.shape == (1, 3, 64, 64)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(control_video=None, control_preprocessor=lambda f: f), "need a control_video"),
        (dict(control_video=[]), "empty list"),
        (dict(control_video=torch.rand(9, 4, 64, 64)), r"\(F, 3, H, W\)"),
        (dict(control_video=torch.rand(9, 3, 64, 64) * 3), r"in \[0, 1\]"),
        (dict(control_video="missing.mp4"), "not found"),
        (dict(control_video=torch.rand(9, 3, 64, 64), height=96, reference_downscale_factor=2), "multiples of 64"),
        (dict(control_video=torch.rand(9, 3, 64, 64), control_strength=1.5), "control_strength"),
        (dict(control_video=torch.rand(9, 3, 64, 64), conditioning_attention_strength=-0.1), "attention_strength"),
        (dict(control_video=torch.rand(9, 3, 64, 64), control_preprocessor=lambda f: f[:, :1]), "must return"),
        (dict(control_video=torch.rand(9, 3, 64, 64), conditioning_attention_mask=torch.ones(1, 5)), "mask"),
    ],
)
def test_unusable_inputs_raise_clear_errors(ic_pipe, kwargs, message):
    args = {**CLIP, **FAST, "output_type": "latent", **kwargs}
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        ic_pipe("a cat", **args)


def test_attention_mask_regions(ic_pipe, reference_spy):
    """A pixel-space mask (left half 1, right half 0) times the strength gives per-token biases."""
    mask = torch.zeros(1, 1, 9, 128, 128)
    mask[..., :64] = 1.0
    ic_pipe("a cat", control_video=torch.rand(9, 3, 128, 128), conditioning_attention_mask=mask,
            conditioning_attention_strength=0.5, output_type="latent", **CLIP, **FAST)
    full, n = reference_spy[-1][1], reference_spy[-1][0].num_target_tokens
    cross = torch.exp(full.self_attention_bias[0, 0, n:])  # a generated token's weights on the reference
    assert torch.allclose(cross.unique(), torch.tensor([0.0, 0.5]))


def test_cli_control(tmp_path, tiny_components, capsys):
    from diffusers_ltx2.cli import main

    model = tmp_path / "model"
    LTX2ICLoRAPipeline(scheduler=LTX2Scheduler(), **tiny_components).save_pretrained(model)
    control = tmp_path / "control.mp4"
    write_video(control, moving_square(frames=9, size=64))
    lora = tmp_path / "ic.safetensors"
    write_lora(lora, tiny_components["transformer"], metadata={"reference_downscale_factor": "2"})
    out = tmp_path / "out.mp4"
    base = ["control", "--model", str(model), "--lora", str(lora), "--control-video", str(control),
            "--prompt", "a cat", "--output", str(out), "--num-frames", "9", "--height", "64", "--width", "64",
            "--steps", "1", "--dtype", "fp32", "--device", "cpu"]
    assert main(base + ["--preprocess", "depth"]) == 2
    assert "needs --preprocess-model" in capsys.readouterr().err
    rc = main(base + ["--preprocess", "canny", "--cfg", "1", "--stg", "0", "--modality-scale", "1"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "reference downscale factor: 2" in captured.out
    with av.open(str(out)) as f:
        assert f.streams.video[0].frames in (0, 9) and len(f.streams.audio) == 1
