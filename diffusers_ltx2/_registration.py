"""Make diffusers' loading machinery aware of this package's classes, without importing diffusers early.

- `diffusers.DiffusionPipeline.from_pretrained(dir)` resolves a folder's `_class_name` on the `diffusers`
  module, and diffusers' own test helpers (`ReturnNameVisitor.get_ast_tree`, used by the `encode_prompt`
  isolation test) look a pipeline class up on `diffusers.pipelines`: our pipeline classes are published on both.
- diffusers saves and loads a component through the first base class it finds in its `LOADABLE_CLASSES`
  table, looked up by name on the component's library; our `Guider` and `LTX2Scheduler` get an entry for
  the `diffusers_ltx2` library.

`import diffusers_ltx2` must stay cheap (the `ltx2` command line answers `--help` without torch or diffusers),
so the pipelines are registered when they are first used: `diffusers_ltx2.pipelines` registers itself when
imported, and :func:`install` makes `diffusers` and `diffusers.pipelines` resolve our pipeline names on demand -
at once for a module already imported, otherwise right after its own import finishes (an import hook that
removes itself once both are served). Resolving a name on either imports `diffusers_ltx2.pipelines`, which
registers everything.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

_METHODS = ["save_pretrained", "from_pretrained"]
#: Modules our pipeline classes are published on (both diffusers `_LazyModule`s).
PUBLISHED_ON = ("diffusers", "diffusers.pipelines")
#: Pipeline classes published on those modules (imported from `diffusers_ltx2.pipelines` on demand).
PIPELINE_NAMES = ("LTX2AudioVideoPipeline", "LTX2ICLoRAPipeline", "LTX2TwoStagePipeline", "LTX2ICLoRATwoStagePipeline")


def register(pipelines: dict[str, type], loadable_bases: tuple[str, ...]) -> None:
    """Publish `pipelines` on `diffusers` and `diffusers.pipelines` and declare `loadable_bases` (class names
    exported by `diffusers_ltx2`) as loadable/saveable components. Idempotent."""
    import diffusers
    import diffusers.pipelines
    from diffusers.pipelines import pipeline_loading_utils

    modules = [sys.modules[m] for m in PUBLISHED_ON]
    for name, cls in pipelines.items():
        for module in modules:
            existing = module.__dict__.get(name)  # not getattr: that would resolve our own on-demand names
            if name in getattr(module, "_class_to_module", {}) or (existing is not None and existing is not cls):
                raise RuntimeError(f"{module.__name__} already defines {name}; refusing to shadow it")
        for module in modules:
            setattr(module, name, cls)
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
    """Import hook: lets each module of `PUBLISHED_ON` import normally, then makes it serve our pipeline names on
    demand; removes itself once every one has been served."""

    def __init__(self, pending):
        self._pending = set(pending)
        self._loaders = {}

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in self._pending:
            return None
        self._pending.discard(fullname)
        if not self._pending and self in sys.meta_path:
            sys.meta_path.remove(self)
        finders = [f for f in sys.meta_path if f is not self]
        spec = next((s for s in (_find(f, fullname, path, target) for f in finders) if s is not None), None)
        if spec is None or spec.loader is None:
            return spec
        self._loaders[fullname], spec.loader = spec.loader, self
        return spec

    def create_module(self, spec):
        return self._loaders[spec.name].create_module(spec)

    def exec_module(self, module):
        name = module.__spec__.name
        loader = self._loaders.pop(name)
        module.__spec__.loader = module.__loader__ = loader
        loader.exec_module(module)
        _serve_on_demand(sys.modules.get(name, module))  # diffusers' modules replace themselves by a _LazyModule


def _find(finder, fullname, path, target):
    find_spec = getattr(finder, "find_spec", None)
    return find_spec(fullname, path, target) if find_spec is not None else None


def install() -> None:
    """Make `diffusers` and `diffusers.pipelines` resolve our pipeline names (now for those imported, else after
    their import). Cheap, idempotent."""
    pending = []
    for name in PUBLISHED_ON:
        if name in sys.modules:
            _serve_on_demand(sys.modules[name])
        else:
            pending.append(name)
    if pending and not any(isinstance(f, _AfterDiffusersImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterDiffusersImport(pending))
