"""IC-LoRA reference (control) videos in sliding-window long video: a whole-clip `ReferenceVideo` cut to each
window's frames (overlap frames, a shortened last window, the downscale and temporal scale factors, attention
masks), the first window of a windowed IC-LoRA run equal to a one-window IC-LoRA call, every window's reference
tokens equal to a one-window call's on its frames, refusals before any model runs, and `ltx2 control --window`."""

from __future__ import annotations

import subprocess
import sys

import av
import numpy as np
import pytest
import torch

from diffusers_ltx2 import ClassifierFreeGuidance, LTX2AudioVideoPipeline, LTX2ICLoRAPipeline, LTX2Scheduler
from diffusers_ltx2.conditioning import ClipGeometry, ReferenceVideo, VideoCondition
from diffusers_ltx2.long_video import plan_windows
from diffusers_ltx2.long_video.routing import route_conditions

from test_ic_lora_loading import write_lora
from test_ic_lora_pipeline import write_video
from test_long_video import RUN, THREE, CallSpy, _gen
from test_long_video_cli import _CHECK


def _control(frames: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    """`(F, 3, size, size)` in [0, 1], different in every frame: at `size` = height / 2 the reference is fitted
    without resizing (downscale factor 2 on a 64 x 64 clip), so fitted frames are source frames."""
    return torch.rand(frames, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.fixture()
def ic_pipe(tiny_components, tmp_path):
    """The IC-LoRA pipeline with a tiny IC-LoRA loaded whose metadata says reference downscale factor 2."""
    pipe = LTX2ICLoRAPipeline(scheduler=LTX2Scheduler(), guider=ClassifierFreeGuidance(1.0, 1.0), **tiny_components)
    lora = tmp_path / "ic.safetensors"
    write_lora(lora, pipe.transformer, metadata={"reference_downscale_factor": "2"})
    pipe.load_lora_weights(str(lora), adapter_name="ic")
    assert pipe.reference_downscale_factor == 2
    return pipe


def test_reference_is_cut_to_each_windows_frames():
    windows = plan_windows(65, 25, 16)
    # overlapping windows, the last one shortened to end on the clip's last frame (64)
    assert [(w.first_frame, w.num_frames) for w in windows] == [(0, 25), (16, 25), (32, 25), (48, 17)]
    whole = _control(70)  # longer than the clip: each window takes its own frames only
    mask = torch.rand(1, 1, 65, 64, 64)

    def edges(frames):
        return frames

    ref = ReferenceVideo(whole, 0.9, 2, 0.7, mask, preprocessor=edges)
    routed = route_conditions([ref], windows, ClipGeometry(1, 65, 64, 64, 24.0))
    for w, conditions in zip(windows, routed):
        (r,) = conditions
        part = whole[w.first_frame:w.first_frame + w.num_frames]
        assert isinstance(r, ReferenceVideo) and r is not ref and torch.equal(r.frames, part)
        assert (r.strength, r.downscale_factor, r.attention_strength, r.preprocessor) == (0.9, 2, 0.7, edges)
        fitted = r.fit(ClipGeometry(1, w.num_frames, 64, 64, 24.0))  # what the window's call encodes
        assert fitted.shape == (w.num_frames, 3, 32, 32) and torch.equal(fitted, part)  # at (H / 2, W / 2)
        assert torch.equal(r.attention_mask, mask[:, :, w.first_frame:w.first_frame + w.num_frames])
    # the overlap frames 16..24 are in windows 0 and 1 (both condition them on the same control frames)
    assert torch.equal(routed[1][0].frames[:9], routed[0][0].frames[16:])
    assert ref.frames.shape[0] == 70 and ref.attention_mask is mask  # the whole-clip condition is unchanged


def test_reference_with_a_temporal_scale_factor_takes_every_nth_frame_of_its_window():
    windows = plan_windows(57, 25, 16)
    whole = _control(57)
    static = torch.rand(1, 1, 1, 64, 64)  # one frame for all: kept as is
    per_frame = torch.rand(1, 29, 64, 64)  # (B, F, H, W) over the reference's frames (every 2nd of the clip)
    for mask in (static, per_frame):
        ref = ReferenceVideo(whole, downscale_factor=2, attention_mask=mask, temporal_scale_factor=2)
        routed = route_conditions([ref], windows, ClipGeometry(1, 57, 64, 64, 24.0))
        for w, (r,) in zip(windows, routed):
            fitted = r.fit(ClipGeometry(1, 25, 64, 64, 24.0))
            # a 25-frame window at factor 2 wants 13 frames, 9 of them usable (8k + 1): source frames 0, 2, .., 16
            assert torch.equal(fitted, whole[w.first_frame:w.first_frame + 17:2])
            if mask is static:
                assert r.attention_mask is static
            else:
                assert torch.equal(r.attention_mask, per_frame[:, w.first_frame // 2:w.first_frame // 2 + 13])


def test_first_window_equals_a_one_window_ic_lora_call(ic_pipe, monkeypatch):
    control = _control(57)
    spy = CallSpy(ic_pipe, monkeypatch)
    long = ic_pipe.generate_long_video("a dancer", control_video=control, control_strength=0.9,
                                       conditioning_attention_strength=0.8, output_type="latent", generator=_gen(),
                                       **THREE, **RUN)
    plain = ic_pipe("a dancer", control_video=control[:25], control_strength=0.9,
                    conditioning_attention_strength=0.8, num_frames=25, output_type="latent", generator=_gen(),
                    **RUN)
    assert len(spy.calls) == 4 and all(call.get("control_video") is None for call in spy.calls[:3])
    first = spy.outputs[0]
    assert torch.equal(first.frames, plain.frames) and torch.equal(first.audio, plain.audio)
    assert long.frames.shape[2] == 8
    kept = 4 - plan_windows(57, 25, 16)[1].blend_latents  # latents no later window blends into
    assert torch.equal(long.frames[:, :, :kept], plain.frames[:, :, :kept].cpu())


def test_every_window_gets_the_reference_under_its_frames(ic_pipe, monkeypatch, reference_spy):
    """Through `conditions=` on the base pipeline (sharing the IC-LoRA-loaded transformer): each window's call
    carries the reference's frames under its own, and the reference tokens (values, positions, denoise mask) it
    appends equal those of a one-window IC-LoRA call given that part as its control video; a keyframe and the
    overlap guide compose with it."""
    control = _control(57)
    base = LTX2AudioVideoPipeline.from_pipe(ic_pipe)
    assert base.transformer is ic_pipe.transformer
    spy = CallSpy(base, monkeypatch)
    key = np.random.RandomState(0).randint(0, 255, (64, 64, 3), dtype=np.uint8)
    out = base.generate_long_video("a dancer", conditions=[ReferenceVideo(control, 0.9, 2), VideoCondition(key, 40)],
                                   output_type="latent", generator=_gen(), **THREE, **RUN)
    assert out.frames.shape[2] == 8
    windowed = list(reference_spy)
    windows = plan_windows(57, 25, 16)
    assert len(spy.calls) == len(windowed) == len(windows) == 3
    for call, w, (before, after) in zip(spy.calls, windows, windowed):
        refs = [c for c in call["conditions"] if isinstance(c, ReferenceVideo)]
        part = control[w.first_frame:w.first_frame + w.num_frames]
        assert len(refs) == 1 and torch.equal(refs[0].frames, part)
        ic_pipe("a dancer", control_video=part, control_strength=0.9, num_frames=w.num_frames,
                output_type="latent", generator=_gen(), **RUN)
        one_before, one_after = reference_spy[-1]
        n, m = before.latent.shape[1], one_before.latent.shape[1]  # tokens before the reference's
        assert after.latent.shape[1] - n == one_after.latent.shape[1] - m == 4 * 1 * 1  # 4 latent frames at 32x32
        assert torch.equal(after.latent[:, n:], one_after.latent[:, m:])
        assert torch.equal(after.coords[:, :, n:], one_after.coords[:, :, m:])
        assert torch.equal(after.denoise_mask[:, n:], one_after.denoise_mask[:, m:])


def test_diffusers_reference_conditions_and_a_first_image_through_the_windows(ic_pipe, monkeypatch):
    """diffusers' `reference_conditions=[LTX2ReferenceCondition(frames, strength)]` (uint8 frames) for the whole
    clip reach every window as its part; `image=` (frame 0) only the first window."""
    from diffusers.pipelines.ltx2.pipeline_ltx2_ic_lora import LTX2ReferenceCondition

    frames = (_control(57) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()  # (F, H, W, 3)
    image = np.full((64, 64, 3), 128, np.uint8)
    spy = CallSpy(ic_pipe, monkeypatch)
    ic_pipe.generate_long_video("a dancer", reference_conditions=[LTX2ReferenceCondition(frames, 0.9)], image=image,
                                output_type="latent", generator=_gen(), **THREE, **RUN)
    whole = torch.from_numpy(frames).permute(0, 3, 1, 2)  # 8-bit frames are kept 8-bit until fitted
    for call, w in zip(spy.calls, plan_windows(57, 25, 16)):
        (ref,) = [c for c in call["conditions"] if isinstance(c, ReferenceVideo)]
        assert ref.strength == 0.9 and ref.downscale_factor == 2
        assert torch.equal(ref.frames, whole[w.first_frame:w.first_frame + w.num_frames])
        assert (call["image"] is image) == (w.index == 0)


@pytest.mark.parametrize("kwargs,match", [
    (dict(conditions=[ReferenceVideo(_control(49), downscale_factor=2)]),
     r"has 49 frame\(s\), the clip 57: .*use num_frames 49 or fewer"),
    (dict(control_video=_control(33)), r"has 33 frame\(s\), the clip 57"),
    (dict(conditions=[ReferenceVideo(latents=torch.zeros(1, 128, 8, 1, 1))]), "not its latents"),
    (dict(control_video=_control(57), conditioning_attention_mask=torch.ones(1, 1, 33, 64, 64)),
     "conditioning_attention_mask has 33 frame"),
    (dict(conditions=[ReferenceVideo(_control(57), attention_mask=torch.ones(1, 1, 19, 64, 64),
                                     temporal_scale_factor=3)]), "cannot be cut at window 1's first frame 16"),
    (dict(control_video=_control(57), height=96), "multiples of 64"),
    (dict(control_video=_control(57), control_strength=1.5), "control_strength"),
])
def test_reference_refusals_before_any_model_runs(ic_pipe, monkeypatch, kwargs, match):
    monkeypatch.setattr(ic_pipe.transformer, "forward", lambda *a, **k: pytest.fail("the model ran"))
    monkeypatch.setattr(ic_pipe.vae, "encode", lambda *a, **k: pytest.fail("the VAE ran"))
    call = dict(prompt="a dancer", **THREE, **RUN)
    call.update(kwargs)
    with pytest.raises(ValueError, match=match):
        ic_pipe.generate_long_video(**call)


def _square_video(frames: int, size: int = 64) -> np.ndarray:
    """(F, H, W, 3) uint8: a bright square moving right (wrapping) on a dark background."""
    video = np.full((frames, size, size, 3), 20, dtype=np.uint8)
    for i in range(frames):
        x = (4 * i) % (size - 16)
        video[i, 24:40, x:x + 16] = 235
    return video


@pytest.fixture(scope="module")
def control_files(tmp_path_factory, tiny_components_master):
    """A tiny model folder, an IC-LoRA with factor 2 in its metadata, 57- and 33-frame control videos."""
    folder = tmp_path_factory.mktemp("control")
    LTX2ICLoRAPipeline(scheduler=LTX2Scheduler(), **tiny_components_master).save_pretrained(folder / "model")
    write_lora(folder / "ic.safetensors", tiny_components_master["transformer"],
               metadata={"reference_downscale_factor": "2"})
    for n in (57, 33):
        write_video(folder / f"control{n}.mp4", _square_video(n))
    return folder


def _control_argv(folder, out, control="control57.mp4", *extra):
    return ["control", "--model", str(folder / "model"), "--lora", str(folder / "ic.safetensors"),
            "--control-video", str(folder / control), "--prompt", "a cat", "--output", str(out), "--num-frames",
            "57", "--height", "64", "--width", "64", "--steps", "1", "--dtype", "fp32", "--device", "cpu",
            "--cfg", "1", "--stg", "0", "--modality-scale", "1", "--no-progress", *extra]


def test_cli_control_in_sliding_windows(control_files, tmp_path, monkeypatch, capsys):
    from diffusers_ltx2.cli import main

    references = []
    original = LTX2ICLoRAPipeline.__call__

    def spy(self, *args, **kwargs):
        references.append([c for c in kwargs["conditions"] if isinstance(c, ReferenceVideo)])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(LTX2ICLoRAPipeline, "__call__", spy)
    out = tmp_path / "long.mp4"
    rc = main(_control_argv(control_files, out, "control57.mp4", "--window", "25", "--overlap", "16"))
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "57 frames in 3 windows of 25 frames (overlap 16): 25, 25, 25 frames" in captured.out
    assert "reference downscale factor: 2" in captured.out
    assert [[(r.frames.shape[0], r.downscale_factor) for r in refs] for refs in references] == [[(25, 2)]] * 3
    # window 1's reference is the control video's frames 16..40 (as decoded from the file)
    assert torch.equal(references[1][0].frames[:9], references[0][0].frames[16:])
    with av.open(str(out)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 57 and len(container.streams.audio) == 1


def test_cli_control_refuses_a_control_video_shorter_than_the_clip(control_files, tmp_path, monkeypatch, capsys):
    from diffusers_ltx2.cli import main

    monkeypatch.setattr(LTX2ICLoRAPipeline, "from_pretrained", lambda *a, **k: pytest.fail("the model loaded"))
    rc = main(_control_argv(control_files, tmp_path / "o.mp4", "control33.mp4", "--window", "25", "--overlap", "16"))
    err = capsys.readouterr().err
    assert rc == 2 and "has 33 frames, the clip 57" in err and "--num-frames 33 or fewer" in err
    assert len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o.mp4").exists()


@pytest.mark.parametrize("extra,message", [
    (["--window", "120"], "--window must be 8k+1"),
    (["--overlap", "16"], "--overlap applies to sliding windows: add --window"),
    (["--window", "25", "--overlap", "24"], "window (25 frames) must be at least overlap + 9"),
])
def test_cli_control_window_flags_are_checked_before_torch(control_files, tmp_path, extra, message):
    argv = _control_argv(control_files, tmp_path / "o.mp4", "control57.mp4", *extra)
    done = subprocess.run([sys.executable, "-c", _CHECK, *argv], capture_output=True, text=True, cwd=tmp_path)
    assert "CODE 2 HEAVY []" in done.stdout, done.stdout + done.stderr
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


@pytest.mark.slow
def test_readme_ic_lora_long_video_example_runs_as_written(control_files, tmp_path, monkeypatch, capsys):
    """The README's long-video IC-LoRA Python example, with only the model folder swapped for the tiny model and
    `long.mp4` (the clip the README's commands make) written here as a 481-frame control video."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = text[text.index("## Long video"):]
    section = section[:section.index("\n## ")]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    code = next(b for b in blocks if "LTX2ICLoRAPipeline" in b)
    assert 'from_pretrained("tiny")' in code and '"long.mp4"' in code, "the README example changed; update this test"
    monkeypatch.chdir(tmp_path)
    write_video(tmp_path / "long.mp4", _square_video(481))
    exec(compile(code.replace('"tiny"', repr(str(control_files / "model"))), "README.md", "exec"),
         {"__name__": "readme_long_video_ic"})
    assert capsys.readouterr().out.strip().splitlines()[-1] == "481"
