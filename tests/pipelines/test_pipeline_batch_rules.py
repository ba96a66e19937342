"""Per-prompt inputs spread over `num_videos_per_prompt` like prompts, image value ranges, and one pipeline
called from several threads."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from diffusers_ltx2 import ClassifierFreeGuidance, LTX2AudioVideoPipeline, MultimodalGuider
from diffusers_ltx2.factory import TINY_CLIP
from diffusers_ltx2.latents import layout as L

RUN = dict(TINY_CLIP, output_type="latent", num_inference_steps=2)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _images(n, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.random((TINY_CLIP["height"], TINY_CLIP["width"], 3)).astype(np.float32) for _ in range(n)]


def _first_frame(pipe, image):
    latents = pipe.encode_image(image, TINY_CLIP["height"], TINY_CLIP["width"], 1, "cpu")
    return L.denormalize_video(latents, pipe.vae.latents_mean, pipe.vae.latents_std)


def test_images_repeat_per_prompt_in_order(tiny_pipe):
    images = _images(2)
    out = tiny_pipe(["a cat", "a dog"], image=images, num_videos_per_prompt=2, generator=_gen(), **RUN)
    expected = [_first_frame(tiny_pipe, images[i]) for i in (0, 0, 1, 1)]
    for video, ref in zip(out.frames, expected):
        torch.testing.assert_close(video[None, :, :1], ref, atol=1e-5, rtol=0)
    assert (expected[0] - expected[2]).abs().max() > 1e-2


def test_one_image_per_video_and_one_for_all(tiny_pipe):
    images = _images(4, seed=1)
    out = tiny_pipe(["a cat", "a dog"], image=images, num_videos_per_prompt=2, generator=_gen(), **RUN)
    for video, image in zip(out.frames, images):
        torch.testing.assert_close(video[None, :, :1], _first_frame(tiny_pipe, image), atol=1e-5, rtol=0)
    one = tiny_pipe(["a cat", "a dog"], image=images[0], num_videos_per_prompt=2, generator=_gen(), **RUN)
    for video in one.frames:
        torch.testing.assert_close(video[None, :, :1], _first_frame(tiny_pipe, images[0]), atol=1e-5, rtol=0)


def test_embeddings_generators_and_latents_follow_the_same_rule(tiny_pipe):
    """Two prompts x two videos: video k of prompt p equals a one-prompt run with the k-th generator."""
    gens = [_gen(s) for s in (1, 2, 3, 4)]
    batched = tiny_pipe(["a cat", "a dog"], num_videos_per_prompt=2, generator=gens, **RUN)
    for index, (prompt, seed) in enumerate(zip(["a cat", "a cat", "a dog", "a dog"], (1, 2, 3, 4))):
        single = tiny_pipe(prompt, generator=_gen(seed), **RUN)
        torch.testing.assert_close(batched.frames[index], single.frames[0], atol=1e-5, rtol=0)


def test_uint8_images_are_scaled(tiny_pipe):
    rng = np.random.default_rng(2)
    pixels = rng.integers(0, 256, (TINY_CLIP["height"], TINY_CLIP["width"], 3), dtype=np.uint8)
    as_uint8 = tiny_pipe("a cat", image=pixels, generator=_gen(), **RUN)
    as_float = tiny_pipe("a cat", image=pixels.astype(np.float32) / 255.0, generator=_gen(), **RUN)
    torch.testing.assert_close(as_uint8.frames, as_float.frames, rtol=0, atol=0)
    tensor = tiny_pipe("a cat", image=torch.from_numpy(pixels).permute(2, 0, 1), generator=_gen(), **RUN)
    torch.testing.assert_close(tensor.frames, as_float.frames, rtol=0, atol=1e-6)


def _guided(pipe, guider, seed):
    return pipe("a dog runs on the beach", generator=_gen(seed), guider=guider, **dict(RUN, num_inference_steps=3))


def test_two_threads_with_different_guiders_get_their_own_results(tiny_pipe):
    guiders = [ClassifierFreeGuidance(4.0, 7.0), MultimodalGuider()]
    reference = [_guided(tiny_pipe, g, seed) for seed, g in enumerate(guiders)]
    assert (reference[0].frames - reference[1].frames).abs().max() > 1e-3
    other = LTX2AudioVideoPipeline.from_pipe(tiny_pipe)  # shares the transformer and scheduler
    rounds, results, errors = 4, {}, []
    start = threading.Barrier(2)
    order = []

    def worker(index):
        pipe = tiny_pipe if index == 0 else other
        try:
            start.wait()
            for r in range(rounds):
                def record(p, i, sigma, tensors, index=index):
                    order.append(index)
                    return {}

                results[(index, r)] = pipe("a dog runs on the beach", generator=_gen(index), guider=guiders[index],
                                           callback_on_step_end=record, **dict(RUN, num_inference_steps=3))
        except Exception as exc:  # noqa: BLE001 - surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for (index, _), out in results.items():
        torch.testing.assert_close(out.frames, reference[index].frames, rtol=0, atol=0)
        torch.testing.assert_close(out.audio, reference[index].audio, rtol=0, atol=0)
    # calls ran one after another: every call's three steps are contiguous
    assert len(order) == 2 * rounds * 3
    assert all(len(set(order[i:i + 3])) == 1 for i in range(0, len(order), 3))


def test_calling_the_pipeline_from_its_own_callback_is_refused(tiny_pipe):
    def nested(pipe, i, sigma, tensors):
        pipe("a cat", **RUN)
        return {}

    with pytest.raises(RuntimeError, match="inside a running call"):
        tiny_pipe("a dog", callback_on_step_end=nested, **RUN)
    out = tiny_pipe("a dog", generator=_gen(), **RUN)  # the locks were released
    assert torch.isfinite(out.frames).all()


def test_a_user_subclass_delegating_to_the_pipeline_call_runs(tiny_components):
    from diffusers_ltx2 import LTX2Scheduler

    class Logged(LTX2AudioVideoPipeline):
        def __call__(self, *args, **kwargs):
            self.calls = getattr(self, "calls", 0) + 1
            return super().__call__(*args, **kwargs)

    pipe = Logged(scheduler=LTX2Scheduler(), guider=None, **tiny_components)
    out = pipe("a dog", generator=_gen(), **RUN)
    assert pipe.calls == 1 and torch.isfinite(out.frames).all()


def test_pad_to_common_length_left_pads_with_masked_zeros():
    from diffusers_ltx2 import PromptEmbeddings
    from diffusers_ltx2.transformer.passes import pad_to_common_length

    short = PromptEmbeddings(torch.ones(1, 2, 3), torch.ones(1, 2, 4), torch.ones(1, 2, dtype=torch.long))
    long = PromptEmbeddings(torch.full((1, 5, 3), 2.0), torch.full((1, 5, 4), 2.0), torch.ones(1, 5, dtype=torch.long))
    a, b = pad_to_common_length([short, long])
    assert b is long
    assert a.attention_mask.tolist() == [[0, 0, 0, 1, 1]] and a.attention_mask.dtype == torch.long
    assert a.video_context[:, :3].abs().sum() == 0 and torch.equal(a.video_context[:, 3:], short.video_context)
    assert a.audio_context.shape == (1, 5, 4) and torch.equal(a.audio_context[:, 3:], short.audio_context)
