"""One denoising step's transformer work: the guidance passes a guider plans, run as batched calls of diffusers'
`LTX2VideoTransformer3DModel`, returning x0 predictions in float32.

`TransformerPasses` is the one object that executes a step's passes (replace it to run them elsewhere, e.g. spread
over ranks); `TextContexts` are the prompt embeddings each pass gives each stream.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ..acceleration.attention_backends import masks_for_backend
from ..guiders.base import GuidancePass, Prediction, StepPlan
from ..latents.state import ModalityLatents
from ..loaders.prompt_embeddings import PromptEmbeddings
from .attention_bias import self_attention_bias
from .cache_hooks import cache_context, check_cache_config
from .grouping import AUTO, auto_batch_passes, available_memory_bytes, estimate_pass_bytes, group_passes
from .inputs import cross_timestep, frozen_sigmas, keyframes_mask


@dataclass(frozen=True)
class TextContexts:
    """Connector-stage prompt embeddings for the positive and (optional) negative prompt.

    `frozen_video` / `frozen_audio`: that modality is held at given values for the whole call (A2V, V2A); its
    stream reads the *positive* prompt in negative passes too (official A2V: the frozen audio guider has no
    negative context, so `multi_modal_guider_denoising_func` gives the audio stream the positive one), unless
    it is named in `guided_frozen` ("video" / "audio"): a modality a retake keeps whole reads the negative
    prompt, as official `retake.py` gives its guider the negative context
    (`ConditionedLatents.guided_frozen`).
    """

    positive: PromptEmbeddings
    negative: PromptEmbeddings | None = None
    frozen_video: bool = False
    frozen_audio: bool = False
    guided_frozen: frozenset = frozenset()

    def for_pass(self, p: GuidancePass, modality: str | None = None) -> PromptEmbeddings:
        """The embeddings a pass gives the `modality` ("video" / "audio") stream (`None`: the video's)."""
        name = "audio" if modality == "audio" else "video"
        frozen = self.frozen_audio if name == "audio" else self.frozen_video
        if not p.negative or (frozen and name not in self.guided_frozen):
            return self.positive
        if self.negative is None:
            raise ValueError(f"guidance pass {p.name!r} needs a negative prompt, but none was encoded")
        return self.negative


class TransformerPasses:
    """Runs guidance passes on diffusers' LTX-2 transformer and returns float32 x0 predictions.

    All passes of a step are stacked along the batch and evaluated in one transformer call (at most
    `max_batch_passes` passes per call; `1` runs them one after another, with the same results up to fp32
    rounding). Calls are formed by `transformer.grouping.group_passes`: passes that share the blocks before the STG
    block (conditional and perturbed) stay in one call, so every `max_batch_passes` keeps that saving.

    Args:
        transformer: `LTX2VideoTransformer3DModel`.
        attention_control: object installing per-sample perturbation / cross-attention gating for passes
            whose `needs_attention_control` is True (see `diffusers_ltx2.transformer.attention`); `None` means
            such passes are rejected.
        use_cross_timestep: cross-modal AdaLN uses the other modality's sigma (ltx-core 1.0.0 / diffusers' `True`);
            `False`: own timesteps (diffusers' legacy switch).
        cross_timestep_rule: one of `versions.CROSS_TIMESTEP_RULES`, overriding `use_cross_timestep` (LTX-2.5 runs
            with "own_scale_shift_cross_gate", see `transformer.inputs`).
        attention_kwargs: forwarded to the transformer (e.g. LoRA `scale`).
        max_batch_passes: passes per transformer call; `None` = all at once; `"auto"` = the most passes whose
            estimated activation memory (`grouping.estimate_pass_bytes`) fits `memory_fraction` of the free
            memory of the transformer's device (CUDA free memory, else the host's available memory), decided
            per step from the token counts.
        memory_fraction: share of the free memory `"auto"` may plan for (default 0.5).
        cross_modal: `False` switches audio->video and video->audio attention off in every pass (audio-only
            generation: the placeholder video stream cannot reach the audio).
    """

    def __init__(
        self,
        transformer,
        *,
        attention_control=None,
        use_cross_timestep: bool = True,
        attention_kwargs: dict | None = None,
        max_batch_passes: int | str | None = None,
        memory_fraction: float = 0.5,
        cross_modal: bool = True,
        cross_timestep_rule: str | None = None,
    ):
        if max_batch_passes != AUTO:
            group_passes([], max_batch_passes)  # validates: int >= 1 or None
        if not 0.0 < memory_fraction <= 1.0:
            raise ValueError(f"memory_fraction must be in (0, 1], got {memory_fraction}")
        check_cache_config(transformer)
        self.transformer = transformer
        self.attention_control = attention_control
        self.use_cross_timestep = use_cross_timestep
        self.cross_timestep_rule = cross_timestep_rule or ("cross_sigma" if use_cross_timestep else "own")
        self.attention_kwargs = attention_kwargs
        self.max_batch_passes = max_batch_passes
        self.cross_modal = cross_modal
        self.memory_fraction = memory_fraction
        self.num_calls = 0

    def __call__(
        self, plan: StepPlan, video: ModalityLatents, audio: ModalityLatents, contexts: TextContexts,
        sigma: torch.Tensor,
    ) -> dict[str, Prediction]:
        passes = list(plan.passes)
        if not self.cross_modal:
            passes = [replace(p, a2v=False, v2a=False) for p in passes]
        out: dict[str, Prediction] = {}
        for chunk in group_passes(passes, self._passes_per_call(len(passes), video, audio, contexts)):
            out.update(self._run(chunk, plan, video, audio, contexts, sigma))
        return {p.name: out[p.name] for p in passes}

    def _passes_per_call(self, num_passes: int, video, audio, contexts) -> int | None:
        if self.max_batch_passes != AUTO:
            return self.max_batch_passes
        per_pass = estimate_pass_bytes(self.transformer, video.latent.shape[1], audio.latent.shape[1],
                                       video.batch_size, contexts.positive.video_context.shape[1])
        budget = available_memory_bytes(video.latent.device) * self.memory_fraction
        return auto_batch_passes(num_passes, per_pass, int(budget))

    def _run(self, passes, plan, video, audio, contexts, sigma) -> dict[str, Prediction]:
        n = len(passes)
        dtype = self.transformer.dtype
        v_items = [contexts.for_pass(p, "video") for p in passes]
        a_items = [contexts.for_pass(p, "audio") for p in passes]
        ctx = PromptEmbeddings.cat(pad_to_common_length(v_items))
        # the audio stream reads other embeddings only when a frozen modality changes a pass's prompt
        same = all(a is v for a, v in zip(a_items, v_items))
        a_ctx = ctx if same else PromptEmbeddings.cat(pad_to_common_length(a_items))
        sigma = sigma.to(torch.float32)
        v_t = video.timesteps(sigma).repeat(n, 1)
        a_t = audio.timesteps(sigma).repeat(n, 1)
        sample_sigma = sigma.expand(n * video.batch_size) * 1000.0

        needs_control = any(p.needs_attention_control for p in passes)
        if needs_control and self.attention_control is None:
            raise ValueError(
                f"passes {[p.name for p in passes if p.needs_attention_control]} need perturbation or "
                "cross-attention control, but no attention control is installed on this transformer"
            )
        control = (
            self.attention_control.activate(passes, video.batch_size, plan.skip_blocks)
            if needs_control else _NullContext()
        )
        if audio.self_attention_bias is not None:
            raise ValueError("a self-attention bias is supported on the video tokens only")
        cache = cache_context(self.transformer, [p.name for p in passes])  # diffusers' cache hooks, if enabled
        # the per-model-version inputs (`transformer.inputs`) and the attention backend's masks, for every call
        video_sigma, audio_sigma = frozen_sigmas(self.cross_timestep_rule, sample_sigma, video, audio)
        rule = cross_timestep(self.transformer, self.cross_timestep_rule, video_sigma, audio_sigma)
        markers = keyframes_mask(self.transformer, video.coords, video.num_target_tokens, video.latent.shape[1],
                                 n * video.batch_size, video.keyframe_marker)
        text_mask, audio_text_mask, routing = masks_for_backend(  # mask-free backends (flash, sage)
            self.transformer, ctx.attention_mask, a_ctx.attention_mask, video.self_attention_bias)
        with (routing, control, cache, self_attention_bias(self.transformer, video.self_attention_bias),
              rule as use_cross):
            v_out, a_out = self.transformer(
                hidden_states=video.latent.repeat(n, 1, 1).to(dtype),
                audio_hidden_states=audio.latent.repeat(n, 1, 1).to(dtype),
                encoder_hidden_states=ctx.video_context.to(dtype),
                audio_encoder_hidden_states=a_ctx.audio_context.to(dtype),
                encoder_attention_mask=text_mask,
                audio_encoder_attention_mask=audio_text_mask,
                timestep=v_t * 1000.0,
                audio_timestep=a_t * 1000.0,
                sigma=video_sigma,
                audio_sigma=audio_sigma,
                video_coords=video.coords.repeat(n, 1, 1, 1),
                audio_coords=audio.coords.repeat(n, 1, 1, 1),
                use_cross_timestep=use_cross,
                **({} if markers is None else {"video_keyframes_mask": markers}),
                attention_kwargs=self.attention_kwargs,
                return_dict=False,
            )
        self.num_calls += 1
        v_x0 = _to_x0(video.latent.repeat(n, 1, 1), v_out, v_t)
        a_x0 = _to_x0(audio.latent.repeat(n, 1, 1), a_out, a_t)
        return {
            p.name: Prediction(
                video=v.contiguous() if plan.video else None, audio=a.contiguous() if plan.audio else None
            )
            for p, v, a in zip(passes, v_x0.chunk(n), a_x0.chunk(n))
        }


def pad_to_common_length(items: list[PromptEmbeddings]) -> list[PromptEmbeddings]:
    """Left-pad prompt contexts of different lengths (e.g. a 64-token conditioning file next to a 1024-token
    negative) to the longest, with zero tokens and mask 0, so that they can run in one batched call.

    Masked tokens receive a -10000 attention bias (diffusers' LTX-2 transformer), i.e. zero weight after the
    softmax, and text tokens carry no positions, so each row attends exactly as it would alone.
    """
    length = max(e.video_context.shape[1] for e in items)

    def pad(x: torch.Tensor | None, n: int):
        if x is None or n == 0:
            return x
        return torch.cat([x.new_zeros((x.shape[0], n, *x.shape[2:])), x], dim=1)

    out = []
    for e in items:
        n = length - e.video_context.shape[1]
        out.append(e if n == 0 else replace(
            e, video_context=pad(e.video_context, n), audio_context=pad(e.audio_context, n),
            attention_mask=pad(e.attention_mask, n),
        ))
    return out


def _to_x0(sample: torch.Tensor, velocity: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """x0 = x - t * v with per-token t, in float32."""
    return sample.float() - timesteps.unsqueeze(-1).float() * velocity.float()


class _NullContext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
