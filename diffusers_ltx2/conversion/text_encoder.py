"""The LTX-2.5 text encoder file (``gemma4-12b-with-proj-ltx-2.5-*``) -> a transformers Gemma folder + tokenizer.

The release packs the fine-tuned Gemma-4 into one safetensors file (ltx-core 1.2.0 `gemma_assets.py`,
`build_text_encoder_tensors_from_gemma_root`): the Hugging Face config as the metadata string ``gemma_config``,
``tokenizer.json`` as the uint8 tensor ``tokenizer_json``, every other sidecar (``tokenizer_config.json``,
``processor_config.json``, ``chat_template.jinja``, ...) as ``hf_asset__<name>`` tensors (older packs: metadata
strings), the text projection as ``text_embedding_projection.*`` (converted into the pipeline's ``connectors``) and
the Gemma weights, by default in ComfyUI's flat layout (language model under ``model.*``, vision / audio towers
under ``vision_model.*`` / ``multi_modal_projector.*`` / ``audio_projector.*``), which `_GEMMA_RENAMES` maps back
to the Hugging Face names (the inverse of 1.2's `_flatten_gemma4_unified_keys_for_comfy`; HF-named packs pass
through). The result is what `from_pretrained` of the architecture named in the config loads: ``text_encoder/``
(``config.json``, sharded ``model*.safetensors``) and ``tokenizer/``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from ..json_files import parse_json, read_json
from .errors import KeyMismatchError, UnsupportedCheckpointError
from .files import GEMMA_CONFIG_METADATA_KEY, TEXT_ENCODER_PREFIX, CheckpointFile

__all__ = ["GemmaPlan", "hf_gemma_key", "load_text_encoder", "plan_text_encoder", "text_encoder_file",
           "write_text_encoder"]

TOKENIZER_TENSOR = "tokenizer_json"
ASSET_PREFIX = "hf_asset__"
_METADATA_ASSETS = ("tokenizer_config.json", "processor_config.json", "chat_template.jinja", "generation_config.json")
#: files that belong next to the model weights rather than the tokenizer
_MODEL_ASSETS = ("generation_config.json",)
_GEMMA_RENAMES = (  # ComfyUI flat layout -> Hugging Face (gemma4_unified)
    ("model.layers.", "model.language_model.layers."),
    ("model.embed_tokens.", "model.language_model.embed_tokens."),
    ("model.norm.", "model.language_model.norm."),
    ("vision_model.", "model.vision_embedder."),
    ("multi_modal_projector.", "model.embed_vision."),
    ("audio_projector.", "model.embed_audio."),
)


def hf_gemma_key(key: str) -> str:
    """A text encoder file's Gemma key -> the Hugging Face model's (flat ComfyUI names mapped back)."""
    for old, new in _GEMMA_RENAMES:
        if key.startswith(old):
            return new + key.removeprefix(old)
    return key


@dataclass
class GemmaPlan:
    """What the Gemma part of a text encoder file converts into."""

    file: CheckpointFile
    config: dict
    architecture: str
    tensors: list[tuple[str, str, tuple[int, ...], torch.dtype]]  # (file key, HF key, shape, output dtype)
    assets: dict[str, str]  # file name -> tensor key or metadata key holding it

    @property
    def total_bytes(self) -> int:
        return sum(math.prod(s) * torch.empty((), dtype=d).element_size() for _, _, s, d in self.tensors)


def _meta_model(config: dict):
    import transformers
    from transformers import AutoConfig

    arch = (config.get("architectures") or [None])[0]
    cls = getattr(transformers, arch, None) if arch else None
    if cls is None:
        raise UnsupportedCheckpointError(
            f"the text encoder's architecture {arch!r} is not available in transformers {transformers.__version__}"
        )
    hf_config = AutoConfig.for_model(**config)
    with torch.device("meta"):
        return arch, cls(hf_config)


def plan_text_encoder(file: CheckpointFile, dtype: torch.dtype | None = None) -> GemmaPlan:
    """Check a text encoder file's Gemma tensors against the transformers model its config describes.

    Raises:
        UnsupportedCheckpointError: no ``gemma_config`` metadata or no tokenizer; an architecture transformers lacks.
        KeyMismatchError: unknown / missing / mis-shaped Gemma tensors (tied output embeddings are not missing).
    """
    if GEMMA_CONFIG_METADATA_KEY not in file.metadata:
        raise UnsupportedCheckpointError(f"{file.path}: text encoder file without the 'gemma_config' metadata")
    try:
        config = parse_json(file.metadata[GEMMA_CONFIG_METADATA_KEY], f"{file.path}: 'gemma_config' metadata")
    except ValueError as exc:
        raise UnsupportedCheckpointError(str(exc)) from exc
    if not isinstance(config, dict):
        raise UnsupportedCheckpointError(f"{file.path}: the 'gemma_config' metadata is not a JSON object")
    if TOKENIZER_TENSOR not in file.tensors:
        raise UnsupportedCheckpointError(f"{file.path}: text encoder file without its tokenizer ('{TOKENIZER_TENSOR}')")
    arch, model = _meta_model(config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    tied = {k for k in expected if k.endswith("lm_head.weight")} if config.get("tie_word_embeddings", True) or \
        config.get("text_config", {}).get("tie_word_embeddings", True) else set()
    assets = {"tokenizer.json": TOKENIZER_TENSOR}
    tensors, unknown, seen = [], [], set()
    for key, info in sorted(file.tensors.items(), key=lambda kv: kv[1].start):
        if key == TOKENIZER_TENSOR or key.startswith("text_embedding_projection."):
            continue
        if key.startswith(ASSET_PREFIX):
            assets[key.removeprefix(ASSET_PREFIX)] = key
            continue
        new = hf_gemma_key(key)
        if new not in expected or expected[new] != tuple(info.shape):
            shape = "" if new not in expected else f", expects {expected[new]}"
            unknown.append(f"{key} (-> text_encoder: {new}{shape})")
            continue
        out = info.dtype if dtype is None or not info.dtype.is_floating_point else dtype
        tensors.append((key, new, tuple(info.shape), out))
        seen.add(new)
    for name in _METADATA_ASSETS:
        if name not in assets and name in file.metadata:
            assets[name] = "metadata:" + name
    missing = [f"text_encoder: {k}" for k in sorted(set(expected) - seen - tied)]
    if unknown or missing:
        raise KeyMismatchError(unknown=unknown, missing=missing)
    return GemmaPlan(file, config, arch, tensors, assets)


def _asset_bytes(plan: GemmaPlan, reader, source: str) -> bytes:
    if source.startswith("metadata:"):
        return plan.file.metadata[source.removeprefix("metadata:")].encode("utf-8")
    return reader.get(TEXT_ENCODER_PREFIX + source).numpy().tobytes()


def write_text_encoder(plan: GemmaPlan, root: Path, reader, max_bytes: int, bar, nonfinite) -> tuple[list, list]:
    """Write ``text_encoder/`` and ``tokenizer/`` under ``root``; returns their ``model_index.json`` entries.

    ``reader`` reads canonical names (`streaming.SetReader`); tensors stream one at a time into shards named as
    transformers names them (``model.safetensors`` or ``model-0000i-of-0000n.safetensors`` + index).
    """
    from .streaming import OutputTensor, SafetensorsStreamWriter, plan_shards, shard_file_names, write_index

    te, tok = root / "text_encoder", root / "tokenizer"
    te.mkdir()
    tok.mkdir()
    (te / "config.json").write_text(json.dumps(plan.config, indent=2) + "\n")
    shards = plan_shards([OutputTensor(new, d, s) for _, new, s, d in plan.tensors], max_bytes)
    names = shard_file_names(len(shards), stem="model")
    it = iter(plan.tensors)
    for shard, fname in zip(shards, names):
        writer = SafetensorsStreamWriter(te / fname, shard)
        try:
            for _ in shard:
                key, new, shape, dtype = next(it)
                tensor = reader.get(TEXT_ENCODER_PREFIX + key)
                tensor = tensor if tensor.dtype == dtype else tensor.to(dtype)
                nonfinite.check(key, tensor)
                writer.write(new, tensor)
                bar.update(tensor.numel() * tensor.element_size())
        except BaseException:
            writer.abort()
            raise
        writer.close()
    write_index(te, shards, names, stem="model")
    for name, source in plan.assets.items():
        folder = te if name in _MODEL_ASSETS else tok
        (folder / name).write_bytes(_asset_bytes(plan, reader, source))
    tok_file = tok / "tokenizer_config.json"
    tok_cfg = read_json(tok_file) if tok_file.is_file() else {}
    tok_class = tok_cfg.get("tokenizer_class") or "PreTrainedTokenizerFast"
    if not tok_class.endswith("Fast") and tok_class != "AutoTokenizer":
        tok_class += "Fast"
    return ["transformers", plan.architecture], ["transformers", tok_class]


def load_text_encoder(plan: GemmaPlan, reader, dtype: torch.dtype | None = None):
    """The Gemma model (eval mode) and its tokenizer, built in memory from a text encoder file."""
    import transformers
    from accelerate import init_empty_weights
    from transformers import AutoConfig, PreTrainedTokenizerFast
    from tokenizers import Tokenizer

    from .loading import assign_tensor, check_materialized

    hf_config = AutoConfig.for_model(**plan.config)
    with init_empty_weights(include_buffers=False):
        model = getattr(transformers, plan.architecture)(hf_config)
    for key, new, _, out in plan.tensors:
        t = reader.get(TEXT_ENCODER_PREFIX + key)
        assign_tensor(model, new, (t if dtype is None or not t.is_floating_point() else t.to(dtype)))
    model.tie_weights()
    check_materialized(model, "text_encoder")
    tokenizer_json = _asset_bytes(plan, reader, plan.assets["tokenizer.json"]).decode("utf-8")
    cfg = {}
    if "tokenizer_config.json" in plan.assets:
        cfg = parse_json(_asset_bytes(plan, reader, plan.assets["tokenizer_config.json"]), "tokenizer_config.json")
    kwargs = {k: v for k, v in cfg.items() if k in ("pad_token", "eos_token", "bos_token", "unk_token",
                                                   "padding_side", "model_max_length")}
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(tokenizer_json), **kwargs)
    return model.eval(), tokenizer


def text_encoder_file(files) -> CheckpointFile | None:
    """The text encoder file among a set's files, if any."""
    return next((f for f in files if f.role == "text_encoder"), None)
