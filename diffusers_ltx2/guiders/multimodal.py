"""`MultimodalGuider`: CFG, STG and modality guidance with every per-modality dial, LTX-2's recommended guider.

Semantics (facts file, "Multimodal guidance"; official `ltx_pipelines` `multi_modal_guider_denoising_func`):

- The passes: conditional `c`; negative prompt `u` when some recomputed modality has `cfg != 1`; STG-perturbed `p`
  when some recomputed modality has `stg != 0`; modality-isolated `m` (audio<->video attention off in every block)
  when some recomputed modality has `modality_scale != 1`. A pass no recomputed modality needs is not run.
- STG perturbs the self-attention of a modality in `skip_blocks` when that modality has `perturb_attn` and a
  non-zero `stg` (the official rule; `perturb_attn=False` is ComfyUI's switch to leave it unperturbed).
- `cross_attn` (ComfyUI): the video flag gates audio->video attention, the audio flag video->audio attention, in
  every pass (the isolated pass has both off anyway).
- `skip_step` (official semantics): a modality is recomputed at step i only when `i % (skip_step + 1) == 0`,
  otherwise the sampler reuses its last x0. When both skip, no model call is made. When only one skips, it is
  fed its current noisy latent (official; ComfyUI feeds the last x0 instead) and its token stream is frozen
  (ltx-core's `Modality(enabled=False)`: no block updates it, the other modality still attends to it) in the
  conditional, perturbed and isolated passes, but not in the negative-prompt pass - exactly what the official
  loop does (it reuses the conditional pass's modality objects for the perturbed and isolated passes and builds
  fresh, enabled ones for the negative pass).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Mapping

from .base import GuidancePass, Guider, Prediction, StepPlan
from .combine import combine_per_video

COND = "cond"
UNCOND = "uncond"
PERTURBED = "perturbed"
ISOLATED = "isolated"

#: Recommended values (LTX-2 model card / official pipelines), kept import-free for the CLI's --help.
from ..recommended import RECOMMENDED_AUDIO, RECOMMENDED_VIDEO  # noqa: E402


def _check_scale(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return value


@dataclass(frozen=True)
class ModalityGuidanceParams:
    """Guidance dials of one modality.

    Args:
        cfg: classifier-free guidance scale (1 = off).
        stg: spatio-temporal guidance scale (0 = off).
        modality_scale: modality guidance scale, away from the prediction without audio<->video attention
            (1 = off, not 0).
        rescale: in [0, 1]; blends the guided prediction's global std back towards the conditional one (0 = off).
        skip_step: recompute this modality only every `skip_step + 1` steps (0 = every step); reuse its last x0
            in between.
        perturb_attn: whether STG perturbs this modality's self-attention (with `stg != 0`).
        cross_attn: whether this modality attends to the other one (video: audio->video attention; audio:
            video->audio attention) in every pass.
    """

    cfg: float = 1.0
    stg: float = 0.0
    modality_scale: float = 1.0
    rescale: float = 0.0
    skip_step: int = 0
    perturb_attn: bool = True
    cross_attn: bool = True

    def __post_init__(self):
        for name in ("cfg", "stg", "modality_scale", "rescale"):
            object.__setattr__(self, name, _check_scale(name, getattr(self, name)))
        if self.rescale > 1.0:
            raise ValueError(f"rescale must be in [0, 1], got {self.rescale}")
        step = self.skip_step
        if isinstance(step, float) and step.is_integer():
            step = int(step)
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"skip_step must be an integer 0, 1, 2, ..., got {self.skip_step!r}")
        object.__setattr__(self, "skip_step", step)
        for name in ("perturb_attn", "cross_attn"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")

    @classmethod
    def coerce(cls, value, where: str) -> "ModalityGuidanceParams":
        """Accept params, a dict of fields (as saved in a config), or `None` (all off)."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, Mapping):
            unknown = set(value) - {f.name for f in fields(cls)}
            if unknown:
                raise ValueError(f"unknown {where} guidance settings {sorted(unknown)}")
            return cls(**value)
        raise ValueError(f"{where} must be ModalityGuidanceParams or a dict, got {type(value).__name__}")

    def recomputes_at(self, step_index: int) -> bool:
        """False when skip_step makes this modality reuse its last x0 at `step_index`."""
        return self.skip_step == 0 or step_index % (self.skip_step + 1) == 0

    @property
    def perturbs(self) -> bool:
        """Whether the STG pass perturbs this modality's self-attention."""
        return self.perturb_attn and self.stg != 0.0

    def needs(self, pass_name: str) -> bool:
        return {UNCOND: self.cfg != 1.0, PERTURBED: self.stg != 0.0, ISOLATED: self.modality_scale != 1.0}[pass_name]


def check_skip_blocks(skip_blocks, num_blocks: int | None = None) -> tuple[int, ...] | None:
    """Normalize `skip_blocks` to a tuple of distinct ints (None stays None), checked against `num_blocks`."""
    if skip_blocks is None:
        return None
    if isinstance(skip_blocks, int) and not isinstance(skip_blocks, bool):
        skip_blocks = [skip_blocks]
    try:
        blocks = list(skip_blocks)
    except TypeError:
        raise ValueError(f"skip_blocks must be a list of block indices, got {skip_blocks!r}") from None
    if not blocks or any(isinstance(b, bool) or not isinstance(b, int) for b in blocks):
        raise ValueError(f"skip_blocks must be a non-empty list of block indices, got {skip_blocks!r}")
    if len(set(blocks)) != len(blocks):
        raise ValueError(f"skip_blocks has duplicates: {blocks}")
    bad = [b for b in blocks if b < 0 or (num_blocks is not None and b >= num_blocks)]
    if bad:
        where = f"0..{num_blocks - 1} (the model has {num_blocks} blocks)" if num_blocks is not None else ">= 0"
        raise ValueError(f"skip_blocks {bad} are outside the transformer's blocks {where}")
    return tuple(blocks)


def _num_blocks(transformer) -> int:
    return len(transformer.transformer_blocks)


class MultimodalGuider(Guider):
    """LTX-2's multimodal guider: CFG + STG + modality guidance + rescale + skip-step, each per modality.

    All passes of a step run as one batched transformer call (see `TransformerPasses`).

    Args:
        video: `ModalityGuidanceParams` (or a dict of its fields; fields left out are "off") for the video;
            `None`: the recommended cfg 3, stg 1, modality 3, rescale 0.7.
        audio: the same for the audio; `None`: the recommended cfg 7, stg 1, modality 3, rescale 0.7.
        skip_blocks: transformer blocks whose self-attention STG perturbs. `None`: the model's default
            (LTX-2.0: [29]; 2.3 checkpoints, i.e. `gated_attn` / `cross_attn_mod` transformers: [28]).

    Example:
        >>> guider = MultimodalGuider(
        ...     video=ModalityGuidanceParams(cfg=3, stg=1, modality_scale=3, rescale=0.7),
        ...     audio=ModalityGuidanceParams(cfg=7, stg=1, modality_scale=3, rescale=0.7, skip_step=1),
        ... )
        >>> pipe(prompt, guider=guider)
    """

    def __init__(self, video=None, audio=None, skip_blocks=None):
        super().__init__()
        self.video = ModalityGuidanceParams.coerce(RECOMMENDED_VIDEO if video is None else video, "video")
        self.audio = ModalityGuidanceParams.coerce(RECOMMENDED_AUDIO if audio is None else audio, "audio")
        self.skip_blocks = check_skip_blocks(skip_blocks)
        # Saved as plain JSON (the dataclasses are rebuilt by __init__ on load).
        self.register_to_config(
            video=asdict(self.video), audio=asdict(self.audio),
            skip_blocks=list(self.skip_blocks) if self.skip_blocks is not None else None,
        )
        self._frozen = (False, False)  # (video, audio) held at clean values in this call (see for_frozen)

    # -- Guider interface ---------------------------------------------------------------------------------
    @property
    def uses_negative_prompt(self) -> bool:
        return self.video.cfg != 1.0 or self.audio.cfg != 1.0

    def validate_for(self, transformer) -> None:
        check_skip_blocks(self.skip_blocks, _num_blocks(transformer))

    def for_frozen(self, *, video: bool = False, audio: bool = False, cross_modal: bool = True,
                   guided=frozenset()) -> "MultimodalGuider":
        """A copy for a call with a frozen modality (A2V, V2A, audio-only): the frozen modality's dials are all
        off (official A2V gives the audio guider `MultiModalGuiderParams()`) and it is never recomputed (its x0
        is its clean value), so no pass is spent on it and a step on which the other modality skips
        (skip_step) makes no model call. Its token stream still runs in every pass (official: the frozen
        modality stays `enabled`, the other one attends to it). With `cross_modal=False` (audio-only) both
        `cross_attn` gates are off and `modality_scale` is 1 (no isolated pass: it would equal the
        conditional one). A frozen modality named in `guided` (kept whole by a retake) keeps its dials, as
        official `retake.py` guides it: its STG perturbs its stream in the perturbed pass and its skip_step
        freezes its stream's input there (still no pass, nor any x0, for its sake)."""
        if not (video or audio or not cross_modal):
            return self
        off = ModalityGuidanceParams()

        def adapt(params: ModalityGuidanceParams, is_frozen: bool, name: str) -> ModalityGuidanceParams:
            params = off if is_frozen and name not in guided else params
            return replace(params, modality_scale=1.0, cross_attn=False) if not cross_modal else params

        guider = MultimodalGuider(adapt(self.video, video, "video"), adapt(self.audio, audio, "audio"),
                                  skip_blocks=self.skip_blocks)
        guider._frozen = (video, audio)
        return guider

    def plan(self, step_index: int, num_steps: int, sigma: float) -> StepPlan:
        v, a = self.video, self.audio
        frozen_v, frozen_a = self._frozen
        run_v = not frozen_v and v.recomputes_at(step_index)
        run_a = not frozen_a and a.recomputes_at(step_index)
        blocks = self.skip_blocks or ()
        if not (run_v or run_a):
            return StepPlan(passes=(), video=False, audio=False, skip_blocks=blocks)
        active = [p for p, run in ((v, run_v), (a, run_a)) if run]
        gates = dict(a2v=v.cross_attn, v2a=a.cross_attn)
        # Official skip-step: the conditional, perturbed and isolated passes reuse one frozen-modality input;
        # only the negative pass is built afresh (unfrozen). (In the isolated pass the frozen stream cannot reach
        # the other modality anyway; freezing it there only saves its compute.) A modality frozen for the whole
        # call keeps its stream running, as officially, except on its own skip_step steps when a retake keeps
        # its dials (its dials are off, so it always recomputes, otherwise).
        frozen = dict(freeze_video=not v.recomputes_at(step_index), freeze_audio=not a.recomputes_at(step_index))
        passes = [GuidancePass(COND, **gates, **frozen)]
        if any(p.needs(UNCOND) for p in active):
            passes.append(GuidancePass(UNCOND, negative=True, **gates))
        # With nothing perturbed (perturb_attn off) the STG pass would repeat the conditional one exactly.
        if any(p.needs(PERTURBED) for p in active) and (v.perturbs or a.perturbs):
            passes.append(GuidancePass(PERTURBED, perturb_video=v.perturbs, perturb_audio=a.perturbs,
                                       **gates, **frozen))
        if any(p.needs(ISOLATED) for p in active):
            passes.append(GuidancePass(ISOLATED, a2v=False, v2a=False, **frozen))
        return StepPlan(passes=tuple(passes), video=run_v, audio=run_a, skip_blocks=blocks)

    def combine(self, step_index: int, plan: StepPlan, predictions: Mapping[str, Prediction]) -> Prediction:
        cond = predictions[COND]
        uncond = predictions.get(UNCOND)
        perturbed = predictions.get(PERTURBED, cond)
        isolated = predictions.get(ISOLATED)

        def one(params: ModalityGuidanceParams, attr: str):
            pick = lambda pred: getattr(pred, attr) if pred is not None else None  # noqa: E731
            return combine_per_video(
                getattr(cond, attr), pick(uncond), pick(perturbed), pick(isolated),
                cfg=params.cfg, stg=params.stg, modality_scale=params.modality_scale, rescale=params.rescale,
            )

        return Prediction(
            video=one(self.video, "video") if plan.video else None,
            audio=one(self.audio, "audio") if plan.audio else None,
        )

    def __repr__(self) -> str:
        return f"MultimodalGuider(video={self.video}, audio={self.audio}, skip_blocks={self.skip_blocks})"
