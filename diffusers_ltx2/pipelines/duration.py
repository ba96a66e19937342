"""Automatic clip length: `num_frames` left out on a pipeline with a `duration_head` (LTX-2.5).

The head is diffusers' `LTX2DurationHead`: it reads the prompt's connector outputs (video and audio contexts),
predicts seconds, and `predict_num_frames` clamps them to `[min_seconds, max_seconds]` and snaps to the VAE's
`8k + 1` frame grid. diffusers 0.42.1 `LTX2Pipeline.__call__` and official ltx-pipelines 1.2
(`resolve_num_frames` with `AutoDuration(min_seconds=1, max_seconds=20)`) both predict from the positive prompt's
connector outputs, after prompt encoding and before the latents are drawn; so do we. Without a head, `num_frames`
left out is 121, as in diffusers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..loaders.prompt_embeddings import PromptEmbeddings

#: `num_frames` when it is left out on a pipeline without a duration head (diffusers' fixed default).
DEFAULT_NUM_FRAMES = 121


@dataclass(frozen=True, eq=False)
class AutoDuration:
    """A call whose clip length the duration head predicts (`pipelines.call.PipelineCall.duration`): the bounds of
    the prediction (seconds) and what depends on the length - the first stage's schedule (`num_inference_steps`,
    or custom `sigmas`) and the conditions' checks (`output_modalities`)."""

    min_seconds: float = 1.0
    max_seconds: float = 20.0
    num_inference_steps: int = 40
    sigmas: list[float] | None = None
    output_modalities: tuple[str, ...] = ("video", "audio")


def check_duration_head(head) -> None:
    """A `duration_head` component must be diffusers' `LTX2DurationHead` (or have its `predict_num_frames`).

    Raises:
        ValueError: anything else.
    """
    if head is not None and not (isinstance(head, torch.nn.Module) and callable(getattr(head, "predict_num_frames",
                                                                                       None))):
        raise ValueError(f"duration_head must be diffusers' LTX2DurationHead, got {type(head).__name__}")


def check_auto_duration(*, batch_size: int = 1, conditions=None, latents=None, audio_latents=None) -> None:
    """What cannot go with a predicted clip length, checked before any model runs.

    Raises:
        ValueError: several prompts (one predicted length cannot serve prompts of different natural lengths, as
            diffusers refuses), or `conditions` / `latents` / `audio_latents`, whose shapes fix the clip length:
            pass `num_frames` with them.
    """
    if batch_size > 1:
        raise ValueError(
            f"num_frames was omitted so the duration head would predict the clip length, but {batch_size} prompts "
            "were supplied; prompts with different natural lengths cannot share one frame count: call the "
            "pipeline once per prompt, or pass num_frames"
        )
    fixed = [name for name, value in (("conditions", conditions), ("latents", latents),
                                      ("audio_latents", audio_latents)) if value is not None]
    if fixed:
        raise ValueError(f"num_frames was omitted (predicted by the duration head), but {' / '.join(fixed)} fix the "
                         "clip length: pass num_frames with them")


def placeholder_num_frames(pipe) -> int:
    """A valid frame count for the checks that run before the length is predicted (`8 + 1`)."""
    return pipe.vae_temporal_compression_ratio + 1


def predict_num_frames(head, embeddings: PromptEmbeddings, *, frame_rate: float, temporal_ratio: int,
                       min_seconds: float = 1.0, max_seconds: float = 20.0) -> int:
    """The clip length the duration head predicts for the first prompt of connector-stage `embeddings`.

    Returns an `8k + 1` frame count (`temporal_ratio = 8`) within `[min_seconds, max_seconds] * frame_rate`
    (diffusers' `LTX2DurationHead.predict_num_frames`: clamp, then snap down to the grid, up when that falls
    below the minimum).
    """
    if embeddings.stage != "connector":
        raise ValueError("the duration head reads connector outputs; run the text connectors first")
    param = next(head.parameters())
    video = embeddings.video_context[:1].to(param.device)
    audio = embeddings.audio_context[:1].to(param.device) if embeddings.audio_context is not None else None
    with torch.no_grad():
        return int(head.predict_num_frames(video, audio, frame_rate=frame_rate,
                                           temporal_compression_ratio=temporal_ratio, min_seconds=min_seconds,
                                           max_seconds=max_seconds))
