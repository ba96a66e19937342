"""Makes the official implementation (ltx-core / ltx-pipelines) importable here: import this module first.

ltx-core declares torchaudio, which has no CPU wheel for torch 2.13. Only `ltx_core.model.audio_vae.ops`
imports it, for the audio *encoder*'s mel front-end, which nothing here uses; a stub module stands in for it.
"""

import importlib.machinery
import sys
import types

import transformers  # noqa: F401  (imported before the stub so its torchaudio availability probe sees none)

if "torchaudio" not in sys.modules:
    _stub = types.ModuleType("torchaudio")
    _stub.__spec__ = importlib.machinery.ModuleSpec("torchaudio", loader=None)
    sys.modules["torchaudio"] = _stub
