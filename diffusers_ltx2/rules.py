"""The clip-geometry rules of LTX-2 as plain Python (no torch), with the nearest valid values of a bad input.

The pipelines (`pipelines.validation`) and the `ltx2` command line (which checks every flag before importing
torch) share them. Each `*_problem` function returns `None` for a valid value, else the reason without the
parameter's name (`"must be 8k+1 (e.g. 121); nearest valid values: 17 or 25"`), so a caller can put the
Python name or the flag in front.
"""

from __future__ import annotations

#: frames per latent frame and pixels per latent pixel of the LTX-2 video VAE
TEMPORAL_RATIO = 8
SPATIAL_RATIO = 32
#: smallest side in pixels: two latent pixels (the VAE decoder's reflect padding fails on a 1-pixel latent)
MIN_SIDE = 64


def is_whole(value) -> bool:
    """An `int` that is not a `bool`."""
    return isinstance(value, int) and not isinstance(value, bool)


def nearest_multiples(value: int, multiple: int) -> tuple[int, int]:
    """The multiples of `multiple` just below (at least `multiple`) and just above `value`."""
    lower = max(multiple, value // multiple * multiple)
    upper = lower if value % multiple == 0 else (value // multiple + 1) * multiple
    return lower, upper


def nearest_frame_counts(num_frames: int, temporal_ratio: int = TEMPORAL_RATIO) -> tuple[int, int]:
    """The `k * temporal_ratio + 1` frame counts just below (at least 1) and just above `num_frames`."""
    lower = max(1, (num_frames - 1) // temporal_ratio * temporal_ratio + 1)
    upper = lower if lower >= num_frames else lower + temporal_ratio
    return lower, upper


def frame_count_problem(num_frames, temporal_ratio: int = TEMPORAL_RATIO) -> str | None:
    """Why `num_frames` is not a valid frame count (`k * temporal_ratio + 1`: the causal VAE encodes the first
    frame alone), or None."""
    if not is_whole(num_frames) or num_frames < 1:
        return f"must be a positive integer, got {num_frames!r}"
    if (num_frames - 1) % temporal_ratio:
        lower, upper = nearest_frame_counts(num_frames, temporal_ratio)
        return (f"must be {temporal_ratio}k+1 (e.g. 121), got {num_frames}; nearest valid values: {lower} or "
                f"{upper}")
    return None


def size_problem(value, multiple: int = SPATIAL_RATIO, minimum: int = MIN_SIDE) -> str | None:
    """Why `value` is not a valid height / width (a multiple of `multiple`, at least `minimum` pixels), or None."""
    minimum = max(minimum, multiple)
    if not is_whole(value) or value <= 0:
        return f"must be a positive integer, got {value!r}"
    if value % multiple:
        lower, upper = nearest_multiples(value, multiple)
        if value < minimum:
            return (f"must be a multiple of {multiple} and at least {minimum}, got {value}; nearest valid value: "
                    f"{max(upper, minimum)}")
        return f"must be a multiple of {multiple}, got {value}; nearest valid values: {lower} or {upper}"
    if value < minimum:
        pixels = "two latent pixels" if minimum == 2 * multiple else f"{minimum // multiple} latent pixels"
        return f"must be at least {minimum} ({pixels}), got {value}; nearest valid value: {minimum}"
    return None


def resolve_frame_index(frame_index: int, num_frames: int, length: int = 1) -> int:
    """The pixel frame media of `length` frames starts on: `frame_index` itself, or counted from the end of a
    `num_frames` clip when negative (-1: an image lands on the last frame, a clip ends on it), as the CLI's
    `@FRAME` and `VideoCondition(frame_index=-1)`. The result may lie outside the clip; callers check that."""
    return num_frames - length + 1 + frame_index if frame_index < 0 else frame_index
