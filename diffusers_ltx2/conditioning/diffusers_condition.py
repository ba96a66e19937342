"""diffusers' `LTX2VideoCondition` in `conditions=`: code written for diffusers' `LTX2ConditionPipeline` runs on
`LTX2AudioVideoPipeline` with only the import changed.

diffusers 0.42.1 (`LTX2ConditionPipeline.preprocess_conditions` / `prepare_latents`) reads
`LTX2VideoCondition(frames, index=0, strength=1.0, crf=None)` as:
- `index`: a *latent* frame (official LTX-2 code's convention there); negative counts from the last latent frame
  (`index % latent_frames`); the media starts on pixel frame `(index - 1) * 8 + 1` (0 for index 0);
- `frames`: a PIL image or list, a numpy `(F, H, W, C)` / tensor `(F, C, H, W)` on the 0-255 scale (uint8 or
  float); a clip is cut to fit the remaining frames, then to `8k + 1` frames;
- `crf`: single-frame conditions are H.264 re-compressed at `crf` (`None`: the model's, 18 for LTX-2.4+, 33 before);
  a non-uint8 frame with a CRF other than 0 is refused; clips are not re-compressed;
- `strength`: 1 holds the frames (our denoise mask `1 - strength`).
Each becomes the `VideoCondition` with that meaning (first latent frame replaced at index 0, keyframe tokens
appended elsewhere; both follow ltx-core 1.0.0, see `conditioning.video`). Where diffusers silently skips a
condition (an index past the clip) this raises `ValueError`. diffusers 0.42.1 also narrows a one-frame keyframe's
temporal position box to one pixel frame; ltx-core 1.0.0 (followed here, checked by the parity tests) does not.
"""

from __future__ import annotations

import numpy as np
import torch

from .base import ClipGeometry
from .video import VideoCondition

__all__ = ["from_diffusers_conditions", "diffusers_frames", "is_diffusers_condition"]


def is_diffusers_condition(obj) -> bool:
    from diffusers.pipelines.ltx2.pipeline_ltx2_condition import LTX2VideoCondition

    return isinstance(obj, LTX2VideoCondition)


def diffusers_frames(frames, what: str = "LTX2VideoCondition.frames"):
    """A diffusers condition's frames -> `(F, H, W, 3)` (`media.as_frames`): arrays / tensors are on diffusers'
    0-255 scale whatever their dtype, so floats are divided by 255 first (uint8 stays uint8)."""
    from ..media.frames import as_frames

    if isinstance(frames, np.ndarray) and np.issubdtype(frames.dtype, np.floating):
        frames = frames.astype(np.float32) / 255.0
    elif isinstance(frames, torch.Tensor) and frames.is_floating_point():
        frames = frames.float() / 255.0
    return as_frames(frames, what)


def _one(cond, geometry: ClipGeometry, default_crf: int) -> VideoCondition:
    index = cond.index
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
        raise ValueError(f"LTX2VideoCondition.index must be an integer latent frame, got {index!r}")
    latent_frames = geometry.latent_frames
    index = int(index) % latent_frames if index < 0 else int(index)
    if index >= latent_frames:
        raise ValueError(f"LTX2VideoCondition at latent index {cond.index} is past the clip's {latent_frames} latent "
                         "frames (diffusers would skip it silently)")
    start = max((index - 1) * geometry.temporal_ratio + 1, 0)
    frames = diffusers_frames(cond.frames)
    crf = 0
    if frames.shape[0] == 1:
        crf = default_crf if cond.crf is None else cond.crf
        if crf != 0 and not isinstance(frames, np.ndarray):
            raise ValueError("image conditioning CRF expects a uint8 RGB frame (a PIL image or uint8 array), got "
                             "floating-point frames; set crf=0 on the condition to skip re-compression")
    else:
        n = min(frames.shape[0], geometry.num_frames - start)
        frames = frames[: (n - 1) // geometry.temporal_ratio * geometry.temporal_ratio + 1]
    return VideoCondition(frames, frame_index=start, strength=cond.strength, crf=crf)


def from_diffusers_conditions(conditions, geometry: ClipGeometry, default_crf: int):
    """`conditions=` with every diffusers `LTX2VideoCondition` replaced by its `VideoCondition` (others kept, in
    order; a single diffusers condition becomes a list, as diffusers takes it; anything else is left for
    `check_conditions` to judge). Raises ValueError for one that cannot apply (see module)."""
    if is_diffusers_condition(conditions):
        conditions = [conditions]
    if not isinstance(conditions, (list, tuple)):
        return conditions
    out = []
    for item in conditions:
        if type(item).__name__ == "LTX2ReferenceCondition":
            raise ValueError("LTX2ReferenceCondition is IC-LoRA reference conditioning: use LTX2ICLoRAPipeline "
                             "(reference_conditions=) or its control_video")
        out.append(_one(item, geometry, default_crf) if is_diffusers_condition(item) else item)
    return out
