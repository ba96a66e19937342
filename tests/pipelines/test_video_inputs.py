"""Our outputs are accepted as our inputs, and every video input takes what diffusers' `VideoProcessor` takes:
one normalisation (`media.as_frames`) behind `VideoCondition`, `FrozenVideo`, `control_video`, `extend` and
`image=`; `VideoCondition(frame_index=-1)` and retake windows in frames; `image=` on the official image path."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers.video_processor import VideoProcessor

import ltx_reference  # noqa: F401  (stubs torchaudio before ltx-pipelines imports ltx-core)
from diffusers_ltx2.conditioning import AudioCondition, FrozenVideo, TemporalRegion, VideoCondition
from diffusers_ltx2.conditioning.frames import to_vae_pixels
from diffusers_ltx2.control.video import to_frames
from diffusers_ltx2.factory import TINY_CLIP
from diffusers_ltx2.media import as_frames
from diffusers_ltx2.pipelines.images import image_pixels

CLIP = dict(TINY_CLIP, num_frames=17)  # 64x64, 17 frames: 3 latent frames of 2x2
H, W = CLIP["height"], CLIP["width"]


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _run(pipe, steps=2, **kw):
    return pipe("a cat", generator=_gen(), num_inference_steps=steps, **{**CLIP, "output_type": "latent", **kw})


@pytest.fixture(scope="module")
def outputs(tiny_components_master):
    """One 9-frame clip as each `output_type` returns it (the same seed: the same pixels)."""
    from diffusers_ltx2 import ClassifierFreeGuidance, LTX2AudioVideoPipeline, LTX2Scheduler

    pipe = LTX2AudioVideoPipeline(scheduler=LTX2Scheduler(), guider=ClassifierFreeGuidance(1.0, 1.0),
                                  **tiny_components_master)
    return {t: pipe("a cat", generator=_gen(3), num_inference_steps=1, output_type=t, **TINY_CLIP).frames
            for t in ("pil", "np", "pt")}


def _as_float(frames) -> torch.Tensor:
    return torch.from_numpy(frames).float() / 255 if isinstance(frames, np.ndarray) else frames


# -- one normalisation, diffusers' VideoProcessor as the peer ----------------------------------------------------
def _video_forms(seed=0, frames=5, height=32, width=48):
    """A clip in each form diffusers' `VideoProcessor.preprocess_video` documents."""
    rng = np.random.default_rng(seed)
    u8 = rng.integers(0, 256, (frames, height, width, 3), dtype=np.uint8)
    f32 = u8.astype(np.float32) / 255
    pt = torch.from_numpy(f32).permute(0, 3, 1, 2)  # (F, C, H, W), diffusers' tensor layout
    return u8, {
        "pil list": [PIL.Image.fromarray(f) for f in u8],
        "np (F, H, W, C)": f32,
        "pt (F, C, H, W)": pt,
        "np batch (1, F, H, W, C)": f32[None],
        "pt batch (1, F, C, H, W)": pt[None],
        "list of np frames": list(f32),
        "list of pt frames": list(pt),
        "pil batch [[...]]": [[PIL.Image.fromarray(f) for f in u8]],
    }


@pytest.mark.parametrize("form", list(_video_forms()[1]))
def test_as_frames_takes_what_diffusers_video_processor_takes(form):
    u8, forms = _video_forms()
    source = forms[form]
    theirs = VideoProcessor(vae_scale_factor=8).preprocess_video(source, height=32, width=48)  # (1, C, F, H, W)
    ours = _as_float(as_frames(source, "video")) * 2 - 1
    assert ours.shape == (5, 32, 48, 3)
    torch.testing.assert_close(ours.permute(3, 0, 1, 2)[None], theirs, rtol=0, atol=1e-6)
    torch.testing.assert_close(_as_float(as_frames(source)), torch.from_numpy(u8).float() / 255, rtol=0, atol=1e-6)


@pytest.mark.parametrize("source,error,match", [
    (np.zeros((2, 5, 8, 8, 3), np.float32), ValueError, "batch of 2 videos"),
    ([np.zeros((5, 8, 8, 3), np.float32)] * 2, ValueError, "batch of 2 videos"),
    ([PIL.Image.new("RGB", (8, 8)), PIL.Image.new("RGB", (9, 8))], ValueError, "different sizes"),
    (torch.zeros(5, 4, 8, 8), ValueError, "3 or 1 channels"),
    (np.zeros((8, 8)), ValueError, "channels-last"),
    (torch.full((5, 3, 8, 8), 255.0), ValueError, "pass a uint8 array"),
    (torch.zeros(5, 3, 8, 8, dtype=torch.int32), ValueError, "must be uint8"),
    (np.full((8, 8, 3), np.nan, np.float32), ValueError, "NaN"),
    ([], ValueError, "empty list"),
    ("/nonexistent/clip.mp4", FileNotFoundError, "file not found"),
    (3.5, ValueError, "must be a path, PIL image"),
])
def test_as_frames_refuses_clearly(source, error, match):
    with pytest.raises(error, match=match):
        as_frames(source, "video")


def test_grey_and_channels_last_tensors_are_rgb_frames():
    grey = np.random.default_rng(1).integers(0, 256, (3, 8, 8, 1), dtype=np.uint8)
    assert np.array_equal(as_frames(grey), np.repeat(grey, 3, axis=-1))
    last = torch.rand(3, 8, 8, 3)  # channels-last tensors (this package's earlier layout) stay accepted
    torch.testing.assert_close(as_frames(last), last)
    torch.testing.assert_close(as_frames(last.permute(0, 3, 1, 2)), last)


# -- our outputs as our inputs --------------------------------------------------------------------------------
def test_every_output_type_is_accepted_by_every_video_input(outputs):
    reference = outputs["pt"][0].permute(0, 2, 3, 1)  # (F, H, W, 3) in [0, 1]
    for t, frames in outputs.items():
        for source in (frames[0], frames):  # one video, or the whole output (a batch of one)
            tol = 0.5 / 255 + 1e-6 if t == "pil" else 1e-6  # pil quantises to uint8
            torch.testing.assert_close(_as_float(FrozenVideo(source).frames), reference, rtol=0, atol=tol)
            torch.testing.assert_close(_as_float(VideoCondition(source, 0).frames), reference, rtol=0, atol=tol)
            torch.testing.assert_close(to_frames(source), reference.permute(0, 3, 1, 2), rtol=0, atol=tol)
        first = frames[0][0] if t == "pil" else frames[0, 0]  # one frame: an image
        torch.testing.assert_close(image_pixels(first, H, W), to_vae_pixels(reference[:1], H, W, crf=0),
                                   rtol=0, atol=2 * tol)


@torch.no_grad()
def test_outputs_feed_conditions_extend_and_control_end_to_end(tiny_pipe, tiny_components, outputs):
    """A `pt` clip (diffusers' `(F, C, H, W)` layout) goes back in as a frozen video (video-to-audio: the output is
    the given pixels), a first-frame condition, an extension source and an IC-LoRA control video."""
    from diffusers_ltx2 import LTX2ICLoRAPipeline

    clip = outputs["pt"][0]
    v2a = tiny_pipe("a cat", conditions=[FrozenVideo(clip)], generator=_gen(), num_inference_steps=1,
                    output_type="pt", **TINY_CLIP)
    torch.testing.assert_close(v2a.frames[0], clip, rtol=0, atol=1e-6)
    np_out = outputs["np"][0]
    a = _run(tiny_pipe, conditions=[VideoCondition(np_out, 0)])
    b = _run(tiny_pipe, conditions=[VideoCondition(clip, 0)])
    torch.testing.assert_close(a.frames, b.frames, rtol=0, atol=1e-5)
    extended = tiny_pipe.extend(outputs["pil"][0], 8, overlap_frames=8, num_inference_steps=1, generator=_gen(),
                                prompt="a cat")
    assert extended.frames.shape == (1, 17, H, W, 3)
    ic = LTX2ICLoRAPipeline.from_pipe(tiny_pipe)
    with_pt = ic("a cat", control_video=clip, generator=_gen(), num_inference_steps=1, output_type="latent",
                 **TINY_CLIP)
    with_np = ic("a cat", control_video=np_out, generator=_gen(), num_inference_steps=1, output_type="latent",
                 **TINY_CLIP)
    torch.testing.assert_close(with_pt.frames, with_np.frames, rtol=0, atol=1e-5)


# -- negative frame indices and retake windows in frames ----------------------------------------------------------
def test_negative_frame_index_counts_from_the_end_as_the_cli(tiny_pipe):
    from diffusers_ltx2.cli.media_args import parse_media_spec, resolve_frame

    img = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
    clip9 = np.random.default_rng(1).integers(0, 256, (9, H, W, 3), dtype=np.uint8)
    last = CLIP["num_frames"] - 1
    assert resolve_frame(parse_media_spec("key.png@-1", "--image"), "--image", CLIP["num_frames"]) == last
    for media, index, expected in ((img, -1, last), (img, -9, last - 8), (clip9, -1, last - 8)):
        a = _run(tiny_pipe, conditions=[VideoCondition(media, index, 0.9)])
        b = _run(tiny_pipe, conditions=[VideoCondition(media, expected, 0.9)])
        torch.testing.assert_close(a.frames, b.frames, rtol=0, atol=0)
    calls = []
    tiny_pipe.transformer.register_forward_pre_hook(lambda *a: calls.append(1))
    with pytest.raises(ValueError, match="starts at frame -1, outside"):
        _run(tiny_pipe, conditions=[VideoCondition(img, -CLIP["num_frames"] - 1)])
    assert not calls


def test_retake_window_in_frames_equals_the_window_in_seconds(tiny_pipe):
    rate = CLIP["frame_rate"]
    source = np.random.default_rng(2).random((CLIP["num_frames"], H, W, 3)).astype(np.float32)
    sound = torch.randn(2, int(CLIP["num_frames"] / rate * 16000), generator=_gen(4)) * 0.1
    sources = [FrozenVideo(source), AudioCondition(sound, 16000)]
    in_frames = _run(tiny_pipe, conditions=sources + [TemporalRegion(start_frame=8, end_frame=13)])
    in_seconds = _run(tiny_pipe, conditions=sources + [TemporalRegion(8 / rate, 13 / rate)])
    torch.testing.assert_close(in_frames.frames, in_seconds.frames, rtol=0, atol=0)
    torch.testing.assert_close(in_frames.audio, in_seconds.audio, rtol=0, atol=0)
    other = _run(tiny_pipe, conditions=sources + [TemporalRegion(start_frame=1, end_frame=4)])
    assert (other.frames - in_frames.frames).abs().max() > 1e-3
    with pytest.raises(ValueError, match="end outside the clip, which has 17 frames"):
        _run(tiny_pipe, conditions=sources + [TemporalRegion(start_frame=8, end_frame=18)])
    for kwargs, match in ((dict(start_s=0.1, end_s=0.2, start_frame=1, end_frame=2), "not both"),
                          (dict(start_frame=3, end_frame=3), "start_frame < end_frame"),
                          (dict(start_frame=1.5, end_frame=3), "integer pixel frame"), ({}, "not both")):
        with pytest.raises(ValueError, match=match):
            TemporalRegion(**kwargs)


# -- image= on the official image path ----------------------------------------------------------------------------
def test_image_path_equals_official_load_image_conditioning(tiny_pipe, tmp_path):
    from ltx_pipelines.utils import media_io as official

    rng = np.random.default_rng(5)
    path = tmp_path / "key.png"
    PIL.Image.fromarray(rng.integers(0, 256, (75, 101, 3), dtype=np.uint8)).save(path)
    theirs = official.load_image_conditioning(str(path), H, W, torch.float32, torch.device("cpu"))  # CRF 33
    ours = image_pixels(tiny_pipe.prepare_image(str(path)), H, W)
    assert torch.equal(ours, theirs)
    pil = PIL.Image.open(path)
    assert torch.equal(image_pixels(tiny_pipe.prepare_image(pil), H, W), theirs)
    for crf in (0, 18):
        theirs = official.load_image_conditioning(str(path), H, W, torch.float32, torch.device("cpu"), crf=crf)
        assert torch.equal(image_pixels(tiny_pipe.prepare_image(pil, image_crf=crf), H, W), theirs)


def test_image_takes_the_same_path_as_video_condition(tiny_pipe):
    """`image=` and `VideoCondition(image, 0)` are one path; `image_crf=None` re-compresses pictures (PIL, files)
    at the model's CRF (33) as diffusers' image-to-video pipeline, and takes arrays / tensors as prepared."""
    arr = np.random.default_rng(6).integers(0, 256, (80, 96, 3), dtype=np.uint8)  # another size: resized + cropped
    pil, tensor = PIL.Image.fromarray(arr), torch.from_numpy(arr).permute(2, 0, 1).float() / 255
    for image, kwargs, crf in ((pil, {}, 33), (pil, dict(image_crf=0), 0), (tensor, {}, 0),
                               (tensor, dict(image_crf=33), 33), (arr, dict(image_crf=18), 18)):
        a = _run(tiny_pipe, image=image, image_strength=0.8, **kwargs)
        b = _run(tiny_pipe, conditions=[VideoCondition(image, 0, 0.8, crf=crf)])
        torch.testing.assert_close(a.frames, b.frames, rtol=0, atol=0)
    assert (_run(tiny_pipe, image=pil).frames - _run(tiny_pipe, image=pil, image_crf=0).frames).abs().max() > 1e-4
    with pytest.raises(ValueError, match="image_crf must be None or an integer in"):
        _run(tiny_pipe, image=pil, image_crf=60)
    with pytest.raises(FileNotFoundError, match="missing.png"):
        _run(tiny_pipe, image="missing.png")
