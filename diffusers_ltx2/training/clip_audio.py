"""A training clip's audio track -> the normalized audio latents `ltx2 train` reads (`audio_latents/`).

The sound is encoded exactly as the inference pipelines encode a given sound (`AudioCondition`, audio-to-video):
decoded with `media.load_audio` (PyAV), cut to the clip's duration `num_frames / frame_rate` and silence-padded
when shorter (`AudioCondition.clip_waveform`), then `conditioning.encode_audio_tokens` (official mel front end,
audio VAE posterior mean, per-channel normalization in the packed space, cropped / padded to the clip's audio
latent length `round(num_frames / frame_rate * 25)`). The packed tokens are stored unpacked as `(C_a, T, M)`; the
trainer packs them again (`latents.layout.pack_audio`), which gives back the same tokens bit for bit. So what
is trained is what runs.

The window is the time of the frames used: from the video stream's first frame, measured against the audio
stream's first sample (streams that start together, as files muxed by FFmpeg usually do, give offset 0; audio
that starts late is preceded by silence).
"""

from __future__ import annotations

import os

import torch

__all__ = ["NoUsableAudio", "encode_clip_audio"]

# source fps and dataset fps closer than this (relative) are the same rate (29.97 vs 30000/1001 etc.)
_FPS_TOLERANCE = 1e-3


class NoUsableAudio(ValueError):
    """The clip has no audio track, or one that cannot be aligned with the frames (another frame rate)."""


def _start_seconds(stream) -> float:
    if stream.start_time is None or not stream.time_base:
        return 0.0
    return float(stream.start_time * stream.time_base)


def _stream_timing(path: str) -> tuple[float, float]:
    """`(video fps, audio offset in seconds)`: the offset of the first video frame from the first audio sample.
    Raises `NoUsableAudio` when there is no audio stream, `ValueError` / `FileNotFoundError` like `media`."""
    import av

    from ..media.video import probe_video

    info = probe_video(path)  # FileNotFoundError / ValueError naming the file
    if not info.has_audio:
        raise NoUsableAudio("no audio track")
    with av.open(path) as container:
        return info.fps, _start_seconds(container.streams.video[0]) - _start_seconds(container.streams.audio[0])


def encode_clip_audio(pipe, path: str | os.PathLike, num_frames: int, frame_rate: float) -> torch.Tensor:
    """The normalized audio latents of the first `num_frames` frames of a video file.

    Args:
        pipe: an LTX-2 pipeline of this package (its `audio_vae` is used, on its device and dtype).
        path: a video file with an audio track (any rate / channel count PyAV decodes; converted to the VAE's).
        num_frames: frames of the clip (the window is `num_frames / frame_rate` seconds).
        frame_rate: the clip's frame rate as stored in the dataset; must be the file's own rate (else the audio
            would not line up with the frames).

    Returns:
        float32 `(C_a, T, M)` on the CPU, `T = round(num_frames / frame_rate * 25)` (8 x T x 16 for LTX-2).

    Raises:
        NoUsableAudio: no audio track, or the file's frame rate differs from `frame_rate`.
        FileNotFoundError / ValueError: unreadable file or audio (naming the file).
    """
    from ..conditioning import AudioCondition, encode_audio_tokens
    from ..media.audio import load_audio
    from ..latents import layout as L

    path = os.fspath(path)
    fps, offset = _stream_timing(path)
    if abs(fps - frame_rate) > _FPS_TOLERANCE * frame_rate:
        raise NoUsableAudio(f"the video runs at {fps:g} fps but the dataset's frame rate is {frame_rate:g}: the "
                            f"audio would not line up (preprocess with --frame-rate {fps:g})")
    side = pipe.vae_spatial_compression_ratio  # the frame size plays no part in the audio geometry
    geometry = pipe.clip_geometry(1, num_frames, side, side, frame_rate)
    duration = geometry.duration_s
    lead = max(0.0, -offset)  # audio starting after the first frame: silence before it
    wave, rate = load_audio(path, start_time=max(0.0, offset), duration=duration - lead if lead < duration else None)
    if lead > 0:
        wave = torch.nn.functional.pad(wave, (round(lead * rate), 0))
    wave = AudioCondition(wave, sample_rate=rate).clip_waveform(geometry)
    tokens = encode_audio_tokens(pipe, wave, rate, geometry.audio_latent_length)
    mel_bins = tokens.shape[-1] // int(pipe.audio_vae.config.latent_channels)
    return L.unpack_audio(tokens, mel_bins)[0].float().cpu()
