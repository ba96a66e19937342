"""Memory: weight streaming (offload), automatic VAE tiling and the VRAM budget planner."""

from .offload import OFFLOAD_MODES, apply_offload, check_offload

__all__ = ["OFFLOAD_MODES", "apply_offload", "check_offload"]
