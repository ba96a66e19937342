"""LTX-2 sigma schedules and the diffusers-compatible :class:`LTX2Scheduler`."""

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
    "LTX2Scheduler",
    "MAX_SHIFT_ANCHOR",
    "ltx2_sigmas",
    "shift_for_tokens",
    "validate_sigmas",
]
