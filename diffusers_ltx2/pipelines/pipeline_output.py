"""Output of the LTX-2 pipelines."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from diffusers.utils import BaseOutput


@dataclass
class LTX2AudioVideoPipelineOutput(BaseOutput):
    """Generated clip.

    Attributes:
        frames: `np.ndarray` `(B, F, H, W, 3)` in [0, 1] (`"np"`), `torch.Tensor` `(B, F, 3, H, W)` (`"pt"`),
            a list of lists of PIL images (`"pil"`), or denormalized video latents `(B, C, F, H, W)` (`"latent"`).
        audio: float32 stereo waveforms `(B, 2, samples)` at `sample_rate` (`np.ndarray` for "np"/"pil",
            `torch.Tensor` for "pt"), or denormalized audio latents `(B, C, T, M)` for `"latent"`.
        sample_rate: audio sample rate in Hz (the vocoder's output rate); `None` for latents.
        enhanced_prompts: with `enable_prompt_enhancement=True`, the prompts the enhancer wrote (one per prompt,
            the ones the clip was generated from); `None` otherwise.
    """

    frames: Any
    audio: Any
    sample_rate: int | None = None
    enhanced_prompts: list[str] | None = None
