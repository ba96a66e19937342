"""`num_frames` left out on a pipeline with a `duration_head` (LTX-2.5): the clip length is predicted from the prompt,
bounded and snapped to the 8k+1 grid, as diffusers' `LTX2Pipeline` does with the same head."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers.pipelines.ltx2 import LTX2DurationHead, LTX2Pipeline

from diffusers_ltx2 import LTX2AudioVideoPipeline, LTX2Scheduler
from diffusers_ltx2.factory import build_scheduler
from diffusers_ltx2.loaders.identity import context_dims

RUN = dict(height=64, width=64, num_inference_steps=2, output_type="latent", max_sequence_length=32)
OFF = dict(guidance_scale=1.0, stg_scale=0.0, modality_scale=1.0, guidance_rescale=0.0, audio_guidance_scale=1.0,
           audio_stg_scale=0.0, audio_modality_scale=1.0, audio_guidance_rescale=0.0)


def _head(components, seconds: float | None = None, seed: int = 0):
    video_dim, audio_dim = context_dims(components["connectors"])
    torch.manual_seed(seed)
    head = LTX2DurationHead(video_cross_attention_dim=video_dim, audio_cross_attention_dim=audio_dim,
                            pooler_hidden_dim=8, num_queries=1, num_pooler_heads=2, mlp_hidden_dim=8).eval()
    if seconds is not None:  # a head that always predicts `seconds`
        with torch.no_grad():
            head.mlp_out.weight.zero_()
            head.mlp_out.bias.fill_(math.log(seconds))
    return head


def _pipe(components, head):
    return LTX2AudioVideoPipeline(scheduler=LTX2Scheduler(), guider=None, duration_head=head, **components)


def _frames(out) -> int:
    return (out.frames.shape[2] - 1) * 8 + 1


@pytest.mark.parametrize("seconds,bounds,expected", [
    (2.0, {}, 41),  # 48 frames at 24 fps, snapped down to 8k+1
    (2.0, dict(min_seconds=0.5, max_seconds=1.0), 17),  # clamped to 24 frames, then snapped
    (0.2, dict(min_seconds=0.5), 17),  # 12 frames: snapped down to 9 < 12, so up to 17
    (30.0, {}, 473),  # clamped to 20 s = 480 frames -> 473
])
def test_predicted_length_is_bounded_and_on_the_grid(tiny_components, seconds, bounds, expected):
    pipe = _pipe(tiny_components, _head(tiny_components, seconds))
    run = dict(RUN, **bounds, **(dict(sigmas=[1.0]) if expected > 100 else {}))  # one step for the long clip
    out = pipe("a dog runs", generator=torch.Generator().manual_seed(0), **run)
    assert _frames(out) == expected
    assert out.audio.shape[2] == round(expected / 24.0 * 25)  # the audio follows the predicted length


def test_same_length_as_diffusers(tiny_components):
    """A random head on the tiny connectors' outputs: ours and diffusers' LTX2Pipeline predict the same length
    (latent shapes; the latents themselves differ by the schedule and noise conventions compared elsewhere)."""
    for seed in (3, 4):
        head = _head(tiny_components, seed=seed)
        with torch.no_grad():
            head.mlp_out.bias.add_(math.log(1.3))  # a prediction inside the bounds, not a clamped one
        ours = _pipe(tiny_components, head)
        theirs = LTX2Pipeline(scheduler=build_scheduler(), duration_head=head, **tiny_components)
        kw = dict(RUN, min_seconds=0.1, max_seconds=3.0)
        a = ours("a dog runs", generator=torch.Generator().manual_seed(0), **kw, **OFF)
        b = theirs("a dog runs", generator=torch.Generator().manual_seed(0), **kw, **OFF)
        assert a.frames.shape == b.frames.shape and a.audio.shape == b.audio.shape
        assert 3 <= _frames(a) < 72 - 8


def test_image_to_video_with_a_predicted_length(tiny_components):
    pipe = _pipe(tiny_components, _head(tiny_components, 1.0))
    out = pipe("a dog runs", image=torch.rand(3, 64, 64), generator=torch.Generator().manual_seed(0), **RUN)
    assert _frames(out) == 25  # 24 frames snap down to 17 < 24 (min_seconds 1), so up to 25


def test_explicit_num_frames_and_no_head():
    """`num_frames` wins over a head; without a head, leaving it out is 121 (diffusers' default)."""
    from diffusers_ltx2.factory import TINY, build_components

    components = build_components(TINY)
    pipe = _pipe(components, _head(components, 2.0))
    assert _frames(pipe("a dog", num_frames=9, generator=torch.Generator().manual_seed(0), **RUN)) == 9
    pipe.duration_head = None
    assert _frames(pipe("a dog", generator=torch.Generator().manual_seed(0), **dict(RUN, sigmas=[1.0]))) == 121


@pytest.mark.parametrize("kwargs,message", [
    (dict(prompt=["a dog", "a cat"]), "2 prompts were supplied"),
    (dict(conditions=[]), "conditions fix the clip length"),
    (dict(latents=torch.zeros(1, 4, 4)), "latents fix the clip length"),
    (dict(min_seconds=5.0, max_seconds=2.0), "min_seconds (5.0) must be less than max_seconds"),
    (dict(min_seconds=-1.0), "min_seconds must be a positive number"),
])
def test_refused_before_any_model_runs(tiny_components, kwargs, message):
    pipe = _pipe(tiny_components, _head(tiny_components, 2.0))
    calls = []
    for model in (pipe.text_encoder, pipe.transformer, pipe.duration_head):
        model.register_forward_pre_hook(lambda *a: calls.append(1))
    kwargs = {"prompt": "a dog", **kwargs}
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        pipe(**kwargs, **RUN)
    assert calls == []


def test_bounds_without_a_head_are_refused(tiny_pipe):
    with pytest.raises(ValueError, match="has no duration_head"):
        tiny_pipe("a dog", min_seconds=2.0, **RUN)


def test_head_is_saved_and_loaded(tiny_components, tmp_path):
    pipe = _pipe(tiny_components, _head(tiny_components, 2.0))
    pipe.save_pretrained(tmp_path / "p")
    loaded = LTX2AudioVideoPipeline.from_pretrained(tmp_path / "p")
    assert isinstance(loaded.duration_head, LTX2DurationHead)
    assert _frames(loaded("a dog", generator=torch.Generator().manual_seed(0), **RUN)) == 41
    with pytest.raises(ValueError, match="LTX2DurationHead"):
        _pipe(tiny_components, torch.nn.Linear(2, 2))


def test_predicted_length_goes_through_the_call_resolver(tiny_components):
    """`resolve_call` leaves the length to the head (`PipelineCall.duration`, placeholder geometry); `generate`
    predicts it after encoding and makes the stages from the final call; stages made before that are refused
    before any model runs."""
    from diffusers_ltx2.pipelines.call import resolve_call

    pipe = _pipe(tiny_components, _head(tiny_components, 2.0))
    call = resolve_call(pipe, prompt="a dog runs", generator=torch.Generator().manual_seed(0), num_frames=None,
                        **RUN)
    assert call.duration is not None and call.geometry.num_frames == 9  # the placeholder until predicted
    calls = []
    for model in (pipe.text_encoder, pipe.duration_head, pipe.transformer):
        model.register_forward_pre_hook(lambda m, *a: calls.append(type(m).__name__))
    with pytest.raises(ValueError, match="as a function of the call"):
        pipe.generate(call, [call.stage()])
    assert calls == []
    out = pipe.generate(call, lambda final: [final.stage()])
    assert _frames(out) == 41 and calls.count(type(pipe.transformer).__name__) == 2
