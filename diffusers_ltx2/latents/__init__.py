"""Low-level latent plumbing every other part builds on (no models, no pipelines): the token layout and
normalization of video / audio latents (`layout`), a clip's geometry (`geometry`), a modality's token state
(`state`), the one noiser and the per-token noise level (`noiser`), and the self-attention bias of appended
conditioning tokens (`attention`)."""

from .geometry import ClipGeometry
from .noiser import StartLatents, noise_tokens, noised_state, per_token_timesteps
from .state import ModalityLatents, is_frozen

__all__ = ["ClipGeometry", "ModalityLatents", "StartLatents", "is_frozen", "noise_tokens", "noised_state",
           "per_token_timesteps"]
