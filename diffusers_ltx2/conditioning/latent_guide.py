"""`LatentGuide`: already generated latents guide the start of a clip (the next window of a long video).

ComfyUI `LTXVAddLatentGuide(latent_idx=0, strength)` as `LTXVExtendSampler` uses it: the video latents are
appended after the target tokens as keyframe tokens at pixel frame 0 (clean = the guide, denoise mask
`1 - strength`, positions = their own pixel boxes with the causal fix of frame 0: `video.keyframe_positions`),
and dropped before decoding. Audio (our addition; ComfyUI's looping sampler is video-only): the guide's audio
latents replace the clip's first audio tokens in place, with the same mask (audio has no causal first latent, so
frame-0 replacement is the natural counterpart, as official `VideoConditionByLatentIndex` does for video).

Latents are given as `output_type="latent"` returns them (denormalized VAE latents) and normalized with the
VAEs' per-channel statistics by the `LatentEncoder` (`normalize_video_latents` / `normalize_audio_latents`).
"""

from __future__ import annotations

import torch

from ..latents import layout as L
from .base import AUDIO, VIDEO, ClipGeometry, Condition, ConditioningState, LatentEncoder
from .video import keyframe_positions


class LatentGuide(Condition):
    """Guide the first frames (and audio) of the clip with latents from an earlier generation.

    Args:
        video: `(B or 1, C, F, h, w)` video latents (denormalized, as `output_type="latent"` gives them) placed at
            pixel frame 0; their latent size must be the clip's and `F` at most the clip's latent frames.
        audio: `(B or 1, C, T, M)` audio latents placed at the clip's first audio latent; `T` at most the clip's.
        strength: in [0, 1] (ComfyUI's extension: 0.5); 1 holds them exactly.

    Raises:
        ValueError: at construction for a bad strength or neither latent given; from `check` (before any model
        runs) for latents that do not fit the clip.
    """

    order = 2

    def __init__(self, video: torch.Tensor | None = None, audio: torch.Tensor | None = None, strength: float = 0.5):
        if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0.0 <= strength <= 1.0:
            raise ValueError(f"LatentGuide: strength must be a number in [0, 1], got {strength!r}")
        if video is None and audio is None:
            raise ValueError("LatentGuide: give video and/or audio latents")
        for name, value, ndim in (("video", video, 5), ("audio", audio, 4)):
            if value is not None and (not isinstance(value, torch.Tensor) or value.ndim != ndim):
                raise ValueError(f"LatentGuide: {name} must be a {ndim}-D latent tensor, got "
                                 f"{getattr(value, 'shape', type(value).__name__)}")
        self.video, self.audio, self.strength = video, audio, float(strength)
        self.modality = VIDEO if video is not None else AUDIO

    def check(self, geometry: ClipGeometry) -> None:
        g = geometry
        if self.video is not None:
            _, _, f, h, w = self.video.shape
            if (h, w) != (g.latent_height, g.latent_width) or f > g.latent_frames:
                raise ValueError(f"LatentGuide: video latents of {f}x{h}x{w} (frames x height x width) do not fit "
                                 f"the clip's {g.latent_frames}x{g.latent_height}x{g.latent_width}")
        if self.audio is not None and self.audio.shape[2] > g.audio_latent_length:
            raise ValueError(f"LatentGuide: {self.audio.shape[2]} audio latents, the clip has "
                             f"{g.audio_latent_length}")
        for name, value in (("video", self.video), ("audio", self.audio)):
            if value is not None and value.shape[0] not in (1, g.batch_size):
                raise ValueError(f"LatentGuide: {name} batch {value.shape[0]} for {g.batch_size} clips")

    def apply_to(self, state: ConditioningState, encoder: LatentEncoder, geometry: ClipGeometry) -> None:
        g = geometry
        mask = 1.0 - self.strength
        if self.video is not None:
            device = state.video.latent.device
            lat = encoder.normalize_video_latents(self.video).to(device).expand(g.batch_size, -1, -1, -1, -1)
            positions = keyframe_positions(g.batch_size, *lat.shape[2:], frame_index=0, frame_rate=g.frame_rate,
                                           temporal_ratio=g.temporal_ratio, spatial_ratio=g.spatial_ratio,
                                           device=device)
            state.append(VIDEO, L.pack_video(lat), positions, mask)
        if self.audio is not None:
            if AUDIO in state.sources:
                raise ValueError("LatentGuide audio cannot guide an audio source given by another condition")
            audio = state.audio
            tokens = encoder.normalize_audio_latents(self.audio).to(audio.latent.device)
            n = tokens.shape[1]
            tokens = tokens.expand(g.batch_size, -1, -1)
            audio.clean[:, :n] = tokens
            audio.latent[:, :n] = tokens
            audio.denoise_mask[:, :n] = mask
