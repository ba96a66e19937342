"""What the ranks of the multi-process tests run (imported by spawned processes: `distributed_harness`).

The same builders and calls run in the test process without any process group, giving the single-process
references the ranks are compared with.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np
import torch

from diffusers_ltx2.factory import TINY, TINY_CLIP, build_components

PROMPT, NEGATIVE = "a cat walks in the snow", "blurry"
TWO_STAGE_CLIP = dict(height=128, width=128, num_frames=17, frame_rate=24.0)  # stage 1 12 tokens, stage 2 48


def _components(text: bool = True) -> dict:
    torch.manual_seed(0)
    comps = build_components(TINY, seed=0)
    if not text:  # a non-leader rank: no Gemma (prompts come from the leader)
        comps.update(text_encoder=None, tokenizer=None)
    return comps


def one_stage(text: bool = True):
    from diffusers_ltx2 import LTX2AudioVideoPipeline, LTX2Scheduler, MultimodalGuider

    pipe = LTX2AudioVideoPipeline(scheduler=LTX2Scheduler(), guider=MultimodalGuider(), **_components(text))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def two_stage(text: bool = True):
    from diffusers.pipelines.ltx2.latent_upsampler import LTX2LatentUpsamplerModel

    from diffusers_ltx2 import LTX2Scheduler, LTX2TwoStagePipeline, MultimodalGuider
    from two_stage_files import write_official_lora

    comps = _components(text)
    torch.manual_seed(0)
    up = LTX2LatentUpsamplerModel(in_channels=comps["vae"].config.latent_channels, mid_channels=32,
                                  num_blocks_per_stage=1, use_rational_resampler=False).eval()
    pipe = LTX2TwoStagePipeline(scheduler=LTX2Scheduler(), guider=MultimodalGuider(), latent_upsampler=up, **comps)
    pipe.set_progress_bar_config(disable=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "distilled.safetensors")
        write_official_lora(path, pipe.transformer, seed=2)
        pipe.load_distilled_lora(path, strength=0.8)
    return pipe


def _generator():
    return torch.Generator().manual_seed(0)


def _latents(out) -> dict:
    return {"video": out.frames.detach().clone(), "audio": out.audio.detach().clone()}


def call_guided(pipe) -> dict:
    """The full multimodal guider (cfg, STG, modality isolation: 4 passes a step), 2 steps."""
    out = pipe(PROMPT, negative_prompt=NEGATIVE, **TINY_CLIP, num_inference_steps=2, output_type="latent",
               generator=_generator())
    return _latents(out)


def keyframe_a2v_conditions():
    from diffusers_ltx2.conditioning import AudioCondition, VideoCondition

    img = np.random.RandomState(0).randint(0, 255, (64, 64, 3), dtype=np.uint8)
    rate = 16000
    t = torch.arange(rate) / rate
    wave = torch.stack([torch.sin(2 * torch.pi * 300 * t), torch.sin(2 * torch.pi * 500 * t)]) * 0.4
    return [VideoCondition(img, frame_index=8), AudioCondition(wave, rate)]


def call_keyframe_a2v(pipe) -> dict:
    """A keyframe on the last frame (4 appended video tokens) and audio-to-video (audio frozen)."""
    out = pipe(PROMPT, negative_prompt=NEGATIVE, **TINY_CLIP, num_inference_steps=2, output_type="latent",
               conditions=keyframe_a2v_conditions(), generator=_generator())
    return _latents(out)


def call_two_stage(pipe) -> dict:
    """Stage 1 guided at 64x64, upsampled, stage 2 with the distilled LoRA."""
    out = pipe(PROMPT, negative_prompt=NEGATIVE, **TWO_STAGE_CLIP, num_inference_steps=2, output_type="latent",
               generator=_generator())
    return _latents(out)


CALLS = {"guided": (one_stage, call_guided), "keyframe_a2v": (one_stage, call_keyframe_a2v),
         "two_stage": (two_stage, call_two_stage)}


def reference(name: str) -> dict:
    """Single-process result of call `name` (no process group)."""
    build, call = CALLS[name]
    return call(build())


def _runtime(timeout_s: float = 120.0):
    from diffusers_ltx2.distributed import init_distributed

    return init_distributed(timeout_s=timeout_s)


def suite(jobs: list[tuple[str, dict]]) -> dict:
    """Run every `(call name, ParallelLayout kwargs)` job on this rank; returns `{(name, layout repr): latents}`
    plus the executor's last pass split and the ranks that decoded VAE tiles."""
    from diffusers_ltx2.distributed import ParallelLayout, build_context, enable_parallel

    runtime = _runtime()
    results = {}
    for name, layout_kwargs in jobs:
        layout = ParallelLayout(**layout_kwargs)
        context = build_context(runtime, layout)
        build, call = CALLS[name]
        pipe = enable_parallel(build(text=context.is_clip_leader), context)
        seen = []  # (rows, video tokens) of every video self-attention call of block 0 on this rank
        hook = pipe.transformer.transformer_blocks[0].attn1.register_forward_pre_hook(
            lambda m, a, k: seen.append(tuple((k.get("hidden_states") if "hidden_states" in k else a[0]).shape[:2])),
            with_kwargs=True)
        out = call(pipe)
        hook.remove()
        results[(name, repr(layout))] = {**out, "attn1": seen, "decoded_tiles": pipe.vae._decode.tiles_decoded
                                         if layout.size > 1 else None}
    return results
