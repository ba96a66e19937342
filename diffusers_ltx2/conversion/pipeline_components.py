"""What `from_single_file` gives a pipeline from an official checkpoint (a 2.0 / 2.3 single file or an LTX-2.5 file
set): the model components, the text encoder and tokenizer of a 2.5 set, and the checkpoint's identity."""

from __future__ import annotations

import os

import torch

from .loading import load_components_from_single_file
from .plan import inspect_checkpoint, plan_conversion
from .streaming import SetReader

__all__ = ["check_sources_exist", "load_pipeline_components"]


def check_sources_exist(path) -> None:
    """`FileNotFoundError` naming the first of `path` (a file or folder, or a list of them) that does not exist."""
    for p in [path] if isinstance(path, (str, os.PathLike)) else list(path):
        if not os.path.exists(p):
            raise FileNotFoundError(f"checkpoint not found: {p}")


def load_pipeline_components(path, *, dtype: torch.dtype | None = None, fp8: str | None = "dequantize",
                             progress: bool = False, text_encoder=None, tokenizer=None) -> dict:
    """Everything `from_single_file` gives a pipeline besides scheduler and guider: the model components (a 2.5
    set's duration head too: the pipeline predicts `num_frames` with it), the text encoder and tokenizer (given,
    or a 2.5 set's text encoder file), and the checkpoint's identity (``model_identity``, ``model_version``,
    ``gemma_version``).

    Raises:
        FileNotFoundError: a missing path. ConversionError: unknown/missing keys, or a 2.5 set missing a file a
            pipeline needs (named).
    """
    from .metadata import MODEL_ID_METADATA_KEY, expected_gemma_version
    from .plan import DTYPES, check_pipeline_components
    from .text_encoder import load_text_encoder, plan_text_encoder, text_encoder_file

    check_sources_exist(path)
    name = {v: k for k, v in DTYPES.items()}.get(dtype)
    if name is None:
        raise ValueError(f"unsupported dtype {dtype}")
    info = inspect_checkpoint(path)
    plan = plan_conversion(info, dtype=name, fp8=fp8)
    check_pipeline_components(plan)
    kwargs = load_components_from_single_file(path, dtype=dtype, fp8=fp8, progress=progress, plan=plan)
    te_file = text_encoder_file(info.files)
    if text_encoder is None and tokenizer is None and te_file is not None:
        with SetReader(info.sources) as reader:
            text_encoder, tokenizer = load_text_encoder(plan_text_encoder(te_file, dtype), reader, dtype)
    kwargs.update(text_encoder=text_encoder, tokenizer=tokenizer,
                  model_identity=info.metadata.get(MODEL_ID_METADATA_KEY),
                  model_version=info.metadata.get("model_version"),
                  gemma_version=expected_gemma_version(info.metadata))
    return kwargs
