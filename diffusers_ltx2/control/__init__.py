"""Control signals for IC-LoRA: control-video I/O and preprocessors (Canny built in; depth and pose adapters)."""

from .canny import CannyPreprocessor, canny_edges
from .video import fit_frames, frames_to_uint8, read_video, to_frames

__all__ = ["CannyPreprocessor", "canny_edges", "fit_frames", "frames_to_uint8", "read_video", "to_frames",
           "get_preprocessor"]


def get_preprocessor(name: str, model_path: str | None = None, **kwargs):
    """A preprocessor by name: `"canny"` (built in), `"depth"` / `"pose"` (transformers models at `model_path`)."""
    if name == "canny":
        return CannyPreprocessor(**kwargs)
    if name in ("depth", "pose"):
        if model_path is None:
            raise ValueError(f"the {name} preprocessor needs a local model path")
        if name == "depth":
            from .depth import DepthPreprocessor

            return DepthPreprocessor(model_path, **kwargs)
        from .pose import PosePreprocessor

        return PosePreprocessor(model_path, **kwargs)
    raise ValueError(f"unknown preprocessor {name!r}; choose canny, depth or pose")
