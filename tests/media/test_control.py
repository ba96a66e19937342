"""Control preprocessors and control-video I/O: Canny in plain torch, depth / pose adapters over tiny local
transformers models, skeleton rendering, PyAV reading."""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch

from diffusers_ltx2.control import CannyPreprocessor, canny_edges, get_preprocessor, read_video, to_frames
from diffusers_ltx2.control.pose import draw_skeletons


def _square(size=64, lo=16, hi=48) -> torch.Tensor:
    img = torch.zeros(1, 3, size, size)
    img[..., lo:hi, lo:hi] = 1.0
    return img


def test_canny_finds_the_square_outline_only():
    edges = canny_edges(_square())[0, 0]
    ring = torch.zeros(64, 64, dtype=torch.bool)
    ring[14:50, 14:50] = True
    ring[18:46, 18:46] = False  # edges may sit within 2 px of the true boundary (blur + Sobel)
    assert edges.sum() > 4 * 28  # a closed outline: at least the four sides
    assert edges[~ring].sum() == 0  # nothing inside, nothing in the background
    # each side is one pixel thick after non-maximum suppression
    assert edges[32].sum() == 2 and edges[:, 32].sum() == 2


def test_canny_flat_image_and_thresholds():
    assert canny_edges(torch.full((2, 3, 32, 32), 0.5)).sum() == 0
    faint = _square() * 0.05  # gradient below the low threshold
    assert canny_edges(faint).sum() == 0
    assert canny_edges(faint, low_threshold=0.005, high_threshold=0.01).sum() > 0
    with pytest.raises(ValueError, match="low_threshold"):
        canny_edges(_square(), 0.5, 0.1)
    with pytest.raises(ValueError, match="expects"):
        canny_edges(torch.rand(3, 32, 32))
    out = CannyPreprocessor()(_square())
    assert out.shape == (1, 3, 64, 64) and torch.equal(out[:, 0], out[:, 2])


def test_read_video_and_frame_conversions(tmp_path):
    path = tmp_path / "v.mp4"
    frames = np.zeros((5, 32, 48, 3), np.uint8)
    frames[:, :, :24] = 200
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=24)
        stream.height, stream.width, stream.pix_fmt = 32, 48, "yuv420p"
        for f in frames:
            for p in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(p)
        for p in stream.encode():
            out.mux(p)
    video = read_video(path)
    assert video.shape == (5, 3, 32, 48)
    assert abs(video[:, :, :, :20].mean().item() - 200 / 255) < 0.03 and video[:, :, :, 28:].mean() < 0.03
    assert read_video(path, max_frames=2).shape[0] == 2
    assert torch.equal(to_frames(str(path)), video)
    assert to_frames(frames).shape == (5, 3, 32, 48)
    with pytest.raises(FileNotFoundError):
        read_video(tmp_path / "missing.mp4")
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(ValueError, match="cannot decode|no video|no decodable"):
        read_video(bad)
    with pytest.raises(ValueError, match="control_video must be"):
        to_frames(42)


def test_skeleton_rendering():
    kp = np.array([[10 + 2 * i, 10 + 3 * i] for i in range(17)], np.float32)
    scores = np.ones(17)
    scores[9] = 0.0  # left wrist missing: the forearm (7, 9) is not drawn
    img = draw_skeletons(64, 64, [(kp, scores)], threshold=0.3)
    assert img.shape == (3, 64, 64) and img.max() <= 1 and (img.sum(0) > 0).any()
    assert draw_skeletons(64, 64, []).sum() == 0


@pytest.mark.slow
def test_depth_and_pose_adapters_with_tiny_local_models(tmp_path):
    from transformers import (DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config,
                              DPTImageProcessor, VitPoseBackboneConfig, VitPoseConfig, VitPoseForPoseEstimation,
                              VitPoseImageProcessor)

    torch.manual_seed(0)
    depth_dir, pose_dir = tmp_path / "depth", tmp_path / "pose"
    backbone = Dinov2Config(hidden_size=16, num_hidden_layers=4, num_attention_heads=2, intermediate_size=32,
                            image_size=28, patch_size=14, out_features=["stage1", "stage2", "stage3", "stage4"],
                            reshape_hidden_states=False)
    DepthAnythingForDepthEstimation(DepthAnythingConfig(
        backbone_config=backbone, reassemble_hidden_size=16, neck_hidden_sizes=[8, 8, 16, 16],
        fusion_hidden_size=8, head_hidden_size=4, patch_size=14)).save_pretrained(depth_dir)
    DPTImageProcessor(size={"height": 28, "width": 28}, keep_aspect_ratio=False, ensure_multiple_of=14,
                      do_pad=False).save_pretrained(depth_dir)
    pose_backbone = VitPoseBackboneConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, mlp_ratio=2,
                                          image_size=[64, 48], patch_size=[16, 16], out_indices=[1])
    VitPoseForPoseEstimation(VitPoseConfig(backbone_config=pose_backbone, num_labels=17)).save_pretrained(pose_dir)
    VitPoseImageProcessor(size={"height": 64, "width": 48}).save_pretrained(pose_dir)

    frames = torch.rand(3, 3, 40, 48)
    depth = get_preprocessor("depth", str(depth_dir))(frames)
    assert depth.shape == frames.shape and depth.min() == 0 and depth.max() == 1  # normalized over the clip
    pose = get_preprocessor("pose", str(pose_dir), threshold=0.0)(frames)
    assert pose.shape == frames.shape and (pose.sum(1) > 0).any() and pose.max() <= 1
    with pytest.raises(ValueError, match="local model path"):
        get_preprocessor("depth")
    with pytest.raises(ValueError, match="unknown preprocessor"):
        get_preprocessor("hed")


def test_reference_frames_stay_8_bit_until_fitted():
    """A `ReferenceVideo` of 8-bit frames keeps them uint8 (a quarter of float32's memory: a whole long clip's
    control video is held for all its windows); `fit` converts only the frames it keeps, to the same float32 values
    as a float source gives."""
    import numpy as np
    import torch

    from diffusers_ltx2.conditioning import ReferenceVideo
    from diffusers_ltx2.conditioning.base import ClipGeometry

    frames = np.random.default_rng(0).integers(0, 256, (33, 64, 96, 3), dtype=np.uint8)
    held = ReferenceVideo(frames, downscale_factor=2)
    as_float = ReferenceVideo(torch.from_numpy(frames).float() / 255.0, downscale_factor=2)
    assert held.frames.dtype == torch.uint8 and held.frames.shape == (33, 3, 64, 96)
    g = ClipGeometry(batch_size=1, num_frames=17, height=128, width=192, frame_rate=24.0)
    fitted = held.fit(g)
    assert fitted.dtype == torch.float32 and fitted.shape == (17, 3, 64, 96)
    assert torch.equal(fitted, as_float.fit(g))
