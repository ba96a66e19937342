"""Composing conditions: the checks of a call's conditions before any model runs, and the one initial-state builder
of every stage (empty states -> conditions applied in order -> noised, official `create_noised_state`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..latents.noiser import StartLatents, noised_state
from ..latents.state import ModalityLatents, is_frozen
from .base import AUDIO, MODALITIES, VIDEO, ClipGeometry, Condition, ConditioningState, LatentEncoder
from .temporal_region import TemporalRegion


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


def check_conditions(conditions, geometry: ClipGeometry, *, output_modalities=MODALITIES) -> list[Condition]:
    """Validate a `conditions=` list against the clip and against each other; raise `ValueError` before any model
    runs. Returns the conditions in application order (sources, regions, frame conditions, references)."""
    if conditions is None:
        conditions = []
    if isinstance(conditions, Condition):
        conditions = [conditions]
    if not isinstance(conditions, (list, tuple)):
        raise ValueError(f"conditions must be a list of conditions, got {type(conditions).__name__}")
    bad = [type(c).__name__ for c in conditions if not isinstance(c, Condition)]
    if bad:
        raise ValueError(f"conditions must be condition objects (VideoCondition, AudioCondition, FrozenVideo, "
                         f"TemporalRegion, ReferenceVideo), got {bad}")
    for c in conditions:
        c.check(geometry)
    providers: dict[str, str] = {}
    for c in conditions:
        for m in c.provides:
            if m in providers:
                raise ValueError(f"two conditions give the source {m} ({providers[m]} and {c.label})")
            providers[m] = c.label
    regions = [c for c in conditions if isinstance(c, TemporalRegion)]
    if check_output_modalities(output_modalities) == (AUDIO,):
        video_conds = [c.label for c in conditions if c.modality == VIDEO]
        if video_conds:
            raise ValueError(f"audio-only generation takes no video conditions, got {video_conds}")
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
    if sum(c.replaces_first_frame(geometry) for c in conditions) > 1:
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
        return is_frozen(self.video)

    @property
    def frozen_audio(self) -> bool:
        return is_frozen(self.audio)


def _empty_state(batch: int, tokens: int, channels: int, coords: torch.Tensor, device) -> ModalityLatents:
    clean = torch.zeros(batch, tokens, channels, device=device, dtype=torch.float32)
    return ModalityLatents(latent=clean.clone(), clean=clean, denoise_mask=torch.ones(batch, tokens, device=device),
                           coords=coords, num_target_tokens=tokens)


def initial_state(
    conditions, geometry: ClipGeometry, encoder: LatentEncoder, *, generator=None, audio_only: bool = False,
    video_only: bool = False, video: StartLatents = StartLatents(), audio: StartLatents = StartLatents(),
) -> ConditionedLatents:
    """The initial states of a stage: the clip's empty (or given) states, `conditions` applied in order, then the
    one noiser (video first, then audio, one draw over all tokens each: the official order; ltx-pipelines
    `create_noised_state`) under the geometry's `conditioning_rule` (ltx-core 1.0 or 1.2 noising). Every pipeline
    stage and every mode (text-to-video, image-to-video, keyframes, A2V, V2A, retake, IC-LoRA references, a
    refinement stage) starts here.

    Args:
        conditions: checked conditions (`check_conditions`), applied in `order`.
        geometry: the stage's clip.
        encoder: encodes the conditions' media and gives the states' positions.
        generator: torch generator(s) for the noise (one, or one per video).
        audio_only: the video is a one-token placeholder (1 latent frame, 1x1 grid, mask 0, no noise drawn): the
            least diffusers' joint transformer accepts; with cross-modal attention off it cannot affect the audio.
        video_only: the audio is held at its clean values (zeros unless `audio.clean`), mask 0, no noise drawn
            (ltx-pipelines 1.2 runs DFR's temporal rounds on video alone; cross-modal attention goes off).
        video, audio: how each modality starts (`latents.noiser.StartLatents`): given clean target tokens (a
            refinement stage: official `initial_video_latent=` with `noise_scale=`), given noise, the noise scale.
    """
    g, b, device = geometry, geometry.batch_size, encoder.device
    if audio_only:
        v_state = _empty_state(b, 1, encoder.video_channels, encoder.video_positions(b, 1, 1, 1, g.frame_rate), device)
        v_state.denoise_mask.zero_()
    else:
        coords = encoder.video_positions(b, g.latent_frames, g.latent_height, g.latent_width, g.frame_rate)
        v_state = _empty_state(b, g.latent_frames * g.tokens_per_latent_frame, encoder.video_channels, coords, device)
    a_state = _empty_state(b, g.audio_latent_length, encoder.audio_channels,
                           encoder.audio_positions(b, g.audio_latent_length), device)
    for st, start in ((v_state, video), (a_state, audio)):
        if start.clean is not None:
            st.clean[:, : st.num_target_tokens] = start.clean.to(st.clean)
            st.latent[:, : st.num_target_tokens] = start.clean.to(st.clean)
    state = ConditioningState(video=v_state, audio=a_state)
    for c in sorted(conditions, key=lambda c: c.order):
        c.apply_to(state, encoder, g)
    rule = g.conditioning_rule
    v_state = state.video if audio_only else noised_state(state.video, generator, video.noise, video.noise_scale,
                                                          rule)
    if video_only:
        state.audio.denoise_mask.zero_()
    a_state = state.audio if video_only else noised_state(state.audio, generator, audio.noise, audio.noise_scale,
                                                          rule)
    regions = [c for c in conditions if isinstance(c, TemporalRegion)]
    guided_frozen = frozenset(
        m for m, st in ((VIDEO, v_state), (AUDIO, a_state))
        if regions and is_frozen(st) and m not in regions[0].regenerates and not (m == VIDEO and audio_only)
    )
    return ConditionedLatents(
        video=v_state, audio=a_state,
        video_pixels=state.video_pixels if is_frozen(v_state) and not audio_only else None,
        waveform=state.waveform if is_frozen(a_state) else None,
        audio_only=audio_only, guided_frozen=guided_frozen,
    )
