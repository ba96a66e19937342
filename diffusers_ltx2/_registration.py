"""Make diffusers' loading machinery aware of this package's classes, without importing diffusers early.

- `diffusers.DiffusionPipeline.from_pretrained(dir)` resolves a folder's `_class_name` on the `diffusers`
  module, so our pipeline classes are published there.
- diffusers saves and loads a component through the first base class it finds in its `LOADABLE_CLASSES`
  table, looked up by name on the component's library; our `Guider` and `LTX2Scheduler` get an entry for
  the `diffusers_ltx2` library.

`import diffusers_ltx2` must stay cheap (the `ltx2` command line answers `--help` without torch or diffusers),
so the pipelines are registered when they are first used: `diffusers_ltx2.pipelines` registers itself when
imported, and :func:`install` makes `diffusers` resolve our pipeline names on demand - at once when diffusers is
already imported, otherwise right after diffusers' own import finishes (a one-shot import hook). Resolving a
name on `diffusers` imports `diffusers_ltx2.pipelines`, which registers everything.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

_METHODS = ["save_pretrained", "from_pretrained"]
#: Pipeline classes published on the `diffusers` module (imported from `diffusers_ltx2.pipelines` on demand).
PIPELINE_NAMES = ("LTX2AudioVideoPipeline", "LTX2ICLoRAPipeline", "LTX2TwoStagePipeline", "LTX2ICLoRATwoStagePipeline")


def register(pipelines: dict[str, type], loadable_bases: tuple[str, ...]) -> None:
    """Publish `pipelines` on the `diffusers` module and declare `loadable_bases` (class names exported by
    `diffusers_ltx2`) as loadable/saveable components. Idempotent."""
    import diffusers
    from diffusers.pipelines import pipeline_loading_utils

    for name, cls in pipelines.items():
        existing = diffusers.__dict__.get(name)  # not getattr: that would resolve our own on-demand names
        if name in getattr(diffusers, "_class_to_module", {}) or (existing is not None and existing is not cls):
            raise RuntimeError(f"diffusers already defines {name}; refusing to shadow it")
        setattr(diffusers, name, cls)
    table = pipeline_loading_utils.LOADABLE_CLASSES.setdefault("diffusers_ltx2", {})
    for base in loadable_bases:
        table[base] = list(_METHODS)
        pipeline_loading_utils.ALL_IMPORTABLE_CLASSES[base] = list(_METHODS)


class _OnDemand(dict):
    """diffusers' `_LazyModule._objects` (names it serves before its own table), plus our pipeline names,
    resolved by importing `diffusers_ltx2.pipelines` (which registers them) when first asked for."""

    def __contains__(self, name) -> bool:
        return dict.__contains__(self, name) or name in PIPELINE_NAMES

    def __getitem__(self, name):
        if not dict.__contains__(self, name) and name in PIPELINE_NAMES:
            pipelines = importlib.import_module("diffusers_ltx2.pipelines")
            return getattr(pipelines, name)
        return dict.__getitem__(self, name)


def _serve_on_demand(diffusers_module) -> None:
    objects = getattr(diffusers_module, "_objects", None)
    if isinstance(objects, dict) and not isinstance(objects, _OnDemand):
        diffusers_module._objects = _OnDemand(objects)


class _AfterDiffusersImport(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """One-shot hook: lets `diffusers` import normally, then makes it serve our pipeline names on demand."""

    def __init__(self):
        self._spec = None

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "diffusers" or self._spec is not None:
            return None
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        spec = importlib.util.find_spec("diffusers")  # the real finders
        if spec is None or spec.loader is None:
            return spec
        self._spec = spec
        spec.loader, self._loader = self, spec.loader
        return spec

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        module.__spec__.loader = module.__loader__ = self._loader
        self._loader.exec_module(module)
        _serve_on_demand(sys.modules.get("diffusers", module))  # diffusers replaces itself by a _LazyModule


def install() -> None:
    """Make `diffusers` resolve our pipeline names (now if imported, else after its import). Cheap, idempotent."""
    if "diffusers" in sys.modules:
        _serve_on_demand(sys.modules["diffusers"])
    elif not any(isinstance(f, _AfterDiffusersImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterDiffusersImport())
