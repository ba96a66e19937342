"""Canny edge maps in plain torch (no OpenCV, no model): the control signal of canny / union IC-LoRAs."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["canny_edges", "CannyPreprocessor"]


def _gaussian_kernel(sigma: float) -> torch.Tensor:
    radius = max(1, int(math.ceil(3 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-(x**2) / (2 * sigma**2))
    return k / k.sum()


@torch.no_grad()
def canny_edges(frames: torch.Tensor, low_threshold: float = 0.1, high_threshold: float = 0.2,
                sigma: float = 1.0, max_hysteresis_steps: int = 256) -> torch.Tensor:
    """Canny edges of `(F, 3, H, W)` (or `(F, 1, H, W)`) images in `[0, 1]`; returns `(F, 1, H, W)` in {0, 1}.

    Steps: luma -> Gaussian blur (`sigma`; 0 disables) -> Sobel gradients (normalized so a unit step edge
    has magnitude ~1) -> non-maximum suppression along the quantized gradient direction -> hysteresis: pixels
    above `high_threshold` are edges, pixels above `low_threshold` are edges when connected to one.
    """
    if frames.ndim != 4 or frames.shape[1] not in (1, 3):
        raise ValueError(f"canny_edges expects (F, 3, H, W) or (F, 1, H, W) images, got {tuple(frames.shape)}")
    if not 0 <= low_threshold <= high_threshold:
        raise ValueError(f"need 0 <= low_threshold <= high_threshold, got {low_threshold}, {high_threshold}")
    x = frames.float()
    if x.shape[1] == 3:
        x = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
    if sigma > 0:
        k = _gaussian_kernel(sigma).to(x.device)
        r = k.numel() // 2
        x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
        x = F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1))
    sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=x.device) / 4.0
    padded = F.pad(x, (1, 1, 1, 1), mode="replicate")
    gx = F.conv2d(padded, sobel.view(1, 1, 3, 3))
    gy = F.conv2d(padded, sobel.t().contiguous().view(1, 1, 3, 3))
    mag = torch.sqrt(gx**2 + gy**2)

    # Non-maximum suppression: keep a pixel if it is a maximum along its gradient direction; ties (a step edge
    # between two pixels has equal magnitude on both) go to one side so outlines stay one pixel thick.
    angle = torch.rad2deg(torch.atan2(gy, gx)) % 180.0
    sector = (((angle + 22.5) // 45.0) % 4).long()  # 0: horizontal gradient, 1: 45 deg, 2: vertical, 3: 135 deg
    m = F.pad(mag, (1, 1, 1, 1))
    h, w = mag.shape[-2:]

    def shifted(dy: int, dx: int) -> torch.Tensor:
        return m[..., 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]

    offsets = [((0, 1), (0, -1)), ((1, 1), (-1, -1)), ((1, 0), (-1, 0)), ((1, -1), (-1, 1))]
    keep = torch.zeros_like(mag, dtype=torch.bool)
    for s, (a, b) in enumerate(offsets):
        keep |= (sector == s) & (mag > shifted(*a)) & (mag >= shifted(*b))
    thin = torch.where(keep, mag, torch.zeros_like(mag))

    strong = thin >= high_threshold
    weak = thin >= low_threshold
    edges = strong
    for _ in range(max_hysteresis_steps):
        grown = (F.max_pool2d(edges.float(), 3, stride=1, padding=1) > 0) & weak
        if torch.equal(grown, edges):
            break
        edges = grown
    return edges.float()


class CannyPreprocessor:
    """Control preprocessor: `(F, 3, H, W)` frames in `[0, 1]` -> white-on-black Canny edge frames (3 channels).

    Args:
        low_threshold, high_threshold: hysteresis thresholds on the normalized gradient magnitude.
        sigma: Gaussian blur before the gradients.
    """

    name = "canny"

    def __init__(self, low_threshold: float = 0.1, high_threshold: float = 0.2, sigma: float = 1.0):
        self.low_threshold, self.high_threshold, self.sigma = low_threshold, high_threshold, sigma

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        edges = canny_edges(frames, self.low_threshold, self.high_threshold, self.sigma)
        return edges.expand(-1, 3, -1, -1).contiguous()
