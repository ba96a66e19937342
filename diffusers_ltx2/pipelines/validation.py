"""Input checks shared by the pipelines. Each raises `ValueError` with the fix in the message, before any
model runs."""

from __future__ import annotations

from typing import Sequence

import torch

from ..rules import frame_count_problem, nearest_multiples

OUTPUT_TYPES = ("np", "pt", "pil", "latent")


def check_num_frames(num_frames, temporal_ratio: int = 8) -> None:
    """Frames must be `k * temporal_ratio + 1` (the causal VAE encodes the first frame alone); the rule and its
    nearest valid values: `diffusers_ltx2.rules.frame_count_problem`."""
    problem = frame_count_problem(num_frames, temporal_ratio)
    if problem is not None:
        raise ValueError(f"num_frames {problem}")


#: Smallest size a conv input may have per padding mode, given the padding `p` (torch's F.pad rules).
_PADDING_MINIMUM = {"reflect": lambda p: p + 1, "circular": lambda p: max(p, 1)}


def min_latent_size(*modules) -> int:
    """Smallest latent height / width the convolutions of `modules` accept (1 if any size works).

    Zero and replicate padding take any size; reflect padding needs more pixels than it pads, circular at least as
    many. A VAE's decoder (or encoder) is smallest at the latent grid, so the largest need over its convolutions
    bounds the latent size. diffusers' LTX-2 video VAE decodes with 3x3 reflect-padded convolutions
    (`decoder_spatial_padding_mode="reflect"`, the default there and in ltx-core's decoder configurator, i.e. every
    released checkpoint): a 1-pixel latent fails in `F.pad`, 2 latent pixels work. Its encoder pads with zeros.
    """
    need = 1
    for module in modules:
        for conv in module.modules() if module is not None else ():
            rule = _PADDING_MINIMUM.get(getattr(conv, "padding_mode", "zeros"))
            if rule is None or not isinstance(conv, torch.nn.modules.conv._ConvNd):
                continue
            padding = conv.padding if isinstance(conv.padding, tuple) else (conv.padding,) * 2
            if all(isinstance(p, int) for p in padding):  # "same" / "valid" strings pad nothing we can size
                need = max(need, rule(max(padding[-2:])))
    return need


def min_resolution(vae, *, decode: bool = True, encode: bool = False) -> int:
    """Smallest height / width in pixels a call may ask of `vae`: its spatial compression times the latent size
    its decoder (when the call decodes: any `output_type` but "latent") and encoder (when it encodes images)
    accept. 64 for the LTX-2 VAE when decoding, 32 otherwise; 4 for diffusers' test VAE (2x compression)."""
    if vae is None:
        return 1
    parts = [getattr(vae, "decoder", None) if decode else None, getattr(vae, "encoder", None) if encode else None]
    return int(getattr(vae, "spatial_compression_ratio", 32)) * min_latent_size(*(p for p in parts if p is not None))


def check_resolution(height, width, multiple: int = 32, minimum: int = 64) -> None:
    """Height and width must be positive multiples of the VAE's spatial compression (`multiple`, 32 for LTX-2),
    and at least `minimum` pixels (default 64, the LTX-2 VAE's decoder rule; pipelines pass their own VAE's
    `min_resolution`)."""
    minimum = max(minimum, multiple)
    latent = minimum // multiple
    pixels = {1: "one latent pixel", 2: "two latent pixels"}.get(latent, f"{latent} latent pixels")
    for name, value in (("height", height), ("width", width)):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if value % multiple:
            lower, upper = nearest_multiples(value, multiple)
            if value < minimum:
                raise ValueError(f"{name} must be a multiple of {multiple} and at least {minimum}, got {value}; "
                                 f"nearest valid value: {max(upper, minimum)}")
            raise ValueError(
                f"{name} must be a multiple of {multiple}, got {value}; nearest valid values: {lower} or {upper}"
            )
        if value < minimum:
            raise ValueError(f"{name} must be at least {minimum} ({pixels}), got {value}; "
                             f"nearest valid value: {minimum}")


def normalize_prompts(prompt, name: str = "prompt") -> list[str] | None:
    """`str` -> `[str]`; lists are checked to be non-empty lists of strings; `None` stays `None`."""
    if prompt is None:
        return None
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, (list, tuple)):
        if len(prompt) == 0:
            raise ValueError(f"{name} is an empty list; pass at least one string")
        bad = [type(p).__name__ for p in prompt if not isinstance(p, str)]
        if bad:
            raise ValueError(f"{name} must contain only strings, found {bad}")
        return list(prompt)
    raise ValueError(f"{name} must be a string or a list of strings, got {type(prompt).__name__}")


def check_batch(name: str, size: int, expected: int) -> None:
    """A per-prompt input of batch `size` must match the prompt batch (or be 1, broadcast)."""
    if size not in (1, expected):
        raise ValueError(f"{name} has batch size {size}, but the prompts have batch size {expected}")


def check_generator(generator, batch_size: int) -> None:
    """A list of generators needs one per generated video."""
    if isinstance(generator, (list, tuple)) and len(generator) != batch_size:
        raise ValueError(
            f"got {len(generator)} generators for an effective batch of {batch_size}; pass one per video or a "
            "single generator"
        )


def check_output_type(output_type: str) -> None:
    """`output_type` must be one of "np", "pt", "pil", "latent"."""
    if output_type not in OUTPUT_TYPES:
        raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")


def check_positive(name: str, value) -> None:
    """`value` must be a real number > 0 (bools refused)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")


def check_strength(name: str, value) -> None:
    """`value` must be a number in [0, 1]."""
    if not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")


def check_latents_shape(name: str, latents: torch.Tensor | None, packed: Sequence[int], unpacked: Sequence[int]):
    """User-supplied noise must have the packed or the unpacked latent shape of the requested clip."""
    if latents is None:
        return
    if not isinstance(latents, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(latents).__name__}")
    if tuple(latents.shape) not in (tuple(packed), tuple(unpacked)):
        raise ValueError(
            f"{name} has shape {tuple(latents.shape)}; for this clip expected {tuple(unpacked)} "
            f"or packed {tuple(packed)}"
        )


class CallInputs:
    """Prompt-side inputs of a pipeline call after `check_call_inputs` (normalized, batch sizes resolved)."""

    def __init__(self, prompts, negative_prompts, prompt_embeds, negative_prompt_embeds, batch_size, total):
        self.prompts = prompts
        self.negative_prompts = negative_prompts
        self.prompt_embeds = prompt_embeds
        self.negative_prompt_embeds = negative_prompt_embeds
        self.batch_size = batch_size
        self.total = total


def check_call_inputs(
    pipe, *, prompt, negative_prompt, prompt_embeds, negative_prompt_embeds, height, width, num_frames, frame_rate,
    output_type, image, image_strength, num_videos_per_prompt, generator, latents, audio_latents,
    callback_tensor_inputs, guider, prompt_attention_mask=None, negative_prompt_attention_mask=None,
) -> CallInputs:
    """The checks every LTX-2 pipeline call shares (prompts, geometry, image, generators, noise, callback
    tensors, guider), run before any model; returns the normalized prompt inputs.

    `prompt_embeds` may also be a raw tensor with its `prompt_attention_mask` (diffusers' `encode_prompt`
    output: Gemma features), likewise the negative.
    """
    from .diffusers_compat import embeddings_from_tensors

    prompts = normalize_prompts(prompt)
    negative_prompts = normalize_prompts(negative_prompt, "negative_prompt")
    prompt_embeds = embeddings_from_tensors(prompt_embeds, prompt_attention_mask, "prompt_embeds")
    negative_prompt_embeds = embeddings_from_tensors(negative_prompt_embeds, negative_prompt_attention_mask,
                                                     "negative_prompt_embeds")
    prompt_embeds = pipe._load_embeddings(prompt_embeds)
    negative_prompt_embeds = pipe._load_embeddings(negative_prompt_embeds)
    if (prompts is None) == (prompt_embeds is None):
        raise ValueError("pass exactly one of prompt or prompt_embeds")
    batch_size = len(prompts) if prompts is not None else prompt_embeds.batch_size
    if negative_prompts is not None:
        if not isinstance(negative_prompt, str) and prompts is not None and len(negative_prompts) != batch_size:
            # as diffusers: a single string is broadcast, a list must pair with the prompts
            raise ValueError(f"negative_prompt has batch size {len(negative_prompts)}, but the prompts have batch "
                             f"size {batch_size}; pass one negative prompt per prompt or a single string")
        check_batch("negative_prompt", len(negative_prompts), batch_size)
        if len(negative_prompts) == 1:
            negative_prompts = negative_prompts * batch_size
    if negative_prompt_embeds is not None:
        check_batch("negative_prompt_embeds", negative_prompt_embeds.batch_size, batch_size)
    check_num_frames(num_frames, pipe.vae_temporal_compression_ratio)
    check_resolution(height, width, pipe.vae_spatial_compression_ratio,
                     min_resolution(pipe.vae, decode=output_type != "latent", encode=image is not None))
    check_positive("frame_rate", frame_rate)
    check_output_type(output_type)
    check_strength("image_strength", image_strength)
    if not isinstance(num_videos_per_prompt, int) or isinstance(num_videos_per_prompt, bool) or num_videos_per_prompt < 1:
        raise ValueError(f"num_videos_per_prompt must be a positive integer, got {num_videos_per_prompt!r}")
    total = batch_size * num_videos_per_prompt
    pipe.check_image(image, batch_size, total)
    check_generator(generator, total)
    check_latents_shape("latents", latents, *pipe.video_latent_shape(total, num_frames, height, width))
    check_latents_shape("audio_latents", audio_latents, *pipe.audio_latent_shape(total, num_frames, frame_rate))
    bad_inputs = set(callback_tensor_inputs) - set(pipe._callback_tensor_inputs)
    if bad_inputs:
        raise ValueError(f"callback tensor inputs must be among {pipe._callback_tensor_inputs}, got {bad_inputs}")
    if guider is not None:
        guider.validate_for(pipe.transformer)
    return CallInputs(prompts, negative_prompts, prompt_embeds, negative_prompt_embeds, batch_size, total)
