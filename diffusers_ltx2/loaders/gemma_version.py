"""Which Gemma a checkpoint's text projection and connectors were trained on, and checking the loaded one.

An LTX-2.5 checkpoint declares its encoder in the safetensors metadata key ``gemma_source_checkpoint`` (a JSON
object whose ``gemma_version`` is e.g. ``"gemma4-12b-ltx-v1"``); the LTX Gemma-4 folder declares the same string
as a top-level ``gemma_version`` in its ``config.json``. Encoding with another Gemma (Google's vanilla Gemma-4, or
Gemma-3) gives embeddings the connectors were never trained on: wrong videos, no error. So the text encoder is
checked before it runs.

Source followed: ltx-core 1.2.0 `text_encoders/gemma/encoders/encoder_configurator.py` (`_check_gemma_version`):

* the checkpoint declares a version: the Gemma config's ``gemma_version`` must equal it;
* it declares none but its ``model_version`` is 2.4 or later (it should have): an error, unless the Gemma config
  has no ``gemma_version`` either (then a warning: nothing to compare);
* neither: the encoder must be a Gemma-3 (``model_type`` ``gemma3``), as LTX-2.0 / 2.3 were trained on.

One deliberate difference: ltx-core runs the third rule for every checkpoint it loads. Here it runs only when
the checkpoint is known (`model_version` recorded); a diffusers-format folder that records nothing (diffusers
0.42.1 records no encoder version) is not checked rather than refused.
"""

from __future__ import annotations

import logging

from ..conversion.metadata import GEMMA_SOURCE_METADATA_KEY, GEMMA_VERSION_KEY, expected_gemma_version  # re-exported
from ..versions import parse_model_version  # one parser of `model_version` strings (re-exported here)

logger = logging.getLogger(__name__)

__all__ = [
    "GEMMA_SOURCE_METADATA_KEY",
    "GemmaVersionMismatchError",
    "check_gemma_version",
    "expected_gemma_version",
    "parse_model_version",
]

#: From this `model_version` on, a checkpoint must declare its Gemma (ltx-core's
#: `_GEMMA_SOURCE_CHECKPOINT_REQUIRED_SINCE`).
REQUIRED_SINCE = (2, 4, 0)


class GemmaVersionMismatchError(ValueError):
    """The loaded Gemma is not the one the checkpoint's text connectors were trained on."""


def _config(text_encoder):
    return getattr(text_encoder, "config", text_encoder)


def check_gemma_version(text_encoder, *, expected: str | None, model_version: str | None) -> None:
    """Check a text encoder (or its transformers config) against what the checkpoint declares.

    Args:
        text_encoder: the Gemma model (`Gemma3ForConditionalGeneration`, `Gemma4UnifiedForConditionalGeneration`)
            or its config: its top-level ``gemma_version`` and ``model_type`` are read.
        expected: the checkpoint's declared encoder version (`expected_gemma_version`), `None` if it declares none.
        model_version: the checkpoint's ``model_version`` metadata; `None` when unknown (then only a declared
            version is checked).

    Raises:
        GemmaVersionMismatchError: the rules of the module docstring.
    """
    config = _config(text_encoder)
    actual = getattr(config, GEMMA_VERSION_KEY, None)
    model_type = getattr(config, "model_type", None)
    if expected is not None:
        if actual != expected:
            raise GemmaVersionMismatchError(
                f"the checkpoint's text connectors were trained on Gemma {expected!r}, but the loaded text encoder "
                f"({model_type}) declares gemma_version={actual!r}: load the matching Gemma (for LTX-2.5 the LTX "
                f"fine-tune of Gemma-4, e.g. {expected})"
            )
        return
    if model_version is None:
        return
    if parse_model_version(model_version) >= REQUIRED_SINCE:
        if actual is None:
            logger.warning("checkpoint model_version=%r declares no %s and the text encoder no gemma_version: "
                           "their compatibility cannot be checked", model_version, GEMMA_SOURCE_METADATA_KEY)
            return
        raise GemmaVersionMismatchError(
            f"checkpoint model_version={model_version!r} must declare {GEMMA_SOURCE_METADATA_KEY}.gemma_version, "
            "but it declares none: its text encoder cannot be checked"
        )
    if model_type != "gemma3":
        raise GemmaVersionMismatchError(
            f"checkpoint model_version={model_version!r} (LTX-2.0 / 2.3) was trained on Gemma-3, but the loaded "
            f"text encoder is model_type={model_type!r}"
        )
