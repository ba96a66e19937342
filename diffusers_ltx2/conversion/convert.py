"""Official LTX-2 checkpoint (a single file, or an LTX-2.5 file set) -> diffusers pipeline folder, streamed and
atomic."""

from __future__ import annotations

from ..json_files import read_json
from ..guiders import MultimodalGuider
from ..schedulers import LTX2Scheduler
from .metadata import MODEL_ID_METADATA_KEY, expected_gemma_version

import json
import os
import shutil
from pathlib import Path

from .errors import ConversionError
from .._plain_diffusers import mark as mark_saved_folder
from .fp8 import write_manifest
from .loading import NonFiniteWeights, materialize
from .output_dir import atomic_output_dir, check_destination
from .plan import (
    DTYPES,
    ConversionPlan,
    check_pipeline_components,
    inspect_checkpoint,
    plan_conversion,
)
from .upsampler import UPSAMPLER_FOLDER
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
    "LTX2VideoDiffusionDecoderModel": "diffusers",
    "LTX2DurationHead": "ltx2",
}

TEMPORAL_UPSAMPLER_FOLDER = "temporal_latent_upsampler"
LORA_FOLDER = "loras"

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
    cfg = read_json(cfg_file)
    arch = (cfg.get("architectures") or ["Gemma3ForConditionalGeneration"])[0]
    model_files = [p for p in sorted(root.iterdir()) if p.name in _TEXT_ENCODER_FILES or p.name.endswith(_TEXT_ENCODER_SUFFIXES)]
    if not any(p.name.endswith(".safetensors") for p in model_files):
        raise ConversionError(f"Gemma folder {root} has no .safetensors weights")
    tok_files = [root / n for n in _TOKENIZER_FILES if (root / n).is_file()]
    if not tok_files:
        raise ConversionError(f"Gemma folder {root} has no tokenizer files")
    tok_cfg = read_json(root / "tokenizer_config.json") if (root / "tokenizer_config.json").is_file() else {}
    tok_class = tok_cfg.get("tokenizer_class") or "AutoTokenizer"
    if (root / "tokenizer.json").is_file() and tok_class != "AutoTokenizer" and not tok_class.endswith("Fast"):
        tok_class += "Fast"
    return model_files, tok_files, ["transformers", arch], ["transformers", tok_class]


def model_index(plan: ConversionPlan, text_encoder=None, tokenizer=None) -> dict:
    """``model_index.json`` for the converted folder (components, and the checkpoint's identity: its LTX API model
    id, ``model_version`` and, for 2.5, the Gemma version the text encoder must have)."""
    index = {"_class_name": PIPELINE_CLASS, "_diffusers_version": _diffusers_version()}
    for name, spec in plan.specs.items():
        index[name] = [_LIBRARIES[spec.class_name], spec.class_name]
    index["scheduler"] = ["diffusers_ltx2", "LTX2Scheduler"]
    index["guider"] = ["diffusers_ltx2", "MultimodalGuider"]
    index["text_encoder"] = text_encoder or [None, None]
    index["tokenizer"] = tokenizer or [None, None]
    # the checkpoint's LTX API model id: saved conditioning and API embeddings are checked against it
    index["model_identity"] = plan.info.metadata.get(MODEL_ID_METADATA_KEY)
    index["model_version"] = plan.info.metadata.get("model_version") or plan.info.version
    gemma = expected_gemma_version(plan.info.metadata)
    if gemma is not None:
        index["gemma_version"] = gemma
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
    src,
    dst: str | os.PathLike,
    *,
    dtype: str = "keep",
    fp8: str | None = None,
    max_shard_size: str | int = "5GB",
    gemma_path: str | os.PathLike | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> Path:
    """Convert an official LTX-2 checkpoint into a diffusers pipeline folder.

    ``src`` is a single file (2.0 / 2.3), or an LTX-2.5 file set: a folder, or a list of files (transformer, text
    encoder with the projection, conv video VAE, audio VAE; optionally the diffusion video VAE, duration head,
    spatial / temporal upscalers, distilled LoRA: see `conversion.files`). Tensors are read one at a time and
    written into sharded safetensors; the output is assembled in a temporary sibling folder that takes ``dst``'s
    place only when everything succeeded (errors and Ctrl-C leave nothing behind; see :mod:`.output_dir` for the
    destination rules). Unknown or missing keys abort before anything is written, listing the keys.

    A 2.5 set gives, next to the 2.0/2.3 components: ``text_encoder/`` + ``tokenizer/`` (the Gemma-4 in transformers
    format, from the text encoder file), ``diffusion_decoder/`` (`LTX2VideoDiffusionDecoderModel`), ``duration_head/``
    (`LTX2DurationHead`), ``latent_upsampler/`` (spatial upscaler), ``temporal_latent_upsampler/`` (a model folder
    not listed in ``model_index.json``), ``loras/<name>.safetensors`` (the distilled LoRA in diffusers/PEFT keys, for
    ``load_distilled_lora``); ``model_index.json`` records the model id, ``model_version`` and ``gemma_version``.

    Args:
        src: official single file, or a 2.5 folder / list of files.
        dst: output folder (must not exist unless ``overwrite``).
        dtype: ``"keep"``, ``"bf16"``, ``"fp32"`` (or ``"fp16"``) for floating tensors.
        fp8: ``"dequantize"`` or ``"keep"`` for float8 checkpoints (required for them).
        max_shard_size: e.g. ``"5GB"`` or bytes; one shard per file up to this size.
        gemma_path: Gemma folder (transformers format) copied as ``text_encoder`` / ``tokenizer`` (2.0 / 2.3; a 2.5
            set brings its own text encoder file).
        progress: tqdm progress bar over bytes written.
        overwrite: replace an existing ``dst`` (after success only) - only a folder this tool wrote (its
            ``model_index.json`` names an LTX-2 pipeline), never a file or another folder.

    Returns:
        The output folder.

    Raises:
        ConversionError: a destination that is or contains a source, an existing one without ``overwrite`` or that
            this tool did not write; unknown/missing keys; a set missing a component a pipeline needs (named); a
            tensor whose dtype does not fit its role (e.g. an integer weight); a corrupt or unsupported file
            (subclasses).
        OSError: writing failed (disk full, permission denied, ...): the OS error itself, not a summary.
        KeyboardInterrupt: Ctrl-C; nothing is left behind.

    Warns:
        RuntimeWarning: naming the tensors that hold NaN or inf (checked while streaming, no second read).
    """
    from tqdm.auto import tqdm

    from . import text_encoder as TE
    from .files import list_set_files

    sources = list_set_files(src)
    if isinstance(src, (str, os.PathLike)) and os.path.isdir(src):
        sources.append(Path(src))  # the destination must not be (inside) the set's folder either
    sources += [gemma_path] if gemma_path is not None else []
    check_destination(dst, sources, overwrite=overwrite)  # before anything is read
    max_bytes = parse_size(max_shard_size)
    info = inspect_checkpoint(src)
    plan = plan_conversion(info, dtype=dtype, fp8=fp8)
    check_pipeline_components(plan)
    te_file = TE.text_encoder_file(info.files)
    if te_file is not None and gemma_path is not None:
        raise ConversionError("the set has its own text encoder file; leave gemma_path / --gemma out")
    te_plan = TE.plan_text_encoder(te_file, DTYPES[dtype]) if te_file is not None else None
    gemma = _gemma_entries(gemma_path) if gemma_path is not None else None
    extras = _set_extras(info.files)  # upscalers and LoRAs, checked before the long write
    dst = Path(dst)
    nonfinite = NonFiniteWeights(info.path)
    total = plan.total_bytes + (te_plan.total_bytes if te_plan else 0)
    with atomic_output_dir(dst, overwrite=overwrite, sources=sources) as tmp:
        te_entry = tok_entry = None
        with SetReader(plan.info.sources) as reader, tqdm(
            total=total, unit="B", unit_scale=True, desc=f"LTX-{plan.info.version} -> diffusers",
            disable=not progress,
        ) as bar:
            for name in plan.specs:
                _write_component(plan, name, tmp / name, reader, max_bytes, bar, nonfinite)
            if te_plan is not None:
                te_entry, tok_entry = TE.write_text_encoder(te_plan, tmp, reader, max_bytes, bar, nonfinite)
        # The scheduler and guider a pipeline gets by default (official schedule; recommended multimodal dials,
        # STG block chosen from the transformer at run time), written by the classes themselves.
        LTX2Scheduler().save_pretrained(tmp / "scheduler")
        MultimodalGuider().save_pretrained(tmp / "guider")
        if gemma is not None:
            model_files, tok_files, te_entry, tok_entry = gemma
            for folder, files in (("text_encoder", model_files), ("tokenizer", tok_files)):
                (tmp / folder).mkdir()
                for f in files:
                    shutil.copy2(f, tmp / folder / f.name)
        index = model_index(plan, te_entry, tok_entry)
        index.update(_write_extras(extras, tmp, dtype))
        _write_json(tmp / "model_index.json", index)
        mark_saved_folder(tmp, PIPELINE_CLASS)  # plain diffusers then says how to load it
    nonfinite.warn()
    return dst


def _set_extras(files) -> dict:
    """The upscalers and LoRAs of a set, loaded/checked now (small files): ``{"latent_upsampler": model,
    "temporal_latent_upsampler": model, "loras": [path, ...]}``."""
    from . import upsampler as U

    extras: dict = {"loras": []}
    for f in files:
        if f.role == "upsampler":
            model = U.load_official_upsampler(f.path)
            name = UPSAMPLER_FOLDER if model.config.spatial_upsample else TEMPORAL_UPSAMPLER_FOLDER
            if name in extras:
                raise ConversionError(f"two {name.replace('_', ' ')} files: {extras[name][0].name}, {f.path.name}")
            extras[name] = (f.path, model)
        elif f.role == "lora":
            extras["loras"].append(f.path)
    return extras


def _write_extras(extras: dict, tmp: Path, dtype: str) -> dict:
    """Write the upscalers and converted LoRAs into ``tmp``; returns the ``model_index.json`` entries to add."""
    from .lora import convert_lora_file

    entries = {}
    for name in (UPSAMPLER_FOLDER, TEMPORAL_UPSAMPLER_FOLDER):
        if name in extras:
            model = extras[name][1] if DTYPES[dtype] is None else extras[name][1].to(DTYPES[dtype])
            model.save_pretrained(tmp / name)
            if name == UPSAMPLER_FOLDER:  # the two-stage pipeline's component; the temporal one is a model folder
                entries[name] = ["ltx2", "LTX2LatentUpsamplerModel"]
    for path in extras["loras"]:
        (tmp / LORA_FOLDER).mkdir(exist_ok=True)
        convert_lora_file(path, tmp / LORA_FOLDER / path.name, dtype="keep" if dtype == "fp16" else dtype)
    return entries
