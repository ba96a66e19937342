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
from .frozen_video import FrozenVideo
from .temporal_region import TemporalRegion, region_mask
from .video import DEFAULT_IMAGE_CRF, VideoCondition, keyframe_positions

__all__ = [
    "AudioCondition",
    "ClipGeometry",
    "Condition",
    "ConditionedLatents",
    "ConditioningState",
    "DEFAULT_IMAGE_CRF",
    "FrozenVideo",
    "TemporalRegion",
    "VideoCondition",
    "check_conditions",
    "check_output_modalities",
    "encode_audio_tokens",
    "geometry_for",
    "keyframe_positions",
    "prepare_conditioned_latents",
    "region_mask",
]
