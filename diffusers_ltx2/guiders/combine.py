"""The multimodal guidance formula, as a plain function of tensors (no model, no state).

Per modality, on x0 predictions, in float32 (LTX-2's `MultiModalGuider.calculate`):

    pred = c + (cfg - 1)(c - u) + stg (c - p) + (modality_scale - 1)(c - m)
    rescale r in [0, 1]:  f = std(c) / std(pred) over the whole tensor;  pred *= r * f + (1 - r)

`c` is the conditional pass, `u` the negative-prompt pass, `p` the STG-perturbed pass and `m` the
modality-isolated pass. A term whose scale is "off" (cfg 1, stg 0, modality_scale 1) needs no tensor.

The official pipelines generate one video per call, so "the whole tensor" is one video: for a batch of videos
`combine_per_video` takes the rescale std per video (each video as its own official call would give it; also
diffusers' per-sample `rescale_noise_cfg`), so a video does not depend on the others in its batch.
"""

from __future__ import annotations

import torch


def _term(name: str, tensor: torch.Tensor | None, scale: float, cond: torch.Tensor) -> torch.Tensor | None:
    if scale == 0.0:
        return None
    if tensor is None:
        raise ValueError(f"a {name} prediction is needed for a non-neutral {name} scale")
    if tensor.shape != cond.shape:
        raise ValueError(f"{name} prediction has shape {tuple(tensor.shape)}, the conditional one {tuple(cond.shape)}")
    return scale * (cond - tensor.float())


def multimodal_combine(
    cond: torch.Tensor,
    uncond: torch.Tensor | None = None,
    perturbed: torch.Tensor | None = None,
    isolated: torch.Tensor | None = None,
    *,
    cfg: float = 1.0,
    stg: float = 0.0,
    modality_scale: float = 1.0,
    rescale: float = 0.0,
) -> torch.Tensor:
    """Guided x0 of one modality from its pass predictions (float32 result).

    Args:
        cond: x0 of the conditional pass.
        uncond: x0 of the negative-prompt pass (needed when `cfg != 1`).
        perturbed: x0 of the STG-perturbed pass (needed when `stg != 0`).
        isolated: x0 of the modality-isolated pass (needed when `modality_scale != 1`).
        cfg: classifier-free guidance scale; 1 is off.
        stg: spatio-temporal guidance scale; 0 is off.
        modality_scale: modality guidance scale; 1 is off.
        rescale: blend towards the conditional prediction's global standard deviation, in [0, 1]; 0 is off.
    """
    if not 0.0 <= rescale <= 1.0:
        raise ValueError(f"rescale must be in [0, 1], got {rescale}")
    c = cond.float()
    pred = c
    for name, tensor, scale in (
        ("negative-prompt", uncond, cfg - 1.0),
        ("perturbed", perturbed, stg),
        ("modality-isolated", isolated, modality_scale - 1.0),
    ):
        delta = _term(name, tensor, float(scale), c)
        if delta is not None:
            pred = pred + delta
    if rescale != 0.0:
        # torch.std over every element (unbiased, like the official guider): one factor for the whole tensor
        # (`combine_per_video` calls this per video).
        factor = c.std() / pred.std()
        pred = pred * (rescale * factor + (1.0 - rescale))
    return pred


def combine_per_video(cond: torch.Tensor, uncond=None, perturbed=None, isolated=None, **dials) -> torch.Tensor:
    """`multimodal_combine` for a batch of videos `(B, ...)`: each video combined on its own (only the rescale
    std differs from one call over the batch; without rescale this is that one call)."""
    if not dials.get("rescale") or cond.shape[0] == 1:
        return multimodal_combine(cond, uncond, perturbed, isolated, **dials)
    rows = lambda t, i: t[i:i + 1] if t is not None else None  # noqa: E731
    return torch.cat([multimodal_combine(rows(cond, i), rows(uncond, i), rows(perturbed, i), rows(isolated, i),
                                         **dials) for i in range(cond.shape[0])])
