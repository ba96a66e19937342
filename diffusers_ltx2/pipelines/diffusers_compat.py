"""diffusers' `LTX2Pipeline` call surface, mapped onto this package's pipeline.

Code written for `diffusers.LTX2Pipeline` passes guidance as scalars (`guidance_scale`, `stg_scale`, ...), prompt
embeddings as raw tensors with attention masks, and a few arguments for features this package does not have
(duration head, motion speed, prompt enhancement). This module turns those arguments into ours, as plain
functions: a `MultimodalGuider` for the guidance scalars, `PromptEmbeddings` for the tensors, and a clear
`UnsupportedFeatureError` (a `NotImplementedError`) for the missing features. The README's "diffusers
arguments" table documents every mapping.

Source followed: diffusers 0.42.1 `pipelines/ltx2/pipeline_ltx2.py` (`LTX2Pipeline.__call__` and its guidance
loop): CFG runs when `guidance_scale > 1` or `audio_guidance_scale > 1`, STG when either STG scale is `> 0`,
modality isolation when either modality scale is `> 1`; a running term uses each modality's scale as given;
rescale applies to a modality when its rescale is `> 0`.
"""

from __future__ import annotations

import json
import logging
import math
import os
from typing import Any

import torch

from ..guiders import Guider, ModalityGuidanceParams, MultimodalGuider
from ..loaders.prompt_embeddings import PromptEmbeddings
from ..schedulers import LTX2Scheduler

logger = logging.getLogger(__name__)

__all__ = [
    "as_ltx2_scheduler",
    "absent_components",
    "read_model_index",
    "saved_by_this_package",
    "DIFFUSERS_DEFAULT",
    "DIFFUSERS_GUIDANCE_DEFAULTS",
    "DIFFUSERS_ONLY_COMPONENTS",
    "GUIDANCE_ARGUMENTS",
    "UnsupportedFeatureError",
    "check_diffusers_components",
    "check_unsupported_features",
    "diffusers_encode_prompt",
    "embeddings_from_tensors",
    "guider_from_diffusers_args",
    "no_guidance",
    "resolve_guider",
    "sigmas_from_timesteps",
]


class _DiffusersDefault:
    """Marks a guidance argument the caller did not pass (diffusers' default applies if another one is)."""

    _instance = None

    def __new__(cls):
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "DIFFUSERS_DEFAULT"

    def __reduce__(self):
        return (_DiffusersDefault, ())


DIFFUSERS_DEFAULT = _DiffusersDefault()

#: diffusers 0.42.1 `LTX2Pipeline.__call__` defaults of the guidance scalars (equal to the recommended LTX-2 values).
DIFFUSERS_GUIDANCE_DEFAULTS = dict(
    guidance_scale=3.0, stg_scale=1.0, modality_scale=3.0, guidance_rescale=0.7,
    audio_guidance_scale=7.0, audio_stg_scale=1.0, audio_modality_scale=3.0, audio_guidance_rescale=0.7,
)

#: Every diffusers argument that builds the call's guider.
GUIDANCE_ARGUMENTS = (*DIFFUSERS_GUIDANCE_DEFAULTS, "spatio_temporal_guidance_blocks")

#: Optional components of diffusers' LTX-2 pipelines for features this package does not have.
DIFFUSERS_ONLY_COMPONENTS = {
    "audio_scheduler": "a separate audio scheduler (LTX-2 samples both modalities on one sigma schedule)",
}


class UnsupportedFeatureError(NotImplementedError):
    """A diffusers `LTX2Pipeline` argument asks for a feature this package does not implement."""


def no_guidance() -> MultimodalGuider:
    """A guider that runs the conditional pass only (every dial off): what `guider=None` means."""
    off = ModalityGuidanceParams()
    return MultimodalGuider(video=off, audio=off)


def _number(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def guider_from_diffusers_args(**given: Any) -> MultimodalGuider:
    """The `MultimodalGuider` equivalent to diffusers' guidance arguments.

    Arguments not given take diffusers' defaults (`DIFFUSERS_GUIDANCE_DEFAULTS`); an `audio_*` twin passed as
    `None` takes the video value, as diffusers documents. Terms follow diffusers' switches: CFG runs when either
    cfg scale is > 1 (then each modality uses its own scale, even one <= 1), else both are off (1); STG when
    either STG scale is > 0, else both 0; modality guidance when either modality scale is > 1, else both 1;
    a rescale <= 0 is off (0).

    `spatio_temporal_guidance_blocks` becomes `skip_blocks`; left out, the checkpoint's official STG block is
    used ([29] for LTX-2.0, [28] for 2.3; diffusers' signature default is [28] whatever the checkpoint).
    Passed as `None` or `[]` while STG is on, it is an error, as in diffusers.

    Differences from diffusers, on purpose (both documented in the README table): an `audio_*` twin of 0 means 0
    (diffusers' `audio_x or x` turns 0 into the video value, so audio STG cannot be switched off alone), and the
    rescale uses the standard deviation over the whole batch, as the official guider (diffusers: per sample;
    identical for one video).

    Raises:
        ValueError: unknown argument names, non-numbers, a negative scale of a running term, a rescale above 1,
            or STG on without blocks.
    """
    unknown = set(given) - set(GUIDANCE_ARGUMENTS)
    if unknown:
        raise ValueError(f"not diffusers guidance arguments: {sorted(unknown)}")
    values = {k: given.get(k, DIFFUSERS_DEFAULT) for k in DIFFUSERS_GUIDANCE_DEFAULTS}
    values = {k: DIFFUSERS_GUIDANCE_DEFAULTS[k] if v is DIFFUSERS_DEFAULT else v for k, v in values.items()}
    for name in ("guidance_scale", "stg_scale", "modality_scale", "guidance_rescale"):
        values[name] = _number(name, values[name])
        twin = "audio_" + name
        values[twin] = values[name] if values[twin] is None else _number(twin, values[twin])

    scales = {}
    for kind, video_name, off, runs in (
        ("cfg", "guidance_scale", 1.0, lambda s: s > 1.0),
        ("stg", "stg_scale", 0.0, lambda s: s > 0.0),
        ("modality_scale", "modality_scale", 1.0, lambda s: s > 1.0),
    ):
        pair = (values[video_name], values["audio_" + video_name])
        on = runs(pair[0]) or runs(pair[1])
        for name, scale in zip((video_name, "audio_" + video_name), pair):
            if on and scale < 0:
                raise ValueError(f"{name}={scale}: negative guidance scales are not supported")
        scales[kind] = pair if on else (off, off)
    rescale = []
    for name in ("guidance_rescale", "audio_guidance_rescale"):
        r = values[name]
        if r > 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {r}")
        rescale.append(max(r, 0.0))

    blocks = given.get("spatio_temporal_guidance_blocks", DIFFUSERS_DEFAULT)
    stg_on = scales["stg"] != (0.0, 0.0)
    if blocks is DIFFUSERS_DEFAULT:
        blocks = None  # the checkpoint's official STG block
    elif stg_on and (blocks is None or (hasattr(blocks, "__len__") and len(blocks) == 0)):
        raise ValueError(
            "STG is on (stg_scale or audio_stg_scale > 0) but spatio_temporal_guidance_blocks is empty: pass the "
            "block indices ([29] for LTX-2.0, [28] for 2.3) or leave the argument out for the checkpoint's own"
        )
    elif not stg_on and not blocks:
        blocks = None
    video = ModalityGuidanceParams(cfg=scales["cfg"][0], stg=scales["stg"][0],
                                   modality_scale=scales["modality_scale"][0], rescale=rescale[0])
    audio = ModalityGuidanceParams(cfg=scales["cfg"][1], stg=scales["stg"][1],
                                   modality_scale=scales["modality_scale"][1], rescale=rescale[1])
    return MultimodalGuider(video=video, audio=audio, skip_blocks=blocks)


def resolve_guider(guider: Guider | None, component: Guider | None, diffusers_args: dict[str, Any]) -> Guider:
    """The guider of one call.

    `guider=` wins; diffusers' guidance arguments (those in `diffusers_args` not left at `DIFFUSERS_DEFAULT`)
    build a `MultimodalGuider` (`guider_from_diffusers_args`); otherwise the pipeline's `guider` component is
    used, and a pipeline whose guider is `None` runs without guidance (`no_guidance()`).

    Raises:
        ValueError: both `guider=` and diffusers guidance arguments were passed.
    """
    given = {k: v for k, v in diffusers_args.items() if v is not DIFFUSERS_DEFAULT}
    if guider is not None and given:
        raise ValueError(
            f"pass either guider= or diffusers' guidance arguments ({', '.join(sorted(given))}), not both: "
            "guider= describes the whole guidance of the call"
        )
    if guider is not None:
        if not isinstance(guider, Guider):
            raise ValueError(f"guider must be a diffusers_ltx2.Guider, got {type(guider).__name__}")
        return guider
    if given:
        return guider_from_diffusers_args(**given)
    return component if component is not None else no_guidance()


def check_unsupported_features(
    *, num_frames, min_seconds, max_seconds, motion_speed, enable_prompt_enhancement, has_duration_head=False,
) -> None:
    """Refuse diffusers arguments that ask for features this package (or this pipeline) does not have.

    `min_seconds` / `max_seconds` only bound the duration head's prediction when `num_frames` is left out; with
    `num_frames` given diffusers ignores them, and so do we (after diffusers' `min_seconds < max_seconds` check).

    Raises:
        UnsupportedFeatureError: `motion_speed != 1` (slow-motion positions), `enable_prompt_enhancement=True`.
        ValueError: `min_seconds >= max_seconds`; non-default `min_seconds`/`max_seconds` without `num_frames`
            on a pipeline without a duration head (`has_duration_head=False`: they would bound nothing).
    """
    for name, value in (("min_seconds", min_seconds), ("max_seconds", max_seconds)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
    if min_seconds >= max_seconds:
        raise ValueError(f"min_seconds ({min_seconds}) must be less than max_seconds ({max_seconds})")
    if num_frames is None and not has_duration_head and (min_seconds, max_seconds) != (1.0, 20.0):
        raise ValueError(
            "min_seconds / max_seconds bound the clip length the duration head (LTX-2.5) predicts when num_frames "
            "is left out, but this pipeline has no duration_head: pass num_frames (8k+1)"
        )
    if motion_speed != 1.0:
        raise UnsupportedFeatureError(
            f"motion_speed={motion_speed}: motion-speed control (positions at frame_rate / motion_speed, for the "
            "Slow-Motion-Control LoRA) is not implemented in diffusers-ltx2"
        )
    if enable_prompt_enhancement:
        raise UnsupportedFeatureError(
            "enable_prompt_enhancement=True: prompt enhancement (rewriting the prompt with Gemma) is not "
            "implemented in diffusers-ltx2; enhance the prompt beforehand and pass the result as prompt"
        )


def check_diffusers_components(components: dict[str, Any]) -> None:
    """diffusers' optional components (`DIFFUSERS_ONLY_COMPONENTS`) are accepted only as `None`.

    Raises:
        UnsupportedFeatureError: one of them is not `None`, naming the feature it serves.
    """
    given = {k: v for k, v in components.items() if v is not None}
    if given:
        name, value = next(iter(given.items()))
        raise UnsupportedFeatureError(
            f"{name}={type(value).__name__}: {DIFFUSERS_ONLY_COMPONENTS[name]} is not implemented in diffusers-ltx2; "
            f"pass {name}=None (or leave it out)"
        )


def embeddings_from_tensors(embeds, mask, name: str):
    """Wrap diffusers-style `prompt_embeds` + `prompt_attention_mask` tensors as feature-stage `PromptEmbeddings`.

    diffusers' `LTX2Pipeline.encode_prompt` returns Gemma's stacked hidden states `(B, L, hidden * (layers + 1))`
    and the tokenizer mask `(B, L)`; the pipeline runs its text connectors on them. Anything that is not a raw
    tensor (`PromptEmbeddings`, a conditioning file) is returned as is, and then takes no separate mask.

    Raises:
        ValueError: a tensor without its mask (diffusers requires both), a mask without a tensor or with
            `PromptEmbeddings`, wrong ranks or shapes.
    """
    mask_name = f"{name.replace('_embeds', '')}_attention_mask"
    if not isinstance(embeds, torch.Tensor):
        if mask is not None:
            raise ValueError(
                f"{mask_name} goes with a raw tensor {name}; PromptEmbeddings and conditioning files carry "
                "their own mask" if embeds is not None else f"{mask_name} was passed without {name}"
            )
        return embeds
    if mask is None:
        raise ValueError(f"a tensor {name} needs its {mask_name} (as in diffusers)")
    if embeds.ndim != 3:
        raise ValueError(f"{name} must be (batch, tokens, features), got shape {tuple(embeds.shape)}")
    if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != tuple(embeds.shape[:2]):
        shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(f"{mask_name} must be a (batch, tokens) = {tuple(embeds.shape[:2])} tensor, got {shape}")
    if not embeds.is_floating_point():
        raise ValueError(f"{name} must be a floating tensor, got {embeds.dtype}")
    return PromptEmbeddings(video_context=embeds, audio_context=None, attention_mask=mask, stage="features")


def sigmas_from_timesteps(timesteps, sigmas):
    """diffusers' `timesteps=` (descending, on the 0..1000 scale) as our `sigmas` (`timesteps / 1000`).

    They are used as given, like `sigmas=` (the official sampler takes custom schedules unshifted; diffusers'
    flow-match scheduler applies its time shift to them).

    Raises:
        ValueError: both `timesteps` and `sigmas` were passed (as in diffusers).
    """
    if timesteps is None:
        return sigmas
    if sigmas is not None:
        raise ValueError("pass either timesteps or sigmas, not both")
    values = timesteps.detach().cpu().double() if isinstance(timesteps, torch.Tensor) else torch.tensor(
        [float(t) for t in timesteps], dtype=torch.float64)
    return (values / 1000.0).tolist()


def diffusers_encode_prompt(
    pipe, prompt, negative_prompt=None, *, do_classifier_free_guidance=True, num_videos_per_prompt=1,
    prompt_embeds=None, negative_prompt_embeds=None, prompt_attention_mask=None, negative_prompt_attention_mask=None,
    max_sequence_length=1024, device=None, dtype=None,
):
    """diffusers' `LTX2Pipeline.encode_prompt` on this package's Gemma step (see `LTX2PipelineBase.encode_prompt`)."""
    from ..loaders.gemma import gemma_features
    from ..loaders.gemma_version import check_gemma_version

    if getattr(pipe, "text_encoder", None) is None or getattr(pipe, "tokenizer", None) is None:
        if prompt_embeds is None or (do_classifier_free_guidance and negative_prompt_embeds is None):
            raise ValueError("encode_prompt needs the pipeline's text_encoder and tokenizer (Gemma)")
    prompt = [prompt] if isinstance(prompt, str) else prompt
    if prompt is None and prompt_embeds is None:
        raise ValueError("provide either prompt or prompt_embeds")
    batch_size = len(prompt) if prompt is not None else prompt_embeds.shape[0]
    dtype = dtype or (pipe.text_encoder.dtype if pipe.text_encoder is not None else None)

    def encode(texts):
        check_gemma_version(pipe.text_encoder, expected=getattr(pipe.config, "gemma_version", None),
                            model_version=getattr(pipe.config, "model_version", None))
        features, mask = gemma_features(pipe.tokenizer, pipe.text_encoder, list(texts),
                                        max_sequence_length=max_sequence_length, device=device)
        features = features.to(dtype=dtype) if dtype is not None else features
        return (features.repeat_interleave(num_videos_per_prompt, 0),
                mask.repeat_interleave(num_videos_per_prompt, 0))

    if prompt_embeds is None:
        prompt_embeds, prompt_attention_mask = encode(prompt)
    if do_classifier_free_guidance and negative_prompt_embeds is None:
        negative_prompt = negative_prompt or ""
        negative_prompt = batch_size * [negative_prompt] if isinstance(negative_prompt, str) else negative_prompt
        if prompt is not None and type(prompt) is not type(negative_prompt):
            raise TypeError(f"negative_prompt should be of the same type as prompt, got {type(negative_prompt)} != "
                            f"{type(prompt)}")
        if len(negative_prompt) != batch_size:
            raise ValueError(f"negative_prompt has batch size {len(negative_prompt)}, but prompt has {batch_size}")
        negative_prompt_embeds, negative_prompt_attention_mask = encode(negative_prompt)
    return prompt_embeds, prompt_attention_mask, negative_prompt_embeds, negative_prompt_attention_mask


def read_model_index(folder, **hub_kwargs) -> dict | None:
    """The pipeline folder's `model_index.json` (local, or a Hub repo id: fetched with `hub_kwargs` such as
    `revision`, `token`, `cache_dir`, `local_files_only`); `None` when it cannot be read (loading then reports the
    problem itself)."""
    local = os.path.join(str(folder), "model_index.json")
    try:
        if os.path.isfile(local):
            with open(local, encoding="utf-8") as f:
                return json.load(f)
        from diffusers.pipelines.pipeline_utils import DiffusionPipeline

        return dict(DiffusionPipeline.load_config(str(folder), **hub_kwargs))
    except Exception:  # noqa: BLE001 - from_pretrained itself raises the real error
        return None


def saved_by_this_package(index: dict | None) -> bool:
    """Whether a pipeline folder's `model_index.json` (`read_model_index`) was saved by this package (it lists a
    guider or names one of its pipelines): its guider, or the absence of one, is then what was saved. An index
    that cannot be read (`None`) counts as this package's (nothing is added; loading reports the problem)."""
    if index is None:
        return True
    from .._plain_diffusers import class_name_of

    return "guider" in index or class_name_of(index) in ("LTX2AudioVideoPipeline", "LTX2ICLoRAPipeline")


#: Components a folder may lack (an LTX API-encoder or embeddings-only model folder): loaded as None. They are not
#: `_optional_components` - diffusers' tests set every optional component to None and still prompt the pipeline.
ABSENT_AS_NONE = ("text_encoder", "tokenizer")


def absent_components(index: dict | None) -> list[str]:
    """The `ABSENT_AS_NONE` components a folder's index lists as `[null, null]` or not at all."""
    if index is None:
        return []
    return [name for name in ABSENT_AS_NONE if not isinstance(index.get(name), (list, tuple))
            or index[name][0] is None]


def as_ltx2_scheduler(scheduler) -> LTX2Scheduler:
    """`scheduler` as the official sampler: a diffusers `FlowMatchEulerDiscreteScheduler` (what diffusers' LTX-2
    folders ship, or what diffusers code assigns) is converted keeping its shift settings.

    Raises:
        ValueError: any other scheduler, or flow-match options the official schedule cannot express; the
            message names `LTX2Scheduler`.
    """
    if isinstance(scheduler, LTX2Scheduler):
        return scheduler
    name = type(scheduler).__name__
    if name != "FlowMatchEulerDiscreteScheduler":
        raise ValueError(
            f"LTX-2 pipelines sample with LTX2Scheduler (the official Euler sampler on x0), got {name}: assign "
            "diffusers_ltx2.LTX2Scheduler() (a FlowMatchEulerDiscreteScheduler is converted to it)"
        )
    try:
        converted = LTX2Scheduler.from_flow_match_config(scheduler.config)
    except ValueError as exc:
        raise ValueError(f"this FlowMatchEulerDiscreteScheduler cannot be converted to LTX2Scheduler: {exc}") from exc
    logger.info("replacing %s with LTX2Scheduler (the official sampler, same shift settings)", name)
    return converted
