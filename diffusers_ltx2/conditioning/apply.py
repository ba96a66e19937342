"""Composing conditions: checks before any model runs, then the conditioned, noised initial states."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..pipelines import latents as L
from ..pipelines.denoising import ModalityLatents
from .base import AUDIO, MODALITIES, VIDEO, ClipGeometry, Condition, ConditioningState, frozen
from .temporal_region import TemporalRegion
from .video import DEFAULT_IMAGE_CRF, EncodedFirstFrame, VideoCondition


def geometry_for(pipe, batch_size: int, num_frames: int, height: int, width: int, frame_rate: float) -> ClipGeometry:
    """The `ClipGeometry` of a pipeline call."""
    per_second = L.audio_latents_per_second(pipe.audio_vae)
    return ClipGeometry(
        batch_size=batch_size, num_frames=num_frames, height=height, width=width, frame_rate=float(frame_rate),
        temporal_ratio=pipe.vae_temporal_ratio, spatial_ratio=pipe.vae_spatial_ratio,
        audio_latents_per_second=per_second,
        audio_latent_length=L.audio_latent_length(num_frames, frame_rate, per_second),
        image_crf=getattr(pipe, "default_image_crf", DEFAULT_IMAGE_CRF),
    )


def check_output_modalities(output_modalities) -> tuple[str, ...]:
    """`("video", "audio")` (default) or `("audio",)` (audio-only); anything else is refused."""
    if isinstance(output_modalities, str):
        output_modalities = (output_modalities,)
    try:
        mods = tuple(output_modalities)
    except TypeError:
        raise ValueError(f"output_modalities must be a tuple of 'video' / 'audio', got {output_modalities!r}") from None
    if not mods or any(m not in MODALITIES for m in mods) or len(set(mods)) != len(mods):
        raise ValueError(f"output_modalities must be a non-empty tuple of 'video' / 'audio', got {output_modalities!r}")
    if set(mods) == {VIDEO}:
        raise ValueError("video-only output is not supported: generate video + audio and ignore the audio, or "
                         "freeze the audio with AudioCondition")
    return tuple(m for m in MODALITIES if m in mods)


def check_conditions(
    conditions, geometry: ClipGeometry, *, image=None, output_modalities=MODALITIES,
) -> list[Condition]:
    """Validate a `conditions=` list against the clip and against each other; raise `ValueError` before any model
    runs. Returns the conditions in application order (sources, then regions, then frame conditions)."""
    if conditions is None:
        conditions = []
    if isinstance(conditions, Condition):
        conditions = [conditions]
    if not isinstance(conditions, (list, tuple)):
        raise ValueError(f"conditions must be a list of conditions, got {type(conditions).__name__}")
    bad = [type(c).__name__ for c in conditions if not isinstance(c, Condition)]
    if bad:
        raise ValueError(f"conditions must be condition objects (VideoCondition, AudioCondition, FrozenVideo, "
                         f"TemporalRegion), got {bad}")
    for c in conditions:
        c.check(geometry)
    providers: dict[str, str] = {}
    for c in conditions:
        for m in c.provides:
            if m in providers:
                raise ValueError(f"two conditions give the source {m} ({providers[m]} and {type(c).__name__})")
            providers[m] = type(c).__name__
    regions = [c for c in conditions if isinstance(c, TemporalRegion)]
    mods = check_output_modalities(output_modalities)
    if mods == (AUDIO,):
        video_conds = [type(c).__name__ for c in conditions if VIDEO in c.provides or isinstance(c, VideoCondition)]
        if image is not None or video_conds:
            raise ValueError(f"audio-only generation takes no video conditions, got "
                             f"{video_conds + (['image='] if image is not None else [])}")
        if regions and regions[0].video:
            raise ValueError("audio-only generation: pass TemporalRegion(..., video=False)")
        if AUDIO in providers and not regions:
            raise ValueError("audio-only generation with a frozen AudioCondition and no TemporalRegion has nothing "
                             "to generate")
    if len(regions) > 1:
        raise ValueError("only one TemporalRegion per call (a retake window); merge the windows")
    for region in regions:
        needed = {VIDEO: "FrozenVideo(clip)", AUDIO: "AudioCondition(audio)"}
        missing = [m for m in region.regenerates if m not in providers]
        if missing:
            raise ValueError(
                f"TemporalRegion regenerates {missing} but no source was given: add "
                f"{', '.join(needed[m] for m in missing)} or pass {', '.join(f'{m}=False' for m in missing)}"
            )
    frame0 = [c for c in conditions if isinstance(c, VideoCondition) and c.start_frame(geometry) == 0]
    if len(frame0) + (image is not None) > 1:
        raise ValueError("more than one condition at frame 0 (image= and/or VideoCondition(frame_index=0)); "
                         "keep one")
    return sorted(conditions, key=lambda c: c.order)


@dataclass
class ConditionedLatents:
    """Noised initial states plus what the output needs.

    Attributes:
        video, audio: the states to denoise.
        video_pixels: `(B, 3, F, H, W)` source pixels in [-1, 1] to return while the video stays frozen, or None.
        waveform: `(B, C, N)` source waveform at the vocoder rate to return while the audio stays frozen, or None.
        audio_only: the video state is a one-token placeholder (no video output).
        guided_frozen: the frozen modalities that official `retake.py` still guides - a source a `TemporalRegion`
            keeps whole (`video=False` / `audio=False`): its stream reads the negative prompt in negative passes
            and keeps its own STG perturbation and skip_step (retake.py gives it a full `MultiModalGuider` with a
            negative context). Other frozen modalities (A2V audio, V2A video, the audio-only placeholder) follow
            official `a2vid_two_stage.py`: positive prompt in every pass, all dials off.
    """

    video: ModalityLatents
    audio: ModalityLatents
    video_pixels: torch.Tensor | None = None
    waveform: torch.Tensor | None = None
    audio_only: bool = False
    guided_frozen: frozenset = frozenset()

    @property
    def frozen_video(self) -> bool:
        return frozen(self.video)

    @property
    def frozen_audio(self) -> bool:
        return frozen(self.audio)


def _empty_state(batch: int, tokens: int, channels: int, coords: torch.Tensor, device) -> ModalityLatents:
    clean = torch.zeros(batch, tokens, channels, device=device, dtype=torch.float32)
    return ModalityLatents(latent=clean.clone(), clean=clean, denoise_mask=torch.ones(batch, tokens, device=device),
                           coords=coords, num_target_tokens=tokens)


def _noise(pipe, state: ModalityLatents, generator, noise, noise_scale: float = 1.0) -> ModalityLatents:
    """Official noiser over every token (target + appended); user noise covers the target tokens, the appended
    ones draw theirs from `generator`."""
    if noise is not None:
        noise = L.pack_video(noise) if noise.ndim == 5 else L.pack_audio(noise) if noise.ndim == 4 else noise
        extra = state.clean.shape[1] - noise.shape[1]
        if extra > 0:
            from diffusers.utils.torch_utils import randn_tensor

            more = randn_tensor((noise.shape[0], extra, noise.shape[2]), generator=generator,
                                device=state.clean.device, dtype=torch.float32)
            noise = torch.cat([noise.to(state.clean.device, torch.float32), more], dim=1)
    return pipe._noised(state.clean, state.denoise_mask, state.coords, state.num_target_tokens, generator, noise,
                        noise_scale=noise_scale)


def prepare_conditioned_latents(
    pipe, conditions: list[Condition], geometry: ClipGeometry, *, generator=None, latents=None,
    audio_latents=None, first_frame=None, first_frame_strength: float = 1.0, audio_only: bool = False, device=None,
    initial_video: torch.Tensor | None = None, initial_audio: torch.Tensor | None = None, noise_scale: float = 1.0,
) -> ConditionedLatents:
    """Build the clip's states, apply `conditions` (checked, in order), then noise them (video first, then audio,
    one draw over all tokens each: the official order). `first_frame` is the pipeline's encoded `image=`.

    Audio-only: the video is a one-token placeholder (1 latent frame, 1x1 grid, mask 0, no noise drawn): the
    least diffusers' joint transformer accepts; with cross-modal attention off it cannot affect the audio.

    Refinement (official `denoise_audio_video(initial_video_latent=, initial_audio_latent=, noise_scale=)`, stage 2
    of the two-stage pipelines): `initial_video` / `initial_audio` are clean packed target tokens `(B, N, C)`
    (normalized) the states start from instead of zeros, conditions are applied on top, and the noiser mixes
    `noise * mask * noise_scale + clean * (1 - mask * noise_scale)`.
    """
    g = geometry
    b = g.batch_size
    if audio_only:
        v_coords = pipe.video_coords(b, 1, 1, 1, g.frame_rate, device)
        video = _empty_state(b, 1, pipe.transformer.config.in_channels, v_coords, device)
        video.denoise_mask.zero_()
    else:
        v_coords = pipe.video_coords(b, g.latent_frames, g.latent_height, g.latent_width, g.frame_rate, device)
        n = g.latent_frames * g.tokens_per_latent_frame
        video = _empty_state(b, n, pipe.transformer.config.in_channels, v_coords, device)
    a_coords = pipe.transformer.audio_rope.prepare_audio_coords(b, g.audio_latent_length, device)
    audio = _empty_state(b, g.audio_latent_length, pipe.transformer.config.audio_in_channels, a_coords, device)
    for st, init in ((video, initial_video), (audio, initial_audio)):
        if init is not None:
            st.clean[:, : st.num_target_tokens] = init.to(st.clean)
            st.latent[:, : st.num_target_tokens] = init.to(st.clean)
    state = ConditioningState(geometry=g, video=video, audio=audio)
    items = list(conditions)
    if first_frame is not None:
        items.append(EncodedFirstFrame(first_frame, first_frame_strength))
    for c in sorted(items, key=lambda c: c.order):
        c.apply(state, pipe)
    video = state.video if audio_only else _noise(pipe, state.video, generator, latents, noise_scale)
    audio = _noise(pipe, state.audio, generator, audio_latents, noise_scale)
    regions = [c for c in items if isinstance(c, TemporalRegion)]
    guided_frozen = frozenset(
        m for m, st in ((VIDEO, video), (AUDIO, audio))
        if regions and frozen(st) and m not in regions[0].regenerates and not (m == VIDEO and audio_only)
    )
    return ConditionedLatents(
        video=video, audio=audio,
        video_pixels=state.video_pixels if frozen(video) and not audio_only else None,
        waveform=state.waveform if frozen(audio) else None,
        audio_only=audio_only, guided_frozen=guided_frozen,
    )
