"""A folder this package saves names its pipeline class so that plain diffusers (no `import diffusers_ltx2`) says
how to load it, instead of `AttributeError: module diffusers has no attribute LTX2AudioVideoPipeline`.

diffusers resolves a folder's `model_index.json` `_class_name` on the `diffusers` module; our classes are only
published there once `diffusers_ltx2` is imported. diffusers' own way for pipelines that live elsewhere is a
custom-pipeline file: `_class_name: ["<module>", "<class>"]` with `<module>.py` in the folder. Ours
(`diffusers_ltx2_pipeline.py`) imports the class from this package. So, without our import:

* `DiffusionPipeline.from_pretrained(folder)` refuses with diffusers' message naming that file ("contains custom
  code in diffusers_ltx2_pipeline.py ... Pass `trust_remote_code=True`"); the file says to `import diffusers_ltx2`;
* `from_pretrained(folder, trust_remote_code=True)` loads our pipeline (with diffusers-ltx2 installed; else
  diffusers names the missing package).

With `diffusers_ltx2` imported, `install()` makes diffusers read such an index as the plain class name (no custom
code is run, no `trust_remote_code` needed), by wrapping `pipeline_utils._resolve_custom_pipeline_and_cls` once
diffusers' pipeline module is imported.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import json
import os
import sys

STUB_MODULE = "diffusers_ltx2_pipeline"
_PIPELINES = ("LTX2AudioVideoPipeline", "LTX2ICLoRAPipeline", "LTX2TwoStagePipeline", "LTX2ICLoRATwoStagePipeline",
              "LTX2DFRPipeline")
#: key `resolve` leaves in the index it reads, naming the class `_get_pipeline_class` must return: our
#: `LTX2DFRPipeline` shares its name with diffusers' own (which our registration does not overwrite)
_OURS = "_ltx2_pipeline_class"

_STUB = '''"""This folder was saved by diffusers-ltx2: its pipeline class lives in that package.

Load it with:

    import diffusers_ltx2  # registers the LTX-2 pipelines with diffusers
    import diffusers
    pipe = diffusers.DiffusionPipeline.from_pretrained("<this folder>")

or `diffusers_ltx2.LTX2AudioVideoPipeline.from_pretrained("<this folder>")`. Plain diffusers runs this file only
with `trust_remote_code=True`; it imports the class from diffusers-ltx2 (`pip install diffusers-ltx2`).
"""

from diffusers_ltx2 import LTX2DFRPipeline  # noqa: F401  (not diffusers' class of that name)
from diffusers_ltx2.pipelines import (  # noqa: F401
    LTX2AudioVideoPipeline, LTX2ICLoRAPipeline, LTX2ICLoRATwoStagePipeline, LTX2TwoStagePipeline,
)
'''


def class_name_of(index: dict) -> str | None:
    """The pipeline class a `model_index.json` names, written plain or as our custom-pipeline pair."""
    name = index.get("_class_name")
    if isinstance(name, (list, tuple)) and len(name) == 2 and name[0] == STUB_MODULE:
        return name[1]
    return name if isinstance(name, str) else None


def mark(folder: str | os.PathLike, class_name: str) -> None:
    """Write the custom-pipeline form of `class_name` into `folder/model_index.json` and the stub module beside
    (only for this package's pipeline classes: a user's subclass keeps its plain name)."""
    if class_name not in _PIPELINES:
        return
    folder = os.fspath(folder)
    index_path = os.path.join(folder, "model_index.json")
    with open(index_path) as f:
        index = json.load(f)
    index["_class_name"] = [STUB_MODULE, class_name]
    with open(os.path.join(folder, f"{STUB_MODULE}.py"), "w") as f:
        f.write(_STUB)
    with open(index_path, "w") as f:
        json.dump(index, f, indent=2, sort_keys=True)
        f.write("\n")


def _patch(pipeline_utils) -> None:
    original = pipeline_utils._resolve_custom_pipeline_and_cls
    if getattr(original, "_ltx2", False):
        return
    original_class = pipeline_utils._get_pipeline_class

    def resolve(folder, config, custom_pipeline):
        name = config.get("_class_name")
        if custom_pipeline is None and isinstance(name, (list, tuple)) and len(name) == 2 \
                and name[0] == STUB_MODULE and name[1] in _PIPELINES:
            config["_class_name"] = name[1]  # resolved on `diffusers` by our registration: no custom code runs
            config[_OURS] = name[1]
            return None, None
        return original(folder, config, custom_pipeline)

    def pipeline_class(class_obj, *args, **kwargs):
        config = kwargs.get("config", args[0] if args else None)
        ours = config.pop(_OURS, None) if isinstance(config, dict) else None
        if ours is not None and class_obj.__name__ == "DiffusionPipeline" and kwargs.get("custom_pipeline") is None:
            import diffusers_ltx2

            return getattr(diffusers_ltx2, ours)  # e.g. our LTX2DFRPipeline, not diffusers' class of that name
        return original_class(class_obj, *args, **kwargs)

    resolve._ltx2 = True
    pipeline_utils._resolve_custom_pipeline_and_cls = resolve
    pipeline_utils._get_pipeline_class = pipeline_class


_TARGET = "diffusers.pipelines.pipeline_utils"


class _AfterImport(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """One-shot hook: lets diffusers' pipeline module import normally, then patches it."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != _TARGET:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        spec.loader, self._loader = self, spec.loader
        return spec

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        module.__spec__.loader = module.__loader__ = self._loader
        self._loader.exec_module(module)
        _patch(module)


def install() -> None:
    """Read our custom-pipeline `_class_name` as the plain name (now if diffusers' pipeline module is imported,
    else right after it is). Cheap, idempotent."""
    if _TARGET in sys.modules:
        _patch(sys.modules[_TARGET])
    elif not any(isinstance(f, _AfterImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterImport())
