"""Measured allocations on any device (CPU included): peak bytes of tensors allocated inside a region.

`AllocationTracker` is a `TorchDispatchMode` that adds the storage size of every new tensor an operator
returns and subtracts it when the storage is freed (weakref finalizer); views and in-place results share a
storage (with an input or an earlier result) and are not counted again. Its `peak` is what a CUDA caching allocator's `max_memory_allocated` would add
for the region, without allocator rounding or fragmentation, so the planner's estimate can be checked on CPU.
"""

from __future__ import annotations

import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


def _storage(t):
    """(data pointer, bytes, storage) of a plain tensor's storage; (None, 0, None) for anything else (meta
    tensors, wrapper subclasses such as quanto's, whose inner tensors are what gets allocated)."""
    if not isinstance(t, torch.Tensor) or t.device.type == "meta":
        return None, 0, None
    try:
        storage = t.untyped_storage()
        return storage.data_ptr(), storage.nbytes(), storage
    except (RuntimeError, NotImplementedError):
        return None, 0, None


class AllocationTracker(TorchDispatchMode):
    """Context manager: `peak` / `live` bytes allocated by operators run inside it (tensors created before it
    are not counted)."""

    def __init__(self):
        super().__init__()
        self.live = 0
        self.peak = 0
        self._sizes: dict[int, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {_storage(t)[0] for t in tree_flatten((args, kwargs))[0]}
        for t in tree_flatten(out)[0]:
            key, size, storage = _storage(t)
            if storage is not None:
                if size == 0 or key in self._sizes or key in inputs:  # views / in-place results: not new memory
                    continue
                self._sizes[key] = size
                self.live += size
                self.peak = max(self.peak, self.live)
                weakref.finalize(storage, self._free, key)
        return out

    def _free(self, key: int) -> None:
        self.live -= self._sizes.pop(key, 0)


def track_module_peak(module: torch.nn.Module) -> list[int]:
    """Record the allocation peak of every forward call of `module` (appended to the returned list)."""
    peaks: list[int] = []
    state = {}

    def pre(mod, args, kwargs):
        state["t"] = AllocationTracker().__enter__()

    def post(mod, args, kwargs, out):
        tracker = state.pop("t")
        tracker.__exit__(None, None, None)
        peaks.append(tracker.peak)

    module.register_forward_pre_hook(pre, with_kwargs=True)
    module.register_forward_hook(post, with_kwargs=True)
    return peaks
