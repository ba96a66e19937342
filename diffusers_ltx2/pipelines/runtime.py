"""How a pipeline runs its stages: the `StageRuntime` of a call from the pipeline's components and the resolved
call (`PipelineCall`), and the adapter of a diffusers-style `callback_on_step_end` to the denoising loop."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import replace

import torch

from ..transformer import TextContexts, TransformerPasses
from .stage import Stage, StageRuntime

__all__ = ["stage_runtime", "step_callback"]


def stage_runtime(pipe, call, contexts: TextContexts) -> StageRuntime:
    """The runtime of `call`'s stages on `pipe`: its latent encoder, the call's prompt contexts, one
    `TransformerPasses` per stage (attention control for the stage's guider, the call's run options), LoRA switching
    on the transformer and connectors, a named progress bar per stage, the user's step callback and interrupt."""
    run = call.run

    def make_passes(guider, cross_modal: bool) -> TransformerPasses:
        return TransformerPasses(
            pipe.transformer, attention_control=pipe.attention_control_for(guider),
            attention_kwargs=run.attention_kwargs, max_batch_passes=run.max_batch_passes,
            use_cross_timestep=run.use_cross_timestep, cross_modal=cross_modal,
        )

    @contextmanager
    def progress_bar(total: int, name: str | None):
        old = dict(getattr(pipe, "_progress_bar_config", {}))
        if name is not None:
            pipe.set_progress_bar_config(**{**old, "desc": name})
        try:
            with pipe.progress_bar(total=total) as bar:
                yield bar
        finally:
            pipe._progress_bar_config = old

    def on_stage_start(stage: Stage) -> None:
        pipe._num_timesteps = stage.num_steps  # diffusers' `num_timesteps`: the running stage's steps

    return StageRuntime(
        encoder=pipe.latent_encoder(call.device), contexts=contexts, make_passes=make_passes,
        generator=call.generator, adapter_models=tuple(m for m in (pipe.transformer, pipe.connectors) if m is not None),
        progress_bar=progress_bar,
        step_callback=lambda ctx: step_callback(pipe, run.callback, run.callback_tensor_inputs, ctx),
        should_stop=lambda: pipe.interrupt, on_stage_start=on_stage_start,
    )


def step_callback(pipe, callback, tensor_inputs, contexts: TextContexts | None = None):
    """Adapt a diffusers-style `callback_on_step_end(pipe, step, sigma, tensors) -> dict` to the denoising loop.

    The callback sees `latents` / `audio_latents` (packed float32 tokens `(B, N, C)`) and `prompt_embeds` /
    `negative_prompt_embeds` (connector-stage video contexts `(B, L, D)`, the negative `None` when no negative pass
    runs); tensors it returns replace them for the following steps.
    """
    if callback is None:
        return None
    state = {"contexts": contexts}

    def on_step_end(step, sigma, video, audio):
        ctx = state["contexts"]
        names = {"latents": video.latent, "audio_latents": audio.latent,
                 "prompt_embeds": ctx.positive.video_context if ctx is not None else None,
                 "negative_prompt_embeds": ctx.negative.video_context if ctx is not None and ctx.negative
                 is not None else None}
        out = callback(pipe, step, sigma, {k: names[k] for k in tensor_inputs}) or {}
        if "latents" in out:
            video = replace(video, latent=out["latents"].to(torch.float32))
        if "audio_latents" in out:
            audio = replace(audio, latent=out["audio_latents"].to(torch.float32))
        if ctx is not None and out.get("prompt_embeds") is not None:
            ctx = replace(ctx, positive=replace(ctx.positive, video_context=out["prompt_embeds"]))
        if ctx is not None and ctx.negative is not None and out.get("negative_prompt_embeds") is not None:
            ctx = replace(ctx, negative=replace(ctx.negative, video_context=out["negative_prompt_embeds"]))
        if ctx is state["contexts"]:
            return video, audio
        state["contexts"] = ctx
        return video, audio, ctx

    return on_step_end
