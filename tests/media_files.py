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


def write_float_wav(path, wave: np.ndarray, sample_rate: int, codec: str = "pcm_f32le") -> str:
    """Write `(C, N)` float samples (NaN / inf kept bit for bit) as a 32- or 64-bit float WAV with PyAV."""
    path = str(path)
    fmt = {"pcm_f32le": ("flt", np.float32), "pcm_f64le": ("dbl", np.float64)}[codec]
    layout = LAYOUTS[wave.shape[0]]
    with av.open(path, "w", format="wav") as container:
        stream = container.add_stream(codec, rate=sample_rate, layout=layout)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(wave.T.reshape(1, -1), dtype=fmt[1]), format=fmt[0],
                                           layout=layout)
        frame.sample_rate, frame.pts = sample_rate, 0
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def with_wav_rate(src, dst, sample_rate: int) -> str:
    """Copy the PCM WAV `src` to `dst` with its header's sample rate (and byte rate) set to `sample_rate`: the
    samples are unchanged, only what the container claims."""
    data = bytearray(open(src, "rb").read())
    assert data[:4] == b"RIFF" and data[8:16] == b"WAVEfmt "
    channels, bits = int.from_bytes(data[22:24], "little"), int.from_bytes(data[34:36], "little")
    data[24:28] = sample_rate.to_bytes(4, "little")
    data[28:32] = (sample_rate * channels * bits // 8 % 2 ** 32).to_bytes(4, "little")
    open(dst, "wb").write(bytes(data))
    return str(dst)


def write_image_pyav(path, frame: np.ndarray, pix_fmt: str) -> str:
    """Write one `(H, W, 3)` uint8 RGB frame as a PNG in FFmpeg's `pix_fmt` (e.g. gray16be, rgba64be)."""
    path = str(path)
    with av.open(path, "w", format="image2") as container:
        stream = container.add_stream("png", rate=1)
        stream.height, stream.width, stream.pix_fmt = frame.shape[0], frame.shape[1], pix_fmt
        picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24").reformat(format=pix_fmt)
        for packet in stream.encode(picture):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def png_header_only(path, width: int, height: int) -> str:
    """A valid-looking PNG of a few dozen bytes whose IHDR claims `width x height` RGB pixels (no real data)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    open(path, "wb").write(png)
    return str(path)
