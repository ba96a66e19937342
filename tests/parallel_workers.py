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


class _Tracked:
    """Pass executor wrapper recording the allocation peak of every step (`memory.measure.AllocationTracker`)."""

    def __init__(self, inner):
        self.inner, self.peaks = inner, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __call__(self, *args):
        from diffusers_ltx2.memory.measure import AllocationTracker

        with AllocationTracker() as tracker:
            out = self.inner(*args)
        self.peaks.append(tracker.peak)
        return out


def step_peaks(pipe) -> list[int]:
    """Allocation peaks of the guided call's steps on `pipe` (its own pass executor, wrapped)."""
    wrap = pipe.pass_executor
    tracked = []

    def executor(local):
        tracked.append(_Tracked(wrap(local) if wrap is not None else local))
        return tracked[-1]

    pipe.pass_executor = executor
    call_guided(pipe)
    pipe.pass_executor = wrap
    return [p for t in tracked for p in t.peaks]


def _bias_states(pipe):
    from dataclasses import replace

    from diffusers_ltx2.conditioning import initial_state
    from diffusers_ltx2.transformer import TextContexts
    from diffusers_ltx2.latents.attention import mask_to_bias

    geometry = pipe.clip_geometry(1, TINY_CLIP["num_frames"], TINY_CLIP["height"], TINY_CLIP["width"],
                                  TINY_CLIP["frame_rate"])
    state = initial_state([], geometry, pipe.latent_encoder("cpu"), generator=_generator())
    n = state.video.latent.shape[1]
    mask = torch.rand(1, n, n, generator=torch.Generator().manual_seed(3))
    video = replace(state.video, self_attention_bias=mask_to_bias(mask))
    contexts = pipe.encode_text_contexts([PROMPT], [NEGATIVE], need_negative=True)
    return video, state.audio, TextContexts(positive=contexts.positive, negative=contexts.negative)


def biased_predictions(pipe, executor_of) -> dict:
    """x0 of the 4 passes of the multimodal guider's first step with an IC-LoRA attention bias on the video."""
    from diffusers_ltx2.transformer import TransformerPasses

    video, audio, contexts = _bias_states(pipe)
    guider = pipe.guider
    local = TransformerPasses(pipe.transformer, attention_control=pipe.attention_control_for(guider))
    executor = executor_of(local)
    with torch.no_grad():
        out = executor(guider.plan(0, 2, 0.9), video, audio, contexts, torch.tensor(0.9))
    unbiased = None
    if executor is local:
        from dataclasses import replace

        with torch.no_grad():
            unbiased = local(guider.plan(0, 2, 0.9), replace(video, self_attention_bias=None), audio, contexts,
                             torch.tensor(0.9))
    return {"biased": {k: (v.video, v.audio) for k, v in out.items()},
            "unbiased": None if unbiased is None else {k: (v.video, v.audio) for k, v in unbiased.items()}}


def tiled_latents():
    return torch.randn(1, 16, 3, 4, 4, generator=torch.Generator().manual_seed(5))


def _tiles(vae):
    """96 px tiles (stride 64) and 16-frame tiles (stride 8): 12 tiles for `tiled_latents`."""
    vae.enable_tiling(tile_sample_min_height=96, tile_sample_min_width=96, tile_sample_stride_height=64,
                      tile_sample_stride_width=64)
    vae.use_framewise_decoding = True
    vae.tile_sample_min_num_frames, vae.tile_sample_stride_num_frames = 16, 8
    return vae


def tiled_decode(vae):
    """Decode 17 frames of 128x128 px in 96 px tiles (stride 64) and 16-frame tiles (stride 8)."""
    with torch.no_grad():
        return _tiles(vae).decode(tiled_latents(), return_dict=False)[0]


def pipeline_decode(pipe):
    """The pipeline's own decode (`decode_video`: the streamed tiled decode of `memory.tiled_decode`) of the same
    latents and tiles."""
    _tiles(pipe.vae)
    return pipe.decode_video(tiled_latents(), "pt")


def extras() -> dict:
    """On a 2-rank pass layout and a sequence layout of every rank: memory per step, the IC-LoRA bias under
    sequence parallelism, and the parallel tiled VAE decode; each with its single-process counterpart."""
    from diffusers_ltx2.distributed import ParallelLayout, ParallelPasses, build_context, enable_parallel
    from diffusers_ltx2.distributed.sequence import enable_sequence_parallel
    from diffusers_ltx2.distributed.vae import enable_parallel_decode

    runtime = _runtime()
    out = {}
    if runtime.world_size == 2:
        out["single_peaks"] = step_peaks(one_stage())
        context = build_context(runtime, ParallelLayout(passes=2))
        out["parallel_peaks"] = step_peaks(enable_parallel(one_stage(), context))
    seq = build_context(runtime, ParallelLayout(sequence=runtime.world_size))
    out["bias_single"] = biased_predictions(one_stage(), lambda local: local)
    pipe = one_stage()
    enable_sequence_parallel(pipe.transformer, seq)
    out["bias_sequence"] = biased_predictions(pipe, lambda local: ParallelPasses(local, seq))
    from diffusers_ltx2.distributed.sequence import disable_sequence_parallel

    disable_sequence_parallel(pipe.transformer)  # back to one process: no hooks, no collectives
    out["bias_after_disable"] = biased_predictions(pipe, lambda local: local)
    out["decode_single"] = tiled_decode(one_stage().vae)
    vae = one_stage().vae
    decode = enable_parallel_decode(vae, seq.clip_ranks, seq.clip_group, runtime)
    out["decode_parallel"] = tiled_decode(vae)
    out["decode_tiles"] = (decode.num_tiles, decode.tiles_decoded, decode.bytes_received)
    out["pipeline_decode_single"] = pipeline_decode(one_stage())
    pipe = one_stage()
    decode = enable_parallel_decode(pipe.vae, seq.clip_ranks, seq.clip_group, runtime)
    out["pipeline_decode_parallel"] = pipeline_decode(pipe)
    out["pipeline_decode_tiles"] = (decode.num_tiles, decode.tiles_decoded)
    return out


def fail_mid_step(how: str, layout_kwargs: dict, timeout_s: float) -> dict:
    """Rank 1 raises (`how="raise"`; `"raise_and_stay"`: then stays alive without answering for 1.5 timeouts) or
    exits at once (`"exit"`, no record) inside the transformer call of the second step; every rank returns what
    it caught and after how many seconds."""
    import time

    from diffusers_ltx2.distributed import ParallelLayout, build_context, enable_parallel

    runtime = _runtime(timeout_s)
    context = build_context(runtime, ParallelLayout(**layout_kwargs))
    pipe = enable_parallel(one_stage(text=context.is_clip_leader), context)
    if runtime.rank == 1:
        calls = []

        def inject(module, args, kwargs):
            calls.append(1)
            if len(calls) == 2:
                if how.startswith("raise"):
                    raise RuntimeError("injected failure")
                os._exit(7)

        pipe.transformer.transformer_blocks[0].register_forward_pre_hook(inject, with_kwargs=True)
    start = time.monotonic()
    try:
        call_guided(pipe)
    except Exception as exc:  # noqa: BLE001 - returned to the test
        seconds = time.monotonic() - start
        if how == "raise_and_stay" and runtime.rank == 1:
            time.sleep(1.5 * timeout_s)
        return {"type": type(exc).__name__, "message": str(exc), "rank": getattr(exc, "rank", None),
                "seconds": seconds}
    return {"type": None, "seconds": time.monotonic() - start}


def comm_counts() -> dict:
    """Bytes counted at the collectives of one step vs the formulas: the guided step under pass parallel over
    every rank, an unguided step (one pass, every row full) under sequence parallel over every rank."""
    from diffusers_ltx2.distributed import ParallelLayout, ParallelPasses, build_context
    from diffusers_ltx2.distributed.comm import CommCounter, sequence_call_bytes
    from diffusers_ltx2.distributed.passes import pass_gather_bytes
    from diffusers_ltx2.distributed.sequence import enable_sequence_parallel
    from diffusers_ltx2.guiders.base import StepPlan
    from diffusers_ltx2.transformer import TransformerPasses

    runtime = _runtime()
    out = {}
    for name in ("passes", "sequence"):
        layout = ParallelLayout(**{name: runtime.world_size})
        context = build_context(runtime, layout)
        pipe = one_stage()
        video, audio, contexts = _bias_states(pipe)
        from dataclasses import replace

        video = replace(video, self_attention_bias=None)
        plan = pipe.guider.plan(0, 2, 0.9) if name == "passes" else StepPlan()
        if name == "sequence":
            enable_sequence_parallel(pipe.transformer, context)
        local = TransformerPasses(pipe.transformer, attention_control=pipe.attention_control_for(pipe.guider))
        executor = ParallelPasses(local, context)
        with torch.no_grad(), CommCounter() as counter:
            executor(plan, video, audio, contexts, torch.tensor(0.9))
        if name == "passes":
            formula = pass_gather_bytes(executor.last_shares, plan, video.latent.shape, audio.latent.shape)["received"]
        else:
            from diffusers_ltx2.distributed.sequence import sequence_shard

            formula = sequence_call_bytes(pipe.transformer.config, rows=1, video_tokens=video.latent.shape[1],
                                          audio_tokens=audio.latent.shape[1], shards=runtime.world_size,
                                          itemsize=4, attention=sequence_shard(pipe.transformer).attention)["total"]
        out[name] = {"counted": dict(counter.bytes), "formula": formula}
    return out


def everything(jobs: list[tuple[str, dict]]) -> dict:
    """`suite(jobs)`, `extras()` and `comm_counts()` in one spawned group."""
    return {"jobs": suite(jobs), "extras": extras(), "comm": comm_counts()}


def gpu_suite(jobs: list[tuple[str, dict]]) -> dict:
    """On CUDA ranks (NCCL): each job alone on this rank's GPU, then under its layout; CPU copies of both."""
    from diffusers_ltx2.distributed import ParallelLayout, build_context, enable_parallel

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    runtime = _runtime()
    results = {}
    for name, layout_kwargs in jobs:
        build, call = CALLS[name]
        alone = {k: v.cpu() for k, v in call(build().to(runtime.device)).items()}
        context = build_context(runtime, ParallelLayout(**layout_kwargs))
        pipe = enable_parallel(build(text=context.is_clip_leader).to(runtime.device), context)
        results[(name, repr(context.layout))] = (alone, {k: v.cpu() for k, v in call(pipe).items()})
    return results
