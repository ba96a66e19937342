"""diffusers-ltx2: Lightricks' LTX-2 joint audio+video diffusion for diffusers users.

Importing the package registers its pipelines with diffusers, so `diffusers.DiffusionPipeline.from_pretrained`
loads folders saved by `LTX2AudioVideoPipeline.save_pretrained`.

The import itself is cheap: the public names below are imported on first use (PEP 562 `__getattr__`), and
diffusers resolves our pipeline names on demand (see `_registration`), so the `ltx2` command line starts
without importing torch or diffusers.
"""

from __future__ import annotations

import importlib

from . import _plain_diffusers, _registration

__version__ = "0.1.0"

#: public name -> submodule defining it (imported on first access)
_EXPORTS = {
    "export_to_video_with_audio": ".export",
    "ClassifierFreeGuidance": ".guiders",
    "GuidancePass": ".guiders",
    "Guider": ".guiders",
    "Prediction": ".guiders",
    "StepPlan": ".guiders",
    "GuidanceAttentionControl": ".transformer",
    "ModalityGuidance": ".guiders",
    "ModalityGuidanceParams": ".guiders",
    "MultimodalGuider": ".guiders",
    "ScheduledGuider": ".guiders",
    "SpatioTemporalGuidance": ".guiders",
    "GemmaPromptEncoder": ".loaders",
    "PromptEmbeddings": ".loaders",
    "PromptEncoder": ".loaders",
    "LTX2AudioVideoPipeline": ".pipelines",
    "LTX2AudioVideoPipelineOutput": ".pipelines",
    "LTX2ICLoRAPipeline": ".pipelines",
    "LTX2TwoStagePipeline": ".pipelines",
    "LTX2ICLoRATwoStagePipeline": ".pipelines",
    "LTX2DFRPipeline": ".dfr.pipeline",
    "DEFAULT_NEGATIVE_PROMPT": ".recommended",
    "DISTILLED_REFINE_SIGMAS": ".schedulers",
    "DISTILLED_SIGMAS": ".schedulers",
    "LTX2Scheduler": ".schedulers",
    "DiffusionTiling": ".pipelines.diffusion_tiling",
    "default_image_crf": ".versions",
}

__all__ = sorted(_EXPORTS)

_registration.install()
_plain_diffusers.install()


#: subpackages reachable as attributes (`diffusers_ltx2.control.CannyPreprocessor`) as when they were eager
_SUBMODULES = ("cli", "conditioning", "control", "conversion", "export", "factory", "guiders", "loaders", "media",
               "pipelines", "schedulers", "latents", "transformer", "versions")


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    importlib.import_module(".pipelines", __name__)  # using the package registers its pipelines with diffusers
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
