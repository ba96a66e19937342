"""diffusers-compatible scheduler implementing the official LTX-2 sigma schedule and Euler-on-x0 step."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin, SchedulerOutput

from .samplers import euler_step
from .sigmas import (
    BASE_SHIFT_ANCHOR,
    DISTILLED_SIGMAS,
    MAX_SHIFT_ANCHOR,
    SigmasLike,
    ltx2_sigmas,
    shift_for_tokens,
    validate_sigmas,
)

__all__ = ["LTX2Scheduler"]

# FlowMatchEulerDiscreteScheduler options that change the schedule in ways this scheduler cannot express.
_UNSUPPORTED_FLOW_MATCH_FLAGS = ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas", "invert_sigmas")


class LTX2Scheduler(SchedulerMixin, ConfigMixin):
    """Official LTX-2 sampler schedule (token-count-shifted, stretched sigmas) with an Euler step on x0.

    Unlike most diffusers schedulers, :meth:`step` takes the step index explicitly and keeps no hidden counter, so a
    single instance can drive the video and the audio latents of the same denoising loop.

    Args:
        max_shift: Time shift at 4096 video tokens.
        base_shift: Time shift at 1024 video tokens.
        stretch: Stretch the schedule so that the last non-zero sigma equals ``terminal``.
        terminal: Last non-zero sigma when ``stretch`` is true.
        default_num_tokens: Token count used for the shift when ``use_token_count_shift`` is false or no token
            count is given to :meth:`set_timesteps`.
        use_token_count_shift: ``False`` reproduces the official text-to-video pipelines (shift computed for
            ``default_num_tokens`` whatever the resolution); ``True`` computes the shift from the ``num_tokens``
            passed to :meth:`set_timesteps`, as the official HQ pipeline does.
    """

    config_name = "scheduler_config.json"
    order = 1
    _compatibles: list[str] = []

    @register_to_config
    def __init__(
        self,
        max_shift: float = 2.05,
        base_shift: float = 0.95,
        stretch: bool = True,
        terminal: float = 0.1,
        default_num_tokens: int = MAX_SHIFT_ANCHOR,
        use_token_count_shift: bool = False,
    ):
        # Validate eagerly (a throw-away 2-step schedule exercises every argument check).
        ltx2_sigmas(2, default_num_tokens, max_shift, base_shift, stretch, terminal)
        if not isinstance(use_token_count_shift, bool):
            raise ValueError(f"`use_token_count_shift` must be a bool, got {use_token_count_shift!r}.")
        self.sigmas: torch.Tensor | None = None
        self.timesteps: torch.Tensor | None = None
        self.num_inference_steps: int | None = None

    @classmethod
    def from_flow_match_config(cls, config: Any, **overrides: Any) -> "LTX2Scheduler":
        """Build an ``LTX2Scheduler`` from a diffusers ``FlowMatchEulerDiscreteScheduler`` config.

        This is what diffusers' own LTX-2 pipeline folders ship. ``base_shift``/``max_shift`` are given there at
        ``base_image_seq_len``/``max_image_seq_len`` tokens; the same straight line is re-evaluated at this
        scheduler's anchors (1024 and 4096 tokens), which is exact. ``shift_terminal`` becomes ``terminal``
        (``None`` disables stretching).

        Args:
            config: A config mapping (e.g. ``scheduler.config`` or a loaded ``scheduler_config.json`` dict) or a
                scheduler object with a ``config`` attribute.
            **overrides: Values for this scheduler's config that win over the mapped ones (e.g.
                ``use_token_count_shift=True``).

        Raises:
            ValueError: If the config uses options this schedule cannot reproduce (linear time shift, Karras /
                exponential / beta sigmas, inverted sigmas) or has an unusable token range.
        """
        if not isinstance(config, Mapping) and hasattr(config, "config"):
            config = config.config
        if not isinstance(config, Mapping):
            raise ValueError(f"`config` must be a mapping or a scheduler with `.config`, got {type(config).__name__}.")
        if config.get("time_shift_type", "exponential") != "exponential":
            raise ValueError(f"Only the exponential time shift is supported, got {config['time_shift_type']!r}.")
        bad = [flag for flag in _UNSUPPORTED_FLOW_MATCH_FLAGS if config.get(flag)]
        if bad:
            raise ValueError(f"Flow-match options {bad} cannot be expressed by LTX2Scheduler; disable them.")
        low_tokens = config.get("base_image_seq_len", BASE_SHIFT_ANCHOR)
        high_tokens = config.get("max_image_seq_len", MAX_SHIFT_ANCHOR)
        low_shift = config.get("base_shift", 0.95)
        high_shift = config.get("max_shift", 2.05)
        if None in (low_tokens, high_tokens, low_shift, high_shift) or low_tokens == high_tokens:
            raise ValueError(
                "The flow-match config needs distinct `base_image_seq_len`/`max_image_seq_len` and non-null "
                f"`base_shift`/`max_shift`, got {low_tokens}, {high_tokens}, {low_shift}, {high_shift}."
            )
        slope = (float(high_shift) - float(low_shift)) / (float(high_tokens) - float(low_tokens))
        terminal = config.get("shift_terminal")
        kwargs = {
            "base_shift": float(low_shift) + slope * (BASE_SHIFT_ANCHOR - float(low_tokens)),
            "max_shift": float(low_shift) + slope * (MAX_SHIFT_ANCHOR - float(low_tokens)),
            "stretch": terminal is not None,
            "terminal": float(terminal) if terminal is not None else 0.1,
        }
        kwargs.update(overrides)
        return cls(**kwargs)

    def shift_for_tokens(self, num_tokens: int | None = None) -> float:
        """Return the time shift that :meth:`set_timesteps` would use for ``num_tokens`` under this config."""
        return shift_for_tokens(self._effective_tokens(num_tokens), self.config.max_shift, self.config.base_shift)

    def _effective_tokens(self, num_tokens: int | None) -> int:
        """Token count that drives the shift: the given one only when ``use_token_count_shift`` is enabled."""
        if self.config.use_token_count_shift and num_tokens is not None:
            return num_tokens
        return self.config.default_num_tokens

    def sigmas_for(
        self,
        num_inference_steps: int | None = None,
        sigmas: SigmasLike | None = None,
        num_tokens: int | None = None,
        distilled: bool = False,
    ) -> torch.Tensor:
        """The sigma schedule of a sampling run under this config, without changing the scheduler (what every
        pipeline stage uses: a stage holds its sigmas, the scheduler keeps no per-call state).

        Exactly one source is used: custom ``sigmas`` (validated; a terminal 0 is appended if missing), the fixed
        distilled schedule (``distilled=True``), or the official shifted schedule with ``num_inference_steps``.

        Args:
            num_inference_steps: Number of steps for the official schedule. With ``sigmas`` or ``distilled`` it may
                be omitted, or must equal the length implied by them.
            sigmas: Custom schedule (e.g. ``DISTILLED_REFINE_SIGMAS`` for the second stage).
            num_tokens: Video latent token count (``frames * height * width`` of the latent); only used when the
                config has ``use_token_count_shift=True``, otherwise ``default_num_tokens`` is used.
            distilled: Use :data:`DISTILLED_SIGMAS` (8 steps).

        Returns:
            ``float32`` CPU tensor of ``num_inference_steps + 1`` decreasing values ending in 0.

        Raises:
            ValueError: On conflicting or invalid arguments.
        """
        if sigmas is not None and distilled:
            raise ValueError("Pass either `sigmas` or `distilled=True`, not both.")
        if sigmas is not None or distilled:
            schedule = validate_sigmas(DISTILLED_SIGMAS if distilled else sigmas)
            implied = schedule.numel() - 1
            if num_inference_steps is not None and num_inference_steps != implied:
                raise ValueError(
                    f"`num_inference_steps`={num_inference_steps} conflicts with the {implied} steps implied by "
                    f"{'the distilled schedule' if distilled else '`sigmas`'}."
                )
            return schedule
        if num_inference_steps is None:
            raise ValueError("`num_inference_steps` is required when neither `sigmas` nor `distilled` is given.")
        if num_tokens is not None:
            shift_for_tokens(num_tokens)  # validates the token count even when the config ignores it
        return ltx2_sigmas(
            num_inference_steps,
            num_tokens=self._effective_tokens(num_tokens),
            max_shift=self.config.max_shift,
            base_shift=self.config.base_shift,
            stretch=self.config.stretch,
            terminal=self.config.terminal,
        )

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        sigmas: SigmasLike | None = None,
        num_tokens: int | None = None,
        distilled: bool = False,
    ) -> None:
        """Prepare the sigma schedule for a sampling run driven by :meth:`step` (diffusers' scheduler protocol;
        the pipelines of this package use :meth:`sigmas_for` and keep the scheduler unchanged).

        Sets ``self.sigmas`` (:meth:`sigmas_for` on ``device``), ``self.timesteps`` (``sigmas[:-1] * 1000``, the
        ``timestep`` scale diffusers' LTX-2 transformer expects) and ``self.num_inference_steps``; the arguments
        are :meth:`sigmas_for`'s.

        Raises:
            ValueError: On conflicting or invalid arguments.
        """
        schedule = self.sigmas_for(num_inference_steps, sigmas=sigmas, num_tokens=num_tokens, distilled=distilled)
        self.sigmas = schedule.to(device=device)
        self.timesteps = self.sigmas[:-1] * 1000
        self.num_inference_steps = int(schedule.numel() - 1)

    def _sigma_pair(self, step_index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(sigma, sigma_next)`` for ``step_index`` after checking the scheduler state and index."""
        if self.sigmas is None:
            raise ValueError("Call `set_timesteps` before stepping.")
        if isinstance(step_index, bool) or not isinstance(step_index, int):
            raise ValueError(f"`step_index` must be an int, got {step_index!r}.")
        if not 0 <= step_index < self.sigmas.numel() - 1:
            raise ValueError(f"`step_index` must be in [0, {self.sigmas.numel() - 2}], got {step_index}.")
        return self.sigmas[step_index], self.sigmas[step_index + 1]

    @staticmethod
    def _check_same_shape(a: torch.Tensor, b: torch.Tensor, names: str) -> None:
        """Raise ``ValueError`` unless both arguments are tensors of identical shape."""
        if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
            raise ValueError(f"{names} must be torch tensors.")
        if a.shape != b.shape:
            raise ValueError(f"{names} must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}.")

    def step(
        self,
        model_output_x0: torch.Tensor,
        sample: torch.Tensor,
        step_index: int,
        return_dict: bool = True,
    ) -> SchedulerOutput | tuple[torch.Tensor]:
        """Advance ``sample`` from ``sigmas[step_index]`` to ``sigmas[step_index + 1]`` (Euler on x0,
        :func:`~diffusers_ltx2.schedulers.samplers.euler_step`, the step every pipeline stage takes).

        Args:
            model_output_x0: The denoised (x0) prediction, same shape as ``sample``.
            sample: The current noisy latent.
            step_index: Index into ``self.sigmas`` of the current noise level.
            return_dict: Return a :class:`SchedulerOutput` (default) or a 1-tuple.

        Raises:
            ValueError: If ``set_timesteps`` was not called, the index is out of range or shapes differ.
        """
        self._check_same_shape(model_output_x0, sample, "`model_output_x0` and `sample`")
        sigma, sigma_next = self._sigma_pair(step_index)
        prev_sample = euler_step(model_output_x0, sample, sigma, sigma_next)
        if not return_dict:
            return (prev_sample,)
        return SchedulerOutput(prev_sample=prev_sample)

    def __len__(self) -> int:
        """Number of training timesteps, as the diffusers scheduler protocol expects (the transformer uses 0..1000)."""
        return 1000
