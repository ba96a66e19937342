"""Neighborhood-attention backends of the LTX-2.5 diffusion video decoder: NATTEN when installed, else a fallback.

ltx-core 1.2.0 runs the decoder's 3-D neighborhood attention with the `natten` package (``natten.na3d``) and, without
it, falls back to Triton or to an eager tiled SDPA (`fallback_na`). diffusers 0.42.1 offers FlexAttention (its
default; without ``torch.compile`` it evaluates the mask element by element over the full score matrix, slow on
CPU) and a NATTEN processor that downloads the kernel from the Hub (`kernels`), not the installed package.

`neighborhood_backend` picks, per call of `diffusion_decode` ("auto"): the installed ``natten`` on CUDA; else, on
CPU, `MaskedSdpaProcessor` (the same windows as a boolean mask for `scaled_dot_product_attention`, queries in
chunks to bound memory, as the official eager fallback); else diffusers' own processor. A processor the caller set
(e.g. diffusers' Hub NATTEN processor) is left alone. All backends compute the same windows: each query attends to
a ``kernel_size`` box centred on it and shifted inward at the borders (NATTEN's rule).
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator

import torch
import torch.nn.functional as F

__all__ = ["LocalNattenProcessor", "MaskedSdpaProcessor", "neighborhood_backend", "window_starts"]

#: query tokens per SDPA call of the fallback (bounds the score matrix to chunk x tokens)
QUERY_CHUNK = 4096


def window_starts(length: int, kernel: int, device) -> torch.Tensor:
    """First key index of each query's window along one axis: centred, shifted inward at the borders."""
    kernel = min(kernel, length)
    return (torch.arange(length, device=device) - kernel // 2).clamp(0, length - kernel)


class MaskedSdpaProcessor:
    """Neighborhood attention as masked SDPA over query chunks (CPU fallback; no compile, no extra package)."""

    def __call__(self, attn, hidden_states: torch.Tensor, block_mask=None) -> torch.Tensor:
        b, t, h, w, c = hidden_states.shape
        query, key, value = attn.project_qkv(hidden_states)  # (B, T, H, W, heads, d); query pre-scaled
        n = t * h * w
        q, k, v = (x.reshape(b, n, attn.heads, attn.head_dim).transpose(1, 2) for x in (query, key, value))
        device = hidden_states.device
        kt, kh, kw = (min(kk, size) for kk, size in zip(attn.kernel_size, (t, h, w)))
        st, sh, sw = (window_starts(size, kk, device) for size, kk in zip((t, h, w), attn.kernel_size))
        pos = torch.arange(n, device=device)
        key_t, key_h, key_w = pos // (h * w), (pos // w) % h, pos % w
        out = torch.empty_like(q)
        for start in range(0, n, QUERY_CHUNK):
            qi = pos[start:start + QUERY_CHUNK]
            qt, qh, qw = qi // (h * w), (qi // w) % h, qi % w
            mask = ((key_t[None] >= st[qt, None]) & (key_t[None] < st[qt, None] + kt)
                    & (key_h[None] >= sh[qh, None]) & (key_h[None] < sh[qh, None] + kh)
                    & (key_w[None] >= sw[qw, None]) & (key_w[None] < sw[qw, None] + kw))
            out[:, :, start:start + QUERY_CHUNK] = F.scaled_dot_product_attention(
                q[:, :, start:start + QUERY_CHUNK], k, v, attn_mask=mask, scale=1.0)
        return attn.to_out[0](out.transpose(1, 2).reshape(b, t, h, w, c))


class LocalNattenProcessor:
    """``natten.na3d`` from the installed `natten` package, as ltx-core 1.2's `NattenAttention` calls it."""

    def __call__(self, attn, hidden_states: torch.Tensor, block_mask=None) -> torch.Tensor:
        import natten

        b, t, h, w, c = hidden_states.shape
        query, key, value = (x.contiguous() for x in attn.project_qkv(hidden_states))
        if query.dtype != value.dtype or key.dtype != value.dtype:  # as the official call
            query, key = query.to(value.dtype), key.to(value.dtype)
        out = natten.na3d(query, key, value, kernel_size=attn.kernel_size, scale=1.0)
        return attn.to_out[0](out.reshape(b, t, h, w, c))


def _natten_installed() -> bool:
    return importlib.util.find_spec("natten") is not None


@contextlib.contextmanager
def neighborhood_backend(model, backend: str = "auto") -> Iterator[str]:
    """Run `model`'s neighborhood attention on ``backend`` inside the block; yields the one chosen.

    ``"auto"``: the installed ``natten`` on CUDA, `MaskedSdpaProcessor` on CPU, diffusers' processor otherwise;
    ``"natten"``, ``"sdpa"``; ``"diffusers"`` keeps the model's processors. Processors the caller replaced
    (anything but diffusers' default FlexAttention one) are kept in "auto". The original processors are restored.

    Raises:
        ValueError: an unknown backend; ImportError: ``"natten"`` without the package.
    """
    from diffusers.models.autoencoders.ltx2_diffusion_decoder import (
        LTX2VideoVaeNeighborhoodAttention,
        LTX2VideoVaeNeighborhoodAttnProcessor,
    )

    if backend not in ("auto", "natten", "sdpa", "diffusers"):
        raise ValueError(f"neighborhood attention backend must be auto, natten, sdpa or diffusers, got {backend!r}")
    modules = [m for m in model.modules() if isinstance(m, LTX2VideoVaeNeighborhoodAttention)]
    if backend == "auto":
        default = all(isinstance(m.processor, LTX2VideoVaeNeighborhoodAttnProcessor) for m in modules)
        device = next(model.parameters()).device.type
        backend = "diffusers"
        if default and device == "cuda" and _natten_installed():
            backend = "natten"
        elif default and device == "cpu":
            backend = "sdpa"
    if backend == "natten" and not _natten_installed():
        raise ImportError("neighborhood attention backend 'natten' needs the natten package (pip install natten)")
    if backend == "diffusers":
        yield backend
        return
    saved = [m.processor for m in modules]
    processor = LocalNattenProcessor() if backend == "natten" else MaskedSdpaProcessor()
    try:
        for m in modules:
            m.processor = processor  # plain attribute: `build_block_mask` then skips the flex mask
        yield backend
    finally:
        for m, p in zip(modules, saved):
            m.processor = p
