"""Classifier-free guidance on x0 predictions, per modality."""

from __future__ import annotations

from typing import Mapping

from diffusers.configuration_utils import register_to_config

from .base import CONDITIONAL, GuidancePass, Guider, Prediction, StepPlan

NEGATIVE = GuidancePass("uncond", negative=True)


def cfg_combine(cond, uncond, scale: float):
    """`cond + (scale - 1) * (cond - uncond)`: the official delta form (scale 1 returns `cond`)."""
    if scale == 1.0:
        return cond
    return cond + (scale - 1.0) * (cond - uncond)


class ClassifierFreeGuidance(Guider):
    """Classifier-free guidance with a separate scale per modality.

    Args:
        guidance_scale: video cfg scale; 1.0 turns guidance off.
        audio_guidance_scale: audio cfg scale; `None` uses `guidance_scale`.
    """

    @register_to_config
    def __init__(self, guidance_scale: float = 3.0, audio_guidance_scale: float | None = 7.0):
        for name, value in (("guidance_scale", guidance_scale), ("audio_guidance_scale", audio_guidance_scale)):
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")

    @property
    def video_scale(self) -> float:
        return float(self.config.guidance_scale)

    @property
    def audio_scale(self) -> float:
        a = self.config.audio_guidance_scale
        return self.video_scale if a is None else float(a)

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
            video=cfg_combine(cond.video, uncond.video, self.video_scale),
            audio=cfg_combine(cond.audio, uncond.audio, self.audio_scale),
        )
