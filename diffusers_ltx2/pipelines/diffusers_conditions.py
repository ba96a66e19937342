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
H.264 at `crf` (`None`: the model default, 33 for Gemma-3 models) before encoding; this is done here with
diffusers' own `apply_image_conditioning_crf`. What has no counterpart here is refused with a clear error
(several conditions, a condition at another latent index or of several frames: keyframe / video conditioning),
never silently dropped.
"""

from __future__ import annotations

import numpy as np
import PIL.Image
import torch

from ..media.image import pil_to_rgb

__all__ = ["references_from", "image_from_conditions"]


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


def _single_frame(frames) -> np.ndarray:
    """A condition's frames -> one `(H, W, 3)` array on diffusers' 0-255 scale (uint8 kept as uint8)."""
    if isinstance(frames, PIL.Image.Image):
        return pil_to_rgb(frames, "condition")
    if isinstance(frames, (list, tuple)):
        if len(frames) != 1 or not isinstance(frames[0], PIL.Image.Image):
            raise NotImplementedError(
                f"a condition of {len(frames)} frames is video conditioning, which LTX2ICLoRAPipeline does not "
                "support: pass one image (conditions at frame 0)"
            )
        return pil_to_rgb(frames[0], "condition")
    if isinstance(frames, torch.Tensor):
        t = frames.detach().cpu()
        t = t.unsqueeze(0) if t.ndim == 3 else t
        if t.ndim != 4 or t.shape[1] != 3:
            raise ValueError(f"condition tensors must be (3, H, W) or (F, 3, H, W), got {tuple(frames.shape)}")
        frames = t.permute(0, 2, 3, 1).numpy()
    if isinstance(frames, np.ndarray):
        arr = frames[None] if frames.ndim == 3 else frames
        if arr.ndim != 4 or arr.shape[-1] != 3:
            raise ValueError(f"condition arrays must be (H, W, 3) or (F, H, W, 3), got {frames.shape}")
        if arr.shape[0] != 1:
            raise NotImplementedError(
                f"a condition of {arr.shape[0]} frames is video conditioning, which LTX2ICLoRAPipeline does not "
                "support: pass one image (conditions at frame 0)"
            )
        return arr[0]
    raise ValueError(f"unsupported condition frames type {type(frames).__name__}")


def image_from_conditions(conditions, image, image_strength: float, text_encoder=None):
    """`conditions=` -> `(image, image_strength)`; the image is a `(1, 3, H, W)` float tensor in `[0, 1]`.

    Raises:
        ValueError: both `conditions` and `image` given; bad frames; a CRF on non-uint8 frames (as diffusers).
        NotImplementedError: several conditions, an index other than 0, or several frames (keyframe / video
            conditioning).
    """
    from diffusers.pipelines.ltx2.utils import apply_image_conditioning_crf, resolve_default_image_crf

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
    crf = resolve_default_image_crf(text_encoder) if crf is None else crf
    if crf != 0:
        if arr.dtype != np.uint8:
            raise ValueError(f"image conditioning CRF expects a uint8 RGB frame, got dtype={arr.dtype}; pass a PIL "
                             "image / uint8 array, or set crf=0 on the condition")
        arr = apply_image_conditioning_crf(arr, int(crf))
    pixels = torch.from_numpy(np.array(arr, dtype=np.float32)).permute(2, 0, 1)[None] / 255.0
    return pixels.clamp(0, 1), float(cond.strength)
