"""Real media files for the media / CLI tests, written with PyAV directly (not with the code under test)."""

from __future__ import annotations

import av
import numpy as np

# (container format, codec, sample format the encoder takes)
AUDIO_CODECS = {
    ".wav": ("wav", "pcm_s16le", "s16"),
    ".flac": ("flac", "flac", "s16"),
    ".mp3": ("mp3", "libmp3lame", "fltp"),
    ".m4a": ("ipod", "aac", "fltp"),
}


def tone(seconds: float, sample_rate: int, freqs=(440.0, 660.0), amplitude: float = 0.5) -> np.ndarray:
    """`(len(freqs), N)` float32 sines, one frequency per channel."""
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    return (amplitude * np.stack([np.sin(2 * np.pi * f * t) for f in freqs])).astype(np.float32)


LAYOUTS = {1: "mono", 2: "stereo", 6: "5.1"}


def _encode_audio(container, stream, wave: np.ndarray, sample_rate: int, sample_fmt: str) -> None:
    layout = LAYOUTS[wave.shape[0]]
    chunk = stream.codec_context.frame_size or 1024
    for start in range(0, wave.shape[1], chunk):
        part = wave[:, start : start + chunk]
        if sample_fmt == "s16":
            data = (np.clip(part, -1, 1) * 32767).round().astype(np.int16).T.reshape(1, -1)
        else:
            data = np.ascontiguousarray(part, dtype=np.float32)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format=sample_fmt, layout=layout)
        frame.sample_rate, frame.pts = sample_rate, start
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)


def write_audio(path, wave: np.ndarray, sample_rate: int) -> str:
    """Write `(C, N)` float audio (C = 1, 2 or 6) with the codec of the path's extension."""
    path = str(path)
    fmt, codec, sample_fmt = AUDIO_CODECS[path[path.rindex("."):]]
    layout = LAYOUTS[wave.shape[0]]
    with av.open(path, "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=sample_rate, layout=layout)
        _encode_audio(container, stream, wave, sample_rate, sample_fmt)
    return path


def frame_colours(num_frames: int, height: int, width: int) -> np.ndarray:
    """`(F, H, W, 3)` uint8 frames, each a flat colour that identifies its index (red = 8 * i)."""
    frames = np.zeros((num_frames, height, width, 3), np.uint8)
    for i in range(num_frames):
        frames[i, ..., 0] = (8 * i) % 256
        frames[i, ..., 1] = 128
        frames[i, ..., 2] = 255 - (8 * i) % 256
    return frames


def write_video(path, frames: np.ndarray, fps: int = 24, audio: np.ndarray | None = None,
                sample_rate: int = 48000, crf: int = 0) -> str:
    """Write `(F, H, W, 3)` uint8 frames as H.264 (yuv444 lossless by default) with optional AAC audio."""
    path = str(path)
    with av.open(path, "w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"crf": str(crf)})
        stream.height, stream.width = frames.shape[1], frames.shape[2]
        stream.pix_fmt = "yuv444p" if crf == 0 else "yuv420p"
        audio_stream = None
        if audio is not None:
            audio_stream = container.add_stream("aac", rate=sample_rate,
                                                layout={1: "mono", 2: "stereo"}[audio.shape[0]])
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        if audio_stream is not None:
            _encode_audio(container, audio_stream, audio, sample_rate, "fltp")
    return path
