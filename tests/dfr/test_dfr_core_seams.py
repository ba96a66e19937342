"""The seams DFR added to the issue-21 core, tested directly (the DFR stage parity tests exercise them end to end
against ltx-pipelines 1.2): tokens appended `marked=True` carry LTX-2.5's keyframe marker into the transformer's
`video_keyframes_mask`; a video-only initial state holds the audio and draws no audio noise; the core noiser under
ltx-core 1.2's conditioning rule (LTX-2.4+) gives DFR's keyframe anchors 1.2's noised value."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

from diffusers_ltx2.conditioning import ConditioningState, initial_state
from diffusers_ltx2.conditioning.video import keyframe_positions
from diffusers_ltx2.dfr.conditions import KeyframeAnchors
from diffusers_ltx2.latents.geometry import ClipGeometry
from diffusers_ltx2.latents.noiser import StartLatents
from diffusers_ltx2.latents.state import ModalityLatents
from diffusers_ltx2.transformer.inputs import keyframes_mask

C, CA = 4, 6
GEOMETRY = ClipGeometry(batch_size=1, num_frames=17, height=64, width=96, frame_rate=24.0, audio_latent_length=7)


class _Encoder:
    """The `LatentEncoder` positions of a clip (nothing to encode in these tests)."""

    device = torch.device("cpu")
    output_sample_rate = 24000
    video_channels, audio_channels = C, CA

    def video_positions(self, batch_size, frames, height, width, frame_rate, spatial_scale=1):
        return keyframe_positions(batch_size, frames, height, width, frame_index=0, frame_rate=frame_rate)

    def audio_positions(self, batch_size, length):
        t = torch.arange(length, dtype=torch.float32)
        return torch.stack([t, t + 1], dim=-1).expand(batch_size, 1, length, 2).clone()


def _state(tokens: int) -> ModalityLatents:
    z = torch.zeros(1, tokens, C)
    return ModalityLatents(latent=z.clone(), clean=z, denoise_mask=torch.ones(1, tokens),
                           coords=torch.zeros(1, 3, tokens, 2), num_target_tokens=tokens)


def test_marked_tokens_reach_the_keyframes_mask():
    state = ConditioningState(video=_state(6), audio=_state(2))
    state.append("video", torch.ones(1, 2, C), torch.zeros(1, 3, 2, 2), 0.0)  # unmarked (a reference)
    assert state.video.keyframe_marker is None
    state.append("video", torch.ones(1, 3, C), torch.zeros(1, 3, 3, 2), 1.0, marked=True)
    assert state.video.keyframe_marker.tolist() == [[0] * 8 + [1] * 3]
    state.append("video", torch.ones(1, 1, C), torch.zeros(1, 3, 1, 2), 0.0)  # after them: unmarked (K < N)
    with pytest.raises(ValueError, match="video tokens only"):
        state.append("audio", torch.ones(1, 1, C), torch.zeros(1, 1, 1, 2), 1.0, marked=True)
    coords = torch.zeros(1, 3, 12, 2)
    coords[:, 0, 3:6] = 1.0  # target: 3 tokens in the first latent frame, 3 in the next
    transformer = SimpleNamespace(config=SimpleNamespace(use_keyframes_abs_pos_embedding=True))
    mask = keyframes_mask(transformer, coords, 6, 12, 2, state.video.keyframe_marker)  # 2 passes of 1 video
    assert mask.shape == (2, 12, 1)
    assert mask[..., 0].tolist() == [[1, 1, 1, 0, 0, 0, 0, 0, 1, 1, 1, 0]] * 2
    older = SimpleNamespace(config=SimpleNamespace(use_keyframes_abs_pos_embedding=False))
    assert keyframes_mask(older, coords, 6, 12, 2, state.video.keyframe_marker) is None


def test_video_only_state_holds_the_audio_without_drawing_noise():
    g = torch.Generator().manual_seed(4)
    state = initial_state([], GEOMETRY, _Encoder(), generator=g, video_only=True)
    assert bool((state.audio.denoise_mask == 0).all()) and bool((state.audio.latent == 0).all())
    assert state.frozen_audio and not state.frozen_video
    ref = torch.Generator().manual_seed(4)
    video = torch.randn(1, 3 * 2 * 3, C, generator=ref)  # one draw over the video tokens, none for the audio
    torch.testing.assert_close(state.video.latent, video, rtol=0, atol=0)
    assert torch.randn(1, generator=g).item() == torch.randn(1, generator=ref).item()


def test_keyframe_anchors_follow_ltx_core_12_noising():
    """ltx-core 1.2: `lerp(clean, lerp(0, noise, s), mask)` for appended keyframe tokens (they start from 0); the
    noiser under ltx-core 1.0's rule (2.0 / 2.3) gives `lerp(clean, noise, mask * s)`."""
    latents = torch.randn(1, C, 1, 2, 3, generator=torch.Generator().manual_seed(1))
    anchors = KeyframeAnchors([8], latents, strength=0.95)
    geometry = replace(GEOMETRY, conditioning_rule="ltx_core_1_2")  # the 2.5 models DFR runs on
    anchors.check(geometry)
    start = StartLatents(noise_scale=0.5)
    state = initial_state([anchors], geometry, _Encoder(), generator=torch.Generator().manual_seed(2), video=start)
    noise = torch.randn(1, 3 * 6 + 6, C, generator=torch.Generator().manual_seed(2))[:, 18:]
    clean, mask = latents.permute(0, 2, 3, 4, 1).reshape(1, 6, C), 0.05
    want = clean * (1 - mask) + mask * (0.5 * noise)
    torch.testing.assert_close(state.video.latent[:, 18:], want, rtol=0, atol=1e-6)
    assert state.video.keyframe_marker is None  # anchors are unmarked (1.2: marked=False)
