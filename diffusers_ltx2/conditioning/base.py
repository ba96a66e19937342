"""The conditioning core: the `Condition` protocol, the small `LatentEncoder` interface conditions encode their
media with, and the state conditions edit.

A condition edits the *unnoised* token state of a clip (official ltx-core `ConditioningItem.apply_to` on a
`LatentState`): clean values, the per-token denoise mask (1 = generated, 0 = held at the clean value), positions
and the video self-attention bias; a condition may append tokens after the target tokens (keyframes, IC-LoRA
references), which are dropped before decoding. The one initial-state builder (`conditioning.apply.initial_state`)
noises the edited state afterwards (`latents.noiser`: one draw over all tokens, video first then audio).

Every condition has two steps:
- `check(geometry)`: validates its own inputs against the clip (frame counts, indices, windows) and raises
  `ValueError` before any model loads or runs;
- `apply_to(state, encoder, geometry)`: encodes its media through `encoder` and edits `state`. A condition never
  sees the pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch

from ..latents.attention import appended_bias
from ..latents.geometry import ClipGeometry
from ..latents.state import ModalityLatents

VIDEO = "video"
AUDIO = "audio"
MODALITIES = (VIDEO, AUDIO)

__all__ = ["AUDIO", "MODALITIES", "VIDEO", "ClipGeometry", "Condition", "ConditioningState", "LatentEncoder"]


class LatentEncoder(Protocol):
    """What conditions (and the initial-state builder) may use of the models; the pipelines implement it over
    their VAEs and transformer (`pipelines.encoder.ModelLatentEncoder`).

    Attributes:
        device: where the states live.
        output_sample_rate: sample rate of the generated waveform (the vocoder's), Hz.
        video_channels, audio_channels: token widths of the transformer's video / audio streams.
    """

    device: torch.device
    output_sample_rate: int
    video_channels: int
    audio_channels: int

    def encode_video(self, pixels: torch.Tensor, batch_size: int) -> torch.Tensor:
        """`(1 or B, 3, F, H, W)` pixels in [-1, 1] -> normalized latents `(batch_size, C, f, h, w)` float32."""

    def encode_audio(self, waveform: torch.Tensor, sample_rate: int, length: int) -> torch.Tensor:
        """`(C, N)` waveform at `sample_rate` -> normalized packed audio tokens `(1, length, C_a)` float32."""

    def normalize_video_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Denormalized video VAE latents `(B, C, F, h, w)` (what `output_type="latent"` returns) -> normalized
        latents, float32."""

    def normalize_audio_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Denormalized audio VAE latents `(B, C, T, M)` -> normalized packed audio tokens `(B, T, C*M)`, float32."""

    def video_positions(self, batch_size: int, frames: int, height: int, width: int, frame_rate: float,
                        spatial_scale: int = 1) -> torch.Tensor:
        """`(B, 3, frames * height * width, 2)` RoPE positions of a latent grid (h / w times `spatial_scale`)."""

    def audio_positions(self, batch_size: int, length: int) -> torch.Tensor:
        """`(B, 1, length, 2)` RoPE positions of `length` audio latent frames (seconds)."""


@dataclass
class ConditioningState:
    """The unnoised token states conditions edit: `clean` what tokens are held at, `latent` where they start before
    the builder noises them (ltx-core 1.2 `LatentState.latent`: the stage's start latent for target tokens, also
    under a first-frame image; 0 for appended keyframe / reference tokens; a source's values). The ltx-core 1.0
    noiser reads only `clean` (`latents.noiser`).

    Attributes:
        video, audio: `ModalityLatents` whose `clean` / `denoise_mask` / `coords` conditions edit.
        sources: modalities whose clean values hold a given source (a frozen clip or audio), not zeros.
        video_pixels: `(B, 3, F, H, W)` pixels in [-1, 1] of a frozen source video (returned instead of a VAE
            round trip while the whole video stays frozen).
        waveform: `(B, C, N)` float32 source waveform at the vocoder rate (returned instead of a VAE +
            vocoder round trip while the whole audio stays frozen).
        frame0: what replaced the first latent frame(s) (two conditions may not both do it).
    """

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

    def replace_first_frames(self, tokens: torch.Tensor, strength: float, who: str) -> None:
        """Overwrite the leading video tokens (the first latent frame(s)) with `tokens` `(B, n, C)`, denoise mask
        `1 - strength` (official `VideoConditionByLatentIndex` at index 0). `who` names the condition in the error
        raised when another one already replaced them."""
        if self.frame0 is not None:
            raise ValueError(f"two conditions replace the first frame ({self.frame0} and {who})")
        self.frame0 = who
        n = tokens.shape[1]
        self.video.clean[:, :n] = tokens  # `latent` keeps the stage's start (ltx-core 1.2 latent_cond)
        self.video.denoise_mask[:, :n] = 1.0 - strength

    def append(self, name: str, tokens: torch.Tensor, coords: torch.Tensor, mask_value: float,
               attention_weights: torch.Tensor | None = None, marked: bool = False,
               start: torch.Tensor | None = None) -> None:
        """Append conditioning tokens `(B, M, C)` at `coords` `(B, D, M, 2)` after the existing ones, denoise mask
        `mask_value` (official keyframe / reference semantics). Video only: `attention_weights` `(B, M)` in [0, 1]
        sets how strongly generated and new tokens attend to each other (official attention-strength wrapper);
        once the state has a self-attention bias, tokens appended without weights get 1 (ltx-core
        `update_attention_mask`). `marked`: the new video tokens get LTX-2.5's keyframe embedding
        (`ModalityLatents.keyframe_marker`; ltx-core 1.2 `extend_keyframes_mask(marked=True)`). `start`: the new
        tokens' values before noising (`latent`); zeros by default, as ltx-core 1.2's keyframe / reference
        conditions append `torch.zeros_like(tokens)`, the tokens themselves going to `clean` only."""
        state = self.modality(name)
        if marked:
            if name != VIDEO:
                raise ValueError("the keyframe marker applies to appended video tokens only")
            n, b = state.latent.shape[1], tokens.shape[0]
            before = torch.zeros(b, n, device=tokens.device) if state.keyframe_marker is None else torch.cat(
                [state.keyframe_marker, torch.zeros(b, n - state.keyframe_marker.shape[1], device=tokens.device)], 1)
            state.keyframe_marker = torch.cat([before, torch.ones(tokens.shape[:2], device=tokens.device)], dim=1)
        if name == VIDEO and (attention_weights is not None or state.self_attention_bias is not None):
            weights = torch.ones(tokens.shape[:2]) if attention_weights is None else attention_weights
            state.self_attention_bias = appended_bias(state.self_attention_bias, state.num_target_tokens,
                                                      state.latent.shape[1], weights.to(tokens.device))
        elif attention_weights is not None:
            raise ValueError("attention weights apply to appended video tokens only")
        mask = torch.full(tokens.shape[:2], mask_value, dtype=torch.float32, device=tokens.device)
        state.clean = torch.cat([state.clean, tokens], dim=1)
        state.latent = torch.cat([state.latent, torch.zeros_like(tokens) if start is None else start], dim=1)
        state.denoise_mask = torch.cat([state.denoise_mask, mask], dim=1)
        state.coords = torch.cat([state.coords, coords.to(state.coords)], dim=2)


class Condition:
    """Base class of the condition types (one module each in `diffusers_ltx2.conditioning`).

    Subclasses set `order` (sources 0 < regions 1 < frame conditions 2 < references 3: a keyframe inside a
    retake window still conditions it; references are appended after keyframes, as ltx-pipelines orders them),
    `modality` (what they condition; `None`: both / none) and implement `check` and `apply_to`.
    """

    order: int = 2
    #: the modality this condition puts media into ("video" / "audio"), or None
    modality: str | None = None
    #: modalities this condition provides a source for (at most one source per modality in a call)
    provides: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """How error messages name this condition."""
        return type(self).__name__

    def replaces_first_frame(self, geometry: ClipGeometry) -> bool:
        """Whether it overwrites the first latent frame (at most one condition of a call may)."""
        return False

    def check(self, geometry: ClipGeometry) -> None:
        """Validate against the clip; raise `ValueError` (no model runs here)."""

    def apply_to(self, state: ConditioningState, encoder: LatentEncoder, geometry: ClipGeometry) -> None:
        """Encode media with `encoder` and edit `state` (a clip of `geometry`)."""
        raise NotImplementedError

