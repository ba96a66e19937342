"""Classifier-free guidance on x0 predictions, per modality."""

from __future__ import annotations

from typing import Mapping

from diffusers.configuration_utils import register_to_config

from .base import CONDITIONAL, GuidancePass, PerModalityScaleGuider, Prediction, StepPlan
from .combine import multimodal_combine

NEGATIVE = GuidancePass("uncond", negative=True)


class ClassifierFreeGuidance(PerModalityScaleGuider):
    """Classifier-free guidance with a separate scale per modality.

    Args:
        guidance_scale: video cfg scale; 1.0 turns guidance off.
        audio_guidance_scale: audio cfg scale; `None` uses `guidance_scale`.
    """

    scale_names = ("guidance_scale", "audio_guidance_scale")

    @register_to_config
    def __init__(self, guidance_scale: float = 3.0, audio_guidance_scale: float | None = 7.0):
        self.check_scales()

    @property
    def uses_negative_prompt(self) -> bool:
        return self.video_scale != 1.0 or self.audio_scale != 1.0

    def plan(self, step_index: int, num_steps: int, sigma: float) -> StepPlan:
        return StepPlan(passes=(CONDITIONAL, NEGATIVE) if self.uses_negative_prompt else (CONDITIONAL,))

    def combine(self, step_index: int, plan: StepPlan, predictions: Mapping[str, Prediction]) -> Prediction:
        cond = predictions[CONDITIONAL.name]
        if not self.uses_negative_prompt:
            return cond
        uncond = predictions[NEGATIVE.name]
        return Prediction(
            video=multimodal_combine(cond.video, uncond.video, cfg=self.video_scale),
            audio=multimodal_combine(cond.audio, uncond.audio, cfg=self.audio_scale),
        )
