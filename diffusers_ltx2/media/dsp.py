"""Audio signal math of the official audio encoder's front end, in plain torch (no torchaudio).

The official `ltx_core.model.audio_vae.ops.AudioProcessor` uses `torchaudio.functional.resample` and
`torchaudio.transforms.MelSpectrogram`; torchaudio has no CPU wheel for the torch this project targets, so the
same computations are written here from torchaudio's definitions (torchaudio 2.x `functional.functional`):

- `resample_audio`: windowed-sinc interpolation, `sinc_interp_hann`, `lowpass_filter_width=6`, `rolloff=0.99`
  (torchaudio's defaults, which the official code uses), output length `ceil(N * new / orig)`.
- `mel_filterbank`: `melscale_fbanks(n_freqs, f_min, f_max, n_mels, sample_rate, norm="slaney",
  mel_scale="slaney")`.
- `log_mel_spectrogram`: `MelSpectrogram(n_fft, win_length=n_fft, hop, hann window (periodic), center=True,
  pad_mode="reflect", power=1.0)` followed by the official `log(clamp(mel, 1e-5))`, laid out `(..., time, mels)`.

The tests check these against float64 references written from those definitions. Checked once by hand against
torchaudio 2.11.1's own Python code (its C++ extension left out, which these functions do not use) and the
official `AudioProcessor` running on it: identical results (max difference 0.0) for float32 and float64 input
at 8 / 11.025 / 16 / 22.05 / 32 / 44.1 / 48 / 96 kHz.
"""

from __future__ import annotations

import math

import torch

__all__ = ["resample_audio", "mel_filterbank", "log_mel_spectrogram"]

_LOWPASS_FILTER_WIDTH = 6
_ROLLOFF = 0.99


MIN_SAMPLE_RATE = 1_000
MAX_SAMPLE_RATE = 768_000
"""Accepted audio sample rates in Hz (inclusive): real audio runs from 8 kHz telephony to 768 kHz studio files;
rates outside this range come from broken or crafted headers (a 2 GHz WAV would ask for gigabytes per second of
clip, a 1 Hz one for a 1-sample clip)."""


def _check_rate(name: str, rate) -> int:
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not math.isfinite(rate) or rate != int(rate) \
            or not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise ValueError(f"{name} must be a positive integer number of samples per second in "
                         f"[{MIN_SAMPLE_RATE}, {MAX_SAMPLE_RATE}], got {rate!r}")
    return int(rate)


def _sinc_resample_kernel(orig: int, new: int, device, dtype) -> tuple[torch.Tensor, int]:
    """Polyphase kernels `(new, 1, 2 * width + orig)` and the half-width, for rates already divided by their gcd.

    Computed in the waveform's dtype with torchaudio's operation order, so float32 results match it bit for bit.
    """
    base_freq = min(orig, new) * _ROLLOFF
    width = math.ceil(_LOWPASS_FILTER_WIDTH * orig / base_freq)
    idx = torch.arange(-width, width + orig, dtype=dtype, device=device)[None, None] / orig
    t = torch.arange(0, -new, -1, dtype=dtype, device=device)[:, None, None] / new + idx
    t = (t * base_freq).clamp(-_LOWPASS_FILTER_WIDTH, _LOWPASS_FILTER_WIDTH)
    window = torch.cos(t * math.pi / _LOWPASS_FILTER_WIDTH / 2) ** 2
    t = t * math.pi
    kernels = torch.where(t == 0, torch.tensor(1.0).to(t), t.sin() / t)
    kernels = kernels * (window * (base_freq / orig))
    return kernels, width


def resample_audio(waveform: torch.Tensor, orig_sr: int, target_sr: int) -> torch.Tensor:
    """Resample along the last axis as `torchaudio.functional.resample(waveform, orig_sr, target_sr)` with its
    defaults (band-limited windowed-sinc, Hann window, 6 zero crossings, rolloff 0.99).

    Args:
        waveform: `(..., N)` float tensor.
        orig_sr, target_sr: sample rates in Hz (positive integers).

    Returns:
        `(..., ceil(N * target_sr / orig_sr))`, same dtype and device; `waveform` itself when the rates are equal.
    """
    orig_sr, target_sr = _check_rate("orig_sr", orig_sr), _check_rate("target_sr", target_sr)
    if not isinstance(waveform, torch.Tensor) or not waveform.is_floating_point():
        raise ValueError("resample_audio: waveform must be a floating-point tensor")
    if orig_sr == target_sr:
        return waveform
    gcd = math.gcd(orig_sr, target_sr)
    orig, new = orig_sr // gcd, target_sr // gcd
    kernel, width = _sinc_resample_kernel(orig, new, waveform.device, waveform.dtype)
    shape = waveform.shape
    flat = waveform.reshape(-1, shape[-1])
    length = flat.shape[-1]
    padded = torch.nn.functional.pad(flat, (width, width + orig))
    out = torch.nn.functional.conv1d(padded[:, None], kernel, stride=orig)
    out = out.transpose(1, 2).reshape(flat.shape[0], -1)
    target_length = math.ceil(new * length / orig)
    return out[..., :target_length].reshape(*shape[:-1], -1)


_F_SP = 200.0 / 3  # Slaney mel scale: linear below 1 kHz (3 mels per 200 Hz), logarithmic above
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = math.log(6.4) / 27.0


def _hz_to_mel_slaney(freq: float) -> float:
    if freq >= _MIN_LOG_HZ:
        return _MIN_LOG_MEL + math.log(freq / _MIN_LOG_HZ) / _LOGSTEP
    return freq / _F_SP


def _mel_to_hz_slaney(mels: torch.Tensor) -> torch.Tensor:
    linear = _F_SP * mels
    log = _MIN_LOG_HZ * torch.exp(_LOGSTEP * (mels - _MIN_LOG_MEL))
    return torch.where(mels >= _MIN_LOG_MEL, log, linear)


def mel_filterbank(n_freqs: int, f_min: float, f_max: float, n_mels: int, sample_rate: int) -> torch.Tensor:
    """Triangular Slaney-scale filters with Slaney area normalisation, `(n_freqs, n_mels)` float32, as
    `torchaudio.functional.melscale_fbanks(..., norm="slaney", mel_scale="slaney")` (frequency grid
    `linspace(0, sample_rate // 2, n_freqs)`)."""
    all_freqs = torch.linspace(0, sample_rate // 2, n_freqs)
    m_min, m_max = _hz_to_mel_slaney(float(f_min)), _hz_to_mel_slaney(float(f_max))
    f_pts = _mel_to_hz_slaney(torch.linspace(m_min, m_max, n_mels + 2))
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts[None, :] - all_freqs[:, None]
    down = -slopes[:, :-2] / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    fb = torch.clamp(torch.minimum(down, up), min=0.0)
    return fb * (2.0 / (f_pts[2 : n_mels + 2] - f_pts[:n_mels]))[None, :]


def log_mel_spectrogram(waveform: torch.Tensor, sample_rate: int, n_fft: int, hop_length: int,
                        n_mels: int) -> torch.Tensor:
    """Log-magnitude mel spectrogram `(..., T, n_mels)` of `waveform` `(..., N)`, as the official
    `AudioProcessor.waveform_to_mel` computes it after resampling (T = N // hop_length + 1).

    Magnitude STFT (power 1) with a periodic Hann window of `n_fft` samples, centred frames (reflect padding),
    Slaney mel filters from 0 Hz to `sample_rate / 2`, then `log(clamp(mel, 1e-5))`. Computed in float32
    (float64 input stays float64); the result has the input's dtype.

    Raises ValueError when the waveform is too short for reflect padding (fewer than `n_fft // 2 + 1` samples).
    """
    if waveform.shape[-1] <= n_fft // 2:
        raise ValueError(f"audio of {waveform.shape[-1]} samples at {sample_rate} Hz is too short for the mel "
                         f"front end (needs more than {n_fft // 2} samples)")
    shape = waveform.shape
    compute = waveform if waveform.dtype == torch.float64 else waveform.float()
    flat = compute.reshape(-1, shape[-1])
    window = torch.hann_window(n_fft, dtype=compute.dtype, device=compute.device)
    spec = torch.stft(flat, n_fft=n_fft, hop_length=hop_length, win_length=n_fft, window=window, center=True,
                      pad_mode="reflect", normalized=False, onesided=True, return_complex=True).abs()
    fb = mel_filterbank(n_fft // 2 + 1, 0.0, sample_rate / 2.0, n_mels, sample_rate).to(spec)
    mel = torch.matmul(spec.transpose(-1, -2), fb)  # (B, T, n_mels)
    mel = torch.log(torch.clamp(mel, min=1e-5))
    return mel.reshape(*shape[:-1], *mel.shape[-2:]).to(waveform.dtype)
