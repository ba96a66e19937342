"""The conditioning core: clip geometry, the `Condition` interface and the state conditions edit.

A condition edits the *unnoised* token state of a clip (official ltx-core `ConditioningItem.apply_to` on a
`LatentState`): clean values, the per-token denoise mask (1 = generated, 0 = held at the clean value) and
positions; a condition may append tokens after the target tokens (keyframes), which are dropped before
decoding. The pipeline noises the edited state afterwards (official `GaussianNoiser`:
`latent = noise * mask + clean * (1 - mask)`, one draw over all tokens, video first then audio).

Every condition has two steps:
- `check(geometry)`: validates its own inputs against the clip (frame counts, indices, windows) and raises
  `ValueError` before any model loads or runs;
- `apply(state, encoder)`: encodes its media (video / audio VAE) and edits the state.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..latents.geometry import ClipGeometry
from ..latents.state import ModalityLatents, is_frozen

VIDEO = "video"
AUDIO = "audio"
MODALITIES = (VIDEO, AUDIO)


@dataclass
class ConditioningState:
    """The unnoised token states conditions edit (`latent` equals `clean` until the pipeline noises them).

    Attributes:
        geometry: the clip.
        video, audio: `ModalityLatents` whose `clean` / `denoise_mask` / `coords` conditions edit.
        sources: modalities whose clean values hold a given source (a frozen clip or audio), not zeros.
        video_pixels: `(B, 3, F, H, W)` pixels in [-1, 1] of a frozen source video (returned instead of a VAE
            round trip while the whole video stays frozen).
        waveform: `(B, C, N)` float32 source waveform at the vocoder rate (returned instead of a VAE +
            vocoder round trip while the whole audio stays frozen).
        frame0: latent frames already replaced at the start of the clip (two conditions may not both do it).
    """

    geometry: ClipGeometry
    video: ModalityLatents
    audio: ModalityLatents
    sources: set = field(default_factory=set)
    video_pixels: torch.Tensor | None = None
    waveform: torch.Tensor | None = None
    frame0: str | None = None

    def modality(self, name: str) -> ModalityLatents:
        return self.video if name == VIDEO else self.audio

    def replace_clean(self, name: str, clean: torch.Tensor, mask_value: float) -> None:
        """Set a whole modality's target tokens to `clean` with a uniform denoise mask (a source)."""
        state = self.modality(name)
        n = state.num_target_tokens
        state.clean[:, :n] = clean
        state.latent[:, :n] = clean
        state.denoise_mask[:, :n] = mask_value
        self.sources.add(name)

    def append(self, name: str, tokens: torch.Tensor, coords: torch.Tensor, mask_value: float) -> None:
        """Append conditioning tokens after the existing ones (official keyframe semantics)."""
        state = self.modality(name)
        mask = torch.full(tokens.shape[:2], mask_value, dtype=torch.float32, device=tokens.device)
        state.clean = torch.cat([state.clean, tokens], dim=1)
        state.latent = torch.cat([state.latent, tokens], dim=1)
        state.denoise_mask = torch.cat([state.denoise_mask, mask], dim=1)
        state.coords = torch.cat([state.coords, coords.to(state.coords)], dim=2)


class Condition:
    """Base class of the condition types (one module each in `diffusers_ltx2.conditioning`).

    Subclasses set `order` (sources 0 < regions 1 < frame conditions 2: a keyframe inside a retake window
    still conditions it) and implement `check` and `apply`.
    """

    order: int = 2
    #: modalities this condition provides a source for (at most one source per modality in a call).
    provides: tuple[str, ...] = ()

    def check(self, geometry: ClipGeometry) -> None:
        """Validate against the clip; raise `ValueError` (no model runs here)."""

    def apply(self, state: ConditioningState, encoder) -> None:
        """Encode media with `encoder` (the pipeline) and edit `state`."""
        raise NotImplementedError


#: a modality whose every token is held at its clean value (denoise mask 0 everywhere): the denoising core's rule
frozen = is_frozen
