"""media.image against the official image loader (ltx-pipelines 1.0.0 `media_io`), on real image files.

`crf_compress` must give the official `preprocess` bytes exactly (same libx264 settings), and the whole path
load -> recompress -> resize/crop -> [-1, 1] must equal `load_image_conditioning` exactly.
"""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch

import ltx_reference  # noqa: F401  (stubs torchaudio before ltx-pipelines imports ltx-core)
from ltx_pipelines.utils import media_io as official

from diffusers_ltx2.media import DEFAULT_IMAGE_CRF, crf_compress, load_image, resize_center_crop


def _photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A photo-like RGB image: smooth gradients, hard-edged shapes, fine texture and sensor noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    image = np.stack([0.5 + 0.4 * np.sin(6 * x + 2 * y), 0.4 + 0.3 * np.cos(5 * y), 0.3 + 0.5 * x * y], -1)
    image[(x - 0.5) ** 2 + (y - 0.4) ** 2 < 0.04] = (0.9, 0.2, 0.1)
    image[int(0.6 * height):int(0.8 * height), int(0.1 * width):int(0.4 * width)] = (0.1, 0.3, 0.8)
    image += 0.08 * (np.sin(80 * x) * np.sin(70 * y))[..., None]
    image += rng.normal(0, 0.03, image.shape)
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8)


@pytest.fixture(params=[(96, 128, "png"), (75, 101, "jpg"), (120, 64, "png")], ids=["png", "odd-jpg", "portrait"])
def image_file(request, tmp_path):
    height, width, ext = request.param
    path = tmp_path / f"photo.{ext}"
    PIL.Image.fromarray(_photo(height, width)).save(path, quality=92)
    return str(path)


@pytest.mark.parametrize("crf", [DEFAULT_IMAGE_CRF, 18, 0])
def test_crf_compress_equals_official_preprocess(image_file, crf):
    image = load_image(image_file)
    assert np.array_equal(image, official.decode_image(image_file))
    ours = crf_compress(image, crf)
    theirs = official.preprocess(official.decode_image(image_file), crf=crf)
    assert ours.dtype == np.uint8 and ours.shape == theirs.shape
    assert np.array_equal(ours, theirs)
    if crf:
        assert ours.shape == (image.shape[0] // 2 * 2, image.shape[1] // 2 * 2, 3)   # odd sizes cropped to even
        assert np.abs(ours.astype(int) - image[: ours.shape[0], : ours.shape[1]]).mean() > 0.5  # it did compress


@pytest.mark.parametrize("height,width", [(64, 96), (96, 64), (32, 32)])
def test_whole_image_path_equals_official_load_image_conditioning(image_file, height, width):
    theirs = official.load_image_conditioning(image_file, height, width, torch.float32, torch.device("cpu"))
    ours = resize_center_crop(crf_compress(load_image(image_file)), height, width) / 127.5 - 1.0
    assert theirs.shape == (1, 3, 1, height, width)
    assert torch.equal(ours.permute(3, 0, 1, 2)[None], theirs)


@pytest.mark.parametrize("src,dst", [((75, 101), (64, 96)), ((120, 64), (64, 64)), ((33, 47), (96, 128)),
                                     ((100, 100), (37, 61))])
def test_resize_center_crop_equals_official_on_clips(src, dst):
    frames = torch.from_numpy(np.stack([_photo(*src, seed=s) for s in range(3)])).float()
    theirs = official.resize_and_center_crop(frames, *dst)  # (1, C, F, H, W)
    ours = resize_center_crop(frames, *dst)
    assert ours.shape == (3, *dst, 3)
    assert torch.equal(ours.permute(3, 0, 1, 2)[None], theirs)
    # linear: [0, 1] floats give the same picture
    assert torch.allclose(resize_center_crop(frames / 255, *dst) * 255, ours, atol=1e-3)


def test_crf_compress_keeps_type_dtype_and_device():
    image = _photo(64, 64)
    as_uint8 = crf_compress(image)
    as_float = crf_compress(torch.from_numpy(image).float() / 255)
    assert isinstance(as_float, torch.Tensor) and as_float.dtype == torch.float32
    assert torch.equal((as_float * 255).round().to(torch.uint8), torch.from_numpy(as_uint8))
    clip = np.stack([image, image[::-1].copy()])
    both = crf_compress(clip)
    assert both.shape == clip.shape and np.array_equal(both[0], as_uint8)   # frames compressed one by one
    as_f64 = crf_compress(image.astype(np.float64) / 255)
    assert as_f64.dtype == np.float64
    assert crf_compress(image, 0) is image


@pytest.mark.parametrize("frames,crf,message", [
    (np.zeros((8, 8, 3), np.uint8), 52, r"crf must be an integer in \[0, 51\]"),
    (np.zeros((8, 8, 3), np.uint8), 3.5, "crf must be an integer"),
    (np.zeros((8, 8), np.uint8), 33, r"\(H, W, 3\) or \(F, H, W, 3\)"),
    (np.full((8, 8, 3), 2.0), 33, r"in \[0, 1\]"),
    (np.zeros((8, 8, 3), np.int32), 33, "uint8 or floating point"),
    (np.zeros((1, 8, 3), np.uint8), 33, "at least 2x2"),
    ("photo.png", 33, "numpy array or torch tensor"),
])
def test_crf_compress_rejects_bad_input(frames, crf, message):
    with pytest.raises(ValueError, match=message):
        crf_compress(frames, crf)


def test_bad_image_files_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.png"):
        load_image(tmp_path / "nope.png")
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    with pytest.raises(ValueError, match="broken.png"):
        load_image(bad)
    grey = tmp_path / "grey.png"
    PIL.Image.fromarray(np.full((10, 12), 77, np.uint8)).save(grey)
    assert np.array_equal(load_image(grey), np.full((10, 12, 3), 77, np.uint8))
    with pytest.raises(ValueError, match="positive integers"):
        resize_center_crop(np.zeros((4, 4, 3)), 0, 4)
