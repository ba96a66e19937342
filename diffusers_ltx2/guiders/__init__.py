"""Guidance methods: the `Guider` interface and its implementations."""

from .base import CONDITIONAL, GUIDER_CONFIG_NAME, GuidancePass, Guider, PerModalityScaleGuider, Prediction, StepPlan
from .cfg import ClassifierFreeGuidance
from .attention import GuidanceAttentionControl, default_skip_blocks
from .combine import multimodal_combine
from .modality import ModalityGuidance
from .multimodal import ModalityGuidanceParams, MultimodalGuider
from .scheduled import ScheduledGuider
from .stg import SpatioTemporalGuidance

__all__ = [
    "CONDITIONAL",
    "GUIDER_CONFIG_NAME",
    "ClassifierFreeGuidance",
    "GuidancePass",
    "Guider",
    "PerModalityScaleGuider",
    "Prediction",
    "StepPlan",
    "GuidanceAttentionControl",
    "ModalityGuidance",
    "ModalityGuidanceParams",
    "MultimodalGuider",
    "ScheduledGuider",
    "SpatioTemporalGuidance",
    "default_skip_blocks",
    "multimodal_combine",
]
