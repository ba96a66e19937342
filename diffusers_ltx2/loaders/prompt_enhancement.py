"""Prompt enhancement: a Gemma rewrites the user's prompt in the style of the captions the model was trained on.

LTX-2.0 / 2.3 use their Gemma-3 text encoder for this; LTX-2.5's text encoder (an encode-only Gemma-4 fine-tune)
cannot, so 2.5 ships a separate instruct Gemma-4 (diffusers' `prompt_enhancer` component). Source followed:
ltx-core 1.2.0 `text_encoders/gemma/encoders/base_encoder.py` (`LTXGemmaTextEncoder._enhance`, `enhance_t2v`,
`enhance_i2v`) and ltx-pipelines 1.2.0 `utils/helpers.py` (`generate_enhanced_prompt`, `clean_response`):

* messages: system prompt, then `"user prompt: {prompt}"` (text-to-video) or an image followed by
  `"User Raw Input Prompt: {prompt}."` (image-to-video);
* the chat template with the generation prompt, tokenized, left-padded to a multiple of 8 (pad id or 0,
  attention 0);
* sampling: Gemma-3 `do_sample=True, temperature=0.7`, 512 new tokens; Gemma-4 greedy with
  `no_repeat_ngram_size=5`, 600 new tokens; seeded with `torch.manual_seed(seed)` inside a forked RNG (the
  caller's RNG state is left as it was);
* the new tokens decoded without special tokens, then `clean_response` (curly quotes and dashes to ASCII,
  leading non-letters dropped);
* the reference image (image-to-video) resized so its long side is 896 (bilinear on uint8, the official
  `resize_aspect_ratio_preserving`).

The default system prompts are the official ones: Gemma-4's are diffusers' constants (identical to ltx-core
1.2.0's files); Gemma-3's ship in `prompts/` (ltx-core's `gemma3_*_system_prompt.txt`, Apache-2.0, Lightricks:
diffusers 0.42.1's copies are re-wrapped at 120 columns, so the model would read other text).
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "ENHANCER_SETTINGS",
    "EnhancerSettings",
    "clean_response",
    "default_system_prompt",
    "enhance_prompt",
    "enhancement_image",
    "enhancement_messages",
    "enhancer_model_type",
]

_PROMPTS = Path(__file__).parent / "prompts"
_UNICODE_REPLACEMENTS = str.maketrans("\u2018\u2019\u201c\u201d\u2014\u2013\u00a0\u2032\u2212", "''\"\"-- '-")
IMAGE_LONG_SIDE = 896
ALIGNMENT = 8


class EnhancerSettings:
    """The official decoding recipe of one Gemma family: `max_new_tokens` and `generate` keyword arguments."""

    def __init__(self, max_new_tokens: int, generation_kwargs: dict[str, Any]):
        self.max_new_tokens = max_new_tokens
        self.generation_kwargs = dict(generation_kwargs)

    def __repr__(self):
        return f"EnhancerSettings(max_new_tokens={self.max_new_tokens}, {self.generation_kwargs})"


#: ltx-core 1.2 `GEMMA3_ENHANCE_GENERATION_KWARGS` / `GEMMA4_ENHANCE_GENERATION_KWARGS`.
ENHANCER_SETTINGS = {
    "gemma3": EnhancerSettings(512, {"do_sample": True, "temperature": 0.7}),
    "gemma4": EnhancerSettings(600, {"do_sample": False, "no_repeat_ngram_size": 5}),
}


def enhancer_model_type(model) -> str:
    """`"gemma3"` or `"gemma4"`: the family of a model able to enhance prompts.

    Raises:
        ValueError: any other model, e.g. LTX-2.5's encode-only text encoder (`gemma4_unified`), which ltx-core
            refuses too (the 2.5 enhancer is a separate instruct Gemma-4: the `prompt_enhancer` component).
    """
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type in ENHANCER_SETTINGS and callable(getattr(model, "generate", None)):
        return model_type
    if model_type == "gemma4_unified":
        raise ValueError("the LTX-2.5 text encoder (gemma4_unified) only encodes; prompt enhancement needs the "
                         "pipeline's prompt_enhancer component (an instruct Gemma-4)")
    raise ValueError(f"prompt enhancement needs a Gemma-3 or Gemma-4 generation model, got "
                     f"{type(model).__name__} (model_type={model_type!r})")


@functools.lru_cache(maxsize=None)
def _read(name: str) -> str:
    return (_PROMPTS / name).read_text(encoding="utf-8")


def default_system_prompt(model_type: str, *, image: bool) -> str:
    """The official system prompt of `model_type` ("gemma3" / "gemma4") for image-to-video (`image=True`) or
    text-to-video."""
    if model_type == "gemma4":
        from diffusers.pipelines.ltx2.utils import LTX2_5_I2V_DEFAULT_SYSTEM_PROMPT, LTX2_5_T2V_DEFAULT_SYSTEM_PROMPT

        return LTX2_5_I2V_DEFAULT_SYSTEM_PROMPT if image else LTX2_5_T2V_DEFAULT_SYSTEM_PROMPT
    if model_type == "gemma3":
        return _read("gemma3_i2v_system_prompt.txt" if image else "gemma3_t2v_system_prompt.txt")
    raise ValueError(f"no system prompt for model_type {model_type!r}")


def enhancement_messages(prompt: str, system_prompt: str, *, image: bool) -> list[dict]:
    """The chat messages of one enhancement (official `enhance_t2v` / `enhance_i2v`)."""
    if not image:
        return [{"role": "system", "content": system_prompt}, {"role": "user", "content": f"user prompt: {prompt}"}]
    return [
        {"role": "system", "content": system_prompt},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": f"User Raw Input Prompt: {prompt}."}]},
    ]


def clean_response(text: str) -> str:
    """Curly quotes, dashes, non-breaking spaces and primes to ASCII; leading non-letter characters dropped."""
    text = text.translate(_UNICODE_REPLACEMENTS)
    for i, char in enumerate(text):
        if char.isalpha():
            return text[i:]
    return text


def enhancement_image(image, long_side: int = IMAGE_LONG_SIDE) -> torch.Tensor:
    """The reference image as the official enhancer sees it: uint8 `(H, W, 3)` with its long side `long_side`.

    `image`: a path, PIL image, or `(H, W, 3)` / `(3, H, W)` array or tensor (uint8, or floats in [0, 1]).
    Official `resize_aspect_ratio_preserving`: target `int(H * s), int(W * s)` with `s = long_side / max(H, W)`,
    covered with `ceil` sizes by bilinear interpolation of the uint8 image (`align_corners=False`), centre-cropped.
    """
    from ..media.image import load_image

    if isinstance(image, (str, Path)):
        image = load_image(image)
    if not isinstance(image, torch.Tensor):
        import numpy as np
        import PIL.Image

        if isinstance(image, PIL.Image.Image):
            image = np.asarray(image.convert("RGB"))
        image = torch.as_tensor(np.asarray(image))
    if image.ndim == 3 and image.shape[0] == 3 and image.shape[-1] != 3:
        image = image.permute(1, 2, 0)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"the reference image must be (H, W, 3) or (3, H, W), got shape {tuple(image.shape)}")
    if image.dtype != torch.uint8:  # floats in [0, 1], as the pipelines take them
        image = (image.float().clamp(0, 1) * 255).round().to(torch.uint8)
    h, w = image.shape[:2]
    scale = long_side / float(max(h, w))
    th, tw = int(h * scale), int(w * scale)
    cover = max(th / h, tw / w)
    nh, nw = math.ceil(h * cover), math.ceil(w * cover)
    x = torch.nn.functional.interpolate(image.permute(2, 0, 1)[None], size=(nh, nw), mode="bilinear",
                                        align_corners=False)
    top, left = (nh - th) // 2, (nw - tw) // 2
    return x[0, :, top:top + th, left:left + tw].permute(1, 2, 0).contiguous()


def _left_pad_to_alignment(inputs, pad_token_id: int):
    length = inputs["input_ids"].shape[1]
    missing = -length % ALIGNMENT
    if missing == 0:
        return inputs
    for name, value in (("input_ids", pad_token_id), ("attention_mask", 0), ("token_type_ids", 0)):
        tensor = inputs.get(name)
        if tensor is not None:
            pad = torch.full((tensor.shape[0], missing), value, dtype=tensor.dtype, device=tensor.device)
            inputs[name] = torch.cat([pad, tensor], dim=1)
    return inputs


def enhance_prompt(model, prompt: str, *, processor=None, tokenizer=None, image=None, system_prompt: str | None = None,
                   max_new_tokens: int | None = None, generation_kwargs: dict[str, Any] | None = None,
                   seed: int = 10, device: torch.device | str | None = None) -> str:
    """Rewrite `prompt` with `model` (a Gemma-3 or Gemma-4 generation model), as ltx-core 1.2 does.

    Args:
        model: `Gemma3ForConditionalGeneration` (LTX-2.0 / 2.3 text encoder) or `Gemma4ForConditionalGeneration`
            (the LTX-2.5 `prompt_enhancer`).
        prompt: the user's prompt.
        processor: the model's transformers processor (needed with an `image`); without one `tokenizer` turns the
            chat text into ids (what the Gemma processors do for text alone).
        image: a reference image (image-to-video enhancement; see `enhancement_image`).
        system_prompt: default: the official one for the model family and mode (`default_system_prompt`).
        max_new_tokens, generation_kwargs: default: the family's official settings (`ENHANCER_SETTINGS`);
            `generation_kwargs` replaces the official keyword arguments as a whole (diffusers' rule).
        seed: seeds the generation (a forked RNG: the caller's RNG state does not change).
        device: where to run (default: the model's device).

    Returns:
        The enhanced prompt (cleaned).

    Raises:
        ValueError: a model that cannot enhance, an image without a processor, no chat template, an empty prompt.
    """
    model_type = enhancer_model_type(model)
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("prompt enhancement needs a non-empty prompt")
    text_tool = processor.tokenizer if processor is not None else tokenizer
    if text_tool is None:
        raise ValueError("prompt enhancement needs the enhancer's processor or tokenizer")
    if image is not None and processor is None:
        raise ValueError("image-to-video prompt enhancement needs the enhancer's processor (image features); "
                         "load the pipeline's processor component")
    if getattr(text_tool, "chat_template", None) is None:
        raise ValueError(f"the {model_type} tokenizer has no chat template; prompt enhancement formats a chat")
    settings = ENHANCER_SETTINGS[model_type]
    system_prompt = system_prompt if system_prompt is not None else default_system_prompt(model_type,
                                                                                         image=image is not None)
    kwargs = dict(settings.generation_kwargs if generation_kwargs is None else generation_kwargs)
    kwargs["max_new_tokens"] = settings.max_new_tokens if max_new_tokens is None else max_new_tokens
    text = text_tool.apply_chat_template(enhancement_messages(prompt, system_prompt, image=image is not None),
                                         tokenize=False, add_generation_prompt=True)
    if processor is not None:
        pixels = enhancement_image(image) if image is not None else None
        inputs = processor(text=text, images=pixels, return_tensors="pt")
    else:
        inputs = text_tool(text, return_tensors="pt")
    device = torch.device(device) if device is not None else model.device
    inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in dict(inputs).items()}
    pad_id = text_tool.pad_token_id if text_tool.pad_token_id is not None else 0
    inputs = _left_pad_to_alignment(inputs, pad_id)
    devices = [device] if device.type == "cuda" else []
    with torch.inference_mode(), torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        out = model.generate(**inputs, **kwargs)
    new_tokens = out[0][inputs["input_ids"].shape[1]:]
    return clean_response(text_tool.decode(new_tokens, skip_special_tokens=True))
