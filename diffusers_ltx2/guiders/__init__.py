"""Guidance methods: the `Guider` interface and its implementations (pure: plans and combinations of x0
predictions; running the passes on the transformer is `diffusers_ltx2.transformer`)."""

from .base import CONDITIONAL, GUIDER_CONFIG_NAME, GuidancePass, Guider, PerModalityScaleGuider, Prediction, StepPlan
from .cfg import ClassifierFreeGuidance
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
    "ModalityGuidance",
    "ModalityGuidanceParams",
    "MultimodalGuider",
    "ScheduledGuider",
    "SpatioTemporalGuidance",
    "multimodal_combine",
]
