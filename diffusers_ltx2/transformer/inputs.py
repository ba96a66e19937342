"""Per-version inputs of diffusers' LTX-2 transformer that its own forward does not derive (LTX-2.5).

Two things diffusers 0.42.1's `LTX2VideoTransformer3DModel` supports but its pipelines leave out, and one it cannot
express:

- **Keyframe marker** (`keyframes_mask`): LTX-2.5 checkpoints (`use_keyframes_abs_pos_embedding`) add a learned
  embedding to every token whose latent frame encodes a single pixel frame. ltx-core 1.2.0 marks the target's first
  latent frame on *every* call (`VideoLatentTools.create_initial_state` -> `_first_frame_keyframes_mask`: "the
  reference implementation marks it unconditionally"); appended conditioning tokens (keyframes, IC-LoRA references)
  are not marked (`extend_keyframes_mask(..., marked=False)`). diffusers' pipelines never pass
  `video_keyframes_mask`, so the embedding is silently dropped (a port measured ~21 dB PSNR drift without it,
  ltx-2-mlx #135).
- **Cross-attention AdaLN timestep rule** (`cross_timestep`): see `diffusers_ltx2.versions.CROSS_TIMESTEP_RULES`.
  diffusers offers two rules through `use_cross_timestep`; ltx-core 1.2.0's rule (scale/shift from the modality's
  own per-token timesteps, gate from the other modality's sigma) is neither, so it runs with
  `use_cross_timestep=False` (own timesteps everywhere) and a forward pre-hook replaces the input of the two gate
  AdaLN modules (`av_cross_attn_video_a2v_gate`, `av_cross_attn_audio_v2a_gate`) by the other modality's sigma
  times `cross_attn_timestep_scale_multiplier / timestep_scale_multiplier` (ltx-core
  `MultiModalTransformerArgsPreprocessor._prepare_cross_attention_timestep`). Under that rule a frozen modality's
  stream gets sigma 0 (`frozen_sigmas`, 1.2's `modality_from_latent_state`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from ..latents.state import ModalityLatents, is_frozen
from ..versions import CROSS_TIMESTEP_RULES

__all__ = ["cross_timestep", "first_frame_token_count", "frozen_sigmas", "keyframes_mask"]


def first_frame_token_count(coords: torch.Tensor, num_target_tokens: int) -> int:
    """Tokens of the target's first latent frame: the leading run of target tokens sharing token 0's time box.

    `coords`: `(B, 3, N, 2)` video RoPE positions (pixel-frame [start, end) per axis), tokens frame-major as the
    official patchifier lays them out; `num_target_tokens`: tokens before any appended conditioning.
    """
    if coords is None or num_target_tokens == 0:
        return 0
    time = coords[0, 0, :num_target_tokens]  # (N, 2)
    same = (time == time[:1]).all(dim=-1)
    if bool(same.all()):
        return num_target_tokens
    return int(torch.nonzero(~same)[0, 0])


def keyframes_mask(transformer, coords: torch.Tensor, num_target_tokens: int, num_tokens: int,
                   batch_size: int, marked: torch.Tensor | None = None) -> torch.Tensor | None:
    """`(B, N, 1)` float marker of the single-pixel-frame tokens (the target's first latent frame, and the tokens
    `marked` marks: a state's `keyframe_marker`, `(b, K)` over its first `K` tokens, repeated to `batch_size`), or
    `None` for a transformer without the keyframe embedding (nothing to mark)."""
    if not getattr(transformer.config, "use_keyframes_abs_pos_embedding", False):
        return None
    count = first_frame_token_count(coords, num_target_tokens)
    mask = torch.zeros(batch_size, num_tokens, 1, device=coords.device, dtype=torch.float32)
    mask[:, :count] = 1.0
    if marked is not None:
        extra = marked.to(mask).repeat(batch_size // marked.shape[0], 1)
        mask[:, : extra.shape[1], 0] = torch.maximum(mask[:, : extra.shape[1], 0], extra)
    return mask


@contextlib.contextmanager
def cross_timestep(transformer, rule: str, sigma: torch.Tensor, audio_sigma: torch.Tensor) -> Iterator[bool]:
    """Run diffusers' transformer with the cross-attention AdaLN timestep `rule`; yields its `use_cross_timestep`.

    `sigma` / `audio_sigma`: `(B,)` per-sample noise levels as passed to the transformer (already multiplied by
    `timestep_scale_multiplier`, diffusers' convention). Hooks are removed on exit, also on error.

    Raises:
        ValueError: an unknown rule.
    """
    if rule not in CROSS_TIMESTEP_RULES:
        raise ValueError(f"cross-attention timestep rule must be one of {CROSS_TIMESTEP_RULES}, got {rule!r}")
    if rule != "own_scale_shift_cross_gate":
        yield rule == "cross_sigma"
        return
    config = transformer.config
    factor = config.cross_attn_timestep_scale_multiplier / config.timestep_scale_multiplier
    # the a2v gate (video side) follows the audio sigma, the v2a gate (audio side) the video sigma
    gates = ((transformer.av_cross_attn_video_a2v_gate, audio_sigma), (transformer.av_cross_attn_audio_v2a_gate, sigma))
    handles = []

    def replace_input(value: torch.Tensor):
        def hook(module, args, kwargs):
            return (value.flatten().to(args[0].device, args[0].dtype) * factor, *args[1:]), kwargs
        return hook

    try:
        for module, value in gates:
            handles.append(module.register_forward_pre_hook(replace_input(value), with_kwargs=True))
        yield False
    finally:
        for handle in handles:
            handle.remove()


def frozen_sigmas(rule: str, sigma: torch.Tensor, video: ModalityLatents, audio: ModalityLatents
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """The `(B,)` sigmas the transformer gets for its video and audio streams (prompt AdaLN, cross-attention
    gates): `sigma` for both, except under ltx-core 1.2's rule (`"own_scale_shift_cross_gate"`, LTX-2.5), where a
    frozen modality (A2V audio, V2A video, a retake's kept modality) gets 0, as 1.2's `modality_from_latent_state`
    forces `Modality.sigma` to 0 for a `frozen` state. ltx-core 1.0.0 (2.0 / 2.3 here) passes the step's sigma."""
    if rule != "own_scale_shift_cross_gate":
        return sigma, sigma
    zero = torch.zeros_like(sigma)
    return (zero if is_frozen(video) else sigma), (zero if is_frozen(audio) else sigma)
