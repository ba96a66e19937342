"""Official LTX-2 single file -> diffusers pipeline folder, streamed and atomic."""

from __future__ import annotations

from ..guiders import MultimodalGuider
from ..loaders.identity import MODEL_ID_METADATA_KEY
from ..schedulers import LTX2Scheduler

import json
import os
import shutil
from pathlib import Path

from .errors import ConversionError
from .fp8 import write_manifest
from .loading import NonFiniteWeights, materialize
from .output_dir import atomic_output_dir, check_destination
from .plan import ConversionPlan, inspect_checkpoint, plan_conversion
from .streaming import (
    OutputTensor,
    SafetensorsStreamWriter,
    SetReader,
    parse_size,
    plan_shards,
    shard_file_names,
    write_index,
)

PIPELINE_CLASS = "LTX2AudioVideoPipeline"

#: ``model_index.json`` libraries. diffusers resolves ``LTX2TextConnectors`` and the vocoders only through
#: its ``pipelines.ltx2`` module (``["diffusers", ...]`` raises "diffusers has no class ..."), so those
#: two use ``"ltx2"`` exactly like the diffusers-format Lightricks repositories.
_LIBRARIES = {
    "LTX2VideoTransformer3DModel": "diffusers",
    "AutoencoderKLLTX2Video": "diffusers",
    "AutoencoderKLLTX2Audio": "diffusers",
    "LTX2TextConnectors": "ltx2",
    "LTX2Vocoder": "ltx2",
    "LTX2VocoderWithBWE": "ltx2",
}

_TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json", "added_tokens.json",
    "chat_template.json", "chat_template.jinja", "preprocessor_config.json", "processor_config.json",
)
_TEXT_ENCODER_SUFFIXES = (".safetensors", ".safetensors.index.json")
_TEXT_ENCODER_FILES = ("config.json", "generation_config.json")


def _diffusers_version() -> str:
    import diffusers

    return diffusers.__version__


def _write_json(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=False)
        f.write("\n")


def _gemma_entries(gemma_path: str | os.PathLike) -> tuple[list[Path], list[Path], list, list]:
    """Files to copy for text_encoder / tokenizer and their model_index entries; validated before writing."""
    root = Path(gemma_path)
    cfg_file = root / "config.json"
    if not cfg_file.is_file():
        raise ConversionError(f"Gemma folder {root} has no config.json")
    cfg = json.loads(cfg_file.read_text())
    arch = (cfg.get("architectures") or ["Gemma3ForConditionalGeneration"])[0]
    model_files = [p for p in sorted(root.iterdir()) if p.name in _TEXT_ENCODER_FILES or p.name.endswith(_TEXT_ENCODER_SUFFIXES)]
    if not any(p.name.endswith(".safetensors") for p in model_files):
        raise ConversionError(f"Gemma folder {root} has no .safetensors weights")
    tok_files = [root / n for n in _TOKENIZER_FILES if (root / n).is_file()]
    if not tok_files:
        raise ConversionError(f"Gemma folder {root} has no tokenizer files")
    tok_cfg = json.loads((root / "tokenizer_config.json").read_text()) if (root / "tokenizer_config.json").is_file() else {}
    tok_class = tok_cfg.get("tokenizer_class") or "AutoTokenizer"
    if (root / "tokenizer.json").is_file() and tok_class != "AutoTokenizer" and not tok_class.endswith("Fast"):
        tok_class += "Fast"
    return model_files, tok_files, ["transformers", arch], ["transformers", tok_class]


def model_index(plan: ConversionPlan, text_encoder=None, tokenizer=None) -> dict:
    """``model_index.json`` for the converted folder."""
    index = {"_class_name": PIPELINE_CLASS, "_diffusers_version": _diffusers_version()}
    for name, spec in plan.specs.items():
        index[name] = [_LIBRARIES[spec.class_name], spec.class_name]
    index["scheduler"] = ["diffusers_ltx2", "LTX2Scheduler"]
    index["guider"] = ["diffusers_ltx2", "MultimodalGuider"]
    index["text_encoder"] = text_encoder or [None, None]
    index["tokenizer"] = tokenizer or [None, None]
    # the checkpoint's LTX API model id: saved conditioning and API embeddings are checked against it
    index["model_identity"] = plan.info.metadata.get(MODEL_ID_METADATA_KEY)
    return index


def _write_component(plan: ConversionPlan, name: str, folder: Path, reader: SetReader, max_bytes: int, bar,
                     nonfinite: NonFiniteWeights) -> None:
    spec = plan.specs[name]
    folder.mkdir()
    _write_json(folder / "config.json", {"_class_name": spec.class_name, "_diffusers_version": _diffusers_version(),
                                         **spec.config})
    tensors = plan.tensors[name]
    shards = plan_shards([OutputTensor(t.dst, t.dtype, t.shape) for t in tensors], max_bytes)
    names = shard_file_names(len(shards))
    it = iter(tensors)
    for shard, fname in zip(shards, names):
        writer = SafetensorsStreamWriter(folder / fname, shard)
        try:
            for _ in shard:
                tp = next(it)
                tensor = materialize(reader, tp)
                nonfinite.check(tp.src or tp.dst, tensor)
                writer.write(tp.dst, tensor)
                bar.update(tp.nbytes)
        except BaseException:
            writer.abort()  # the error in flight (disk full, Ctrl-C, ...) is the one that propagates
            raise
        writer.close()
    write_index(folder, shards, names)
    if plan.fp8_modules.get(name):
        write_manifest(folder, plan.fp8_modules[name], plan.fp8_weight_dtype)


def convert_single_file(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    dtype: str = "keep",
    fp8: str | None = None,
    max_shard_size: str | int = "5GB",
    gemma_path: str | os.PathLike | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> Path:
    """Convert an official LTX-2 ``.safetensors`` into a diffusers pipeline folder.

    Tensors are read one at a time and written into sharded safetensors; the output is assembled in a
    temporary sibling folder that takes ``dst``'s place only when everything succeeded (errors and Ctrl-C
    leave nothing behind; see :mod:`.output_dir` for the destination rules). Unknown or missing keys abort before anything is written, listing the keys.

    Args:
        src: official single file (``config`` and ``model_version`` metadata; versions 2.0 and 2.3).
        dst: output folder (must not exist unless ``overwrite``).
        dtype: ``"keep"``, ``"bf16"``, ``"fp32"`` (or ``"fp16"``) for floating tensors.
        fp8: ``"dequantize"`` or ``"keep"`` for float8 checkpoints (required for them).
        max_shard_size: e.g. ``"5GB"`` or bytes; one shard per file up to this size.
        gemma_path: Gemma folder (transformers format) copied as ``text_encoder`` / ``tokenizer``.
        progress: tqdm progress bar over bytes written.
        overwrite: replace an existing ``dst`` (after success only) - only a folder this tool wrote (its
            ``model_index.json`` names an LTX-2 pipeline), never a file or another folder.

    Returns:
        The output folder.

    Raises:
        ConversionError: a destination that is or contains ``src`` / ``gemma_path``, an existing one without
            ``overwrite`` or that this tool did not write; unknown/missing keys; a tensor whose dtype does not
            fit its role (e.g. an integer weight); a corrupt or unsupported file (subclasses).
        OSError: writing failed (disk full, permission denied, ...): the OS error itself, not a summary.
        KeyboardInterrupt: Ctrl-C; nothing is left behind.

    Warns:
        RuntimeWarning: naming the tensors that hold NaN or inf (checked while streaming, no second read).
    """
    from tqdm.auto import tqdm

    sources = [src] if gemma_path is None else [src, gemma_path]
    check_destination(dst, sources, overwrite=overwrite)  # before anything is read
    max_bytes = parse_size(max_shard_size)
    plan = plan_conversion(inspect_checkpoint(src), dtype=dtype, fp8=fp8)
    gemma = _gemma_entries(gemma_path) if gemma_path is not None else None
    dst = Path(dst)
    nonfinite = NonFiniteWeights(src)
    with atomic_output_dir(dst, overwrite=overwrite, sources=sources) as tmp:
        with SetReader(plan.info.sources) as reader, tqdm(
            total=plan.total_bytes, unit="B", unit_scale=True, desc=f"LTX-{plan.info.version} -> diffusers",
            disable=not progress,
        ) as bar:
            for name in plan.specs:
                _write_component(plan, name, tmp / name, reader, max_bytes, bar, nonfinite)
        # The scheduler and guider a pipeline gets by default (official schedule; recommended multimodal dials,
        # STG block chosen from the transformer at run time), written by the classes themselves.
        LTX2Scheduler().save_pretrained(tmp / "scheduler")
        MultimodalGuider().save_pretrained(tmp / "guider")
        te_entry = tok_entry = None
        if gemma is not None:
            model_files, tok_files, te_entry, tok_entry = gemma
            for folder, files in (("text_encoder", model_files), ("tokenizer", tok_files)):
                (tmp / folder).mkdir()
                for f in files:
                    shutil.copy2(f, tmp / folder / f.name)
        _write_json(tmp / "model_index.json", model_index(plan, te_entry, tok_entry))
    nonfinite.warn()
    return dst
