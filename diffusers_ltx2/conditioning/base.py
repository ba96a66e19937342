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

from ..pipelines.denoising import ModalityLatents, is_frozen

VIDEO = "video"
AUDIO = "audio"
MODALITIES = (VIDEO, AUDIO)


@dataclass(frozen=True)
class ClipGeometry:
    """Size and timing of the clip being generated.

    Attributes:
        batch_size: clips generated in this call.
        num_frames: pixel frames (`8k + 1`).
        height, width: pixels (multiples of the VAE's spatial ratio).
        frame_rate: frames per second.
        temporal_ratio, spatial_ratio: video VAE compression (8, 32).
        audio_latents_per_second: audio latent rate (25 for LTX-2).
        audio_latent_length: audio latent frames of the clip (`round(num_frames / fps * 25)`).
        image_crf: H.264 CRF of image conditions that set none: the model's (18 for LTX-2.4+, 33 before;
            `versions.default_image_crf`).
    """

    batch_size: int
    num_frames: int
    height: int
    width: int
    frame_rate: float
    temporal_ratio: int = 8
    spatial_ratio: int = 32
    audio_latents_per_second: float = 25.0
    audio_latent_length: int = 0
    image_crf: int = 33

    @property
    def latent_frames(self) -> int:
        return (self.num_frames - 1) // self.temporal_ratio + 1

    @property
    def latent_height(self) -> int:
        return self.height // self.spatial_ratio

    @property
    def latent_width(self) -> int:
        return self.width // self.spatial_ratio

    @property
    def tokens_per_latent_frame(self) -> int:
        return self.latent_height * self.latent_width

    @property
    def duration_s(self) -> float:
        """Clip duration in seconds (`num_frames / frame_rate`, the official audio duration)."""
        return self.num_frames / self.frame_rate

    def check_clip_frames(self, num_frames: int, what: str) -> None:
        """A conditioning clip must have 1 or `8k + 1` frames (the causal VAE's unit)."""
        if num_frames < 1 or (num_frames - 1) % self.temporal_ratio:
            lower = max(1, (num_frames - 1) // self.temporal_ratio * self.temporal_ratio + 1)
            raise ValueError(
                f"{what} has {num_frames} frames; a conditioning clip needs 1 or {self.temporal_ratio}k+1 frames "
                f"(e.g. {lower} or {lower + self.temporal_ratio})"
            )


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
