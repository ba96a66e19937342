"""`ScheduledGuider`: multimodal guidance whose dials depend on the noise level, as ltx-core's
`MultiModalGuiderFactory.from_dict`.

A schedule maps sigma *upper bounds* to `ModalityGuidanceParams`. Official lookup
(`_params_for_sigma_from_sorted_dict`): the keys sorted descending are bin upper bounds, bin i is
`(key_{i+1}, key_i]`; a sigma uses the smallest key `>= sigma`, and a sigma above every key uses the largest key.
At each step the guider plans exactly what a `MultimodalGuider` with that range's dials plans, so a pass whose dial is off in that range (cfg 1, stg 0,
modality 1) is not run at all: switching STG / CFG off at late steps (as ComfyUI's STG presets do) saves those
passes. The audio schedule defaults to the video one (official: `audio_guider_factory or video_guider_factory`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, replace
from typing import Mapping

from .base import Guider, Prediction, StepPlan
from .multimodal import (
    RECOMMENDED_AUDIO,
    RECOMMENDED_VIDEO,
    ModalityGuidanceParams,
    MultimodalGuider,
    check_skip_blocks,
)

_REC_V = ModalityGuidanceParams(**RECOMMENDED_VIDEO)
_REC_A = ModalityGuidanceParams(**RECOMMENDED_AUDIO)

#: Schedules in ComfyUI's style (guidance switched off where it stops helping, fewer passes there). The values
#: are this package's, built from the official recommended dials; they are not copied from ComfyUI.
PRESETS: dict[str, tuple[dict[float, ModalityGuidanceParams], dict[float, ModalityGuidanceParams]]] = {
    # every step fully guided: the same as MultimodalGuider() (a reference point)
    "recommended": ({math.inf: _REC_V}, {math.inf: _REC_A}),
    # STG (and its pass) off once sigma <= 0.4, the low-noise steps that only refine detail
    "stg_off_late": ({math.inf: _REC_V, 0.4: replace(_REC_V, stg=0.0)},
                     {math.inf: _REC_A, 0.4: replace(_REC_A, stg=0.0)}),
    # STG and modality guidance off for sigma <= 0.4, all guidance off for sigma <= 0.15 (one pass per step)
    "guidance_off_late": (
        {math.inf: _REC_V, 0.4: replace(_REC_V, stg=0.0, modality_scale=1.0), 0.15: ModalityGuidanceParams()},
        {math.inf: _REC_A, 0.4: replace(_REC_A, stg=0.0, modality_scale=1.0), 0.15: ModalityGuidanceParams()},
    ),
}


def _coerce_schedule(schedule, where: str) -> tuple[tuple[float, ModalityGuidanceParams], ...]:
    """A mapping sigma -> params (or a list of `[sigma, params]` pairs, as saved) sorted by sigma descending."""
    if isinstance(schedule, Mapping):
        items = list(schedule.items())
    elif isinstance(schedule, (list, tuple)) and all(isinstance(i, (list, tuple)) and len(i) == 2 for i in schedule):
        items = [tuple(i) for i in schedule]
    else:
        raise ValueError(f"{where} schedule must map sigma upper bounds to guidance params, got {schedule!r}")
    if not items:
        raise ValueError(f"{where} schedule must be non-empty")
    out = []
    for key, params in items:
        if isinstance(key, bool) or not isinstance(key, (int, float)) or math.isnan(key) or key < 0:
            raise ValueError(f"{where} schedule keys must be sigmas >= 0 (math.inf allowed), got {key!r}")
        out.append((float(key), ModalityGuidanceParams.coerce(params, f"{where}[{key}]")))
    if len({k for k, _ in out}) != len(out):
        raise ValueError(f"{where} schedule has duplicate sigmas: {[k for k, _ in out]}")
    return tuple(sorted(out, key=lambda kv: kv[0], reverse=True))


def params_for_sigma(schedule: tuple[tuple[float, ModalityGuidanceParams], ...],
                     sigma: float) -> ModalityGuidanceParams:
    """The official bin lookup: the smallest upper bound `>= sigma`; above every bound, the largest one."""
    at_or_above = [p for k, p in schedule if k >= sigma]
    return at_or_above[-1] if at_or_above else schedule[0][1]


class ScheduledGuider(Guider):
    """Multimodal guidance with per-sigma-range dials (ltx-core `MultiModalGuiderFactory.from_dict`).

    Args:
        video: `{sigma_upper_bound: ModalityGuidanceParams | dict}` for the video (use `math.inf` for "from the
            start"); default: the recommended dials everywhere.
        audio: the same for the audio; `None`: the video schedule (official default).
        skip_blocks: STG blocks for every range; `None`: the model's default (see `MultimodalGuider`).

    Raises:
        ValueError: an empty schedule, a negative / NaN / duplicate sigma key, or invalid dials.

    Example:
        >>> guider = ScheduledGuider(video={math.inf: dict(cfg=3, stg=1, modality_scale=3, rescale=0.7),
        ...                                 0.4: dict(cfg=3, modality_scale=3, rescale=0.7)})
        >>> guider = ScheduledGuider.from_preset("stg_off_late")
    """

    def __init__(self, video=None, audio=None, skip_blocks=None):
        super().__init__()
        self.video_schedule = _coerce_schedule({math.inf: _REC_V} if video is None else video, "video")
        self.audio_schedule = self.video_schedule if audio is None else _coerce_schedule(audio, "audio")
        self.skip_blocks = check_skip_blocks(skip_blocks)
        self.register_to_config(  # JSON: lists of [sigma, params] pairs (JSON object keys would be strings)
            video=[[k, asdict(p)] for k, p in self.video_schedule],
            audio=None if audio is None else [[k, asdict(p)] for k, p in self.audio_schedule],
            skip_blocks=list(self.skip_blocks) if self.skip_blocks is not None else None,
        )
        self._guiders: dict = {}
        self._planned: tuple[int, MultimodalGuider] | None = None
        self._frozen: dict | None = None  # set on the copies `for_frozen` returns

    @classmethod
    def from_preset(cls, name: str, skip_blocks=None) -> "ScheduledGuider":
        """One of `PRESETS` ("recommended", "stg_off_late", "guidance_off_late")."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        video, audio = PRESETS[name]
        return cls(video=video, audio=audio, skip_blocks=skip_blocks)

    def guider_at(self, sigma: float) -> MultimodalGuider:
        """The `MultimodalGuider` with the dials in effect at `sigma` (adapted to frozen modalities on the copies
        `for_frozen` returns)."""
        key = (params_for_sigma(self.video_schedule, sigma), params_for_sigma(self.audio_schedule, sigma))
        if key not in self._guiders:
            guider = MultimodalGuider(*key, skip_blocks=self.skip_blocks)
            self._guiders[key] = guider.for_frozen(**self._frozen) if self._frozen else guider
        return self._guiders[key]

    def for_frozen(self, *, video: bool = False, audio: bool = False, cross_modal: bool = True,
                   guided=frozenset()) -> "ScheduledGuider":
        """A copy whose per-range guiders are `MultimodalGuider.for_frozen(...)`: no pass is spent on a frozen
        modality in any sigma range (A2V, V2A, audio-only)."""
        if not (video or audio or not cross_modal):
            return self
        settings = {k: v for k, v in self.config.items() if not k.startswith("_")}
        copy = type(self).from_config(settings)
        copy._frozen = dict(video=video, audio=audio, cross_modal=cross_modal, guided=frozenset(guided))
        return copy

    @property
    def uses_negative_prompt(self) -> bool:
        return any(p.cfg != 1.0 for _, p in self.video_schedule + self.audio_schedule)

    def validate_for(self, transformer) -> None:
        check_skip_blocks(self.skip_blocks, len(transformer.transformer_blocks))

    def plan(self, step_index: int, num_steps: int, sigma: float) -> StepPlan:
        guider = self.guider_at(float(sigma))
        self._planned = (step_index, guider)
        return guider.plan(step_index, num_steps, sigma)

    def combine(self, step_index: int, plan: StepPlan, predictions: Mapping[str, Prediction]) -> Prediction:
        if self._planned is None or self._planned[0] != step_index:
            raise RuntimeError(f"ScheduledGuider.combine for step {step_index} without plan() for that step")
        return self._planned[1].combine(step_index, plan, predictions)

    def __repr__(self) -> str:
        return (f"ScheduledGuider(video={dict(self.video_schedule)}, audio={dict(self.audio_schedule)}, "
                f"skip_blocks={self.skip_blocks})")
