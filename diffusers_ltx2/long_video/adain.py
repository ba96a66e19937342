"""AdaIN latent normalisation: match a window's latent statistics to a reference's (ComfyUI `LTXVAdainLatent`).

`LTXVAdainLatent.batch_normalize` (ComfyUI-LTXVideo `latent_norm.py`), vectorised: for each video of the batch and
each channel, `(x - mean(x)) / std(x) * std(ref) + mean(ref)` over all frames and pixels (per frame: over each
frame's pixels, with frame `f` of the reference), with torch's default unbiased std, then `lerp(x, that, factor)`.
The looping sampler applies it to every window after the first with the first window's output as the reference,
to stop colours drifting (over-saturation) from window to window; `factor` 0 leaves the window as it is.
Per-channel statistics commute with the VAE's per-channel latent normalisation, so the result is the same on
normalized and denormalized (`output_type="latent"`) latents.
"""

from __future__ import annotations

import torch


def adain_latents(latents: torch.Tensor, reference: torch.Tensor, factor: float, per_frame: bool = False
                  ) -> torch.Tensor:
    """`latents` `(B, C, F, H, W)` moved towards `reference`'s per-channel statistics by `factor` (0: unchanged,
    1: fully normalised; ComfyUI allows any factor in [-10, 10]).

    Args:
        latents, reference: video latents, the same batch and channels; `reference` may have any frames and size
            (per frame: one frame, used for every frame, or at least as many frames as `latents`).
        per_frame: statistics per frame (ComfyUI's `per_frame`, used with explicit normalising latents).

    Returns:
        float32 tensor of `latents`' shape.

    Raises:
        ValueError: mismatched batch / channels, or per-frame with a shorter reference.
    """
    x, ref = latents.float(), reference.float().to(latents.device)
    if x.shape[:2] != ref.shape[:2]:
        raise ValueError(f"AdaIN: latents {tuple(x.shape)} and reference {tuple(ref.shape)} differ in batch or "
                         f"channels")
    if per_frame:
        if ref.shape[2] == 1:
            ref = ref.expand(-1, -1, x.shape[2], -1, -1)
        elif ref.shape[2] < x.shape[2]:
            raise ValueError(f"AdaIN per frame: the reference has {ref.shape[2]} frames, the latents {x.shape[2]}")
        dims = (3, 4)
        ref = ref[:, :, : x.shape[2]]
    else:
        dims = (2, 3, 4)
    r_sd, r_mean = torch.std_mean(ref, dim=dims, keepdim=True)
    i_sd, i_mean = torch.std_mean(x, dim=dims, keepdim=True)
    normalized = (x - i_mean) / i_sd * r_sd + r_mean
    return torch.lerp(x, normalized, float(factor))
