"""Parallel video-VAE decode: the decoder tiles of diffusers' tiled decode spread over ranks, blended as on one
device.

diffusers' `AutoencoderKLLTX2Video` decodes tile by tile (`tiled_decode` over space, `_temporal_tiled_decode`
over time, both calling `self.decoder` once per tile on a slice of the latents) and then blends the decoded tiles.
The tile inputs depend on the latents only, never on another tile's output, so `ParallelTiledDecode` runs the
decode - the VAE's own `_decode`, or the pipelines' streamed tiled decode (`memory.tiled_decode`, same tiles and
blends, through its `TILE_RUNNER` hook) - three times around its decoder:

1. *plan*: the decoder is replaced by a recorder that keeps each tile's input and returns an uninitialized tensor
   of the decoded shape (no decoder work; the blend runs on garbage that is thrown away);
2. *decode*: tile `k` is decoded on rank `k % N` of the group and broadcast from there to the others;
3. *blend*: `_decode` runs again with a decoder that hands back the decoded tiles in order, so the blending is
   exactly diffusers' single-device code on exactly the single-device tiles.

An untiled decode is one tile (decoded on the first rank, broadcast). Bytes moved: every decoded tile once from
its owner to each other rank (`ParallelTiledDecode.bytes_received` counts them).
"""

from __future__ import annotations

import contextlib

import torch
import torch.distributed as dist

__all__ = ["ParallelTiledDecode", "decoded_tile_shape", "enable_parallel_decode", "disable_parallel_decode"]


def decoded_tile_shape(vae, latent_shape) -> tuple[int, ...]:
    """Shape the LTX-2 video decoder gives a latent tile `(B, C, F, H, W)`: `(B, 3, (F - 1) * t + 1, H * s, W * s)`
    with the VAE's temporal / spatial compression `t` / `s` (checked against every real tile in `_decode`)."""
    b, _, f, h, w = latent_shape
    t, s = vae.temporal_compression_ratio, vae.spatial_compression_ratio
    return (b, vae.config.out_channels, (f - 1) * t + 1, h * s, w * s)


@contextlib.contextmanager
def _decoder_forward(vae, forward):
    vae.decoder.forward = forward  # instance attribute: hooks around the decoder still run
    try:
        yield
    finally:
        del vae.decoder.forward


class ParallelTiledDecode:
    """Replacement of `vae._decode` that decodes the tiles on several ranks (see the module docstring).

    Args:
        vae: `AutoencoderKLLTX2Video`.
        ranks: global ranks sharing the decode; `group` their process group.
        runtime: the `Runtime` (device, failure records).

    Attributes:
        tiles_decoded: tiles this rank decoded in the last call; `num_tiles`: tiles of the last call.
        bytes_received: decoded-tile bytes this rank received from the others so far.
    """

    def __init__(self, vae, ranks: list[int], group, runtime):
        self.vae, self.ranks, self.group, self.runtime = vae, list(ranks), group, runtime
        self.tiles_decoded = 0
        self.num_tiles = 0
        self.bytes_received = 0

    def __call__(self, z, temb=None, causal=None, return_dict=True):
        """diffusers' `vae._decode(z, ...)` with its tiles dealt over the ranks."""
        original = type(self.vae)._decode
        return self.run(lambda: original(self.vae, z, temb, causal=causal, return_dict=return_dict))

    def run(self, decode):
        """Run `decode()` - a function calling `vae.decoder` once per tile, the tile inputs depending on the latents
        only (diffusers' `_decode`, `memory.tiled_decode.streamed_decode`) - with its tiles dealt over the ranks:
        plan, decode, replay (the module docstring). Returns what `decode()` returns."""
        vae = self.vae
        inputs: list[tuple] = []
        shapes: list[tuple[int, ...]] = []

        def record(tile, tile_temb=None, causal=None):
            inputs.append((tile, tile_temb, causal))
            shape = decoded_tile_shape(vae, tile.shape)
            shapes.append(shape)
            return torch.empty(shape, dtype=tile.dtype, device=tile.device)

        with _decoder_forward(vae, record):
            decode()
        rank = self.runtime.rank
        decoded: list[torch.Tensor] = []
        self.num_tiles, self.tiles_decoded = len(inputs), 0
        with self.runtime.guard("parallel VAE decode"):
            for k, ((tile, tile_temb, tile_causal), shape) in enumerate(zip(inputs, shapes)):
                owner = self.ranks[k % len(self.ranks)]
                if owner == rank:
                    out = vae.decoder(tile, tile_temb, causal=tile_causal)
                    if tuple(out.shape) != shape:
                        raise RuntimeError(f"decoder tile {k} came out {tuple(out.shape)}, expected {shape}")
                    out = out.contiguous()
                    self.tiles_decoded += 1
                else:
                    out = torch.empty(shape, dtype=tile.dtype, device=tile.device)
                if len(self.ranks) > 1:
                    dist.broadcast(out, src=owner, group=self.group)
                    if owner != rank:
                        self.bytes_received += out.numel() * out.element_size()
                decoded.append(out)
        replay = iter(decoded)
        with _decoder_forward(vae, lambda *args, **kwargs: next(replay)):
            return decode()


def enable_parallel_decode(vae, ranks: list[int], group, runtime) -> ParallelTiledDecode:
    """Install `ParallelTiledDecode` as `vae._decode` (diffusers' `vae.decode`) and as the VAE's tile runner (the
    pipelines' streamed decode, `memory.tiled_decode.TILE_RUNNER`): every decode then runs on `ranks`, which must
    all call it with the same latents."""
    from ..memory.tiled_decode import TILE_RUNNER

    decode = ParallelTiledDecode(vae, ranks, group, runtime)
    vae._decode = decode
    vae.__dict__[TILE_RUNNER] = decode.run
    return decode


def disable_parallel_decode(vae) -> None:
    """Remove `enable_parallel_decode`'s replacement."""
    from ..memory.tiled_decode import TILE_RUNNER

    if isinstance(vae.__dict__.get("_decode"), ParallelTiledDecode):
        del vae._decode
        vae.__dict__.pop(TILE_RUNNER, None)
