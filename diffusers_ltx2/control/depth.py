"""Depth control maps from a local transformers depth-estimation model (Depth-Anything, DPT, ...)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["DepthPreprocessor"]


class DepthPreprocessor:
    """Control preprocessor: `(F, 3, H, W)` frames in `[0, 1]` -> grayscale depth frames (3 channels, near = bright).

    Args:
        model_path: local folder of a transformers depth-estimation model (`AutoModelForDepthEstimation` +
            its image processor), e.g. a downloaded Depth-Anything-V2 checkpoint. Nothing is downloaded.
        device: where the model runs (default: CPU).
        batch_size: frames per model call.

    The map is normalized to `[0, 1]` over the whole clip (not per frame), so brightness is stable in time.
    Models predicting metric depth (far = large) are inverted by `invert=True`.
    """

    name = "depth"

    def __init__(self, model_path: str, device: str | torch.device = "cpu", batch_size: int = 8,
                 invert: bool = False):
        from transformers import AutoImageProcessor, AutoModelForDepthEstimation

        self.processor = AutoImageProcessor.from_pretrained(model_path, local_files_only=True)
        self.model = AutoModelForDepthEstimation.from_pretrained(model_path, local_files_only=True)
        self.model.to(device).eval()
        self.device, self.batch_size, self.invert = torch.device(device), batch_size, invert

    @torch.no_grad()
    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        if frames.ndim != 4 or frames.shape[1] != 3:
            raise ValueError(f"DepthPreprocessor expects (F, 3, H, W) frames, got {tuple(frames.shape)}")
        h, w = frames.shape[-2:]
        maps = []
        for chunk in frames.split(self.batch_size):
            images = [(f.permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).numpy() for f in chunk]
            inputs = self.processor(images=images, return_tensors="pt").to(self.device)
            depth = self.model(**inputs).predicted_depth.float()
            if depth.ndim == 3:
                depth = depth.unsqueeze(1)
            maps.append(F.interpolate(depth, size=(h, w), mode="bilinear", align_corners=False).cpu())
        depth = torch.cat(maps)
        lo, hi = depth.min(), depth.max()
        depth = (depth - lo) / (hi - lo).clamp_min(1e-8)
        if self.invert:
            depth = 1 - depth
        return depth.expand(-1, 3, -1, -1).contiguous()
