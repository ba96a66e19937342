"""How a pipeline runs its stages: the `StageRuntime` of a call from the pipeline's components and the resolved
call (`PipelineCall`), and the adapter of a diffusers-style `callback_on_step_end` to the denoising loop."""

from __future__ import annotations

from dataclasses import replace

import torch

from ..transformer import TextContexts, TransformerPasses
from ..versions import cross_timestep_rule
from .stage import Stage, StageRuntime

__all__ = ["named_progress_bar", "stage_runtime", "step_callback"]


def stage_runtime(pipe, call, contexts: TextContexts) -> StageRuntime:
    """The runtime of `call`'s stages on `pipe`: its latent encoder, the call's prompt contexts, one
    `TransformerPasses` per stage (attention control for the stage's guider, the call's run options, the model
    version's cross-attention timestep rule; handed to `pipe.pass_executor` when one is set), LoRA switching
    on the transformer and connectors, a named progress bar per stage (the stage's name; "denoise" for an unnamed
    stage unless the user set a label with `set_progress_bar_config(desc=...)`), the user's step callback and
    interrupt."""
    run = call.run

    def make_passes(guider, cross_modal: bool) -> TransformerPasses:
        passes = TransformerPasses(
            pipe.transformer, attention_control=pipe.attention_control_for(guider),
            attention_kwargs=run.attention_kwargs, max_batch_passes=run.max_batch_passes,
            use_cross_timestep=run.use_cross_timestep, cross_modal=cross_modal,
            cross_timestep_rule=cross_timestep_rule(pipe.model_version) if run.use_cross_timestep else "own",
        )
        executor = pipe.pass_executor  # `None`, or e.g. `distributed.ParallelPasses` over ranks
        return passes if executor is None else executor(passes)

    def on_stage_start(stage: Stage) -> None:
        pipe._num_timesteps = stage.num_steps  # diffusers' `num_timesteps`: the running stage's steps

    return StageRuntime(
        encoder=pipe.latent_encoder(call.device), contexts=contexts, make_passes=make_passes,
        generator=call.generator, adapter_models=tuple(m for m in (pipe.transformer, pipe.connectors) if m is not None),
        progress_bar=lambda total, name: named_progress_bar(pipe, total, name or "denoise", keep_name=name is None),
        step_callback=lambda ctx: step_callback(pipe, run.callback, run.callback_tensor_inputs, ctx),
        should_stop=lambda: pipe.interrupt, on_stage_start=on_stage_start,
    )


def named_progress_bar(pipe, total: int, name: str, *, keep_name: bool = False):
    """diffusers' `pipe.progress_bar(total=...)` labelled `name` (`keep_name`: unless the user set a label with
    `set_progress_bar_config(desc=...)`); the pipeline's other progress-bar settings are kept and its own label is
    restored."""
    config = dict(getattr(pipe, "_progress_bar_config", {}))
    if keep_name and "desc" in config:
        return pipe.progress_bar(total=total)
    pipe._progress_bar_config = {**config, "desc": name}
    try:
        return pipe.progress_bar(total=total)
    finally:
        pipe._progress_bar_config = config


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
