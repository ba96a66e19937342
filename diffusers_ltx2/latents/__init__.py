"""Low-level latent plumbing every other part builds on (no models, no pipelines): the token layout and
normalization of video / audio latents (`layout`), a clip's geometry (`geometry`) and a modality's token state
(`state`)."""

from .geometry import ClipGeometry
from .state import ModalityLatents, is_frozen

__all__ = ["ClipGeometry", "ModalityLatents", "is_frozen"]
