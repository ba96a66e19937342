"""Prompt enhancement in the pipelines: diffusers' `enable_prompt_enhancement` / `enhance_prompt` surface on top of
`loaders.prompt_enhancement` (the official rewriting).

The enhancer is the `prompt_enhancer` component when there is one (LTX-2.5: an instruct Gemma-4), else the Gemma-3
`text_encoder` (LTX-2.0 / 2.3 double as their own enhancer); it reads text through the `processor` component when
there is one, else through the `tokenizer` (text-to-video only: image-to-video enhancement needs the processor's
image features). As in diffusers, the seed is `prompt_enhancement_seed` (default 10), or the call generator's seed
when a generator is given (the official pipelines enhance with their `seed`).

Differences from diffusers 0.42.1, on purpose: the default system prompt follows the enhancer and the mode as in
ltx-core 1.2 (Gemma-3 / Gemma-4, text- / image-to-video; diffusers requires one for 2.0 / 2.3 and uses the 2.5
text-to-video one otherwise); every prompt of a batch is enhanced (diffusers formats the list as one string);
the reference image of image-to-video enhancement is the call's first image (official: its first image
condition); the caller's global RNG is not reseeded.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import torch

from ..loaders.prompt_enhancement import enhance_prompt, enhancer_model_type

logger = logging.getLogger(__name__)


def skip_unloadable_processor(folder, kwargs: dict) -> None:
    """Load a local folder's Gemma `processor` here, or leave it out with a warning when it cannot load:
    transformers' Gemma-4 image / video processors need torchvision. Prompt enhancement then reads text through
    the tokenizer (text-to-video); image-to-video enhancement is refused with an error naming the processor."""
    path = os.path.join(str(folder), "processor")
    if "processor" in kwargs or not os.path.isdir(path):
        return
    from transformers import AutoProcessor

    try:
        kwargs["processor"] = AutoProcessor.from_pretrained(path)
    except ImportError as err:
        logger.warning("not loading the processor of %s (%s); image-to-video prompt enhancement is unavailable",
                       folder, str(err).strip().splitlines()[0])
        kwargs["processor"] = None


class PromptEnhancementMixin:
    """`enhance_prompt` (diffusers' method) and the two steps of `enable_prompt_enhancement=True` in a call:
    `prompt_enhancement` (checks, when the call is resolved) and `enhance_call_prompts` (before encoding)."""

    def _enhancer(self):
        """`(model, processor, tokenizer)` of prompt enhancement; raises ValueError (before any model runs) when the
        pipeline cannot enhance."""
        model = self.prompt_enhancer if getattr(self, "prompt_enhancer", None) is not None else self.text_encoder
        if model is None:
            raise ValueError("prompt enhancement needs a prompt_enhancer component or a Gemma-3 text_encoder; this "
                             "pipeline has neither")
        enhancer_model_type(model)
        processor = getattr(self, "processor", None)
        tokenizer = self.tokenizer
        if processor is None and tokenizer is None:
            raise ValueError("prompt enhancement needs the processor or tokenizer component")
        text_tool = processor.tokenizer if processor is not None else tokenizer
        if getattr(text_tool, "chat_template", None) is None:
            raise ValueError("prompt enhancement formats a chat, but the enhancer's tokenizer has no chat template")
        return model, processor, tokenizer

    @torch.no_grad()
    def enhance_prompt(self, prompt: str | list[str], system_prompt: str | None = None,
                       max_new_tokens: int | None = None, seed: int = 10, generator=None,
                       generation_kwargs: dict[str, Any] | None = None, device=None, image=None) -> list[str]:
        """Rewrite prompt(s) the official way (diffusers' `LTX2Pipeline.enhance_prompt` arguments).

        Args:
            prompt: one prompt or a list; each is enhanced on its own with the same seed.
            system_prompt: default: the official one for the enhancer (Gemma-3 / Gemma-4) and the mode.
            max_new_tokens, generation_kwargs: default: the official settings of the enhancer's family
                (Gemma-3: sampling at temperature 0.7, 512 tokens; Gemma-4: greedy, no repeated 5-grams, 600).
            seed: generation seed; `generator` (its initial seed) wins when given, as in diffusers.
            image: reference image for image-to-video enhancement (needs the `processor` component).

        Returns:
            The enhanced prompts, a list of strings.
        """
        model, processor, tokenizer = self._enhancer()
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        seed = _seed(seed, generator)
        device = device or self._execution_device
        return [enhance_prompt(model, p, processor=processor, tokenizer=tokenizer, image=image,
                               system_prompt=system_prompt, max_new_tokens=max_new_tokens,
                               generation_kwargs=generation_kwargs, seed=seed, device=device) for p in prompts]

    def prompt_enhancement(self, enable: bool, prompts, *, image=None, conditions=None, system_prompt=None,
                           max_new_tokens=None, generation_kwargs=None, seed: int = 10,
                           generator=None) -> "PromptEnhancement | None":
        """What `enable_prompt_enhancement=True` asks of a call, checked without running a model (`None` when
        `enable` is off). `image`: the call's `image=` as given (the enhancer sees it before any re-compression, as
        officially); `conditions`: the call's conditions (a single-frame `VideoCondition` is the reference image
        when there is no `image`); the other arguments as in `enhance_prompt`.

        Raises:
            ValueError: `prompt_embeds` instead of prompts, no enhancer, no chat template, an image-to-video
                enhancement without the `processor` component, a seed that is not an integer.
        """
        if not enable:
            return None
        if prompts is None:
            raise ValueError("enable_prompt_enhancement=True rewrites prompt, but the call passes prompt_embeds")
        self._enhancer()
        reference = _reference_image(image, conditions)
        if reference is not None and getattr(self, "processor", None) is None:
            raise ValueError("image-to-video prompt enhancement reads the image through the processor component; "
                             "this pipeline has none (pass no image, or load the processor)")
        return PromptEnhancement(system_prompt=system_prompt, max_new_tokens=max_new_tokens,
                                 generation_kwargs=generation_kwargs, seed=_seed(seed, generator), image=reference)

    def enhance_call_prompts(self, request: "PromptEnhancement | None", prompts: list[str] | None) -> list[str] | None:
        """`prompts` enhanced as `request` says (the enhanced list), or `None` without a request."""
        if request is None:
            return None
        return self.enhance_prompt(prompts, system_prompt=request.system_prompt, max_new_tokens=request.max_new_tokens,
                                   seed=request.seed, generation_kwargs=request.generation_kwargs, image=request.image)


@dataclass(frozen=True, eq=False)
class PromptEnhancement:
    """A call's prompt enhancement (made by `PromptEnhancementMixin.prompt_enhancement` when the call's arguments are
    resolved, run by the pipeline's `generate` before the prompts are encoded): the enhancer's system prompt,
    new-token limit and `generate` keyword arguments (`None`: the official ones of its family), the seed
    (`prompt_enhancement_seed`, or the call generator's), the reference image of image-to-video enhancement
    (`None`: text-to-video)."""

    system_prompt: str | None = None
    max_new_tokens: int | None = None
    generation_kwargs: dict[str, Any] | None = None
    seed: int = 10
    image: Any = None


def _seed(seed: int, generator) -> int:
    if isinstance(generator, (list, tuple)):
        generator = generator[0] if generator else None
    if generator is not None:
        return int(generator.initial_seed())
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"prompt_enhancement_seed must be an integer, got {seed!r}")
    return seed


def _reference_image(image, conditions):
    """The image an image-to-video enhancement looks at: the call's (first) `image`, else the first single-frame
    `VideoCondition`; `None` for text-to-video."""
    if image is not None:
        return image[0] if isinstance(image, (list, tuple)) else image
    for condition in conditions or ():
        frames = getattr(condition, "frames", None)
        if frames is not None and getattr(condition, "num_frames", None) == 1:
            return frames[0] if isinstance(frames, (list, tuple)) or getattr(frames, "ndim", 3) == 4 else frames
    return None
