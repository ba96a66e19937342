"""Condition types for the pipelines' `conditions=[...]`, one module each (model: ltx-core's `conditioning/types/`):
keyframes and clips at any frame, audio-to-video, video-to-audio, retake windows, IC-LoRA reference videos; the
`Condition` protocol with the `LatentEncoder` interface they encode through, the checks of a call's conditions and
the one initial-state builder."""

from .apply import ConditionedLatents, check_conditions, check_output_modalities, initial_state
from .audio import AudioCondition, encode_audio_tokens
from .base import ClipGeometry, Condition, ConditioningState, LatentEncoder
from .frozen_video import FrozenVideo
from .latent_guide import LatentGuide
from .reference import ReferenceVideo
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
    "LatentEncoder",
    "LatentGuide",
    "ReferenceVideo",
    "TemporalRegion",
    "VideoCondition",
    "check_conditions",
    "check_output_modalities",
    "encode_audio_tokens",
    "initial_state",
    "keyframe_positions",
    "region_mask",
]
