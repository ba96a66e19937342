"""Joining a finished window and the next one: linear blends over the overlap, video and audio latents.

Video (ComfyUI `LTXVExtendSampler` + `LinearOverlapLatentTransition`): the new window's latent 0 is dropped (a
one-frame latent standing in for an eight-frame one), its next `blend` latent frames are mixed with the finished
clip's last `blend` ones with the new window's weight rising linearly, `(i + 1) / (blend + 1)` (ComfyUI's
`1 - linspace(1, 0, blend + 2)[1:-1]`: `blend_weights`, which the pixel extension `pipelines.extend` blends
decoded frames and waveforms with too), and the rest is appended. Audio latents are joined the same way on the
audio latent grid (no latent is dropped: audio has no causal first latent), and the whole clip's audio is decoded
once, so the waveform has no seam at all.
"""

from __future__ import annotations

import torch

__all__ = ["blend_audio_latents", "blend_video_latents", "blend_weights", "join_audio", "join_frames"]


def blend_weights(n: int) -> torch.Tensor:
    """Weights of the new clip across an `n`-frame (or sample) overlap: linear, `(i + 1) / (n + 1)`."""
    return torch.arange(1, n + 1, dtype=torch.float32) / (n + 1)


def join_frames(old: torch.Tensor, new: torch.Tensor, overlap: int) -> torch.Tensor:
    """`old (F1, ...)` + `new (F2, ...)` whose first `overlap` frames cover old's last ones, blended linearly."""
    w = blend_weights(overlap).view(-1, *([1] * (old.ndim - 1))).to(old)
    mixed = old[-overlap:] * (1 - w) + new[:overlap] * w
    return torch.cat([old[:-overlap], mixed, new[overlap:]])


def join_audio(old: torch.Tensor, new: torch.Tensor, start: int, overlap: int) -> torch.Tensor:
    """`old (C, N1)` up to sample `start`, cross-faded over `overlap` samples into `new (C, N2)` (which starts at
    `start`), then `new`."""
    overlap = min(overlap, old.shape[-1] - start, new.shape[-1])
    w = blend_weights(overlap).to(old)
    mixed = old[:, start:start + overlap] * (1 - w) + new[:, :overlap] * w
    return torch.cat([old[:, :start], mixed, new[:, overlap:]], dim=-1)


def blend_video_latents(finished: torch.Tensor, window: torch.Tensor, blend: int) -> torch.Tensor:
    """`finished` `(B, C, F1, H, W)` + a window's latents `(B, C, F2, H, W)` whose latent 0 is dropped and whose
    latents `1 .. blend` cover `finished`'s last `blend` frames -> `(B, C, F1 + F2 - 1 - blend, H, W)`."""
    new = window[:, :, 1:].to(finished)
    if blend == 0:
        return torch.cat([finished, new], dim=2)
    return join_frames(finished.movedim(2, 0), new.movedim(2, 0), blend).movedim(0, 2)


def blend_audio_latents(finished: torch.Tensor, window: torch.Tensor, start: int, blend: int) -> torch.Tensor:
    """`finished` `(B, C, T1, M)` up to audio latent `start`, cross-faded over `blend` latents into a window's audio
    latents `(B, C, T2, M)` (which begin at `start`), then the window's -> `(B, C, start + T2, M)`."""
    if start > finished.shape[2]:
        raise ValueError(f"audio window starts at latent {start}, after the finished audio ({finished.shape[2]})")
    b, c, _, m = finished.shape
    old = finished.permute(0, 1, 3, 2).reshape(b * c * m, -1)
    new = window.to(finished).permute(0, 1, 3, 2).reshape(b * c * m, -1)
    joined = join_audio(old, new, start, blend) if blend > 0 else torch.cat([old[:, :start], new], dim=-1)
    return joined.reshape(b, c, m, -1).permute(0, 1, 3, 2).contiguous()
