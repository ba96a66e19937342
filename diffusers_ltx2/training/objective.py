"""The flow-matching training objective of LTX-2, as plain functions.

Source followed: the official trainer's strategies (`ltx_trainer/training_strategies/text_to_video.py`,
`video_to_video.py`, LTX-2 repository) on top of ltx-core's rectified-flow convention:
- noising: `x_t = (1 - sigma) * x0 + sigma * noise` on the tokens being generated; conditioning tokens (a clean
  first frame, IC-LoRA reference tokens) keep `x0` (`denoise_mask == 0`): the pipelines' one noiser,
  `latents.noiser.noise_tokens(x0, denoise_mask, noise, sigma)` (used by `training.strategies`);
- per-token timestep: `sigma * denoise_mask` (conditioning tokens at timestep 0);
- target: the velocity `noise - x0`;
- loss per sample: mean squared error over the tokens with loss mask 1 (and all channels), i.e.
  `sum(mask * err^2) / (C * sum(mask))` (the official `masked.mean() / mask.mean()`), video + audio
  (audio: plain mean over every token) when audio is trained. The trainer backpropagates the batch mean.
"""

from __future__ import annotations

import torch

__all__ = ["velocity_target", "masked_mse", "flow_matching_loss"]


def velocity_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The flow-matching regression target `noise - x0`."""
    return noise - x0


def masked_mse(prediction: torch.Tensor, target: torch.Tensor, loss_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample `(B,)` mean squared error over `(N, C)`, restricted to tokens with `loss_mask` `(B, N)` true."""
    err = (prediction.float() - target.float()).pow(2)
    if loss_mask is None:
        return err.mean(dim=(-2, -1))
    m = loss_mask.to(err.dtype).unsqueeze(-1)
    return (err * m).mean(dim=(-2, -1)) / m.mean(dim=(-2, -1)).clamp(min=1e-8)


def flow_matching_loss(video_pred, video_target, video_loss_mask, audio_pred=None, audio_target=None,
                       audio_loss_mask=None) -> torch.Tensor:
    """Per-sample loss `(B,)`: masked video MSE plus (when given) masked audio MSE."""
    loss = masked_mse(video_pred, video_target, video_loss_mask)
    if audio_pred is not None:
        loss = loss + masked_mse(audio_pred, audio_target, audio_loss_mask)
    return loss
