"""`LTX2ICLoRAPipeline`: seed parity of the initial noise with ltx-pipelines' IC-LoRA pipeline (issue 16 H), the
reference's time positions at a temporal scale factor of 2 (issue 16 J), diffusers' in-context arguments and
plain generation without a control video (issue 15 item 4)."""

from __future__ import annotations

import ltx_reference  # noqa: F401  (stubs torchaudio before ltx_core is imported)
import numpy as np
import PIL.Image
import pytest
import torch
from diffusers.pipelines.ltx2.pipeline_ltx2_condition import LTX2VideoCondition
from diffusers.pipelines.ltx2.pipeline_ltx2_ic_lora import LTX2ReferenceCondition
from ltx_core.components.noisers import GaussianNoiser
from ltx_core.components.patchifiers import AudioPatchifier, VideoLatentPatchifier
from ltx_core.conditioning import VideoConditionByLatentIndex, VideoConditionByReferenceLatent
from ltx_core.tools import AudioLatentTools, VideoLatentTools
from ltx_core.types import AudioLatentShape, VideoLatentShape, VideoPixelShape
from ltx_pipelines.utils.helpers import create_noised_state

from diffusers_ltx2 import ClassifierFreeGuidance, LTX2AudioVideoPipeline, LTX2ICLoRAPipeline, LTX2Scheduler
from diffusers_ltx2.conditioning import ReferenceVideo, check_conditions, initial_state
from diffusers_ltx2.latents.noiser import StartLatents
from diffusers_ltx2.pipelines.images import FirstFrameImage

from test_ic_lora_loading import write_lora

CLIP = dict(height=128, width=128, num_frames=9, frame_rate=24.0)
FAST = dict(num_inference_steps=2, max_sequence_length=128, output_type="latent")


@pytest.fixture()
def ic_pipe(tiny_components):
    return LTX2ICLoRAPipeline(scheduler=LTX2Scheduler(), guider=ClassifierFreeGuidance(1.0, 1.0), **tiny_components)


def _seed(s=7):
    return torch.Generator().manual_seed(s)


def _ic_initial_state(pipe, total, frames, h, w, fps, *, references, factor, attention_strength=1.0, generator,
                      image=None, image_strength=1.0, latents=None):
    """The IC-LoRA call's initial states through the one builder: `image=` (a `FirstFrameImage`) and one
    `ReferenceVideo` per fitted control video, on the pipeline's latent encoder."""
    conditions = [ReferenceVideo(control, strength, factor, attention_strength) for control, strength in references]
    if image is not None:
        conditions.append(FirstFrameImage(image, image_strength))
    g = pipe.clip_geometry(total, frames, h, w, fps)
    state = initial_state(check_conditions(conditions, g), g, pipe.latent_encoder("cpu"), generator=generator,
                          video=StartLatents(noise=latents))
    return state.video, state.audio


# ------------------------------------------------------------------------------ H. seed parity with ltx-pipelines


@torch.no_grad()
@pytest.mark.parametrize("case", ["reference", "image+reference", "two references+attention"])
def test_initial_noise_matches_official_ic_lora_draw(ic_pipe, case):
    """ltx-pipelines `ic_lora.py`: conditionings (image at latent 0, then each reference) are applied to the empty
    video state, then `GaussianNoiser` draws over all video tokens, then over the audio tokens
    (`denoise_audio_video` -> `create_noised_state`). Same generator seed -> the same states, including the noise
    of the audio and of a partially held (strength 0.6) reference, and the attention bias of two references."""
    from ltx_core.conditioning import ConditioningItemAttentionStrengthWrapper

    h, w, frames, fps, factor = 128, 128, 17, 24.0, 2
    strengths = [0.6, 1.0] if case.startswith("two") else [0.6]
    attention = 0.5 if case.startswith("two") else 1.0
    controls = [ic_pipe.fit_control_video(torch.rand(17, 3, 128, 128, generator=_seed(1 + i)), frames, h // factor,
                                          w // factor) for i in range(len(strengths))]
    image = torch.rand(1, 3, h, w, generator=_seed(9)) if case.startswith("image") else None
    video, audio = _ic_initial_state(
        ic_pipe, 1, frames, h, w, fps, references=list(zip(controls, strengths)), factor=factor,
        attention_strength=attention, generator=_seed(), image=image, image_strength=0.9,
    )

    # official side, same encoded latents
    pixel = VideoPixelShape(batch=1, frames=frames, height=h, width=w, fps=fps)
    channels = ic_pipe.transformer.config.in_channels
    video_tools = VideoLatentTools(VideoLatentPatchifier(patch_size=1),
                                   VideoLatentShape.from_pixel_shape(pixel, latent_channels=channels), fps)
    mel = ic_pipe.audio_vae.config.mel_bins // ic_pipe.audio_vae.mel_compression_ratio
    audio_tools = AudioLatentTools(AudioPatchifier(patch_size=1), AudioLatentShape.from_video_pixel_shape(
        pixel, channels=ic_pipe.audio_vae.config.latent_channels, mel_bins=mel))
    conditionings = []
    if image is not None:
        conditionings.append(VideoConditionByLatentIndex(ic_pipe.encode_image(image, h, w, 1, "cpu"), 0.9, 0))
    for control, strength in zip(controls, strengths):
        item = VideoConditionByReferenceLatent(ic_pipe.encode_video(control, 1, "cpu"), downscale_factor=factor,
                                               strength=strength)
        if attention < 1:
            item = ConditioningItemAttentionStrengthWrapper(item, attention_mask=attention)
        conditionings.append(item)
    noiser = GaussianNoiser(_seed())
    official_video = create_noised_state(video_tools, conditionings, noiser, torch.float32, torch.device("cpu"))
    official_audio = create_noised_state(audio_tools, [], noiser, torch.float32, torch.device("cpu"))

    n = video.num_target_tokens
    assert video.latent.shape == official_video.latent.shape and video.latent.shape[1] > n
    torch.testing.assert_close(video.denoise_mask, official_video.denoise_mask.squeeze(-1), rtol=0, atol=0)
    torch.testing.assert_close(video.coords, official_video.positions, rtol=0, atol=1e-6)
    torch.testing.assert_close(video.latent, official_video.latent, rtol=0, atol=1e-6)
    torch.testing.assert_close(audio.latent, official_audio.latent, rtol=0, atol=0)
    if attention < 1:
        # [0, 1] weights (0 between the two reference groups; the bias holds the dtype minimum there)
        torch.testing.assert_close(torch.exp(video.self_attention_bias), official_video.attention_mask,
                                   rtol=0, atol=1e-6)
        assert (official_video.attention_mask == 0).any()
    else:
        assert video.self_attention_bias is None and official_video.attention_mask is None
    m = controls[0].shape[0] // 8 + 1  # first reference: latent frames x (h/32/2) x (w/32/2) tokens
    first = slice(n, n + m * (h // 64) * (w // 64))
    assert (video.latent[:, first] - video.clean[:, first]).abs().max() > 0.1  # the 0.6-strength reference is noised


# ------------------------------------------------------------------------------ J. temporal scale factor 2


def test_temporal_factor_2_reference_covers_the_same_seconds(ic_pipe, tmp_path, reference_spy):
    """A LoRA trained on references at every 2nd frame: the reference keeps frames 0, 2, 4, ... and its time
    positions are those frames' times in the clip (frame_rate / 2), so it spans the target's seconds."""
    path = tmp_path / "temporal.safetensors"
    write_lora(path, ic_pipe.transformer, metadata={"reference_downscale_factor": "1",
                                                    "reference_temporal_scale_factor": "2"})
    ic_pipe.load_lora_weights(str(path), adapter_name="t2")
    assert ic_pipe.reference_temporal_scale_factor == 2
    fps, frames = 24.0, 17
    ic_pipe("a cat", control_video=torch.rand(17, 3, 64, 64), height=64, width=64, num_frames=frames,
            frame_rate=fps, **FAST)
    state = reference_spy[-1][1]
    n = state.num_target_tokens
    ref_time, target_time = state.coords[0, 0, n:], state.coords[0, 0, :n]
    # the kept frames 0, 2, ..., 16 form 2 latent frames of the reference: latent frame j covers kept frames
    # [max(0, 8j - 7), 8j + 1) = clip frames twice those, i.e. seconds [2 * max(0, 8j - 7), 2 * (8j + 1)) / fps
    expected = torch.tensor([[0.0, 2 * 1 / fps], [2 * 1 / fps, 2 * 9 / fps]])
    starts_ends = torch.unique(ref_time, dim=0)
    torch.testing.assert_close(starts_ends, expected, rtol=0, atol=1e-6)
    assert abs(ref_time[:, 1].max() - target_time[:, 1].max()) <= 1 / fps + 1e-6  # same span, to a frame


# ------------------------------------------------------------------------------ issue 15.4: diffusers arguments


@torch.no_grad()
def test_diffusers_reference_condition_equals_control_video(ic_pipe):
    control = torch.rand(9, 3, 128, 128, generator=_seed(3))
    ours = ic_pipe("a cat", control_video=control, control_strength=0.8, generator=_seed(), **CLIP, **FAST).frames
    theirs = ic_pipe("a cat", reference_conditions=[LTX2ReferenceCondition(frames=control, strength=0.8)],
                     generator=_seed(), **CLIP, **FAST).frames
    single = ic_pipe("a cat", reference_conditions=LTX2ReferenceCondition(frames=control, strength=0.8),
                     generator=_seed(), **CLIP, **FAST).frames
    torch.testing.assert_close(theirs, ours, rtol=0, atol=0)
    torch.testing.assert_close(single, ours, rtol=0, atol=0)


@torch.no_grad()
@pytest.mark.parametrize("crf", [0, None], ids=["crf0", "crf_default"])
def test_diffusers_video_condition_equals_first_frame_image(ic_pipe, crf):
    """`LTX2VideoCondition(image, index=0, strength, crf)` = `image=` re-compressed at the CRF (diffusers'
    default for Gemma-3 models: 33), on diffusers' 0-255 scale."""
    from diffusers.pipelines.ltx2.utils import apply_image_conditioning_crf

    arr = (np.random.default_rng(0).random((128, 128, 3)) * 255).astype(np.uint8)
    control = torch.rand(9, 3, 128, 128, generator=_seed(3))
    cond = LTX2VideoCondition(frames=PIL.Image.fromarray(arr), index=0, strength=0.7, crf=crf)
    theirs = ic_pipe("a cat", control_video=control, conditions=[cond], generator=_seed(), **CLIP, **FAST).frames
    expected_pixels = apply_image_conditioning_crf(arr, 33) if crf is None else arr
    if crf is None:
        assert np.abs(expected_pixels.astype(int) - arr).max() > 0  # re-compression changed the image
    image = torch.from_numpy(expected_pixels).permute(2, 0, 1)[None].float() / 255
    ours = ic_pipe("a cat", control_video=control, image=image, image_strength=0.7, generator=_seed(),
                   **CLIP, **FAST).frames
    torch.testing.assert_close(theirs, ours, rtol=0, atol=0)


@pytest.mark.parametrize("kwargs,error,message", [
    (dict(conditions=[LTX2VideoCondition(frames=PIL.Image.new("RGB", (64, 64)), index=1)]),
     NotImplementedError, "keyframe"),
    (dict(conditions=[LTX2VideoCondition(frames=[PIL.Image.new("RGB", (64, 64))] * 3)]),
     NotImplementedError, "video conditioning"),
    (dict(conditions=[LTX2VideoCondition(frames=PIL.Image.new("RGB", (64, 64)))] * 2), NotImplementedError, "one"),
    (dict(conditions=[LTX2VideoCondition(frames=np.zeros((64, 64, 3), np.float32))]), ValueError, "uint8"),
    (dict(conditions=LTX2VideoCondition(frames=PIL.Image.new("RGB", (64, 64))), image=torch.rand(1, 3, 64, 64)),
     ValueError, "not both"),
    (dict(reference_conditions=LTX2ReferenceCondition(frames=torch.rand(9, 3, 64, 64)),
          control_video=torch.rand(9, 3, 64, 64)), ValueError, "not both"),
    (dict(reference_conditions=["not a condition"]), ValueError, "condition objects"),
])
def test_unsupported_diffusers_conditions_raise_clear_errors(ic_pipe, kwargs, error, message):
    calls = []
    ic_pipe.transformer.register_forward_pre_hook(lambda *a: calls.append(1))
    with pytest.raises(error, match=message):
        ic_pipe("a cat", **CLIP, **FAST, **kwargs)
    assert not calls  # refused before the model ran


@torch.no_grad()
def test_without_control_video_it_is_a_plain_generation(ic_pipe):
    """No reference: the same noise draw and states as `LTX2AudioVideoPipeline` (as diffusers' in-context
    pipeline runs without references)."""
    ic = ic_pipe("a cat", generator=_seed(), **CLIP, **FAST)
    plain = LTX2AudioVideoPipeline.from_pipe(ic_pipe)("a cat", generator=_seed(), **CLIP, **FAST)
    torch.testing.assert_close(ic.frames, plain.frames, rtol=0, atol=0)
    torch.testing.assert_close(ic.audio, plain.audio, rtol=0, atol=0)


@torch.no_grad()
def test_two_diffusers_references_are_both_appended(ic_pipe, reference_spy):
    refs = [LTX2ReferenceCondition(frames=torch.rand(9, 3, 64, 64), strength=s) for s in (1.0, 0.5)]
    ic_pipe("a cat", reference_conditions=refs, reference_downscale_factor=2, generator=_seed(), **CLIP, **FAST)
    assert len(reference_spy) == 2 and reference_spy[1][0].latent.shape[1] == reference_spy[0][1].latent.shape[1]


@torch.no_grad()
def test_user_latents_and_generator_lists_with_a_reference(ic_pipe):
    """`latents=` is the generated tokens' noise (the reference's noise is drawn); one generator per video draws
    each video's generated + reference tokens, as a single generator does for a batch of one."""
    control = ic_pipe.fit_control_video(torch.rand(9, 3, 64, 64, generator=_seed(1)), 9, 64, 64)
    n = 2 * 4 * 4  # 128 x 128 x 9 -> 2 x 4 x 4 generated tokens
    noise = torch.randn(1, n, ic_pipe.transformer.config.in_channels, generator=_seed(4))
    video, _ = _ic_initial_state(ic_pipe, 1, 9, 128, 128, 24.0, references=[(control, 0.5)], factor=2,
                                 latents=noise, generator=_seed())
    torch.testing.assert_close(video.latent[:, :n], noise, rtol=0, atol=0)
    assert video.latent.shape[1] > n
    batch, _ = _ic_initial_state(ic_pipe, 2, 9, 128, 128, 24.0, references=[(control, 0.5)], factor=2,
                                 generator=[_seed(1), _seed(2)])
    single, _ = _ic_initial_state(ic_pipe, 1, 9, 128, 128, 24.0, references=[(control, 0.5)], factor=2,
                                  generator=_seed(2))
    torch.testing.assert_close(batch.latent[1:], single.latent, rtol=0, atol=0)
