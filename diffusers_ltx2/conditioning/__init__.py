"""Condition types for `LTX2AudioVideoPipeline(..., conditions=[...])`, one module each (model: ltx-core's
`conditioning/types/`): keyframes and clips at any frame, audio-to-video, video-to-audio, retake windows."""

from .apply import (
    ConditionedLatents,
    check_conditions,
    check_output_modalities,
    geometry_for,
    prepare_conditioned_latents,
)
from .audio import AudioCondition, encode_audio_tokens
from .base import ClipGeometry, Condition, ConditioningState
from .extend import ExtensionPlan, extend, plan_extension
from .frozen_video import FrozenVideo
from .latent_guide import LatentGuide
from .temporal_region import TemporalRegion, region_mask
from .video import DEFAULT_IMAGE_CRF, VideoCondition, keyframe_positions

__all__ = [
    "AudioCondition",
    "ClipGeometry",
    "Condition",
    "ConditionedLatents",
    "ConditioningState",
    "DEFAULT_IMAGE_CRF",
    "ExtensionPlan",
    "FrozenVideo",
    "LatentGuide",
    "TemporalRegion",
    "VideoCondition",
    "check_conditions",
    "check_output_modalities",
    "encode_audio_tokens",
    "extend",
    "geometry_for",
    "keyframe_positions",
    "plan_extension",
    "prepare_conditioned_latents",
    "region_mask",
]
