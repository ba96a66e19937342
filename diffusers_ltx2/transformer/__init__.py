"""Plumbing around diffusers' `LTX2VideoTransformer3DModel`: running a step's guidance passes as batched calls
(`passes`), the per-row attention processors that perturb / gate / freeze passes (`attention`), the IC-LoRA
self-attention bias (`attention_bias`), diffusers' cache hooks (`cache_hooks`) and the grouping of passes into
calls with its memory estimate (`grouping`)."""

from .attention import GuidanceAttentionControl, default_skip_blocks
from .passes import TextContexts, TransformerPasses

__all__ = ["GuidanceAttentionControl", "TextContexts", "TransformerPasses", "default_skip_blocks"]
