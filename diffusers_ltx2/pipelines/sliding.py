"""Sliding-window long video: a clip of any length generated window by window through the pipeline's own call.

Each window is one `pipe(..., output_type="latent")` call on the one denoising loop (any model version, any
guider / sampler / LoRA the pipeline has). After the first, a window is guided by the finished clip's last
`overlap` frames (video and audio latents, `conditioning.LatentGuide` at `overlap_strength`), optionally
AdaIN-normalised to the first window (`long_video.adain.adain_latents`), then joined to the finished clip
(`long_video.seams.blend_video_latents` / `blend_audio_latents`); semantics of ComfyUI-LTXVideo's
`LTXVLoopingSampler` and `LTXVExtendSampler` (layout: `long_video.layout.plan_windows`). The whole clip's audio latents are decoded at once, so the
sound runs on across windows without a seam. Only the running window's latents are on the device; finished
windows are kept on the CPU (latents are small: 128 channels per 32x32x8 pixels) and decoded at the end, tile by
tile into frames assembled on the CPU (`memory.tiled_decode.streamed_decode(output_device=...)`), so the device's
peak does not grow with the number of windows in the decode either.
"""

from __future__ import annotations

import math
import numbers

from ..conditioning.latent_guide import LatentGuide
from ..long_video.adain import adain_latents
from ..long_video.layout import audio_placements, plan_windows
from ..long_video.prompt_schedule import prompt_texts, window_prompts
from ..long_video.routing import route_conditions
from ..long_video.seams import blend_audio_latents, blend_video_latents
from .pipeline_output import LTX2AudioVideoPipelineOutput
from .runtime import named_progress_bar

#: arguments the windows set themselves
_SET_HERE = ("num_frames", "latents", "audio_latents", "noise_scale", "output_modalities", "return_dict",
             "num_videos_per_prompt")


def generate_long_video(
    pipe, prompt=None, *, num_frames: int, window: int = 121, overlap: int = 24, overlap_strength: float = 0.5,
    adain_factor: float = 0.0, conditions=None, image=None, height: int = 512, width: int = 768,
    frame_rate: float = 24.0, generator=None, output_type: str = "pil", return_dict: bool = True,
    callback_on_step_end=None, callback_on_step_end_tensor_inputs=("latents",), decode_timestep: float = 0.0,
    decode_noise_scale: float | None = None, **call_kwargs,
):
    """Generate `num_frames` frames (and their sound) in windows of `window` frames overlapping by `overlap`.

    Args:
        pipe: an `LTX2AudioVideoPipeline` (any model version) or an `LTX2ICLoRAPipeline`, whose
            `generate_long_video` also takes its `__call__`'s reference arguments for the whole clip (`control_video`
            of at least `num_frames` frames, `control_strength`, `conditioning_attention_strength`,
            `conditioning_attention_mask` over its frames or one frame for all, `control_preprocessor`,
            `reference_downscale_factor`, diffusers' `reference_conditions=` / `conditions=`), turned into
            `ReferenceVideo`s as `__call__` does (`diffusers_conditions.pop_ic_lora_arguments`) and routed below.
        prompt: one string; a list of strings, one per window (a shorter list repeats its last); or
            `(start, text)` segments with starts in seconds (a number, `"5s"`) or frames (`"120f"`) - see
            `long_video.prompt_schedule`. Or pass `prompt_embeds` (every window).
        num_frames: frames of the whole clip, `8k + 1` (e.g. 481 = 20 s at 24 fps).
        window: frames per window, `8k + 1` (121: the model's usual clip).
        overlap: frames of the finished clip guiding each next window, a multiple of 8 and >= 16 (ComfyUI's
            `temporal_overlap`, default 24); the first of its latent frames is dropped, the rest blended.
        overlap_strength: strength of that guide in [0, 1] (ComfyUI's `temporal_overlap_cond_strength`, 0.5).
        adain_factor: AdaIN of every later window to the first window's latent statistics, in [0, 1] (ComfyUI's
            `adain_factor`, default 0 = off; 0.1-0.3 against colour drift on long clips). Video only.
        conditions: `VideoCondition` (images, keyframes, clips at whole-clip frames), `AudioCondition`
            (audio-to-video for the whole clip) and `ReferenceVideo` (an IC-LoRA control video covering the whole
            clip, with its IC-LoRA loaded), routed to the window(s) that hold them (`long_video.routing`).
        image: the first frame (the pipeline's `image=`), applied in the first window.
        height, width, frame_rate: as the pipeline's.
        generator: one `torch.Generator`; the first window draws from it exactly as a one-window call with the
            same generator would (so it equals that call), later windows continue drawing from it.
        output_type: "pil", "np", "pt" or "latent" (the whole clip's denormalized video latents `(1, C, F, h, w)`
            and audio latents `(1, C, T, M)`, float32 on the CPU).
        callback_on_step_end, callback_on_step_end_tensor_inputs: passed to every window's call (the step counts
            restart at 0 in each window; `pipe.long_video_window` is the running window's index).
        decode_timestep, decode_noise_scale: the final decode's (timestep-conditioned VAEs only).
        call_kwargs: any other pipeline argument, the same for every window (negative_prompt, guider,
            num_inference_steps, sigmas, sampler, max_sequence_length, attention_kwargs, ...).

    Returns:
        `LTX2AudioVideoPipelineOutput` with `num_frames` frames and the clip's audio (the length a one-call clip
        of `num_frames` frames has; the given sound with an `AudioCondition`), or a tuple `(frames, audio)`.
        Frames ("pt" / "np" / "pil") and latents are on the CPU.

    Raises:
        ValueError: before any model runs, for a two-stage / DFR pipeline (its half-size first stage cannot take
        the guides), bad numbers (`layout.check_window_numbers`), a bad prompt schedule,
        conditions that do not fit a window (a reference shorter than the clip), the IC-LoRA pipeline's reference
        errors, or arguments the windows set themselves.
    """
    if not getattr(pipe, "supports_sliding_windows", True):
        raise ValueError(f"sliding windows run one one-stage call per window, guided by the previous window's "
                         f"full-size latents; {type(pipe).__name__}'s half-size first stage cannot take them: run the "
                         f"windows on LTX2AudioVideoPipeline.from_pipe(pipe) (or LTX2ICLoRAPipeline.from_pipe)")
    for key in _SET_HERE:
        if key in call_kwargs and not (key == "num_videos_per_prompt" and call_kwargs[key] == 1):
            raise ValueError(f"sliding windows set {key} themselves; do not pass it")
    call_kwargs.pop("num_videos_per_prompt", None)
    if output_type not in ("pil", "np", "pt", "latent"):
        raise ValueError(f"output_type must be 'pil', 'np', 'pt' or 'latent', got {output_type!r}")
    for name, value in (("overlap_strength", overlap_strength), ("adain_factor", adain_factor)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value <= 1:
            raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    if isinstance(frame_rate, bool) or not isinstance(frame_rate, numbers.Real) or not math.isfinite(frame_rate) \
            or frame_rate <= 0:
        raise ValueError(f"frame_rate must be a finite number of frames per second > 0, got {frame_rate!r}")
    if isinstance(generator, list):
        if len(generator) != 1:
            raise ValueError("sliding windows generate one clip: pass one generator")
        generator = generator[0]
    windows = plan_windows(num_frames, window, overlap, pipe.vae_temporal_compression_ratio)
    if prompt is None:
        if call_kwargs.get("prompt_embeds") is None:
            raise ValueError("pass a prompt (a string, one per window, or (start, text) segments) or prompt_embeds")
        texts, chosen = [None], [0] * len(windows)
    else:
        chosen = window_prompts(prompt, windows, num_frames, frame_rate)
        texts = prompt_texts(prompt, num_frames, frame_rate)
    geometry = pipe.clip_geometry(1, num_frames, height, width, frame_rate)
    routed = route_conditions(conditions, windows, geometry)
    a2v = [c for c in (conditions or []) if type(c).__name__ == "AudioCondition"]
    placements = audio_placements(windows, num_frames, frame_rate, geometry.audio_latents_per_second)
    guide_span_s = ((windows[0].temporal_ratio * (overlap // windows[0].temporal_ratio - 1)) + 1) / frame_rate
    guide_audio = round(guide_span_s * geometry.audio_latents_per_second)

    tensor_inputs = pipe.callback_tensor_names(callback_on_step_end, callback_on_step_end_tensor_inputs)
    steps = _steps_per_window(call_kwargs)
    bar = named_progress_bar(pipe, len(windows) * steps if steps else None, "windows")
    saved_config = dict(getattr(pipe, "_progress_bar_config", {}))

    def on_step(p, step, sigma, tensors):
        bar.update(1)
        return callback_on_step_end(p, step, sigma, tensors) if callback_on_step_end is not None else {}

    video = audio = first = None
    try:
        pipe.set_progress_bar_config(**{**saved_config, "disable": True})  # one bar: windows and steps
        for w, (a_start, _) in zip(windows, placements):
            bar.set_description(f"window {w.index + 1}/{len(windows)}")
            pipe.long_video_window = w.index
            window_conditions = list(routed[w.index])
            blend_audio = 0
            if w.index > 0:
                guide_video = video[:, :, w.start:w.new_start]
                guide = None
                if not a2v:
                    blend_audio = max(0, min(guide_audio, audio.shape[2] - a_start))
                    guide = audio[:, :, a_start:a_start + blend_audio] if blend_audio else None
                window_conditions.append(LatentGuide(guide_video, guide, overlap_strength))
            out = pipe(
                None if texts[0] is None else texts[chosen[w.index]], num_frames=w.num_frames, height=height,
                width=width, frame_rate=frame_rate, generator=generator, conditions=window_conditions or None,
                image=image if w.index == 0 else None, output_type="latent", return_dict=True,
                callback_on_step_end=on_step, callback_on_step_end_tensor_inputs=tensor_inputs, **call_kwargs,
            )
            v, a = out.frames.float().cpu(), out.audio.float().cpu()  # finished windows live on the CPU
            del out
            if w.index == 0:
                video, audio, first = v, a, v
            else:
                if adain_factor:
                    v = adain_latents(v, first, adain_factor)
                video = blend_video_latents(video, v, w.blend_latents)
                audio = blend_audio_latents(audio, a, a_start, blend_audio)
            if pipe.interrupt:  # a callback stopped this window: return what is finished
                break
    finally:
        pipe._progress_bar_config = saved_config
        bar.close()
        pipe.long_video_window = None
    audio = audio[:, :, : geometry.audio_latent_length]
    return _finish(pipe, video, audio, geometry, a2v, output_type, return_dict, generator, decode_timestep,
                   decode_noise_scale)


def _steps_per_window(call_kwargs) -> int | None:
    """Denoising steps of each window's call (for the progress bar's total)."""
    for key in ("sigmas", "timesteps"):
        values = call_kwargs.get(key)
        if values is not None:
            values = list(values)
            return len(values) - (1 if values and float(values[-1]) == 0 else 0)
    return call_kwargs.get("num_inference_steps", 40)


def _finish(pipe, video, audio, geometry, a2v, output_type, return_dict, generator, decode_timestep,
            decode_noise_scale):
    """Decode the whole clip (video latents -> frames, audio latents -> one waveform) or return the latents."""
    if output_type == "latent":
        frames, sound, rate = video, audio, None
    else:
        device = pipe._execution_device
        with named_progress_bar(pipe, 2, "decode") as bar:
            frames = pipe.decode_video(video.to(device), output_type, generator=generator,
                                       decode_timestep=decode_timestep, decode_noise_scale=decode_noise_scale,
                                       output_device="cpu")  # the device holds one VAE tile, not the clip
            bar.update()
            if a2v:  # audio-to-video: the given sound, as the one-call pipeline returns it
                sound = a2v[0].output_waveform(geometry, pipe.audio_sample_rate).unsqueeze(0)
            else:
                sound = pipe.decode_audio(audio.to(device), output_type)
            bar.update()
        rate = pipe.audio_sample_rate
    pipe.maybe_free_model_hooks()
    if not return_dict:
        return frames, sound
    return LTX2AudioVideoPipelineOutput(frames=frames, audio=sound, sample_rate=rate)
