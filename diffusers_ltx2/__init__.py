"""diffusers-ltx2: Lightricks' LTX-2 joint audio+video diffusion for diffusers users.

Importing the package registers its pipelines with diffusers, so `diffusers.DiffusionPipeline.from_pretrained`
loads folders saved by `LTX2AudioVideoPipeline.save_pretrained`.
"""

from ._registration import register as _register
from .export import export_to_video_with_audio
from .guiders import ClassifierFreeGuidance, GuidancePass, Guider, Prediction, StepPlan
from .loaders import GemmaPromptEncoder, PromptEmbeddings, PromptEncoder
from .pipelines import LTX2AudioVideoPipeline, LTX2AudioVideoPipelineOutput, LTX2ICLoRAPipeline
from .schedulers import DISTILLED_REFINE_SIGMAS, DISTILLED_SIGMAS, LTX2Scheduler
from .guiders import (
    GuidanceAttentionControl,
    ModalityGuidance,
    ModalityGuidanceParams,
    MultimodalGuider,
    ScheduledGuider,
    SpatioTemporalGuidance,
)

__version__ = "0.1.0"

_register(
    pipelines={"LTX2AudioVideoPipeline": LTX2AudioVideoPipeline, "LTX2ICLoRAPipeline": LTX2ICLoRAPipeline},
    loadable_bases=("Guider", "LTX2Scheduler"),
)

__all__ = [
    "DISTILLED_REFINE_SIGMAS",
    "DISTILLED_SIGMAS",
    "ClassifierFreeGuidance",
    "GemmaPromptEncoder",
    "GuidancePass",
    "Guider",
    "LTX2AudioVideoPipeline",
    "LTX2AudioVideoPipelineOutput",
    "LTX2ICLoRAPipeline",
    "LTX2Scheduler",
    "Prediction",
    "PromptEmbeddings",
    "PromptEncoder",
    "StepPlan",
    "export_to_video_with_audio",
    "GuidanceAttentionControl",
    "ModalityGuidance",
    "ModalityGuidanceParams",
    "MultimodalGuider",
    "ScheduledGuider",
    "SpatioTemporalGuidance",
]
