"""`LTX2ICLoRAPipeline`'s call guidance is the main pipeline's (`call_guider`): a pipeline built with `guider=None`
runs unguided, diffusers' guidance arguments build the same `MultimodalGuider` diffusers' values describe, `guider=`
with them is refused before any model runs; and its call takes `LTX2InContextPipeline`'s arguments."""

from __future__ import annotations

import inspect

import pytest
import torch
from diffusers.pipelines.ltx2 import LTX2InContextPipeline

from diffusers_ltx2 import (
    ClassifierFreeGuidance,
    LTX2ICLoRAPipeline,
    LTX2Scheduler,
    ModalityGuidanceParams,
    MultimodalGuider,
)
from diffusers_ltx2.pipelines.diffusers_compat import UnsupportedFeatureError

RUN = dict(height=64, width=64, num_frames=9, frame_rate=24.0, num_inference_steps=2, max_sequence_length=128,
           output_type="latent")


def _control():
    return torch.rand(9, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def _run(pipe, **kwargs):
    out = pipe("a dog runs", control_video=_control(), generator=torch.Generator().manual_seed(0), **RUN, **kwargs)
    return out.frames, out.audio


def test_pipeline_without_guider_runs_unguided(tiny_components):
    """`guider=None` at construction: one conditional pass per step, the same as an explicit CFG of 1."""
    unguided = LTX2ICLoRAPipeline(scheduler=LTX2Scheduler(), guider=None, **tiny_components)
    video, audio = _run(unguided)
    assert unguided.guidance_scale == 1.0 and not unguided.do_classifier_free_guidance  # the call's own guider
    ref_video, ref_audio = _run(unguided, guider=ClassifierFreeGuidance(1.0, 1.0))
    assert torch.equal(video, ref_video) and torch.equal(audio, ref_audio)


@pytest.mark.slow
def test_guidance_scale_equals_the_equivalent_multimodal_guider(tiny_components):
    """diffusers' `guidance_scale=4` = its defaults for every other dial (video stg 1, modality 3, rescale 0.7;
    audio cfg 7, stg 1, modality 3, rescale 0.7) with video cfg 4."""
    pipe = LTX2ICLoRAPipeline(scheduler=LTX2Scheduler(), guider=None, **tiny_components)
    video, audio = _run(pipe, guidance_scale=4.0)
    assert pipe.guidance_scale == 4.0 and pipe.audio_guidance_scale == 7.0
    guider = MultimodalGuider(video=ModalityGuidanceParams(cfg=4.0, stg=1.0, modality_scale=3.0, rescale=0.7),
                              audio=ModalityGuidanceParams(cfg=7.0, stg=1.0, modality_scale=3.0, rescale=0.7))
    ref_video, ref_audio = _run(pipe, guider=guider)
    torch.testing.assert_close(video, ref_video, rtol=0, atol=0)
    torch.testing.assert_close(audio, ref_audio, rtol=0, atol=0)
    unguided_video, _ = _run(pipe)
    assert not torch.allclose(video, unguided_video)  # the guidance did something


def test_guider_and_diffusers_arguments_together_refused_before_any_model(tiny_components):
    pipe = LTX2ICLoRAPipeline(scheduler=LTX2Scheduler(), **tiny_components)
    pipe.transformer = None  # any model run would fail differently
    with pytest.raises(ValueError, match="either guider= or diffusers' guidance arguments"):
        pipe("a dog", control_video=_control(), guider=ClassifierFreeGuidance(3.0), guidance_scale=4.0, **RUN)
    with pytest.raises(UnsupportedFeatureError, match="motion_speed"):
        pipe("a dog", control_video=_control(), motion_speed=2.0, **RUN)


def test_call_takes_diffusers_in_context_arguments():
    ours = inspect.signature(LTX2ICLoRAPipeline.__call__).parameters
    theirs = inspect.signature(LTX2InContextPipeline.__call__).parameters
    assert ours["output_type"].default == theirs["output_type"].default == "pil"
    # noise_scale (re-noising given clean latents) is not implemented for the reference-token layout
    assert set(theirs) - set(ours) == {"noise_scale"}
