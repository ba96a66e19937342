"""Images as the official loader prepares them: decode, H.264 (CRF) recompression, resize + centre crop.

Follows `ltx_pipelines.utils.media_io` 1.0.0 (`decode_image`, `preprocess` / `encode_single_frame`,
`resize_and_center_crop`): LTX-2 was trained on video frames, so a still image is passed once through the
video codec (libx264 at CRF 33 by default) before it is encoded, which removes detail the model never saw and
makes the conditioned frame blend with the generated ones.
"""

from __future__ import annotations

import io
import math
import os

import numpy as np
import torch

__all__ = ["DEFAULT_IMAGE_CRF", "load_image", "pil_to_rgb", "crf_compress", "resize_center_crop"]

DEFAULT_IMAGE_CRF = 33
"""CRF of the official image loader (`ltx_pipelines.utils.constants.DEFAULT_IMAGE_CRF`; 0 disables it)."""


def pil_to_rgb(image, name: str = "image") -> np.ndarray:
    """A PIL image as a `(H, W, 3)` uint8 RGB array, each mode scaled by its true range.

    - "RGB" as is; "RGBA" keeps the first three channels (official `decode_image`, no alpha compositing);
    - 16-bit greyscale ("I;16", "I;16B", "I;16L", "I;16N": 16-bit PNG / TIFF) and "I" (32-bit integer, which
      holds 16-bit greyscale data in Pillow) map 0..65535 to 0..255 (`round(v / 257)`), where `convert("RGB")`
      would clip everything above 255 to white;
    - "F" (32-bit float greyscale) maps 0..1 to 0..255;
    - every other mode ("L", "LA", "1", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV", ...) through
      `PIL.Image.convert("RGB")` (8-bit modes, palettes, CMYK / Adobe-inverted CMYK JPEGs).

    Raises:
        ValueError (naming `name`): an "I" image with values outside 0..65535 or an "F" image with values
        outside [0, 1] or NaN (no range to map them from), or a mode Pillow cannot convert to RGB.
    """
    mode = image.mode
    if mode == "RGB":
        return np.asarray(image)
    if mode == "RGBA":
        return np.ascontiguousarray(np.asarray(image)[..., :3])
    if mode.startswith("I;16") or mode == "I":
        values = np.asarray(image).astype(np.float64)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise ValueError(f"{name}: a 32-bit integer image ({mode!r}) with values in [{values.min():g}, "
                             f"{values.max():g}]; only 16-bit data (0..65535) has a known range")
        grey = np.round(values / 257.0)
    elif mode == "F":
        values = np.asarray(image).astype(np.float64)
        if values.size and (not np.isfinite(values).all() or values.min() < 0 or values.max() > 1):
            raise ValueError(f"{name}: a floating-point image (mode 'F') must hold values in [0, 1]")
        grey = np.round(values * 255.0)
    else:
        try:
            return np.asarray(image.convert("RGB"))
        except ValueError as exc:  # e.g. a mode without an RGB conversion
            raise ValueError(f"{name}: cannot convert a {mode!r} image to RGB ({exc})") from exc
    return np.ascontiguousarray(np.repeat(grey.astype(np.uint8)[..., None], 3, axis=-1))


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file to a `(H, W, 3)` uint8 RGB array.

    As official `decode_image` (PIL, first three channels), except that other modes are converted to RGB by their
    true range (`pil_to_rgb`: 16-bit greyscale PNGs, palettes, CMYK JPEGs, ...) instead of failing or clipping.

    Raises:
        FileNotFoundError: a missing file.
        ValueError (naming the file): PIL cannot read it, its header claims more pixels than Pillow's
            decompression-bomb limit (`2 * PIL.Image.MAX_IMAGE_PIXELS`, e.g. a 100000x100000 PNG of a few
            bytes), or a mode `pil_to_rgb` refuses.
    """
    import PIL.Image

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image not found: {path}")
    try:
        with PIL.Image.open(path) as image:
            image.load()
            array = pil_to_rgb(image, path)
    except (PIL.UnidentifiedImageError, PIL.Image.DecompressionBombError, OSError, SyntaxError) as exc:
        raise ValueError(f"cannot read {path} as an image: {exc}") from exc
    return np.ascontiguousarray(array)


def _compress_frame(frame: np.ndarray, crf: int) -> np.ndarray:
    """One `(H, W, 3)` uint8 frame through libx264 and back (official `encode_single_frame` + `decode_single_frame`).

    Odd heights / widths are cropped to even (yuv420p), as officially.
    """
    import av

    height, width = frame.shape[0] // 2 * 2, frame.shape[1] // 2 * 2
    if height == 0 or width == 0:
        raise ValueError(f"an image must be at least 2x2 pixels for H.264 recompression, got {frame.shape[:2]}")
    frame = np.ascontiguousarray(frame[:height, :width])
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=1, options={"crf": str(crf), "preset": "veryfast"})
        stream.height, stream.width = height, width
        av_frame = av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(format="yuv420p")
        container.mux(stream.encode(av_frame))
        container.mux(stream.encode())
    buffer.seek(0)
    with av.open(buffer) as container:
        decoded = next(container.decode(video=0))
        return decoded.to_ndarray(format="rgb24")


def crf_compress(frames, crf: int = DEFAULT_IMAGE_CRF):
    """H.264-recompress each frame at `crf`, as the official image loader (`media_io.preprocess`) does.

    Args:
        frames: `(H, W, 3)` or `(F, H, W, 3)`, a numpy array or torch tensor, uint8 (0..255) or floating point
            in `[0, 1]` (quantised to uint8 for the codec, as any image file is).
        crf: libx264 constant rate factor, integer in `[0, 51]`; 0 returns `frames` unchanged (official).

    Returns:
        The same type, dtype, rank and device; each frame compressed on its own (single-frame MP4, preset
        `veryfast`, yuv420p). Odd heights / widths come back cropped to even, exactly as officially.

    Raises:
        ValueError: bad `crf`, shape or values (floats outside `[0, 1]`, NaN).
    """
    if isinstance(crf, bool) or not isinstance(crf, (int, np.integer)) or not 0 <= int(crf) <= 51:
        raise ValueError(f"crf must be an integer in [0, 51] (0 = no recompression), got {crf!r}")
    array, restore = _to_uint8(frames, "crf_compress")
    if int(crf) == 0:
        return frames
    single = array.ndim == 3
    batch = array[None] if single else array
    out = np.stack([_compress_frame(f, int(crf)) for f in batch])
    return restore(out[0] if single else out)


def _to_uint8(frames, name: str):
    """`frames` as a uint8 numpy array plus a function mapping a uint8 result back to the input's type."""
    is_tensor = isinstance(frames, torch.Tensor)
    if not is_tensor and not isinstance(frames, np.ndarray):
        raise ValueError(f"{name}: frames must be a numpy array or torch tensor, got {type(frames).__name__}")
    if frames.ndim not in (3, 4) or frames.shape[-1] != 3:
        raise ValueError(f"{name}: frames must be (H, W, 3) or (F, H, W, 3), got {tuple(frames.shape)}")
    if 0 in tuple(frames.shape):
        raise ValueError(f"{name}: frames are empty: shape {tuple(frames.shape)}")
    array = frames.detach().cpu().numpy() if is_tensor else frames
    if array.dtype == np.uint8:
        def restore(out):
            return torch.from_numpy(out).to(frames.device) if is_tensor else out
        return array, restore
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"{name}: frames must be uint8 or floating point in [0, 1], got dtype {array.dtype}")
    array = array.astype(np.float32)
    if not np.isfinite(array).all() or array.min() < 0.0 or array.max() > 1.0:
        raise ValueError(f"{name}: floating-point frames must be finite and in [0, 1]")
    quantised = np.round(array * 255.0).astype(np.uint8)

    def restore(out):
        out = out.astype(np.float32) / 255.0
        if is_tensor:
            return torch.from_numpy(out).to(device=frames.device, dtype=frames.dtype)
        return out.astype(frames.dtype)

    return quantised, restore


def resize_center_crop(frames, height: int, width: int) -> torch.Tensor:
    """Scale frames to cover `(height, width)` keeping the aspect ratio, then centre-crop (official loader).

    Official `resize_and_center_crop`: scale = max(height / H, width / W), new size = ceil(H * scale),
    ceil(W * scale), bilinear interpolation (`align_corners=False`, no antialiasing), crop offsets
    `(new - target) // 2`.

    Args:
        frames: `(H, W, 3)` or `(F, H, W, 3)` numpy array or tensor; uint8 values are converted to float32
            0..255, floats are kept on their own scale (the operation is linear).
        height, width: target size in pixels (positive integers).

    Returns:
        float32 tensor `(F, height, width, 3)` (F = 1 for a single image).
    """
    if not (isinstance(height, int) and isinstance(width, int)) or height < 1 or width < 1:
        raise ValueError(f"height and width must be positive integers, got {height!r} x {width!r}")
    if isinstance(frames, np.ndarray):  # a read-only array (e.g. a decoded image buffer) is copied, not aliased
        frames = np.ascontiguousarray(frames) if frames.flags.writeable else np.array(frames)
    t = torch.from_numpy(frames) if isinstance(frames, np.ndarray) else frames
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"resize_center_crop: frames must be a numpy array or tensor, got {type(frames).__name__}")
    if t.ndim == 3:
        t = t[None]
    if t.ndim != 4 or t.shape[-1] != 3 or 0 in tuple(t.shape):
        raise ValueError(f"resize_center_crop: frames must be (H, W, 3) or (F, H, W, 3), got {tuple(frames.shape)}")
    t = t.permute(0, 3, 1, 2).to(torch.float32)
    src_h, src_w = t.shape[-2:]
    scale = max(height / src_h, width / src_w)
    new_h, new_w = math.ceil(src_h * scale), math.ceil(src_w * scale)
    t = torch.nn.functional.interpolate(t, size=(new_h, new_w), mode="bilinear", align_corners=False)
    top, left = (new_h - height) // 2, (new_w - width) // 2
    t = t[:, :, top : top + height, left : left + width]
    return t.permute(0, 2, 3, 1).contiguous()
