"""Pose control maps: a local transformers pose model (ViTPose) and a COCO-17 skeleton renderer."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

__all__ = ["PosePreprocessor", "draw_skeletons", "COCO_LIMBS"]

#: COCO-17 keypoint pairs drawn as limbs (nose/eyes/ears, arms, torso, legs).
COCO_LIMBS = ((0, 1), (0, 2), (1, 3), (2, 4), (5, 6), (5, 7), (7, 9), (6, 8), (8, 10), (5, 11), (6, 12),
              (11, 12), (11, 13), (13, 15), (12, 14), (14, 16))


def _limb_colors(n: int) -> np.ndarray:
    hues = np.linspace(0, 1, n, endpoint=False)
    rgb = np.stack([np.abs(hues * 6 - 3) - 1, 2 - np.abs(hues * 6 - 2), 2 - np.abs(hues * 6 - 4)], -1)
    return np.clip(rgb, 0, 1)


def draw_skeletons(height: int, width: int, people, threshold: float = 0.3, thickness: int | None = None):
    """Render people (each `(17, 2)` xy keypoints plus `(17,)` scores) as colored limbs on black: `(3, H, W)`.

    Limbs whose two keypoints both score above `threshold` are drawn (one color per limb, OpenPose style).
    """
    canvas = np.zeros((height, width, 3), np.float32)
    radius = thickness if thickness is not None else max(1, round(min(height, width) / 128))
    yy, xx = np.mgrid[0:height, 0:width]
    colors = _limb_colors(len(COCO_LIMBS))
    for keypoints, scores in people:
        kp, sc = np.asarray(keypoints, np.float32), np.asarray(scores, np.float32)
        for (i, j), color in zip(COCO_LIMBS, colors):
            if sc[i] < threshold or sc[j] < threshold:
                continue
            (x0, y0), (x1, y1) = kp[i], kp[j]
            dx, dy = x1 - x0, y1 - y0
            t = np.clip(((xx - x0) * dx + (yy - y0) * dy) / max(dx * dx + dy * dy, 1e-6), 0, 1)
            dist2 = (xx - (x0 + t * dx)) ** 2 + (yy - (y0 + t * dy)) ** 2
            canvas[dist2 <= radius * radius] = color
    return torch.from_numpy(canvas).permute(2, 0, 1)


class PosePreprocessor:
    """Control preprocessor: `(F, 3, H, W)` frames in `[0, 1]` -> rendered COCO skeletons on black.

    Args:
        model_path: local folder of a transformers ViTPose model (`VitPoseForPoseEstimation` + image processor).
        person_boxes: optional callable `frame (3, H, W) -> [[x, y, w, h], ...]` (a person detector); default: one
            person filling the frame.
        device: where the model runs; threshold: minimum keypoint score drawn.
    """

    name = "pose"

    def __init__(self, model_path: str, person_boxes: Callable | None = None, device: str | torch.device = "cpu",
                 threshold: float = 0.3):
        from transformers import AutoImageProcessor, VitPoseForPoseEstimation

        self.processor = AutoImageProcessor.from_pretrained(model_path, local_files_only=True)
        self.model = VitPoseForPoseEstimation.from_pretrained(model_path, local_files_only=True).to(device).eval()
        self.person_boxes, self.device, self.threshold = person_boxes, torch.device(device), threshold

    @torch.no_grad()
    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        if frames.ndim != 4 or frames.shape[1] != 3:
            raise ValueError(f"PosePreprocessor expects (F, 3, H, W) frames, got {tuple(frames.shape)}")
        h, w = frames.shape[-2:]
        out = []
        for frame in frames:
            boxes = self.person_boxes(frame) if self.person_boxes is not None else [[0.0, 0.0, float(w), float(h)]]
            if len(boxes) == 0:
                out.append(torch.zeros(3, h, w))
                continue
            image = (frame.permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
            inputs = self.processor(images=[image], boxes=[boxes], return_tensors="pt").to(self.device)
            outputs = self.model(**inputs)
            results = self.processor.post_process_pose_estimation(outputs, boxes=[boxes])[0]
            people = [(r["keypoints"].cpu().numpy(), r["scores"].cpu().numpy()) for r in results]
            out.append(draw_skeletons(h, w, people, self.threshold))
        return torch.stack(out)
