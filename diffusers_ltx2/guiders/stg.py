"""Spatio-temporal guidance (STG) on its own: away from a prediction whose self-attention is perturbed."""

from __future__ import annotations

from typing import Mapping

from diffusers.configuration_utils import register_to_config

from .base import CONDITIONAL, GuidancePass, PerModalityScaleGuider, Prediction, StepPlan
from .combine import multimodal_combine
from .multimodal import check_skip_blocks

PERTURBED_NAME = "perturbed"


class SpatioTemporalGuidance(PerModalityScaleGuider):
    """`pred = c + scale * (c - p)` per modality, `p` being the pass with self-attention replaced by its value
    projection (`to_out(V)`, the gate kept) in `skip_blocks`.

    Args:
        stg_scale: video STG scale (0 = off; the video self-attention is then not perturbed either).
        audio_stg_scale: audio STG scale; `None` uses `stg_scale`.
        skip_blocks: perturbed blocks; `None` = the model's default (LTX-2.0: [29], 2.3: [28]).
    """

    scale_names = ("stg_scale", "audio_stg_scale")
    neutral_scale = 0.0

    @register_to_config
    def __init__(self, stg_scale: float = 1.0, audio_stg_scale: float | None = 1.0,
                 skip_blocks: list[int] | None = None):
        self.check_scales()
        self.skip_blocks = check_skip_blocks(skip_blocks)

    def validate_for(self, transformer) -> None:
        check_skip_blocks(self.skip_blocks, len(transformer.transformer_blocks))

    def plan(self, step_index: int, num_steps: int, sigma: float) -> StepPlan:
        passes = (CONDITIONAL,)
        if self.video_scale != 0.0 or self.audio_scale != 0.0:
            perturbed = GuidancePass(PERTURBED_NAME, perturb_video=self.video_scale != 0.0,
                                     perturb_audio=self.audio_scale != 0.0)
            passes = (CONDITIONAL, perturbed)
        return StepPlan(passes=passes, skip_blocks=self.skip_blocks or ())

    def combine(self, step_index: int, plan: StepPlan, predictions: Mapping[str, Prediction]) -> Prediction:
        cond = predictions[CONDITIONAL.name]
        perturbed = predictions.get(PERTURBED_NAME, cond)
        return Prediction(
            video=multimodal_combine(cond.video, perturbed=perturbed.video, stg=self.video_scale),
            audio=multimodal_combine(cond.audio, perturbed=perturbed.audio, stg=self.audio_scale),
        )
