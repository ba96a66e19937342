"""The page's modes as `ltx2` commands: each form becomes the argument values of the command the CLI runs
(`ltx2 generate / retake / foley / extend / control`), so the app checks and runs exactly what the command line
would. Pure functions over plain values (no gradio, no torch): the web page only collects the values.

A form is a mapping of the page's fields: the shared ones (`SHARED_FIELDS`: clip size, sampling, guidance,
memory, LoRAs, prompt source) and the mode's own (`MODES[mode].fields`). `job_request(mode, form, model)`
returns the `JobRequest` to queue; a bad value raises the same `ValueError` the CLI would (naming the flag).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..recommended import RECOMMENDED_AUDIO, RECOMMENDED_VIDEO

#: prompt sources
LOCAL, API, SAVED = "local text encoder", "LTX API", "saved conditioning"
PROMPT_SOURCES = (LOCAL, API, SAVED)

_DIALS = ("cfg", "stg", "modality_scale", "rescale", "skip_step")
#: guidance presets -> per-modality dials (None: every dial off, `--no-guidance`)
GUIDANCE_PRESETS = {
    "recommended (dev checkpoints)": {"video": dict(RECOMMENDED_VIDEO, skip_step=0),
                                      "audio": dict(RECOMMENDED_AUDIO, skip_step=0)},
    "CFG only": {"video": dict(cfg=RECOMMENDED_VIDEO["cfg"], stg=0.0, modality_scale=1.0, rescale=0.0, skip_step=0),
                 "audio": dict(cfg=RECOMMENDED_AUDIO["cfg"], stg=0.0, modality_scale=1.0, rescale=0.0, skip_step=0)},
    "no guidance (distilled checkpoints)": None,
    "custom": {},
}


@dataclass(frozen=True)
class Mode:
    """A tab of the page: its label, the command it runs, its own fields, and what it outputs."""

    label: str
    command: str
    fields: tuple[str, ...]
    from_input: bool = False  # clip size from the uploaded clip (retake / foley / extend)
    help: str = ""


MODES = {m.label: m for m in (
    Mode("text/image to video", "generate", ("prompt", "negative_prompt", "keyframes", "keyframe_frames",
                                             "image_strength"),
         help="a clip with sound from the prompt; keyframe images held at the frames given (0 = first, -1 = last)"),
    Mode("audio to video", "generate", ("prompt", "negative_prompt", "audio", "audio_start"),
         help="a clip made to an uploaded sound (the output carries it unchanged)"),
    Mode("video to audio (foley)", "foley", ("prompt", "negative_prompt", "input"), from_input=True,
         help="the soundtrack of an uploaded clip (its frames are kept)"),
    Mode("retake", "retake", ("prompt", "negative_prompt", "input", "start", "end", "retake_what", "ramp"),
         from_input=True, help="regenerate seconds START..END of an uploaded clip, keeping the rest"),
    Mode("extend", "extend", ("prompt", "negative_prompt", "input", "frames", "overlap", "overlap_strength"),
         from_input=True, help="continue an uploaded clip (video and sound) by N frames"),
    Mode("IC-LoRA control", "control", ("prompt", "negative_prompt", "control_video", "preprocess", "ic_lora",
                                        "control_strength", "attention_strength"),
         help="a clip following a control video (canny / depth / pose / union IC-LoRA)"),
    Mode("two-stage / distilled", "generate", ("prompt", "negative_prompt", "distilled_lora", "upsampler",
                                               "distilled_two_stage"),
         help="half-size generation, 2x latent upsampling, 3 refinement steps (sizes: multiples of 64)"),
    Mode("audio only", "generate", ("prompt", "negative_prompt"), help="sound alone, written as WAV"),
)}

RETAKE_WHAT = ("video and audio", "video only", "audio only")


@dataclass
class JobRequest:
    """What to queue: `command` with `values`; `encode`: `ltx2 encode --api` values to run first (LTX API
    prompts: their conditioning files then replace the prompts); `suffix`: the output's."""

    mode: str
    command: str
    values: dict
    suffix: str = "mp4"
    encode: list = field(default_factory=list)
    label: str = ""


def _given(value: Any) -> bool:
    return value is not None and value != "" and not (isinstance(value, float) and math.isnan(value))


def _whole(value):
    """Gradio numbers arrive as floats: 9.0 -> 9 (anything else is left to the option's parser)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def guidance_values(form: Mapping[str, Any]) -> dict:
    """`--cfg ... --audio-skip-step` (or `--no-guidance`) from the preset and the dials."""
    preset = form.get("guidance_preset") or "custom"
    if preset not in GUIDANCE_PRESETS:
        raise ValueError(f"unknown guidance preset {preset!r}; choose from {', '.join(GUIDANCE_PRESETS)}")
    if GUIDANCE_PRESETS[preset] is None:
        return {"no_guidance": True}
    values = {}
    for modality in ("video", "audio"):
        for dial in _DIALS:
            value = form.get(f"{modality}_{dial}")
            if _given(value):
                values[f"{modality}_{dial}"] = _whole(value) if dial == "skip_step" else value
    return values


def lora_values(form: Mapping[str, Any], lora_dir: str | None) -> list[str]:
    """`--lora PATH:STRENGTH` entries of the LoRA rows (`lora_1` / `lora_1_strength` ... names in `lora_dir`)."""
    specs = []
    for i in (1, 2, 3):
        name = form.get(f"lora_{i}")
        if not name:
            continue
        strength = form.get(f"lora_{i}_strength")
        specs.append(f"{library_path(lora_dir, name)}:{1.0 if strength is None else float(strength)!r}")
    return specs


def library_path(lora_dir: str | None, name: str) -> str:
    """The file `name` of the LoRA folder (a bare file name: nothing outside the folder can be named)."""
    if not lora_dir:
        raise ValueError("no LoRA folder: start ltx2 ui with --lora-dir FOLDER")
    if os.path.basename(name) != name or name in (".", ".."):
        raise ValueError(f"LoRA {name!r}: pick a file of the LoRA folder")
    return os.path.join(lora_dir, name)


def list_loras(lora_dir: str | None) -> list[str]:
    """The `.safetensors` file names of the LoRA folder, sorted."""
    if not lora_dir or not os.path.isdir(lora_dir):
        return []
    return sorted(n for n in os.listdir(lora_dir) if n.endswith(".safetensors")
                  and os.path.isfile(os.path.join(lora_dir, n)))


def _prompt_values(form, model: str, api: Mapping[str, Any]) -> tuple[dict, list]:
    source = form.get("prompt_source") or LOCAL
    if source not in PROMPT_SOURCES:
        raise ValueError(f"unknown prompt source {source!r}; choose from {', '.join(PROMPT_SOURCES)}")
    prompt, negative = form.get("prompt") or None, form.get("negative_prompt") or None
    if source == SAVED:
        if not form.get("conditioning"):
            raise ValueError("saved conditioning: upload a conditioning file (.safetensors from `ltx2 encode`)")
        return {"conditioning": form["conditioning"], "negative_prompt": negative}, []
    if prompt is None:
        raise ValueError("--prompt: write a prompt (or choose saved conditioning)")
    if source == LOCAL:
        return {"prompt": prompt, "negative_prompt": negative}, []
    # LTX API: the prompts are encoded remotely first (`ltx2 encode --api`), the job then runs on the files
    encode = [{"prompt": [text], "api": True, "model": model, "dest": dest, **api}
              for dest, text in (("conditioning", prompt), ("negative_conditioning", negative or ""))]
    return {"prompt": prompt, "negative_prompt": negative}, encode


def job_request(mode_label: str, form: Mapping[str, Any], *, model: str, lora_dir: str | None = None,
                api: Mapping[str, Any] | None = None) -> JobRequest:
    """The command and argument values of a form (see the module docstring). Raises `ValueError` for a form the
    page should not have sent (unknown mode, missing upload), the rest is checked by the command's own layer.
    `api`: `ltx2 encode` values for LTX API prompts (`model_id`, `base_url`); the key comes from the environment."""
    if mode_label not in MODES:
        raise ValueError(f"unknown mode {mode_label!r}; choose from {', '.join(MODES)}")
    mode = MODES[mode_label]
    values, encode = _prompt_values(form, model, api or {})
    values.update(model=model, seed=_whole(form.get("seed", 0)), dtype=form.get("dtype") or "bf16",
                  device=form.get("device") or None, sampler=None, lora=lora_values(form, lora_dir))
    if mode.command == "generate":
        values["sampler"] = form.get("sampler") or None
    else:
        values.pop("sampler")
    if form.get("distilled"):
        values["distilled"] = True
    elif _given(form.get("steps")):
        values["steps"] = _whole(form["steps"])
    for name in ("quantize", "text_encoder_quantize", "offload", "vram_budget"):
        if form.get(name) not in (None, "", "none"):
            values[name] = form[name]
    if form.get("sequential_passes"):
        values["sequential_passes"] = True
    values.update(guidance_values(form))
    if not mode.from_input:
        for name in ("num_frames", "height", "width", "frame_rate"):
            if _given(form.get(name)):
                values[name] = _whole(form[name])
    suffix = "mp4"
    label = mode_label
    if mode_label == "text/image to video":
        values["image"] = keyframe_specs(form.get("keyframes") or [], form.get("keyframe_frames") or "")
        if _given(form.get("image_strength")):
            values["image_strength"] = form["image_strength"]
    elif mode_label == "audio to video":
        values["audio"] = _upload(form, "audio", "--audio", "a sound file")
        values["audio_start"] = form.get("audio_start") or 0.0
    elif mode.from_input:
        values["input"] = _upload(form, "input", "--input", "a video clip")
        if mode_label == "retake":
            what = form.get("retake_what") or RETAKE_WHAT[0]
            if what not in RETAKE_WHAT:
                raise ValueError(f"retake: choose {', '.join(RETAKE_WHAT)}")
            values.update(start=form.get("start"), end=form.get("end"), ramp=form.get("ramp") or 0.0,
                          no_video=what == "audio only", no_audio=what == "video only")
        elif mode_label == "extend":
            values.update(frames=_whole(form.get("frames")), overlap=_whole(form.get("overlap") or 16),
                          overlap_strength=form.get("overlap_strength"))
    elif mode_label == "IC-LoRA control":
        if not form.get("ic_lora"):
            raise ValueError("--lora: pick the IC-LoRA (from the LoRA folder)")
        strength = form.get("ic_lora_strength")
        values["lora"] = [f"{library_path(lora_dir, form['ic_lora'])}:{1.0 if strength is None else strength!r}",
                          *values["lora"]]
        values.update(control_video=_upload(form, "control_video", "--control-video", "a control video"),
                      preprocess=form.get("preprocess") or "none", preprocess_model=form.get("preprocess_model") or None,
                      control_strength=form.get("control_strength"),
                      attention_strength=form.get("attention_strength"))
    elif mode_label == "two-stage / distilled":
        values["two_stage"] = True
        if form.get("distilled_two_stage"):
            values["distilled"] = True
            values.pop("steps", None)
        if form.get("distilled_lora"):
            values["distilled_lora"] = f"{library_path(lora_dir, form['distilled_lora'])}:" \
                                       f"{float(form.get('distilled_lora_strength') or 1.0)!r}"
        if form.get("upsampler"):
            values["upsampler"] = form["upsampler"]
    elif mode_label == "audio only":
        values["audio_only"] = True
        suffix = "wav"
    values["output"] = f"out.{suffix}"
    return JobRequest(mode_label, mode.command, values, suffix, encode, label)


def _upload(form, name: str, flag: str, what: str) -> str:
    path = form.get(name)
    if not path:
        raise ValueError(f"{flag}: upload {what}")
    return path


def keyframe_specs(paths, frames_text: str) -> list[str]:
    """`--image PATH@FRAME` entries: the uploaded images in order, at the comma-separated frames (default: the
    first at 0, the next at -1, i.e. first-last frame; then every other must be given)."""
    paths = [p for p in (paths or []) if p]
    frames = [f.strip() for f in str(frames_text or "").split(",") if f.strip()]
    if len(frames) > len(paths):
        raise ValueError(f"keyframe frames: {len(frames)} given for {len(paths)} image(s)")
    default = ["0", "-1"]
    specs = []
    for i, path in enumerate(paths):
        frame = frames[i] if i < len(frames) else (default[i] if i < 2 else None)
        if frame is None:
            raise ValueError(f"keyframe frames: give the frame of image {i + 1} (e.g. 0, 48, -1)")
        try:
            int(frame)
        except ValueError:
            raise ValueError(f"keyframe frames: {frame!r} is not a frame number (0 = first, -1 = last)") from None
        specs.append(f"{path}@{frame}")
    return specs
