"""What `out.audio` holds after an audio retake and after an extension with a supplied sound - the decoded
waveform of the real call, not the latents seen through the step callback.

The expectations come from elsewhere than the call under test: the source sound itself (at the vocoder rate, so
no resampling stands between), the source through the audio VAE round trip (encode -> decode, no denoising), and
a separate `output_type="latent"` run with the same conditions and noise whose audio latents are decoded here.
"""

from __future__ import annotations

import pytest
import torch

from diffusers_ltx2 import ClassifierFreeGuidance
from diffusers_ltx2.conditioning import (
    AudioCondition, FrozenVideo, TemporalRegion, VideoCondition, encode_audio_tokens,
)
from diffusers_ltx2.pipelines.extend import blend_weights
from diffusers_ltx2.latents import layout as L

RATE = 24000  # the tiny vocoder's rate: sound given at it comes back without resampling
RUN = dict(prompt="a dog runs on the beach", num_inference_steps=2, height=64, width=64, max_sequence_length=128,
           guider=ClassifierFreeGuidance(1.0, 1.0))


def _sound(seconds: float) -> torch.Tensor:
    t = torch.arange(round(seconds * RATE)) / RATE
    return torch.stack([torch.sin(2 * torch.pi * 300 * t), torch.sin(2 * torch.pi * 500 * t)]) * 0.4


def _seed():
    return torch.Generator().manual_seed(0)


def _decode_tokens(pipe, tokens: torch.Tensor) -> torch.Tensor:
    """Normalized packed audio tokens `(1, T, C*M)` -> `(2, N)` waveform through the audio VAE and vocoder."""
    mel = pipe.audio_vae.config.mel_bins // pipe.audio_vae.mel_compression_ratio
    latents = L.unpack_audio(L.denormalize_audio_tokens(tokens, pipe.audio_vae.latents_mean,
                                                        pipe.audio_vae.latents_std), mel)
    return pipe.decode_audio(latents, "pt")[0]


def _decoded_latent_run(pipe, conditions, num_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`(audio latents, their decoded waveform (2, N))` of a separate latent-output run."""
    out = pipe(num_frames=num_frames, frame_rate=24.0, conditions=conditions, output_type="latent",
               generator=_seed(), **RUN)
    return out.audio, pipe.decode_audio(out.audio, "pt")[0]


# ----------------------------------------------------------------------------------- retake


def test_an_audio_retake_returns_the_regenerated_sound_and_the_round_trip_elsewhere(tiny_pipe):
    frames = torch.rand(17, 64, 64, 3, generator=torch.Generator().manual_seed(3))
    source = _sound(1.0)

    def conditions():
        return [FrozenVideo(frames), AudioCondition(source, RATE), TemporalRegion(0.3, 0.5, video=False)]

    out = tiny_pipe(num_frames=17, frame_rate=24.0, conditions=conditions(), output_type="pt", generator=_seed(),
                    **RUN)
    audio = out.audio[0]
    _, decoded = _decoded_latent_run(tiny_pipe, conditions(), 17)
    torch.testing.assert_close(audio, decoded, rtol=0, atol=0)  # the regenerated latents, decoded

    g = tiny_pipe.clip_geometry(1, 17, 64, 64, 24.0)
    round_trip = _decode_tokens(tiny_pipe, encode_audio_tokens(tiny_pipe, source[:, : round(17 / 24 * RATE)], RATE,
                                                               g.audio_latent_length))
    assert audio.shape == round_trip.shape
    # before the window the output is the source's VAE round trip; the causal audio decoder carries the new
    # tokens forward, so from the first regenerated token (0.29 s; 0.1 s margin for the vocoder) it is not
    kept = round(0.19 * RATE)
    torch.testing.assert_close(audio[:, :kept], round_trip[:, :kept], rtol=0, atol=1e-6)
    window = slice(round(0.3 * RATE), round(0.5 * RATE))
    assert (audio[:, window] - round_trip[:, window]).abs().max() > 0.1  # regenerated, not the round trip
    assert (audio[:, window] - source[:, window]).abs().max() > 0.1  # nor the source sound


# ----------------------------------------------------------------------------------- extend


CLIP = torch.rand(25, 64, 64, 3, generator=torch.Generator().manual_seed(5))  # extended by 16, overlap 8:
START = round(16 / 24 * RATE)  # the new clip (25 frames) starts at old frame 16
NEW_S = 25 / 24


@pytest.mark.parametrize("sound_frames", [
    25,  # the clip's own sound: kept up to the clip's end (the overlap)
    33,  # a soundtrack running 8 frames past the clip: kept there too, generated after
    41,  # a soundtrack for the whole result: nothing is generated
    12,  # a sound ending before the overlap: silence until the new clip
])
def test_extend_keeps_a_supplied_sound_where_it_exists_and_returns_the_new_sound_after_it(tiny_pipe, sound_frames):
    source = _sound(sound_frames / 24)
    out = tiny_pipe.extend(CLIP, 16, overlap_frames=8, audio=source, sample_rate=RATE, output_type="pt",
                           generator=_seed(), **RUN)
    audio = out.audio[0]
    assert out.sample_rate == RATE

    kept_s = min(max(sound_frames / 24 - 16 / 24, 0.0), NEW_S)  # the new clip's seconds the sound covers
    kept = round(kept_s * RATE)
    reference = [VideoCondition(CLIP[16:], 0, 0.5)]  # the extension's conditions, written from its definition
    if kept:
        reference.append(AudioCondition(source, RATE, start_time=16 / 24))
        if kept_s < NEW_S:
            reference.append(TemporalRegion(kept_s, NEW_S, video=False))
    latents, new = _decoded_latent_run(tiny_pipe, reference, 25)
    if kept == round(NEW_S * RATE):  # frozen whole: the new clip's sound is the supplied one, as given
        new = source[:, START:START + kept]
    assert audio.shape == (2, START + new.shape[1])  # the old clip's sound up to the join, then the new clip's

    if kept:
        fade = min(round(9 / 24 * RATE), kept)  # the supplied sound's last overlap's worth of samples
        end = START + kept
        torch.testing.assert_close(audio[:, : end - fade], source[:, : end - fade], rtol=0, atol=0)
        w = blend_weights(fade)
        torch.testing.assert_close(audio[:, end - fade:end],
                                   source[:, end - fade:end] * (1 - w) + new[:, kept - fade:kept] * w,
                                   rtol=0, atol=1e-6)
        torch.testing.assert_close(audio[:, end:], new[:, kept:], rtol=0, atol=0)
        # the model saw the supplied sound: its tokens inside the kept span are the sound's own encoding
        g = tiny_pipe.clip_geometry(1, 25, 64, 64, 24.0)
        tokens = L.normalize_audio_tokens(L.pack_audio(latents), tiny_pipe.audio_vae.latents_mean,
                                          tiny_pipe.audio_vae.latents_std)
        expected = encode_audio_tokens(tiny_pipe, AudioCondition(source, RATE, start_time=16 / 24).clip_waveform(g),
                                       RATE, g.audio_latent_length)
        spans = tiny_pipe.transformer.audio_rope.prepare_audio_coords(1, g.audio_latent_length, "cpu")[0, 0]
        inside = spans[:, 1] <= kept_s
        assert inside.sum() >= 4
        torch.testing.assert_close(tokens[0, inside], expected[0, inside], rtol=0, atol=1e-5)
    else:
        torch.testing.assert_close(audio[:, : source.shape[1]], source, rtol=0, atol=0)
        assert not audio[:, source.shape[1]:START].any()  # silence between the sound and the new clip
        torch.testing.assert_close(audio[:, START:], new, rtol=0, atol=0)
    if kept < round(NEW_S * RATE):  # generated past the supplied sound: a real sound, not silence
        assert audio[:, START + kept + RATE // 25:].abs().max() > 0.05
