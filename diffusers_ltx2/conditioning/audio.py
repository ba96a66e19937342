"""`AudioCondition`: generate video to a given sound (audio-to-video); the audio is frozen.

Official `a2vid_two_stage.py` stage 1 (ltx-pipelines 1.0.0): the audio file is decoded from `start_time` for at
most the clip's duration, encoded by the audio VAE encoder (mel front end of the official `AudioProcessor`),
cropped to the clip's audio latent length, and frozen: no noise (`noise_scale = 0`), denoise mask 0 (so
per-token timestep 0 and its x0 is its clean value), and the audio guider has every dial off. The output carries
the original waveform, not a VAE round trip.

Choice written down: ltx-pipelines 1.0.0 passes the *step* sigma as the frozen modality's `Modality.sigma`
(`modality_from_latent_state` does not zero it), so the video's cross-modal AdaLN sees the step sigma for the
frozen audio; we do the same, which is what the parity test against `a2vid_two_stage`'s stage 1 checks.
A waveform shorter than the clip is padded with silence before encoding (official code would fail on it).
"""

from __future__ import annotations

import os

import numpy as np
import torch

from ..latents import layout as L
from .base import AUDIO, ClipGeometry, Condition, ConditioningState, LatentEncoder


class AudioCondition(Condition):
    """Freeze the audio of the generated clip to a given sound (A2V), or provide the source audio of a retake.

    Args:
        audio: an audio file path (wav / mp3 / aac / flac, or a video file's audio stream; decoded with PyAV), or
            a waveform tensor / array `(samples,)` or `(channels, samples)`, float in [-1, 1].
        sample_rate: the waveform's rate in Hz (required for tensors / arrays; ignored for files).
        start_time: seconds into the audio where the clip starts (>= 0).

    The waveform is cut to the clip's duration (`num_frames / frame_rate`) and padded with silence when shorter.

    Raises:
        FileNotFoundError / ValueError (at construction, before any model runs): a missing or undecodable file,
        a tensor without `sample_rate`, a start time past the end of the audio.
    """

    order = 0
    modality = AUDIO
    provides = (AUDIO,)

    def __init__(self, audio, sample_rate: int | None = None, start_time: float = 0.0):
        from ..media.audio import load_audio

        if isinstance(start_time, bool) or not isinstance(start_time, (int, float)) or not start_time >= 0:
            raise ValueError(f"start_time must be a number of seconds >= 0, got {start_time!r}")
        if isinstance(audio, (str, os.PathLike)):
            waveform, rate = load_audio(audio, start_time=float(start_time))
        elif isinstance(audio, (torch.Tensor, np.ndarray)):
            if sample_rate is None:
                raise ValueError("AudioCondition: a waveform tensor / array needs its sample_rate")
            waveform, rate = load_audio(audio, sample_rate, start_time=float(start_time))
        else:
            raise ValueError(f"AudioCondition: audio must be a path, tensor or array, got {type(audio).__name__}")
        if waveform.shape[-1] == 0:
            raise ValueError("AudioCondition: the audio is empty from the start time on")
        self.waveform = waveform.to(torch.float32)  # (C, N)
        self.sample_rate = int(rate)

    def samples_for(self, geometry: ClipGeometry, rate: int | None = None) -> int:
        """Samples of the clip's duration at `rate` (default: the waveform's)."""
        return round(geometry.duration_s * (rate or self.sample_rate))

    def clip_waveform(self, geometry: ClipGeometry) -> torch.Tensor:
        """`(C, N)` waveform cut to the clip's duration, silence-padded when shorter."""
        n = self.samples_for(geometry)
        w = self.waveform[:, :n]
        return torch.nn.functional.pad(w, (0, n - w.shape[-1])) if w.shape[-1] < n else w

    def apply_to(self, state: ConditioningState, encoder: LatentEncoder, geometry: ClipGeometry) -> None:
        g = geometry
        tokens = encoder.encode_audio(self.clip_waveform(g), self.sample_rate, g.audio_latent_length)
        state.replace_clean(AUDIO, tokens.expand(g.batch_size, -1, -1).to(state.audio.latent.device), 0.0)
        out = self.output_waveform(g, encoder.output_sample_rate)
        state.waveform = out.unsqueeze(0).expand(g.batch_size, -1, -1).contiguous()

    def output_waveform(self, geometry: ClipGeometry, out_rate: int) -> torch.Tensor:
        """The sound returned for the clip: `(2, N)` float32 at `out_rate` (the vocoder's), the whole waveform
        resampled, then cut to the clip's duration (no filter edge at its end), silence-padded when shorter."""
        from ..media.audio import resample_audio, to_channels

        n_out = self.samples_for(geometry, out_rate)
        out = to_channels(resample_audio(self.waveform[:, : self.samples_for(geometry) + self.sample_rate],
                                         self.sample_rate, out_rate), 2)[:, :n_out]
        return torch.nn.functional.pad(out, (0, n_out - out.shape[-1])) if out.shape[-1] < n_out else out


def encode_audio_tokens(encoder, waveform: torch.Tensor, sample_rate: int, length: int) -> torch.Tensor:
    """Waveform `(C, N)` -> normalized packed audio tokens `(1, length, C*M)` float32, with the audio VAE of
    `encoder` (anything with an `audio_vae`: a pipeline, `pipelines.encoder.ModelLatentEncoder`).

    The mel front end is the official `AudioProcessor.waveform_to_mel` (`media.waveform_to_mel`), the encoder is
    diffusers' `AutoencoderKLLTX2Audio.encode` (posterior mean = the official encoder's first half of channels),
    normalized with the VAE's per-channel statistics in the packed space (official `_normalize_latents`), then
    cropped / zero-padded to `length` latent frames (official retake pads with zeros).
    """
    from ..media.audio import waveform_to_mel

    vae = encoder.audio_vae
    param = next(vae.parameters())
    mel = waveform_to_mel(waveform.unsqueeze(0).float(), sample_rate, vae)
    with torch.no_grad():
        latents = vae.encode(mel.to(param.device, param.dtype)).latent_dist.mode().float()
    tokens = L.normalize_audio_tokens(L.pack_audio(latents), vae.latents_mean, vae.latents_std)
    tokens = tokens[:, :length]
    if tokens.shape[1] < length:
        tokens = torch.nn.functional.pad(tokens, (0, 0, 0, length - tokens.shape[1]))
    return tokens
