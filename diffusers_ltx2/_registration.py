"""Make diffusers' loading machinery aware of this package's classes.

- `diffusers.DiffusionPipeline.from_pretrained(dir)` resolves a folder's `_class_name` on the `diffusers`
  module, so our pipeline classes are published there.
- diffusers saves and loads a component through the first base class it finds in its `LOADABLE_CLASSES`
  table, looked up by name on the component's library; our `Guider` and `LTX2Scheduler` get an entry for
  the `diffusers_ltx2` library.
"""

from __future__ import annotations

import diffusers
from diffusers.pipelines import pipeline_loading_utils

_METHODS = ["save_pretrained", "from_pretrained"]


def register(pipelines: dict[str, type], loadable_bases: tuple[str, ...]) -> None:
    """Publish `pipelines` on the `diffusers` module and declare `loadable_bases` (class names exported by
    `diffusers_ltx2`) as loadable/saveable components. Idempotent."""
    for name, cls in pipelines.items():
        existing = getattr(diffusers, name, None) if name in dir(diffusers) else None
        if existing is not None and existing is not cls:
            raise RuntimeError(f"diffusers already defines {name}; refusing to shadow it")
        setattr(diffusers, name, cls)
    table = pipeline_loading_utils.LOADABLE_CLASSES.setdefault("diffusers_ltx2", {})
    for base in loadable_bases:
        table[base] = list(_METHODS)
        pipeline_loading_utils.ALL_IMPORTABLE_CLASSES[base] = list(_METHODS)
