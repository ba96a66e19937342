"""The two-stage pipelines take the one-stage call surface: stage 1's guidance is resolved as the main pipeline's
(`call_guider`: a pipeline built with `guider=None` runs unguided, diffusers' guidance arguments build the same
`MultimodalGuider` diffusers' values describe, `guider=` with them is refused), `output_type` defaults to "pil",
and the constructor takes the base pipeline's components."""

from __future__ import annotations

import inspect

import pytest
import torch
from test_ic_lora_two_stage import _run as _run_ic
from test_ic_lora_two_stage import pipe as ic_pipe  # noqa: F401 (fixture)
from test_two_stage import _run, pipe  # noqa: F401 (fixture)

from diffusers_ltx2 import (
    ClassifierFreeGuidance,
    LTX2AudioVideoPipeline,
    LTX2ICLoRATwoStagePipeline,
    LTX2TwoStagePipeline,
    ModalityGuidanceParams,
    MultimodalGuider,
)
from diffusers_ltx2.pipelines.diffusers_compat import UnsupportedFeatureError

OFF = dict(stg_scale=0.0, audio_stg_scale=0.0, modality_scale=1.0, audio_modality_scale=1.0, guidance_rescale=0.0,
           audio_guidance_rescale=0.0)


def _same(a, b):
    torch.testing.assert_close(a.frames, b.frames, rtol=0, atol=0)
    torch.testing.assert_close(a.audio, b.audio, rtol=0, atol=0)


@torch.no_grad()
def test_pipeline_without_guider_runs_stage_1_unguided(pipe):  # noqa: F811
    pipe.guider = None
    out = _run(pipe, negative_prompt="")
    assert pipe.guidance_scale == 1.0 and not pipe.do_classifier_free_guidance
    _same(out, _run(pipe, negative_prompt="", guider=ClassifierFreeGuidance(1.0, 1.0)))


@torch.no_grad()
def test_diffusers_guidance_arguments_build_stage_1_guider(pipe):  # noqa: F811
    out = _run(pipe, negative_prompt="", guidance_scale=4.0, audio_guidance_scale=5.0, **OFF)
    assert (pipe.guidance_scale, pipe.audio_guidance_scale) == (4.0, 5.0)
    equivalent = MultimodalGuider(video=ModalityGuidanceParams(cfg=4.0), audio=ModalityGuidanceParams(cfg=5.0))
    _same(out, _run(pipe, negative_prompt="", guider=equivalent))
    with pytest.raises(ValueError, match="either guider= or diffusers' guidance arguments"):
        _run(pipe, guider=ClassifierFreeGuidance(3.0), guidance_scale=4.0)
    with pytest.raises(UnsupportedFeatureError, match="motion_speed"):
        _run(pipe, motion_speed=2.0)


@torch.no_grad()
def test_ic_lora_two_stage_without_guider(ic_pipe):  # noqa: F811
    """Stage 1 (the IC-LoRA call) with the pipeline's `guider=None` runs unguided instead of failing."""
    ic_pipe.guider = None
    out, seen = _run_ic(ic_pipe, distilled=False, num_inference_steps=2, skip_stage_2=True)
    ref, _ = _run_ic(ic_pipe, distilled=False, num_inference_steps=2, skip_stage_2=True,
                     guider=ClassifierFreeGuidance(1.0, 1.0))
    assert len(seen) == 2
    _same(out, ref)
    with pytest.raises(ValueError, match="either guider= or diffusers' guidance arguments"):
        _run_ic(ic_pipe, distilled=False, guider=ClassifierFreeGuidance(3.0), guidance_scale=4.0)


def test_signatures_follow_the_base_pipelines():
    one_stage = inspect.signature(LTX2AudioVideoPipeline.__call__).parameters
    two_stage = inspect.signature(LTX2TwoStagePipeline.__call__).parameters
    assert set(one_stage) - set(two_stage) == {"noise_scale"}  # stage 2's re-noising is the recipe's
    assert two_stage["output_type"].default == one_stage["output_type"].default == "pil"
    assert inspect.signature(LTX2ICLoRATwoStagePipeline.__call__).parameters["output_type"].default == "pil"
    base_init = set(inspect.signature(LTX2AudioVideoPipeline.__init__).parameters)
    for cls in (LTX2TwoStagePipeline, LTX2ICLoRATwoStagePipeline):
        init = inspect.signature(cls.__init__).parameters
        assert set(init) == base_init | {"latent_upsampler"}
        assert init["guider"].default == "default"
