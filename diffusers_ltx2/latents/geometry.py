"""`ClipGeometry`: the size and timing of a clip and of its latent grid (one stage of a call)."""

from __future__ import annotations

from dataclasses import dataclass


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
        conditioning_rule: the model's conditioning rule (`versions.CONDITIONING_RULES`: ltx-core 1.2's noising of
            partly conditioned tokens and single-image keyframe positions for LTX-2.4+, 1.0's before;
            `versions.conditioning_rule`).
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
    conditioning_rule: str = "ltx_core_1_0"

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

