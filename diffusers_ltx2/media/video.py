"""Video files in: decode frames (PyAV) with their frame rate, and read a clip's metadata without decoding it all.

Follows official `ltx_pipelines.utils.media_io` (`decode_video_from_file`, `get_videostream_metadata`): frames
come out as RGB in decode order. `diffusers_ltx2.control.video.read_video` is built on `load_video`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os

import numpy as np
import torch

__all__ = ["VideoInfo", "probe_video", "iter_video_frames", "load_video"]


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    """What `probe_video` reads from a file: frame rate (frames per second), frame count, frame size in pixels,
    whether an audio stream is present and the video stream's duration in seconds (`num_frames / fps`)."""

    fps: float
    num_frames: int
    height: int
    width: int
    has_audio: bool

    @property
    def duration_s(self) -> float:
        return self.num_frames / self.fps


def _open(path, what: str = "video"):
    import av

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} file not found: {path}")
    try:
        return path, av.open(path)
    except (av.error.FFmpegError, UnicodeDecodeError) as exc:  # type: ignore[attr-defined]
        raise ValueError(f"cannot decode {path} as a {what} (FFmpeg: {exc})") from exc


def _video_stream(container, path: str):
    if not container.streams.video:
        raise ValueError(f"{path} has no video stream")
    return container.streams.video[0]


def _stream_fps(stream, path: str) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate or float(rate) <= 0:
        raise ValueError(f"{path}: the video stream has no frame rate")
    return float(rate)


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Frame rate, frame count, size and audio presence of a video file (counts frames by decoding when the
    container does not say, as official `get_videostream_metadata`).

    Raises `FileNotFoundError` (missing file) or `ValueError` naming the file (not a video, no video stream).
    """
    import av

    path, container = _open(path)
    with container:
        stream = _video_stream(container, path)
        try:
            fps = _stream_fps(stream, path)
            num_frames = stream.frames or sum(1 for _ in container.decode(stream))
        except av.error.FFmpegError as exc:  # type: ignore[attr-defined]
            raise ValueError(f"cannot decode {path} as a video: {exc}") from exc
        return VideoInfo(fps=fps, num_frames=int(num_frames), height=stream.codec_context.height,
                         width=stream.codec_context.width, has_audio=bool(container.streams.audio))


def iter_video_frames(path: str | os.PathLike):
    """`(fps, frames)`: the stream's frame rate and a generator of `(H, W, 3)` uint8 RGB frames in decode order.

    The file is opened (and checked) at once; it is closed when the generator is exhausted or closed.
    Raises like `load_video`.
    """
    import av

    path, container = _open(path)
    try:
        stream = _video_stream(container, path)
        fps = _stream_fps(stream, path)
    except BaseException:
        container.close()
        raise

    def frames():
        with container:
            try:
                for frame in container.decode(stream):
                    yield frame.to_ndarray(format="rgb24")
            except av.error.FFmpegError as exc:  # type: ignore[attr-defined]
                raise ValueError(f"cannot decode {path} as a video (FFmpeg: {exc})") from exc

    return fps, frames()


def load_video(path: str | os.PathLike, *, start_frame: int = 0, num_frames: int | None = None,
               ) -> tuple[torch.Tensor, float]:
    """Decode frames `[start_frame, start_frame + num_frames)` of a video file.

    Args:
        path: any file PyAV (FFmpeg) decodes with a video stream (MP4, MOV, MKV, WebM, GIF, ...).
        start_frame: index of the first frame to return (0-based, in decode order).
        num_frames: how many frames; `None` reads to the end.

    Returns:
        `(frames, fps)`: float32 tensor `(F, H, W, 3)`, RGB in `[0, 1]`, and the stream's frame rate.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError (naming the file): not decodable / no video stream, `start_frame` past the end, fewer than
            `num_frames` frames available from `start_frame`, or bad arguments.
    """
    if isinstance(start_frame, bool) or not isinstance(start_frame, int) or start_frame < 0:
        raise ValueError(f"start_frame must be a non-negative integer, got {start_frame!r}")
    if num_frames is not None and (isinstance(num_frames, bool) or not isinstance(num_frames, int)
                                   or num_frames < 1):
        raise ValueError(f"num_frames must be a positive integer or None, got {num_frames!r}")
    path = os.fspath(path)
    fps, decoded = iter_video_frames(path)
    stop = None if num_frames is None else start_frame + num_frames
    seen = 0
    with contextlib.closing(decoded):
        frames = []
        for frame in decoded:
            seen += 1
            if seen > start_frame:
                frames.append(frame)
            if stop is not None and seen >= stop:
                break
    if not frames:
        if seen == 0:
            raise ValueError(f"{path} contains no decodable video frames")
        raise ValueError(f"{path} has {seen} frames: start_frame {start_frame} is past the end")
    if num_frames is not None and len(frames) < num_frames:
        raise ValueError(f"{path} has {seen} frames: {num_frames} frames from frame {start_frame} were asked "
                         f"for, only {len(frames)} are there")
    return torch.from_numpy(np.stack(frames)).float() / 255.0, fps
