"""One pipeline call at a time per set of shared components.

A call keeps state on components that pipelines share (and that `from_pipe` shares between pipelines): the
guidance attention control installs per-pass processors and masks on the transformer, a stage switches its LoRA
adapters, and the pipeline records the running call (diffusers' `guidance_scale`, `num_timesteps`, `interrupt`).
Two threads running calls on the same transformer would mix them up (wrong latents, or an internal error). `serialized_call` makes such calls wait for each other instead: each component
has a lock, a call takes the locks of the pipeline, its transformer and its scheduler (in a fixed order, so two
calls can never deadlock), and concurrent calls on different components still run in parallel.

A call made again from inside a running call on the same thread (e.g. from `callback_on_step_end`) would wait
for itself forever; it raises a `RuntimeError` instead.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import weakref

_registry_lock = threading.Lock()
_locks: "weakref.WeakKeyDictionary[object, _OwnedLock]" = weakref.WeakKeyDictionary()
_by_id: dict[int, "_OwnedLock"] = {}  # objects that cannot be weakly referenced (kept while they live in a call)


class _OwnedLock:
    def __init__(self):
        self.lock = threading.Lock()
        self.owner: int | None = None


def _lock_for(obj) -> _OwnedLock:
    with _registry_lock:
        try:
            lock = _locks.get(obj)
            if lock is None:
                lock = _locks[obj] = _OwnedLock()
        except TypeError:  # not weak-referenceable or not hashable
            lock = _by_id.setdefault(id(obj), _OwnedLock())
        return lock


@contextlib.contextmanager
def exclusive(*objects):
    """Hold the call locks of `objects` (`None` entries ignored) for the duration of the block.

    Raises:
        RuntimeError: the current thread already holds one of them (a re-entrant pipeline call).
    """
    unique = {id(o): o for o in objects if o is not None}
    locks = [_lock_for(unique[k]) for k in sorted(unique)]
    me = threading.get_ident()
    if any(lock.owner == me for lock in locks):
        raise RuntimeError(
            "an LTX-2 pipeline was called from inside a running call on the same components (e.g. from "
            "callback_on_step_end); calls on shared components run one at a time: call it after this one returns"
        )
    taken = []
    try:
        for lock in locks:
            lock.lock.acquire()
            lock.owner = me
            taken.append(lock)
        yield
    finally:
        for lock in reversed(taken):
            lock.owner = None
            lock.lock.release()


def serialized_call(call):
    """Decorate a pipeline's `__call__` so that calls sharing the pipeline, its transformer or its scheduler run
    one after another (see the module docstring)."""

    @functools.wraps(call)
    def wrapper(self, *args, **kwargs):
        with exclusive(self, getattr(self, "transformer", None), getattr(self, "scheduler", None)):
            return call(self, *args, **kwargs)

    wrapper.__serialized__ = True
    return wrapper
