"""Official LTX-2 checkpoint files: what each one holds, and a set of them seen as one checkpoint.

LTX-2.0 / 2.3 ship one file with every component (``model.diffusion_model.``, ``text_embedding_projection.``,
``vae.``, ``audio_vae.``, ``vocoder.``). LTX-2.5 ships one file per component (official README, ltx-pipelines 1.2.0
`utils/model_paths.py` "split" mode), each with its own ``config`` metadata section:

==================  ==================================================  =======================================
role                file (release name)                                 keys
==================  ==================================================  =======================================
transformer         ``ltx-2.5-22b-{dev,distilled}-transformer-*``       ``model.diffusion_model.*`` (with the
                                                                        text connectors)
text_encoder        ``gemma4-12b-with-proj-ltx-2.5-*``                  Gemma-4 weights, ``text_embedding_
                                                                        projection.*``, tokenizer/assets tensors
video_vae           ``ltx-2.5-video-vae-conv-*`` (conv decoder)          ``encoder.*`` / ``decoder.*`` /
video_vae_diffusion ``ltx-2.5-video-vae-*`` (diffusion decoder)          ``per_channel_statistics.*`` (bare, or
                                                                        under ``vae.``)
audio_vae           ``ltx-2.5-audio-vae-*``                              ``audio_vae.*``, ``vocoder.*``
duration_head       ``ltx-2.5-duration-head-*``                          ``duration_head.*``
upsampler           ``ltx-2.5-latent-{spatial,temporal}-upscaler-*``     ``initial_conv.*`` ... (own converter)
lora                ``ltx-2.5-22b-distilled-lora-*``                     ``*.lora_A.weight`` ... (own converter)
==================  ==================================================  =======================================

`inspect_set` reads the headers of such files (a folder, or files named one by one; a 2.0/2.3 single file is a set
of one) and presents them as one checkpoint in the single file's key namespace, so one key map serves both layouts:
bare video VAE keys get the ``vae.`` prefix (the diffusion VAE's ``vae_diffusion.``), every other key is already
named as in the single file. Each canonical key remembers the file and name it is read from.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..json_files import parse_json
from .errors import ConversionError, UnsupportedCheckpointError

if TYPE_CHECKING:  # streaming imports torch; listing a set's files (the CLI's early check) must not
    from .streaming import TensorInfo

__all__ = ["CheckpointFile", "CheckpointSet", "classify", "inspect_set", "list_set_files"]

ROLES = ("monolith", "transformer", "text_encoder", "video_vae", "video_vae_diffusion", "audio_vae",
         "duration_head", "upsampler", "lora")
#: roles converted through the key map (the others have converters of their own)
MAPPED_ROLES = ("monolith", "transformer", "text_encoder", "video_vae", "video_vae_diffusion", "audio_vae",
                "duration_head")
#: canonical prefix of the diffusion VAE's keys (its encoder duplicates the conv VAE's)
DIFFUSION_VAE_PREFIX = "vae_diffusion."
#: canonical prefix of the text encoder file's Gemma weights and assets (copied by `text_encoder.py`)
TEXT_ENCODER_PREFIX = "text_encoder."
DIFFUSION_VAE_CLASS = "CausalDiffusionVAE"
GEMMA_CONFIG_METADATA_KEY = "gemma_config"  # ltx-core 1.2 `gemma_assets.py`


@dataclass
class CheckpointFile:
    """One official file: its role, tensors (by the file's own names), metadata and parsed ``config``."""

    path: Path
    role: str
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str]
    config: dict

    def canonical(self, key: str) -> str:
        """The single-file name of one of this file's keys."""
        if self.role in ("video_vae", "video_vae_diffusion"):
            bare = key.removeprefix("vae.")
            return (DIFFUSION_VAE_PREFIX if self.role == "video_vae_diffusion" else "vae.") + bare
        if self.role == "text_encoder" and not key.startswith("text_embedding_projection."):
            return TEXT_ENCODER_PREFIX + key
        return key


@dataclass
class CheckpointSet:
    """Official files presented as one checkpoint (see the module doc)."""

    files: list[CheckpointFile]
    sources: dict[str, tuple[Path, str]] = field(default_factory=dict)  # canonical key -> (file, key in file)
    tensors: dict[str, TensorInfo] = field(default_factory=dict)  # canonical key -> header info
    config: dict = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)

    def by_role(self, role: str) -> CheckpointFile | None:
        return next((f for f in self.files if f.role == role), None)

    @property
    def primary(self) -> CheckpointFile:
        """The file whose metadata names the model (``model_version``, model id): the transformer's."""
        return self.by_role("monolith") or self.by_role("transformer") or self.files[0]


def _parse_config(path: Path, metadata: dict[str, str]) -> dict:
    if "config" not in metadata:
        return {}
    try:  # parse_json: deep nesting or bad bytes are a ValueError naming the file, never a RecursionError
        config = parse_json(metadata["config"], f"{path}: 'config' metadata")
    except ValueError as exc:
        raise UnsupportedCheckpointError(str(exc)) from exc
    if not isinstance(config, dict):
        raise UnsupportedCheckpointError(f"{path}: the 'config' metadata is not a JSON object")
    return config


def classify(keys, metadata: dict[str, str], config: dict) -> str | None:
    """The role of a file from its tensor names and metadata (`ROLES`), or `None` when it is no LTX-2 file."""
    keys = list(keys)
    has = lambda *prefixes: any(k.startswith(prefixes) for k in keys)  # noqa: E731
    if any(k.endswith((".lora_A.weight", ".lora_B.weight", ".lora_down.weight", ".lora_up.weight")) for k in keys):
        return "lora"
    if "initial_conv.weight" in keys and "final_conv.weight" in keys:
        return "upsampler"
    if has("model.diffusion_model."):
        return "monolith" if has("vae.", "audio_vae.", "vocoder.") else "transformer"
    if GEMMA_CONFIG_METADATA_KEY in metadata or (has("text_embedding_projection.") and not has("vae.")):
        return "text_encoder"
    if has("duration_head."):
        return "duration_head"
    if has("audio_vae.", "vocoder."):
        return "audio_vae"
    if has("encoder.", "decoder.", "vae.encoder.", "vae.decoder."):
        vae = config.get("vae", {})
        diffusion = vae.get("_class_name") == DIFFUSION_VAE_CLASS or any(".diff_blocks." in k for k in keys)
        return "video_vae_diffusion" if diffusion else "video_vae"
    return None


def list_set_files(paths) -> list[Path]:
    """The ``.safetensors`` files named by ``paths`` (files, or folders searched recursively), sorted, unique."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir() and (p / "model_index.json").is_file():
            raise ConversionError(
                f"{p} is a folder, not a .safetensors file: it is a diffusers pipeline folder (model_index.json), "
                "already converted (load it with from_pretrained / --model); convert takes an official LTX-2 file "
                "or the folder of LTX-2.5 component files"
            )
        if p.is_dir():
            found = sorted(q for q in p.rglob("*.safetensors") if q.is_file() and not q.name.startswith("."))
            if not found:
                raise ConversionError(f"{p}: the folder holds no .safetensors files")
            out += found
        else:
            out.append(p)
    unique = list(dict.fromkeys(Path(os.path.abspath(p)) for p in out))
    if not unique:
        raise ConversionError("no checkpoint files given")
    return unique


def inspect_file(path: Path) -> CheckpointFile:
    """Header, metadata and role of one file (`CorruptCheckpointError` for an unreadable file,
    `UnsupportedCheckpointError` for a file that is no LTX-2 component)."""
    from .streaming import read_header

    tensors, metadata = read_header(path)
    config = _parse_config(path, metadata)
    role = classify(tensors, metadata, config)
    if role is None:
        raise UnsupportedCheckpointError(
            f"{path}: not an LTX-2 checkpoint file (no transformer, text encoder, VAE, audio VAE, duration head, "
            "upsampler or LoRA tensors)"
        )
    return CheckpointFile(path, role, tensors, metadata, config)


def inspect_set(paths) -> CheckpointSet:
    """Read the headers of official files (a folder, files named one by one, or one single file) as one checkpoint.

    Raises:
        ConversionError: two files of one role (e.g. the dev and the distilled transformer in one folder: name the
            files one by one), or a single-file checkpoint mixed with split files.
        UnsupportedCheckpointError / CorruptCheckpointError: a file that is no LTX-2 component or unreadable.
    """
    files = [inspect_file(p) for p in list_set_files(paths)]
    roles: dict[str, list[Path]] = {}
    for f in files:
        roles.setdefault(f.role, []).append(f.path)
    dup = {r: ps for r, ps in roles.items() if len(ps) > 1 and r not in ("upsampler", "lora")}
    if dup:
        lines = "; ".join(f"{r}: {', '.join(p.name for p in ps)}" for r, ps in dup.items())
        raise ConversionError(f"more than one file per component ({lines}); name the files to convert one by one")
    if "monolith" in roles and len(set(roles) - {"monolith", "upsampler", "lora"}) > 0:
        raise ConversionError("a single-file LTX-2 checkpoint cannot be combined with per-component files")
    ckpt = CheckpointSet(files=[f for f in files])
    for f in files:
        if f.role not in MAPPED_ROLES:
            continue
        for key, info in f.tensors.items():
            name = f.canonical(key)
            if name in ckpt.sources:
                raise ConversionError(f"tensor {name!r} is in both {ckpt.sources[name][0].name} and {f.path.name}")
            ckpt.sources[name] = (f.path, key)
            ckpt.tensors[name] = info
    ckpt.config, ckpt.metadata = _merged_config(ckpt)
    return ckpt


def _merged_config(ckpt: CheckpointSet) -> tuple[dict, dict[str, str]]:
    """The single file's ``config`` assembled from the per-file sections, and the naming file's metadata."""
    primary = ckpt.primary
    config = dict(primary.config) if primary.role in ("monolith", "transformer") else {}
    for f in ckpt.files:
        if f.role == "video_vae":
            config["vae"] = f.config.get("vae", {})
        elif f.role == "video_vae_diffusion":
            config["vae_diffusion"] = f.config.get("vae", {})
        elif f.role == "audio_vae":
            for section in ("audio_vae", "vocoder"):
                if section in f.config:
                    config[section] = f.config[section]
        elif f.role == "duration_head":
            config["duration_head"] = f.config.get("duration_head", {})
            config.setdefault("transformer", f.config.get("transformer", {}))
        elif f.role == "text_encoder" and GEMMA_CONFIG_METADATA_KEY in f.metadata:
            try:
                config["gemma"] = parse_json(f.metadata[GEMMA_CONFIG_METADATA_KEY],
                                             f"{f.path}: 'gemma_config' metadata")
            except ValueError as exc:
                raise UnsupportedCheckpointError(str(exc)) from exc
    metadata = dict(primary.metadata)
    if "model_version" not in metadata:  # any component may carry the version when the transformer is absent
        version = next((f.metadata["model_version"] for f in ckpt.files if f.metadata.get("model_version")), None)
        if version is not None:
            metadata["model_version"] = version
    return config, metadata
