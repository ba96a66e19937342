"""Guidance methods: the `Guider` interface and its implementations."""

from .base import CONDITIONAL, GUIDER_CONFIG_NAME, GuidancePass, Guider, Prediction, StepPlan
from .cfg import ClassifierFreeGuidance, cfg_combine

__all__ = [
    "CONDITIONAL",
    "GUIDER_CONFIG_NAME",
    "ClassifierFreeGuidance",
    "GuidancePass",
    "Guider",
    "Prediction",
    "StepPlan",
    "cfg_combine",
]
