"""diffusers' in-context call arguments mapped onto `LTX2ICLoRAPipeline`'s own.

diffusers 0.42.1's `LTX2InContextPipeline` takes `reference_conditions=` (`LTX2ReferenceCondition(frames,
strength)`) and `conditions=` (`LTX2VideoCondition(frames, index, strength, crf)`). This package's IC-LoRA pipeline
has control videos (`control_video`, `control_strength`) and a first-frame image (`image`, `image_strength`):

| diffusers                                           | ours                                                   |
|-----------------------------------------------------|--------------------------------------------------------|
| `reference_conditions=[LTX2ReferenceCondition(f, s), ...]` | `control_video=f, control_strength=s` (several: each appended in order) |
| `conditions=[LTX2VideoCondition(img, index=0, strength=s, crf=c)]` | `image=<img re-compressed at CRF c>, image_strength=s` |
| `reference_downscale_factor=`                        | the same (default: the loaded LoRA's factor)           |

Values: diffusers reads condition frames (arrays / tensors) on a 0-255 scale and re-compresses a single image with
H.264 at `crf` (`None`: the model's, 18 for LTX-2.4+, 33 before) before encoding; this is done here with
diffusers' own `apply_image_conditioning_crf`. What has no counterpart here is refused with a clear error
(several conditions, a condition at another latent index or of several frames: keyframe / video conditioning),
never silently dropped. Every reference becomes a `conditioning.ReferenceVideo`; this package's own conditions in
`conditions=` (keyframes, `AudioCondition`, ...) are kept and compose with the references.
"""

from __future__ import annotations

import numpy as np
import torch

from ..conditioning import Condition, ReferenceVideo
from . import validation as V

__all__ = ["ic_lora_conditions", "image_from_conditions", "pop_ic_lora_arguments", "references_from"]


def _as_list(value, name: str) -> list:
    if value is None:
        return []
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    for item in items:
        if not hasattr(item, "frames") or not hasattr(item, "strength"):
            raise ValueError(f"{name} must hold diffusers condition objects (with .frames and .strength), "
                             f"got {type(item).__name__}")
    return items


def references_from(reference_conditions, control_video, control_strength: float) -> list[tuple[object, float]]:
    """`control_video` / `reference_conditions=` -> the call's references `[(frames, strength), ...]` (in order;
    empty for a plain generation).

    Raises:
        ValueError: both `reference_conditions` and `control_video` given, or objects of another type.
    """
    refs = _as_list(reference_conditions, "reference_conditions")
    if refs and control_video is not None:
        raise ValueError("pass either control_video= or reference_conditions=, not both")
    if control_video is not None:
        return [(control_video, control_strength)]
    return [(ref.frames, float(ref.strength)) for ref in refs]


def _single_frame(frames):
    """A condition's frames -> one `(H, W, 3)` frame: uint8 numpy, or float tensor in [0, 1] (diffusers' 0-255
    floats divided by 255), via `conditioning.diffusers_condition.diffusers_frames` (`media.as_frames`)."""
    from ..conditioning.diffusers_condition import diffusers_frames

    arr = diffusers_frames(frames)
    if arr.shape[0] != 1:
        raise NotImplementedError(
            f"a condition of {arr.shape[0]} frames is video conditioning, which LTX2ICLoRAPipeline does not "
            "support: pass one image (conditions at frame 0)"
        )
    return arr[0]


def image_from_conditions(conditions, image, image_strength: float, default_crf: int = 33):
    """`conditions=` -> `(image, image_strength)`; the image is a `(1, 3, H, W)` float tensor in `[0, 1]`.
    A condition's `crf=None` is `default_crf`, the pipeline's `default_image_crf` (18 for LTX-2.4+, 33 before).

    Raises:
        ValueError: both `conditions` and `image` given; bad frames; a CRF on non-uint8 frames (as diffusers).
        NotImplementedError: several conditions, an index other than 0, or several frames (keyframe / video
            conditioning).
    """
    from diffusers.pipelines.ltx2.utils import apply_image_conditioning_crf

    items = _as_list(conditions, "conditions")
    if not items:
        return image, image_strength
    if image is not None:
        raise ValueError("pass either image= or conditions=, not both")
    if len(items) > 1:
        raise NotImplementedError(
            f"got {len(items)} conditions: LTX2ICLoRAPipeline takes one first-frame image (keyframe conditioning "
            "at other frames is not supported)"
        )
    cond = items[0]
    index = getattr(cond, "index", 0)
    if index not in (0, None):
        raise NotImplementedError(
            f"a condition at latent index {index} is keyframe conditioning, which LTX2ICLoRAPipeline does not "
            "support: only index 0 (the first frame)"
        )
    arr = _single_frame(cond.frames)
    crf = getattr(cond, "crf", None)
    crf = default_crf if crf is None else crf
    if crf != 0:
        if not isinstance(arr, np.ndarray):
            raise ValueError(f"image conditioning CRF expects a uint8 RGB frame, got dtype={arr.dtype}; pass a PIL "
                             "image / uint8 array, or set crf=0 on the condition")
        arr = apply_image_conditioning_crf(arr, int(crf))
    if isinstance(arr, np.ndarray):
        arr = torch.from_numpy(np.array(arr, dtype=np.float32)) / 255.0
    return arr.permute(2, 0, 1)[None].clamp(0, 1), float(cond.strength)


def ic_lora_conditions(pipe, *, control_video, control_strength, attention_strength, attention_mask, preprocessor,
                       downscale_factor, reference_conditions, conditions, image, image_strength):
    """`LTX2ICLoRAPipeline`'s arguments -> `(conditions, image, image_strength)` for the call resolver: one
    `ReferenceVideo` per reference (`control_video=` or diffusers' `reference_conditions=`, at the loaded LoRAs'
    reference downscale / temporal scale factors unless `downscale_factor` is given), diffusers' `conditions=`
    turned into the first-frame image, this package's `Condition`s in `conditions=` kept (composable).

    Raises:
        ValueError: bad strengths, a preprocessor / mask without a reference, every `ReferenceVideo` error.
        NotImplementedError: diffusers conditions other than one first-frame image (`image_from_conditions`).
    """
    items = list(conditions) if isinstance(conditions, (list, tuple)) else [] if conditions is None else [conditions]
    ours = [c for c in items if isinstance(c, Condition)]
    references = references_from(reference_conditions, control_video, control_strength)
    image, image_strength = image_from_conditions([c for c in items if not isinstance(c, Condition)] or None, image,
                                                  image_strength, pipe.default_image_crf)
    for _, strength in references:
        V.check_strength("control_strength", strength)
    V.check_strength("conditioning_attention_strength", attention_strength)
    if not references and (preprocessor is not None or attention_mask is not None):
        raise ValueError("control_preprocessor / conditioning_attention_mask need a control_video")
    factor = pipe.reference_downscale_factor if downscale_factor is None else downscale_factor
    ours += [ReferenceVideo(frames, strength, factor, attention_strength, attention_mask, preprocessor=preprocessor,
                            temporal_scale_factor=pipe.reference_temporal_scale_factor)
             for frames, strength in references]
    return ours or None, image, image_strength


#: `LTX2ICLoRAPipeline.__call__`'s reference / image arguments (their defaults) -> `ic_lora_conditions`' names
_IC_LORA_ARGUMENTS = {
    "control_video": ("control_video", None), "control_strength": ("control_strength", 1.0),
    "conditioning_attention_strength": ("attention_strength", 1.0),
    "conditioning_attention_mask": ("attention_mask", None), "control_preprocessor": ("preprocessor", None),
    "reference_downscale_factor": ("downscale_factor", None), "reference_conditions": ("reference_conditions", None),
    "conditions": ("conditions", None), "image": ("image", None), "image_strength": ("image_strength", 1.0),
}


def pop_ic_lora_arguments(pipe, kwargs: dict) -> dict:
    """Take `LTX2ICLoRAPipeline.__call__`'s reference and image arguments out of `kwargs` (a call's keyword
    arguments, changed in place) and return them as `{"conditions", "image", "image_strength"}` for a call that
    takes conditions (`ic_lora_conditions`; its errors)."""
    given = {ours: kwargs.pop(name, default) for name, (ours, default) in _IC_LORA_ARGUMENTS.items()}
    conditions, image, image_strength = ic_lora_conditions(pipe, **given)
    return {"conditions": conditions, "image": image, "image_strength": image_strength}
