"""diffusers' transformer cache hooks (`transformer.enable_cache(...)`) with our batched guidance passes.

What diffusers 0.42.1 offers for `LTX2VideoTransformer3DModel` and what happens here (checked by
tests/guidance/test_guiders_cache_hooks.py):

- `TaylorSeerCacheConfig`, `PyramidAttentionBroadcastConfig`: work. Their state is kept per *cache context*;
  diffusers' own LTX-2 pipeline opens one per kind of call ("cond_uncond", "uncond_stg", ...). We open one per
  call composition (the names of the passes stacked in the call), so every call of a step is extrapolated /
  reused only from the same call of earlier steps, whatever `max_batch_passes` groups together.
- `FirstBlockCacheConfig`, `MagCacheConfig`: diffusers 0.42.1 cannot enable them on LTX-2 at all (its block
  registry has no entry for `LTX2VideoTransformerBlock`, which returns two streams); `enable_cache` raises
  diffusers' own "not registered" error before anything runs.
- `FasterCacheConfig`: refused with a clear error (`check_cache_config`): it splits the batch into
  unconditional / conditional halves, which is not our pass layout (n passes, pass-major), and fails deep in
  the attention hooks otherwise.
"""

from __future__ import annotations

from contextlib import nullcontext

#: cache configs whose assumptions about the batch layout our batched passes break, with the reason
UNSUPPORTED = {
    "FasterCacheConfig": "it splits each transformer batch into unconditional/conditional halves, while our guidance "
                         "passes are stacked pass-major (n passes x batch)",
}


def cache_config(transformer):
    """The cache config enabled on `transformer` (diffusers' `CacheMixin`), or None."""
    transformer = getattr(transformer, "_orig_mod", transformer)
    return getattr(transformer, "_cache_config", None)


def check_cache_config(transformer) -> None:
    """Raise `ValueError` when the transformer has a cache hook enabled that cannot work with batched passes."""
    config = cache_config(transformer)
    reason = UNSUPPORTED.get(type(config).__name__) if config is not None else None
    if reason is not None:
        raise ValueError(
            f"the transformer has diffusers' {type(config).__name__} enabled, which cannot run with this package's "
            f"guidance passes: {reason}. Disable it (`transformer.disable_cache()`) or use TaylorSeerCacheConfig / "
            "PyramidAttentionBroadcastConfig."
        )


def cache_context(transformer, pass_names):
    """The diffusers cache context for one transformer call made of `pass_names` (a no-op without a cache)."""
    if cache_config(transformer) is None:
        return nullcontext()
    return transformer.cache_context("+".join(pass_names))
