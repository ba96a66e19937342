"""Uploaded files, checked before a job may use them: a size limit, the file types of each field, then the same
content check the command line runs on a file given by path (`cli.common.check_video_file` /
`check_image_file` / `check_conditioning_file`; sounds are read as `ltx2 generate --audio` reads them).
Every refusal is a `ValueError` naming the field and the file's name (not the server's temporary path)."""

from __future__ import annotations

import os

from ..cli.common import check_conditioning_file, check_image_file, check_video_file

VIDEO_TYPES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")
IMAGE_TYPES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
AUDIO_TYPES = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac", *VIDEO_TYPES)  # a clip's soundtrack too
CONDITIONING_TYPES = (".safetensors",)

#: upload kind -> (accepted suffixes, what it is)
KINDS = {"video": (VIDEO_TYPES, "a video clip"), "image": (IMAGE_TYPES, "an image"),
         "audio": (AUDIO_TYPES, "a sound (or a clip with sound)"),
         "conditioning": (CONDITIONING_TYPES, "a conditioning file (`ltx2 encode`)")}

DEFAULT_MAX_BYTES = 500 * 1000**2


def _check_audio(path: str) -> None:
    from ..media import load_audio

    try:
        waveform, rate = load_audio(path)
    except (ValueError, OSError) as err:
        raise ValueError(f"not a readable sound ({err})") from None
    if waveform.numel() == 0:
        raise ValueError("the sound has no samples")


def check_upload(path: str | None, kind: str, field: str, *, max_bytes: int = DEFAULT_MAX_BYTES) -> str | None:
    """`path` if the uploaded file fits `kind` ("video", "image", "audio", "conditioning"); `None` for no upload.
    Raises `ValueError` "FIELD NAME: reason" for a file too large, of another type, empty or unreadable."""
    if not path:
        return None
    suffixes, what = KINDS[kind]
    name = os.path.basename(path)
    if not name.lower().endswith(suffixes):
        raise ValueError(f"{field} {name}: not {what} (accepted: {', '.join(suffixes)})")
    if not os.path.isfile(path):
        raise ValueError(f"{field} {name}: the upload is gone; upload it again")
    size = os.path.getsize(path)
    if size == 0:
        raise ValueError(f"{field} {name}: the file is empty (0 bytes)")
    if size > max_bytes:
        raise ValueError(f"{field} {name}: {size / 1e6:.1f} MB, more than the {max_bytes / 1e6:.0f} MB upload limit")
    try:
        if kind == "video":
            check_video_file(path)
        elif kind == "image":
            check_image_file(path)
        elif kind == "audio":
            _check_audio(path)
        else:
            check_conditioning_file(path)
    except (ValueError, OSError) as err:
        reason = str(err).replace(path, "").strip(" :") or type(err).__name__
        raise ValueError(f"{field} {name}: {reason}") from None
    return path
