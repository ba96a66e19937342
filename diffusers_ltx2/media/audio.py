"""Audio in and out: decode any audio (or a video's audio track) with PyAV, convert channels and rates, write
WAV / FLAC, and the official mel front end that feeds the audio VAE encoder.

Decoding follows official `ltx_pipelines.utils.media_io.decode_audio_from_file` (seek to `start_time`, decode,
trim the first and last codec frames to the exact window); the mel front end follows
`ltx_core.model.audio_vae.ops.AudioProcessor` (see `dsp`).
"""

from __future__ import annotations

import os

import numpy as np
import torch

from .files import new_temp_file
from .dsp import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE, _check_rate, log_mel_spectrogram, resample_audio

__all__ = ["load_audio", "resample_audio", "to_channels", "waveform_to_mel", "save_audio", "DEFAULT_N_FFT"]

DEFAULT_N_FFT = 1024
"""STFT size of the official audio encoder (`AudioEncoder.n_fft`, the checkpoint's `stft.filter_length`);
diffusers' `AutoencoderKLLTX2Audio` config does not record it."""

_MAX_CHANNELS = 64
_SEEK_PREROLL_S = 1.0
MAX_DECODED_SAMPLES = 2 ** 28
"""Most samples (all channels together) one `load_audio` call decodes from a file: 1 GiB of float32, e.g. 46 min
of 48 kHz stereo. Checked against the container's stated length before decoding and counted while decoding (a
header can lie); pass `start_time` / `duration` to read a window of a longer file."""


def _check_window(start_time, duration) -> tuple[float, float | None]:
    if isinstance(start_time, bool) or not isinstance(start_time, (int, float)) or not np.isfinite(start_time) \
            or start_time < 0:
        raise ValueError(f"start_time must be a finite number of seconds >= 0, got {start_time!r}")
    if duration is not None and (isinstance(duration, bool) or not isinstance(duration, (int, float))
                                 or not np.isfinite(duration) or duration <= 0):
        raise ValueError(f"duration must be a positive number of seconds or None, got {duration!r}")
    return float(start_time), None if duration is None else float(duration)


# integer sample formats -> (offset, scale) mapping them to [-1, 1) as FFmpeg's swresample does
_INT_SCALES = {"u8": (128.0, 128.0), "s16": (0.0, 32768.0), "s32": (0.0, 2.0 ** 31), "s64": (0.0, 2.0 ** 63)}


def _frame_samples(frame) -> np.ndarray:
    """`(C, n)` float32 samples of one decoded PyAV audio frame, for any channel count and sample format.

    Converted here rather than with `av.AudioResampler(format="fltp")`: swresample crashes (segfault) on some
    layouts FFmpeg only knows by their channel count (e.g. an 8-channel WAV, "8 channels"). Integer formats are
    scaled as swresample does (`s16` / 32768, `s32` / 2**31, `(u8 - 128)` / 128)."""
    data = frame.to_ndarray()
    fmt = frame.format
    channels = len(frame.layout.channels)
    if fmt.is_planar:
        data = data.reshape(channels, -1)
    else:  # packed: (1, n * C), samples interleaved
        data = data.reshape(-1, channels).T
    name = fmt.name.rstrip("p")
    if name in _INT_SCALES:
        offset, scale = _INT_SCALES[name]
        return ((data.astype(np.float64) - offset) / scale).astype(np.float32)
    if name in ("flt", "dbl"):
        return data.astype(np.float32)
    raise ValueError(f"unsupported audio sample format {fmt.name!r}")


def _too_long(path: str, rate: int, channels: int, start_time: float, verb: str) -> str:
    limit_s = MAX_DECODED_SAMPLES / (rate * channels)
    return (f"{path}: the audio from {start_time:g} s on {verb} more than {MAX_DECODED_SAMPLES} samples, the most "
            f"one read decodes ({limit_s:.0f} s of {channels}-channel audio at {rate} Hz); pass start_time= / "
            "duration= to read a window")


def _check_stream_bounds(path: str, stream, rate: int, start_time: float, duration: float | None) -> int | None:
    """Refuse, before decoding, what the container says that no real audio has: a sample rate outside
    `[MIN_SAMPLE_RATE, MAX_SAMPLE_RATE]` (a 190 KB WAV claiming 2 GHz would later ask for gigabytes per second of
    clip), more than 64 channels, or a stated length over `MAX_DECODED_SAMPLES`. Returns the channel count (None
    when the container does not state it)."""
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise ValueError(f"{path}: the audio stream states a sample rate of {rate} Hz, outside "
                         f"[{MIN_SAMPLE_RATE}, {MAX_SAMPLE_RATE}] Hz (a broken or crafted header)")
    channels = stream.codec_context.channels or len(stream.layout.channels) or None  # None: said by the frames
    if channels is not None and channels > _MAX_CHANNELS:
        raise ValueError(f"{path}: the audio stream states {channels} channels (1 to {_MAX_CHANNELS} are accepted)")
    if channels is not None and stream.duration and stream.time_base:
        remaining = float(stream.duration * stream.time_base) - start_time
        if duration is not None:
            remaining = min(remaining, duration)
        if remaining * rate * channels > MAX_DECODED_SAMPLES:
            raise ValueError(_too_long(path, rate, channels, start_time, f"lasts {remaining:.0f} s: it holds"))
    return channels


def _decode_file(path: str, start_time: float, duration: float | None) -> tuple[torch.Tensor, int]:
    """`(C, N)` float32 samples of the first audio stream in `[start_time, start_time + duration)` and its rate."""
    import av

    if not os.path.isfile(path):
        raise FileNotFoundError(f"audio file not found: {path}")
    try:
        container = av.open(path)
    except (av.error.FFmpegError, UnicodeDecodeError) as exc:  # type: ignore[attr-defined]
        raise ValueError(f"cannot open {path} as an audio or video file: {exc}") from exc
    chunks: list[np.ndarray] = []
    with container:
        if not container.streams.audio:
            raise ValueError(f"{path} has no audio stream")
        stream = container.streams.audio[0]
        rate = stream.codec_context.sample_rate or stream.rate
        if not rate or rate <= 0:
            raise ValueError(f"{path}: the audio stream does not state a sample rate")
        channels = _check_stream_bounds(path, stream, rate, start_time, duration)
        budget = MAX_DECODED_SAMPLES
        first_time = None
        end_time = None if duration is None else start_time + duration
        # times are measured from the stream's first sample (`start_time`): MP3 / AAC streams start at the
        # encoder delay, not 0. The official decoder uses raw pts, which shifts its window by that delay
        # (~50 ms for MP3) and cuts as much off the end of a whole-file read.
        origin = stream.start_time if stream.start_time is not None else 0
        try:
            if start_time > _SEEK_PREROLL_S and stream.time_base:
                # decoders need a little audio before the window (MP3 decodes silence right after a seek)
                container.seek(origin + int((start_time - _SEEK_PREROLL_S) / stream.time_base), stream=stream)
            for frame in container.decode(stream):
                if frame.pts is None or frame.sample_rate != rate:
                    if frame.sample_rate != rate:
                        raise ValueError(f"{path}: the sample rate changes inside the stream "
                                         f"({rate} -> {frame.sample_rate} Hz)")
                    continue
                frame_time = float((frame.pts - origin) * stream.time_base)
                if frame_time + frame.samples / rate <= start_time:
                    continue
                if end_time is not None and frame_time >= end_time:
                    break
                if first_time is None:
                    first_time = frame_time
                samples = _frame_samples(frame)  # float planar at its own rate and layout
                channels = channels or samples.shape[0]
                if samples.shape[0] != channels:
                    raise ValueError(f"{path}: the channel count changes inside the stream "
                                     f"({channels} -> {samples.shape[0]})")
                budget -= samples.size
                if budget < 0:
                    raise ValueError(_too_long(path, rate, channels, start_time, "decodes to"))
                chunks.append(samples)
        except av.error.FFmpegError as exc:  # type: ignore[attr-defined]
            raise ValueError(f"cannot decode the audio of {path}: {exc}") from exc
        stream_seconds = float(stream.duration * stream.time_base) if stream.duration else None
    if not chunks or first_time is None:
        where = f" (the audio lasts {stream_seconds:.3f} s)" if stream_seconds is not None else ""
        if start_time > 0:
            raise ValueError(f"{path}: start_time {start_time:g} s is outside the audio{where}")
        raise ValueError(f"{path} contains no decodable audio")
    audio = np.concatenate(chunks, axis=-1).astype(np.float32, copy=False)
    if not np.isfinite(audio).all():
        raise ValueError(f"{path}: the audio contains NaN or infinite samples (a float WAV with broken "
                         "values); fix or re-encode the file")
    skip = round((start_time - first_time) * rate)
    if skip > 0:
        audio = audio[:, skip:]
    if duration is not None:
        audio = audio[:, : round(duration * rate)]
    if audio.shape[-1] == 0:
        raise ValueError(f"{path}: start_time {start_time:g} s is outside the audio")
    return torch.from_numpy(np.ascontiguousarray(audio)), int(rate)


def _from_array(source, sample_rate, start_time: float, duration: float | None) -> tuple[torch.Tensor, int]:
    if sample_rate is None:
        raise ValueError("a waveform given as a tensor or array needs its sample_rate")
    rate = _check_rate("sample_rate", sample_rate)
    wave = torch.from_numpy(np.asarray(source)) if isinstance(source, np.ndarray) else source
    if wave.ndim == 1:
        wave = wave[None]
    if wave.ndim != 2 or wave.shape[0] > _MAX_CHANNELS:
        raise ValueError(f"a waveform must be (samples,) or (channels, samples), got {tuple(source.shape)}")
    if wave.dtype == torch.int16:
        wave = wave.float() / 32768.0
    if not wave.is_floating_point():
        raise ValueError(f"a waveform must be floating point in [-1, 1] or int16, got {wave.dtype}")
    wave = wave.detach().to(torch.float32)
    if not torch.isfinite(wave).all():
        raise ValueError("the waveform contains NaN or infinite values")
    start = round(start_time * rate)
    if start >= wave.shape[-1]:
        raise ValueError(f"start_time {start_time:g} s is outside the waveform "
                         f"({wave.shape[-1] / rate:.3f} s long)")
    stop = None if duration is None else start + round(duration * rate)
    return wave[:, start:stop].contiguous(), rate


def load_audio(source, sample_rate: int | None = None, *, start_time: float = 0.0, duration: float | None = None,
               channels: int | None = None) -> tuple[torch.Tensor, int]:
    """Audio from a file, tensor or array, as float32 `(channels, samples)` in `[-1, 1]` and its sample rate.

    Args:
        source: a path to anything FFmpeg decodes with an audio stream (WAV, MP3, AAC/M4A, FLAC, Ogg/Opus, or a
            video file's soundtrack; any rate and channel count), or a waveform `(N,)` / `(C, N)` as a torch
            tensor or numpy array (float in `[-1, 1]`, or int16).
        sample_rate: for a waveform, its rate in Hz (required). For a file, the rate wanted back (resampled as
            the official audio processor does, see `resample_audio`); `None` keeps the file's rate.
        start_time: seconds from the start of the audio to skip.
        duration: seconds to keep from `start_time` (`None`: to the end). Audio ending earlier is returned
            shorter, not padded.
        channels: convert to this many channels (`to_channels`); `None` keeps them.

    Returns:
        `(waveform, sample_rate)`: float32 tensor `(C, N)` and the rate in Hz.

    Raises:
        FileNotFoundError: a path that does not exist.
        ValueError: naming the file, for an unreadable file, no audio stream, a window that starts past the end
            of the audio, a stream whose stated rate is outside [1000, 768000] Hz or that has more than 64
            channels (checked before decoding), more than `MAX_DECODED_SAMPLES` samples to decode (stated or
            decoded), NaN / infinite samples (float WAV); a `sample_rate` argument that is not an
            integer in [1000, 768000]; for waveforms, a missing `sample_rate` or a bad shape / dtype / value.
    """
    start_time, duration = _check_window(start_time, duration)
    if isinstance(source, (str, os.PathLike)):
        wave, rate = _decode_file(os.fspath(source), start_time, duration)
        if sample_rate is not None:
            target = _check_rate("sample_rate", sample_rate)
            wave, rate = resample_audio(wave, rate, target), target
    elif isinstance(source, (torch.Tensor, np.ndarray)):
        wave, rate = _from_array(source, sample_rate, start_time, duration)
    else:
        raise ValueError(f"audio must be a file path, a tensor or a numpy array, got {type(source).__name__}")
    if channels is not None:
        wave = to_channels(wave, channels)
    return wave, rate


def to_channels(waveform: torch.Tensor, n: int) -> torch.Tensor:
    """`(C, N)` or `(B, C, N)` -> the same with `n` channels.

    Mono is repeated to every channel; `n == 1` averages the channels; otherwise (e.g. 5.1 to stereo) the first
    `n` channels are kept (front left / right come first in FFmpeg's layouts). Raises ValueError for
    `n < 1` or a mono-less upmix (2 -> 3 channels, etc.).
    """
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= _MAX_CHANNELS:
        raise ValueError(f"channel count must be an integer in [1, {_MAX_CHANNELS}], got {n!r}")
    if waveform.ndim not in (2, 3):
        raise ValueError(f"to_channels expects (C, N) or (B, C, N), got {tuple(waveform.shape)}")
    c = waveform.shape[-2]
    if c == n:
        return waveform
    if c == 1:
        return waveform.expand(*waveform.shape[:-2], n, waveform.shape[-1]).contiguous()
    if n == 1:
        return waveform.mean(dim=-2, keepdim=True)
    if c > n:
        return waveform[..., :n, :].contiguous()
    raise ValueError(f"cannot turn {c}-channel audio into {n} channels")


def waveform_to_mel(waveform: torch.Tensor, sample_rate: int, audio_vae, n_fft: int = DEFAULT_N_FFT) -> torch.Tensor:
    """The log-mel spectrogram the audio VAE encoder takes, as official `AudioProcessor.waveform_to_mel`.

    Args:
        waveform: float `(B, C, N)` (a `(C, N)` waveform is one batch item).
        sample_rate: its rate in Hz.
        audio_vae: diffusers' `AutoencoderKLLTX2Audio` (reads `config.sample_rate`, `config.mel_hop_length`,
            `config.mel_bins`, `config.in_channels`), or any object with such a `config`.
        n_fft: STFT size (official 1024).

    Returns:
        float32 `(B, in_channels, T, mel_bins)` with `T = N' // mel_hop_length + 1` frames, N' the sample
        count at the VAE's rate: the input of `audio_vae.encode`. Channels are converted with `to_channels`
        (the official code passes them through unchanged; a mono file would not fit the stereo encoder).
    """
    config = audio_vae.config
    if waveform.ndim == 2:
        waveform = waveform[None]
    if waveform.ndim != 3 or not waveform.is_floating_point():
        raise ValueError(f"waveform_to_mel expects a float (B, C, N) waveform, got {tuple(waveform.shape)} "
                         f"{waveform.dtype}")
    target = int(config.sample_rate)
    wave = resample_audio(waveform.float(), sample_rate, target)
    wave = to_channels(wave, int(config.in_channels))
    return log_mel_spectrogram(wave, target, n_fft, int(config.mel_hop_length), int(config.mel_bins))


_WRITE_CODECS = {".wav": ("wav", "pcm_s16le", "s16"), ".flac": ("flac", "flac", "s16")}


def save_audio(path: str | os.PathLike, waveform, sample_rate: int) -> str:
    """Write a `(C, N)` (or `(N,)`) waveform in `[-1, 1]` (1 or 2 channels) as 16-bit WAV or FLAC, chosen by
    the extension. Written to a temporary file in the same folder and renamed: a failure leaves nothing.

    Raises FileNotFoundError (folder missing) and ValueError (extension, shape, rate, NaN) before writing.
    """
    import av

    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext not in _WRITE_CODECS:
        raise ValueError(f"audio output must be .wav or .flac, got {path!r}")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"output folder does not exist: {folder}")
    rate = _check_rate("sample_rate", sample_rate)
    wave = torch.as_tensor(waveform).detach().cpu().float()
    if wave.ndim == 1:
        wave = wave[None]
    if wave.ndim != 2 or wave.shape[0] not in (1, 2) or wave.shape[1] == 0:
        raise ValueError(f"audio to write must be (1 or 2 channels, samples), got {tuple(wave.shape)}")
    if not torch.isfinite(wave).all():
        raise ValueError("audio to write contains NaN or infinite values")
    fmt, codec, sample_fmt = _WRITE_CODECS[ext]
    layout = "mono" if wave.shape[0] == 1 else "stereo"
    pcm = (wave.clamp(-1, 1) * 32767.0).round().to(torch.int16).T.contiguous().reshape(1, -1).numpy()
    tmp = new_temp_file(path, folder, suffix=ext)  # the mode a plain open() gives (mkstemp's 0600 would stay)
    try:
        with av.open(tmp, "w", format=fmt) as container:
            stream = container.add_stream(codec, rate=rate, layout=layout)
            frame = av.AudioFrame.from_ndarray(pcm, format=sample_fmt, layout=layout)
            frame.sample_rate, frame.pts = rate, 0
            for packet in stream.encode(frame):
                container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path
