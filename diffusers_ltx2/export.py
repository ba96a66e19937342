"""Write generated video frames and audio to an H.264 + AAC MP4 file through PyAV."""

from __future__ import annotations

import math
import os
from fractions import Fraction
from typing import Any

import av
import numpy as np
import torch

from .media.files import new_temp_file
from .media.image import pil_to_rgb

__all__ = ["export_to_video_with_audio"]

# Sample rate used when the AAC encoder does not accept the given one.
_FALLBACK_AUDIO_RATE = 48000
_AUDIO_CHUNK = 1024  # samples per AAC frame


#: Accepted frame rates (frames per second) and audio sample rates (Hz), inclusive.
FPS_RANGE = (0.001, 1000.0)
SAMPLE_RATE_RANGE = (1000, 384000)


def _is_pil(obj: Any) -> bool:
    return hasattr(obj, "convert") and hasattr(obj, "size")


def _channels_last(frames: np.ndarray) -> np.ndarray:
    """Accept what the pipeline returns for one video or a batch of one.

    ``output_type="np"``: ``(F, H, W, 3)``; ``"pt"``: ``(F, 3, H, W)`` (channels first, moved last); either with a
    leading batch axis of size 1 (the whole ``output.frames``).
    """
    if frames.ndim == 5:
        if frames.shape[0] != 1:
            raise ValueError(f"`frames` holds a batch of {frames.shape[0]} videos {frames.shape}; pass one, e.g. "
                             "`output.frames[i]`.")
        frames = frames[0]
    if frames.ndim == 4 and frames.shape[-1] != 3 and frames.shape[1] == 3:
        frames = frames.transpose(0, 2, 3, 1)
    return frames


def _frames_to_uint8(frames: Any) -> np.ndarray:
    """Normalise frames to a contiguous ``uint8`` array of shape ``(F, H, W, 3)``.

    Floats are treated as ``[0, 1]`` intensities (clipped, then rounded to 0..255); ``uint8`` is used as is.
    Accepts each ``output_type`` of the pipeline: ``np`` ``(F, H, W, 3)``, ``pt`` ``(F, 3, H, W)``, ``pil`` (a list
    of images), also with the batch of one around them.
    """
    if isinstance(frames, (list, tuple)) and len(frames) == 1 and isinstance(frames[0], (list, tuple)):
        frames = frames[0]  # output_type="pil": a batch (list) of lists of images
    if isinstance(frames, (list, tuple)):
        if len(frames) == 0:
            raise ValueError("`frames` must contain at least one frame.")
        if all(_is_pil(f) for f in frames):  # PIL images
            sizes = {f.size for f in frames}
            if len(sizes) != 1:
                raise ValueError(f"All PIL frames must have the same size, got {sorted(sizes)}.")

            frames = np.stack([pil_to_rgb(f, "frames") for f in frames])
        else:
            raise ValueError(
                "A list of frames must contain only PIL images; pass arrays/tensors as one (F, H, W, 3) array."
            )
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().cpu()
        frames = frames.numpy() if frames.dtype == torch.uint8 else frames.float().numpy()
    if not isinstance(frames, np.ndarray):
        raise ValueError(
            f"`frames` must be a numpy array, torch tensor or list of PIL images, got {type(frames).__name__}."
        )
    frames = _channels_last(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"`frames` must have shape (frames, height, width, 3) or (frames, 3, height, width), "
                         f"got {frames.shape}.")
    if frames.shape[0] < 1:
        raise ValueError("`frames` must contain at least one frame.")
    if frames.dtype == np.uint8:
        return np.ascontiguousarray(frames)
    if not np.issubdtype(frames.dtype, np.floating):
        raise ValueError(f"`frames` must be uint8 or floating point in [0, 1], got dtype {frames.dtype}.")
    if not np.isfinite(frames).all():
        raise ValueError("`frames` contains NaN or infinite values.")
    return np.ascontiguousarray(np.round(np.clip(frames, 0.0, 1.0) * 255.0).astype(np.uint8))


def _audio_to_planar(audio: Any) -> np.ndarray:
    """Normalise audio to a ``float32`` array of shape ``(channels, samples)`` with 1 or 2 channels.

    Accepts 1-D (mono), ``(channels, samples)``, ``(samples, channels)`` or ``(1, channels, samples)``. An ambiguous
    2-D array whose both sides are <= 2 is read as ``(channels, samples)``. Values are clipped to ``[-1, 1]``.
    """
    if isinstance(audio, torch.Tensor):
        audio = audio.detach().cpu().float().numpy()
    if not isinstance(audio, np.ndarray):
        raise ValueError(f"`audio` must be a numpy array, torch tensor or None, got {type(audio).__name__}.")
    if not np.issubdtype(audio.dtype, np.floating):
        raise ValueError(f"`audio` must be floating point in [-1, 1], got dtype {audio.dtype}.")
    if audio.ndim == 3 and audio.shape[0] == 1:
        audio = audio[0]
    if audio.ndim == 1:
        audio = audio[None, :]
    if audio.ndim != 2:
        raise ValueError(f"`audio` must be (channels, samples) or (samples, channels), got shape {audio.shape}.")
    if audio.shape[0] > 2 and audio.shape[1] <= 2:
        audio = audio.T
    channels, samples = audio.shape
    if channels not in (1, 2):
        raise ValueError(f"`audio` must be mono or stereo (1 or 2 channels), got shape {audio.shape}.")
    if samples < 1:
        raise ValueError("`audio` must contain at least one sample.")
    if not np.isfinite(audio).all():
        raise ValueError("`audio` contains NaN or infinite values.")
    return np.ascontiguousarray(np.clip(audio, -1.0, 1.0), dtype=np.float32)


def fit_length(waveform: np.ndarray, samples: int) -> np.ndarray:
    """``(C, N)`` audio trimmed to ``samples`` or padded with silence (zeros) at the end to that length."""
    if waveform.shape[1] >= samples:
        return np.ascontiguousarray(waveform[:, :samples])
    return np.pad(waveform, ((0, 0), (0, samples - waveform.shape[1])))


def _number_in_range(name: str, value: Any, low: float, high: float, unit: str) -> float:
    """Return ``value`` as float, raising ``ValueError`` naming ``[low, high]`` unless it is a number in it."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating, Fraction)):
        raise ValueError(f"`{name}` must be a number in [{low:g}, {high:g}] {unit}, got {value!r}.")
    if not math.isfinite(float(value)) or not low <= float(value) <= high:
        raise ValueError(f"`{name}` must be in [{low:g}, {high:g}] {unit}, got {value!r}.")
    return float(value)


def check_fps(fps: Any) -> float:
    """``fps`` as float; ``ValueError`` unless it is a number in :data:`FPS_RANGE` (frames per second)."""
    return _number_in_range("fps", fps, *FPS_RANGE, "frames per second")


def check_sample_rate(sample_rate: Any) -> int:
    """``sample_rate`` as int; ``ValueError`` unless it is a whole number of Hz in :data:`SAMPLE_RATE_RANGE`."""
    sr = _number_in_range("sample_rate", sample_rate, *SAMPLE_RATE_RANGE, "Hz")
    if sr != int(sr):
        raise ValueError(f"`sample_rate` must be a whole number of Hz, got {sample_rate!r}.")
    return int(sr)


def _resample(audio: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Resample planar float audio from ``rate`` to ``target`` Hz with FFmpeg's resampler (via PyAV)."""
    layout = "stereo" if audio.shape[0] == 2 else "mono"
    frame = av.AudioFrame.from_ndarray(audio, format="fltp", layout=layout)
    frame.sample_rate = rate
    resampler = av.AudioResampler(format="fltp", layout=layout, rate=target)
    chunks = [f.to_ndarray() for f in resampler.resample(frame)]
    chunks += [f.to_ndarray() for f in resampler.resample(None)]
    return np.ascontiguousarray(np.concatenate(chunks, axis=1), dtype=np.float32)


def _encode(container: Any, stream: Any, frame: Any) -> None:
    """Encode ``frame`` (``None`` flushes) on ``stream`` and mux the resulting packets."""
    for packet in stream.encode(frame):
        container.mux(packet)


def _write_audio(container: Any, stream: Any, waveform: np.ndarray, rate: int, start: int, until: int) -> int:
    """Encode ``waveform[:, start:until]`` in AAC-sized chunks and return the next sample index to write.

    Only whole chunks are written unless ``until`` reaches the end of the waveform, so every frame but the last
    has the encoder's frame size.
    """
    total = waveform.shape[1]
    until = min(until, total)
    while start < until and (start + _AUDIO_CHUNK <= until or until == total):
        chunk = np.ascontiguousarray(waveform[:, start : start + _AUDIO_CHUNK])
        frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=stream.layout.name)
        frame.sample_rate, frame.pts = rate, start
        _encode(container, stream, frame)
        start += chunk.shape[1]
    return start


def export_to_video_with_audio(
    frames: Any,
    audio: Any,
    path: str | os.PathLike,
    fps: float,
    sample_rate: int | None = None,
    crf: int = 18,
    fit_audio_to_video: bool = True,
) -> str:
    """Write frames (and optional audio) to an MP4 with H.264 video (libx264, yuv420p) and AAC audio.

    The file is written to a temporary file in the destination folder and moved into place with ``os.replace``
    only once it is complete, so a failure never leaves a partial file at ``path`` (the temporary file is removed).

    Args:
        frames: ``(F, H, W, 3)`` or ``(F, 3, H, W)`` RGB frames as a NumPy array or torch tensor, either float in
            ``[0, 1]`` (clipped) or ``uint8``; or a list of equally sized PIL images - i.e. ``output.frames[i]``
            of any ``output_type`` (``np``, ``pt``, ``pil``); a batch of one is accepted too. ``H`` and ``W`` must
            be even (yuv420p).
        audio: ``None`` for a silent video, or a float waveform in ``[-1, 1]`` (clipped) as NumPy/torch with shape
            ``(channels, samples)``, ``(samples, channels)``, ``(samples,)`` or ``(1, channels, samples)``;
            1 or 2 channels.
        path: Destination file; its parent folder must exist. An existing file is replaced (keeping its
            permission bits); a new one gets the mode ``open()`` would give (``0o666`` minus the umask).
        fps: Frames per second in :data:`FPS_RANGE` (0.001 to 1000); fractional rates such as ``24000 / 1001``
            are kept as fractions.
        sample_rate: Audio sample rate in Hz, a whole number in :data:`SAMPLE_RATE_RANGE` (1000 to 384000),
            required when ``audio`` is given. Rates the AAC encoder does
            not support (e.g. 22000) are resampled to 48000 Hz; 24000 and 48000 are written unchanged.
        crf: x264 constant rate factor, an integer in ``[0, 51]`` (lower is better quality).
        fit_audio_to_video: ``True`` (default) pads the audio with silence or trims it to the video's duration,
            ``round(F / fps * sample_rate)`` samples, so the file's two streams end together (what players and
            editors expect); ``False`` writes the audio as given, longer or shorter than the video.

    Returns:
        ``path`` as a string.

    Raises:
        ValueError: On bad shapes or dtypes, odd width/height, ``fps``/``sample_rate`` outside their ranges (the
            message names the range), a bad ``crf`` or ``fit_audio_to_video``, or a missing parent folder.
    """
    video = _frames_to_uint8(frames)
    num_frames, height, width, _ = video.shape
    if height % 2 or width % 2:
        raise ValueError(
            f"H.264 with yuv420p chroma subsampling needs even width and height, got {width}x{height}; "
            "crop or pad the frames to even dimensions."
        )
    rate = Fraction(check_fps(fps)).limit_denominator(100000)
    if isinstance(crf, bool) or not isinstance(crf, (int, np.integer)) or not 0 <= crf <= 51:
        raise ValueError(f"`crf` must be an integer in [0, 51], got {crf!r}.")
    if not isinstance(fit_audio_to_video, bool):
        raise ValueError(f"`fit_audio_to_video` must be True or False, got {fit_audio_to_video!r}.")
    waveform = None
    if audio is not None:
        if sample_rate is None:
            raise ValueError("`sample_rate` is required when `audio` is given.")
        sample_rate = check_sample_rate(sample_rate)
        waveform = _audio_to_planar(audio)
        supported = av.codec.Codec("aac", "w").audio_rates
        if supported and sample_rate not in supported:
            waveform = _resample(waveform, sample_rate, _FALLBACK_AUDIO_RATE)
            sample_rate = _FALLBACK_AUDIO_RATE
        if fit_audio_to_video:
            waveform = fit_length(waveform, max(1, round(Fraction(num_frames) * sample_rate / rate)))
    elif sample_rate is not None:
        check_sample_rate(sample_rate)

    path = os.fspath(path)
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise ValueError(f"The parent folder of {path!r} does not exist: {parent!r}.")
    if os.path.isdir(path):
        raise ValueError(f"{path!r} is a folder, not a file path.")

    tmp_path = new_temp_file(path, parent)
    try:
        with av.open(tmp_path, mode="w", format="mp4") as container:
            v_stream = container.add_stream("libx264", rate=rate)
            v_stream.width, v_stream.height, v_stream.pix_fmt = width, height, "yuv420p"
            v_stream.options = {"crf": str(int(crf))}
            v_stream.codec_context.time_base = 1 / rate
            a_stream = None
            if waveform is not None:
                layout = "stereo" if waveform.shape[0] == 2 else "mono"
                a_stream = container.add_stream("aac", rate=sample_rate, layout=layout)
                a_stream.codec_context.time_base = Fraction(1, sample_rate)
            audio_written = 0
            for index in range(num_frames):
                frame = av.VideoFrame.from_ndarray(video[index], format="rgb24")
                frame.pts = index
                _encode(container, v_stream, frame)
                if a_stream is not None:  # interleave: audio up to the end of this video frame
                    until = math.ceil((index + 1) * sample_rate / rate)
                    audio_written = _write_audio(container, a_stream, waveform, sample_rate, audio_written, until)
            _encode(container, v_stream, None)
            if a_stream is not None:
                _write_audio(container, a_stream, waveform, sample_rate, audio_written, waveform.shape[1])
                _encode(container, a_stream, None)
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise
    return path
