"""LTX-2 sigma schedules, the diffusers-compatible :class:`LTX2Scheduler` and the samplers of the denoising loop."""

from .samplers import SAMPLERS, EulerAncestralSampler, EulerSampler, Res2sSampler, Sampler
from .scheduling_ltx2 import LTX2Scheduler
from .sigmas import (
    BASE_SHIFT_ANCHOR,
    DISTILLED_REFINE_SIGMAS,
    DISTILLED_SIGMAS,
    MAX_SHIFT_ANCHOR,
    ltx2_sigmas,
    shift_for_tokens,
    validate_sigmas,
)

__all__ = [
    "BASE_SHIFT_ANCHOR",
    "DISTILLED_REFINE_SIGMAS",
    "DISTILLED_SIGMAS",
    "EulerAncestralSampler",
    "EulerSampler",
    "LTX2Scheduler",
    "MAX_SHIFT_ANCHOR",
    "Res2sSampler",
    "SAMPLERS",
    "Sampler",
    "ltx2_sigmas",
    "shift_for_tokens",
    "validate_sigmas",
]
