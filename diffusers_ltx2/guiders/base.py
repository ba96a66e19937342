"""The pluggable guidance interface.

A guider decides, at every denoising step, which transformer *passes* are needed (conditional, negative prompt,
perturbed, modality-isolated, ...) and how their x0 predictions combine into the one x0 the sampler steps with.
The pipeline only executes what the plan asks for: it never knows which guidance method is in use. This keeps
CFG, STG, modality guidance, skip-step and user-defined guiders (CFG-zero*, APG, ...) out of the pipeline.

A guider is a `ConfigMixin`: it is saved as the pipeline's `guider` component, in its own folder with a
`guider_config.json`, and reloaded by `from_pretrained`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Mapping, NamedTuple

import torch
from diffusers.configuration_utils import ConfigMixin

GUIDER_CONFIG_NAME = "guider_config.json"


@dataclass(frozen=True)
class GuidancePass:
    """One transformer evaluation requested by a guider.

    Attributes:
        name: key under which the pass's predictions are handed back to `Guider.combine`.
        negative: condition on the negative prompt instead of the prompt.
        perturb_video: STG-perturb the video self-attention in the plan's `skip_blocks`
            (attention output replaced by `to_out(V)`).
        perturb_audio: the same for the audio self-attention.
        a2v: audio-to-video cross-attention enabled (False drops its residual in every block).
        v2a: video-to-audio cross-attention enabled.
        freeze_video: the video token stream is not updated by any block (self-attention, text
            cross-attention, audio-to-video attention and feed-forward residuals all dropped); its tokens
            still serve as keys/values of the video-to-audio attention. This is ltx-core's
            `Modality(enabled=False)`, used by the official skip-step for a modality that is not
            recomputed at this step.
        freeze_audio: the same for the audio stream.
    """

    name: str
    negative: bool = False
    perturb_video: bool = False
    perturb_audio: bool = False
    a2v: bool = True
    v2a: bool = True
    freeze_video: bool = False
    freeze_audio: bool = False

    @property
    def needs_attention_control(self) -> bool:
        """Whether executing this pass needs the guidance attention processors installed."""
        return (
            self.perturb_video or self.perturb_audio or not (self.a2v and self.v2a)
            or self.freeze_video or self.freeze_audio
        )


CONDITIONAL = GuidancePass("cond")


@dataclass(frozen=True)
class StepPlan:
    """What one denoising step runs.

    Attributes:
        passes: the passes to evaluate; names must be unique.
        video: recompute the video x0 at this step (False: the sampler reuses the last video x0).
        audio: recompute the audio x0 at this step.
        skip_blocks: transformer block indices where STG perturbation applies; empty means the model's
            default (chosen by the attention control from the transformer config: block 29 for LTX-2.0,
            28 for 2.3, clipped to the model's depth).
    """

    passes: tuple[GuidancePass, ...] = (CONDITIONAL,)
    video: bool = True
    audio: bool = True
    skip_blocks: tuple[int, ...] = field(default=())

    def __post_init__(self):
        names = [p.name for p in self.passes]
        if len(set(names)) != len(names):
            raise ValueError(f"pass names must be unique, got {names}")

    @property
    def runs_model(self) -> bool:
        return bool(self.passes) and (self.video or self.audio)


class Prediction(NamedTuple):
    """x0 predictions of one pass (float32; `None` for a modality the plan does not recompute)."""

    video: torch.Tensor | None
    audio: torch.Tensor | None


class Guider(ConfigMixin):
    """Base class of all guiders.

    Subclasses implement `plan` and `combine` and declare their settings with diffusers'
    `@register_to_config` on `__init__`, which makes them saveable.
    """

    config_name = GUIDER_CONFIG_NAME

    def plan(self, step_index: int, num_steps: int, sigma: float) -> StepPlan:
        """The passes to evaluate at `step_index` (0-based) of `num_steps` at noise level `sigma`."""
        raise NotImplementedError

    def combine(self, step_index: int, plan: StepPlan, predictions: Mapping[str, Prediction]) -> Prediction:
        """Combine the passes' x0 predictions (float32) into the guided x0 for each recomputed modality."""
        raise NotImplementedError

    @property
    def uses_negative_prompt(self) -> bool:
        """Whether any step may need the negative prompt (so the pipeline encodes it)."""
        return False

    def validate_for(self, transformer) -> None:
        """Check settings against the transformer (e.g. block indices); raise `ValueError` when unusable."""

    def for_frozen(self, *, video: bool = False, audio: bool = False, cross_modal: bool = True,
                   guided=frozenset()) -> "Guider":
        """This guider for a call in which `video` / `audio` is frozen (held at given clean values: audio-to-video,
        video-to-audio, audio-only) and, with `cross_modal=False`, audio<->video attention is off.

        A frozen modality's x0 is its clean value, so no pass may be spent on it (no negative / perturbed /
        isolated pass for its sake); without cross-modal attention the modality-isolated pass is a no-op.
        The built-in guiders return a copy with those dials neutral (official A2V: the audio guider gets
        `MultiModalGuiderParams()`); the base implementation returns `self` (a custom guider keeps its passes).
        `guided` names frozen modalities ("video" / "audio") kept whole by a retake: official `retake.py` still
        guides them, so `MultimodalGuider` keeps their STG perturbation and skip_step (still no pass for their
        sake); the single-method guiders treat them as any frozen modality.
        """
        return self

    # -- persistence: a guider is a pipeline component in its own folder ----------------------------------
    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs) -> None:
        """Write `guider_config.json` into `save_directory`."""
        self.save_config(save_directory)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, subfolder: str | None = None, **kwargs):
        """Load a guider saved with `save_pretrained` (also as a pipeline's `guider` subfolder)."""
        kwargs.pop("torch_dtype", None)
        kwargs.pop("dtype", None)
        config = cls.load_config(pretrained_model_name_or_path, subfolder=subfolder, **_hub_kwargs(kwargs))
        return cls.from_config(config)

    def __repr__(self) -> str:
        settings = ", ".join(f"{k}={v!r}" for k, v in self.config.items() if not k.startswith("_"))
        return f"{type(self).__name__}({settings})"


class PerModalityScaleGuider(Guider):
    """Base of the single-method guiders: one scale for video and one for audio (`None` = the video's).

    Subclasses name their two config entries in `scale_names` and call `check_scales()` in `__init__`.
    """

    scale_names: tuple[str, str] = ("", "")
    #: the scale value at which the method is off (cfg / modality 1, stg 0).
    neutral_scale: float = 1.0
    #: whether the method needs audio<->video attention (modality guidance); off without it.
    needs_cross_modal: bool = False

    def check_scales(self) -> None:
        """Both scales must be >= 0 (NaN refused)."""
        for name in self.scale_names:
            value = self.config[name]
            if value is not None and not value >= 0:
                raise ValueError(f"{name} must be >= 0, got {value}")

    def for_frozen(self, *, video: bool = False, audio: bool = False, cross_modal: bool = True,
                   guided=frozenset()) -> "Guider":
        """A copy with the frozen modality's scale neutral (both when the method needs cross-modal attention
        and it is off); `self` when nothing changes."""
        off = not cross_modal and self.needs_cross_modal
        scales = {
            self.scale_names[0]: self.neutral_scale if (video or off) else self.video_scale,
            self.scale_names[1]: self.neutral_scale if (audio or off) else self.audio_scale,
        }
        if not (video or audio or off):
            return self
        settings = {k: v for k, v in self.config.items() if not k.startswith("_")}  # no _use_default_values
        return type(self).from_config({**settings, **scales})

    @property
    def video_scale(self) -> float:
        """The video scale."""
        return float(self.config[self.scale_names[0]])

    @property
    def audio_scale(self) -> float:
        """The audio scale (the video's when unset)."""
        value = self.config[self.scale_names[1]]
        return self.video_scale if value is None else float(value)


def _hub_kwargs(kwargs: dict) -> dict:
    allowed = ("cache_dir", "force_download", "proxies", "local_files_only", "token", "revision")
    return {k: v for k, v in kwargs.items() if k in allowed}
