"""A `presets.TwoStagePreset` turned into `LTX2TwoStagePipeline.__call__` keywords (`preset_call_kwargs`).

The keywords the caller gives win; the preset fills the rest. The one derived value is the stage-1 schedule of a
`token_count_shift` preset: the LTX-2 sigmas with the shift of the stage-1 latent's token count (official
`LTX2Scheduler.execute(latent=empty stage-1 latent, steps=...)` in `ti2vid_two_stages_hq.py`).
"""

from __future__ import annotations

import torch

from ..presets import TwoStagePreset

#: diffusers' guidance arguments of the call: any of them given replaces the preset's guider
DIFFUSERS_GUIDANCE = ("guidance_scale", "stg_scale", "modality_scale", "guidance_rescale", "audio_guidance_scale",
                      "audio_stg_scale", "audio_modality_scale", "audio_guidance_rescale",
                      "spatio_temporal_guidance_blocks")


def token_shifted_sigmas(pipe, preset_steps: int, num_frames: int, height: int, width: int) -> list[float]:
    """The stage-1 sigmas of a token-count-shifted preset at output size `(height, width)`: `preset_steps` steps
    of the LTX-2 schedule with the shift of the half-size latent's `frames * h * w` tokens."""
    from ..schedulers.sigmas import ltx2_sigmas

    tokens = pipe.video_latent_shape(1, num_frames, height // 2, width // 2)[0][1]
    return ltx2_sigmas(int(preset_steps), num_tokens=int(tokens)).tolist()


def preset_call_kwargs(pipe, preset: TwoStagePreset, kwargs: dict) -> dict:
    """`kwargs` (a `__call__`'s keywords) completed with `preset`'s choices.

    Filled when not given: `height`, `width`, `num_frames`, `frame_rate`, `generator` (seeded with the preset's
    seed), `sampler`, `stage_2_sampler`, the guider (unless `guider=` or a diffusers guidance argument is given),
    the stage-1 schedule (unless `sigmas=` / `timesteps=`; `num_inference_steps` sets its length), the distilled
    LoRA strengths, `refine_audio`, and the negative prompt (unless `negative_prompt` /
    `negative_prompt_embeds`).

    Raises:
        ValueError: `num_inference_steps` that is not a positive integer (before any model runs).
    """
    from ..guiders import ModalityGuidanceParams, MultimodalGuider

    kw = dict(kwargs)
    for key in ("height", "width", "num_frames", "frame_rate", "sampler", "stage_2_sampler", "refine_audio"):
        if kw.get(key) is None:
            kw[key] = getattr(preset, key)
    if kw.get("generator") is None:
        kw["generator"] = torch.Generator().manual_seed(preset.seed)
    if kw.get("guider") is None and not any(k in kw for k in DIFFUSERS_GUIDANCE):
        kw["guider"] = MultimodalGuider(video=ModalityGuidanceParams(**preset.video),
                                        audio=ModalityGuidanceParams(**preset.audio))
    steps = kw.pop("num_inference_steps", None)
    steps = preset.num_inference_steps if steps is None else steps
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"num_inference_steps must be a positive integer, got {steps!r}")
    if kw.get("sigmas") is None and kw.get("timesteps") is None:
        if preset.token_count_shift:
            kw["sigmas"] = token_shifted_sigmas(pipe, steps, kw["num_frames"], kw["height"], kw["width"])
        else:
            kw["num_inference_steps"] = steps
    if kw.get("stage_1_distilled_lora_strength") is None:
        kw["stage_1_distilled_lora_strength"] = preset.stage_1_distilled_lora_strength
    if kw.get("distilled_lora_strength") is None:
        kw["distilled_lora_strength"] = preset.stage_2_distilled_lora_strength
    if kw.get("negative_prompt") is None and kw.get("negative_prompt_embeds") is None:
        kw["negative_prompt"] = preset.negative_prompt
    return kw
