"""Modality guidance on its own: away from the prediction made without audio<->video attention."""

from __future__ import annotations

from typing import Mapping

from diffusers.configuration_utils import register_to_config

from .base import CONDITIONAL, GuidancePass, PerModalityScaleGuider, Prediction, StepPlan
from .combine import multimodal_combine

ISOLATED_PASS = GuidancePass("isolated", a2v=False, v2a=False)


class ModalityGuidance(PerModalityScaleGuider):
    """`pred = c + (scale - 1) * (c - m)` per modality, `m` being the pass with audio-to-video and
    video-to-audio attention switched off in every block.

    Args:
        modality_scale: video modality scale (1 = off).
        audio_modality_scale: audio modality scale; `None` uses `modality_scale`.
    """

    scale_names = ("modality_scale", "audio_modality_scale")
    neutral_scale = 1.0
    needs_cross_modal = True

    @register_to_config
    def __init__(self, modality_scale: float = 3.0, audio_modality_scale: float | None = 3.0):
        self.check_scales()

    def plan(self, step_index: int, num_steps: int, sigma: float) -> StepPlan:
        if self.video_scale == 1.0 and self.audio_scale == 1.0:
            return StepPlan(passes=(CONDITIONAL,))
        return StepPlan(passes=(CONDITIONAL, ISOLATED_PASS))

    def combine(self, step_index: int, plan: StepPlan, predictions: Mapping[str, Prediction]) -> Prediction:
        cond = predictions[CONDITIONAL.name]
        isolated = predictions.get(ISOLATED_PASS.name)
        return Prediction(
            video=multimodal_combine(cond.video, isolated=isolated.video if isolated is not None else None,
                                     modality_scale=self.video_scale),
            audio=multimodal_combine(cond.audio, isolated=isolated.audio if isolated is not None else None,
                                     modality_scale=self.audio_scale),
        )
