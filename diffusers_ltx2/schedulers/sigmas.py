"""Pure sigma-schedule functions for LTX-2 sampling.

The official LTX-2 schedule starts from ``t = linspace(1, 0, steps + 1)`` and applies an exponential time shift
whose strength grows linearly with the number of video latent tokens (anchored at 1024 tokens -> ``base_shift`` and
4096 tokens -> ``max_shift``). The non-zero part of the schedule is then optionally stretched so that its last value
equals ``terminal``; the final ``0`` is always kept.

The arithmetic below deliberately uses the same operations, in the same order and precision (float32 tensors mixed
with Python-float ``math.exp`` constants), as the reference implementation so that the results agree to ~1e-7.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Union

import numpy as np
import torch

__all__ = [
    "BASE_SHIFT_ANCHOR",
    "MAX_SHIFT_ANCHOR",
    "DISTILLED_SIGMAS",
    "DISTILLED_REFINE_SIGMAS",
    "shift_for_tokens",
    "ltx2_sigmas",
    "validate_sigmas",
]

#: Token count at which the shift equals ``base_shift``.
BASE_SHIFT_ANCHOR = 1024
#: Token count at which the shift equals ``max_shift`` (also the official default token count).
MAX_SHIFT_ANCHOR = 4096

#: Fixed 8-step schedule of the distilled LTX-2 checkpoints (first stage).
DISTILLED_SIGMAS = (1.0, 0.99375, 0.9875, 0.98125, 0.975, 0.909375, 0.725, 0.421875, 0.0)
#: Fixed 3-step schedule used by the distilled two-stage pipeline to refine the upsampled latent.
DISTILLED_REFINE_SIGMAS = (0.909375, 0.725, 0.421875, 0.0)

# ``math.exp`` overflows a Python float just above 709.78; refuse shifts that cannot be represented.
_MAX_EXP_ARGUMENT = 709.0

SigmasLike = Union[Sequence[float], torch.Tensor, np.ndarray]


def _check_finite_number(name: str, value: float) -> float:
    """Return ``value`` as a float, raising ``ValueError`` when it is not a finite real number."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"`{name}` must be a real number, got {value!r} ({type(value).__name__}).")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"`{name}` must be finite, got {value}.")
    return value


def shift_for_tokens(num_tokens: int, max_shift: float = 2.05, base_shift: float = 0.95) -> float:
    """Return the exponential time-shift ``mu`` for a given number of video latent tokens.

    The shift is the straight line through ``(1024, base_shift)`` and ``(4096, max_shift)``, evaluated at
    ``num_tokens`` (it is not clamped, so more than 4096 tokens gives a shift above ``max_shift``).

    Args:
        num_tokens: Number of video latent tokens (``frames * height * width`` of the latent), ``>= 1``.
        max_shift: Shift at 4096 tokens.
        base_shift: Shift at 1024 tokens.

    Raises:
        ValueError: If ``num_tokens`` is not a positive integer or the shifts are not finite numbers.
    """
    if isinstance(num_tokens, bool) or not isinstance(num_tokens, (int, np.integer)) or num_tokens < 1:
        raise ValueError(f"`num_tokens` must be a positive integer, got {num_tokens!r}.")
    max_shift = _check_finite_number("max_shift", max_shift)
    base_shift = _check_finite_number("base_shift", base_shift)
    slope = (max_shift - base_shift) / (MAX_SHIFT_ANCHOR - BASE_SHIFT_ANCHOR)
    intercept = base_shift - slope * BASE_SHIFT_ANCHOR
    return int(num_tokens) * slope + intercept


def _stretch_to_terminal(sigmas: torch.Tensor, terminal: float) -> torch.Tensor:
    """Linearly rescale ``1 - sigma`` of the non-zero sigmas so the last non-zero sigma becomes ``terminal``.

    Sigmas equal to 1 stay at 1 and zeros stay zero. Degenerate case: when every non-zero sigma is exactly 1.0 in
    float32 (e.g. a single step, or a huge shift) the rescale factor is 0 and the reference implementation yields
    NaN; here the limit is used instead: the last non-zero sigma becomes ``terminal`` and the others stay 1.
    """
    nonzero = sigmas != 0
    if not bool(nonzero.any()):
        return sigmas
    distance_from_one = 1.0 - sigmas[nonzero]
    scale = distance_from_one[-1] / (1.0 - terminal)
    if float(scale) == 0.0:
        stretched = torch.ones_like(distance_from_one)
        stretched[-1] = terminal
    else:
        stretched = 1.0 - (distance_from_one / scale)
    sigmas[nonzero] = stretched
    return sigmas


def ltx2_sigmas(
    num_steps: int,
    num_tokens: int = MAX_SHIFT_ANCHOR,
    max_shift: float = 2.05,
    base_shift: float = 0.95,
    stretch: bool = True,
    terminal: float = 0.1,
) -> torch.Tensor:
    """Compute the official LTX-2 sigma schedule.

    Args:
        num_steps: Number of denoising steps (``>= 1``); the result has ``num_steps + 1`` entries.
        num_tokens: Number of video latent tokens used to pick the shift. The official text-to-video pipelines use
            the default of 4096 (shift = ``max_shift``); the HQ pipeline passes the real latent token count.
        max_shift: Shift at 4096 tokens.
        base_shift: Shift at 1024 tokens.
        stretch: If true, stretch the schedule so that the last non-zero sigma equals ``terminal``.
        terminal: Target for the last non-zero sigma when ``stretch`` is true; must lie in ``(0, 1)``.

    Returns:
        A 1-D ``float32`` CPU tensor of length ``num_steps + 1``, decreasing, ending with exactly ``0``.

    Raises:
        ValueError: On a non-positive step count, bad token count, non-finite shifts, a ``terminal`` outside
            ``(0, 1)`` or a shift so large that ``exp(shift)`` overflows.

    Note:
        Matches ``ltx_core.components.schedulers.LTX2Scheduler.execute`` to float32 rounding, except in the
        degenerate case described in :func:`_stretch_to_terminal` where the reference returns NaN.
    """
    if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)) or num_steps < 1:
        raise ValueError(f"`num_steps` must be a positive integer, got {num_steps!r}.")
    if not isinstance(stretch, (bool, np.bool_)):
        raise ValueError(f"`stretch` must be a bool, got {stretch!r}.")
    shift = shift_for_tokens(num_tokens, max_shift=max_shift, base_shift=base_shift)
    if shift > _MAX_EXP_ARGUMENT:
        raise ValueError(
            f"The time shift {shift:.1f} for {num_tokens} tokens is too large (exp overflows); "
            "use fewer tokens or smaller `max_shift`/`base_shift`."
        )
    if stretch:
        terminal = _check_finite_number("terminal", terminal)
        if not 0.0 < terminal < 1.0:
            raise ValueError(f"`terminal` must be strictly between 0 and 1, got {terminal}.")

    t = torch.linspace(1.0, 0.0, int(num_steps) + 1)
    exp_shift = math.exp(shift)
    # Same expression shape as the reference: python-float / (python-float + float32 tensor).
    # Where t == 0, (1 / t - 1) is +inf and the quotient is exactly 0.
    shifted = exp_shift / (exp_shift + (1 / t - 1))
    sigmas = torch.where(t != 0, shifted, torch.zeros_like(shifted))
    if stretch:
        sigmas = _stretch_to_terminal(sigmas, terminal)
    return sigmas.to(torch.float32)


def validate_sigmas(sigmas: SigmasLike) -> torch.Tensor:
    """Check a user-supplied sigma schedule and return it as a 1-D ``float32`` CPU tensor.

    Accepts a list/tuple of numbers, a NumPy array or a torch tensor. The schedule must be 1-D, finite, within
    ``[0, 1]`` and strictly decreasing. If its last value is not ``0``, a terminal ``0.0`` is appended (the sampler
    always needs to end on a clean sample); the returned tensor therefore always ends with ``0``.

    Args:
        sigmas: The schedule, e.g. ``[1.0, 0.7, 0.4, 0.1]`` or ``[1.0, 0.7, 0.4, 0.1, 0.0]``.

    Returns:
        A new ``float32`` tensor of at least two entries, ending with ``0``.

    Raises:
        ValueError: If the input is empty, not 1-D, non-numeric, non-finite, outside ``[0, 1]``, not strictly
            decreasing, or contains only ``0``.
    """
    try:
        if isinstance(sigmas, torch.Tensor):
            values = sigmas.detach().to(device="cpu", dtype=torch.float64)
        else:
            values = torch.as_tensor(np.asarray(sigmas, dtype=np.float64))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"`sigmas` must be a 1-D sequence of numbers: {exc}") from exc
    if values.ndim != 1:
        raise ValueError(f"`sigmas` must be 1-D, got shape {tuple(values.shape)}.")
    if values.numel() == 0:
        raise ValueError("`sigmas` must not be empty.")
    if not bool(torch.isfinite(values).all()):
        raise ValueError(f"`sigmas` must be finite, got {values.tolist()}.")
    if bool((values < 0).any()) or bool((values > 1).any()):
        raise ValueError(f"`sigmas` must lie within [0, 1], got {values.tolist()}.")
    values = values.to(torch.float32)
    # Checked after the float32 cast so that values which collapse to equal float32 numbers are rejected too.
    if values.numel() > 1 and not bool((values[1:] < values[:-1]).all()):
        raise ValueError(f"`sigmas` must be strictly decreasing, got {values.tolist()}.")
    if values[-1] != 0:
        values = torch.cat([values, values.new_zeros(1)])
    if values.numel() < 2:
        raise ValueError("`sigmas` must contain at least one non-zero value before the final 0.")
    return values
