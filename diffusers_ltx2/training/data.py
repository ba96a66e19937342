"""The precomputed dataset `ltx2 preprocess` writes and `ltx2 train` reads (no VAE or Gemma resident in training).

Layout under the root, one `.safetensors` per clip and folder, same stem everywhere:
- `latents/<clip>.safetensors`: `latents` `(C, F, H, W)` float32 normalized video latents (diffusion space);
  metadata `fps`, `num_frames`, `height`, `width` (pixels).
- `conditions/<clip>.safetensors`: connector-stage prompt embeddings `video_context` `(L, D_v)`,
  `audio_context` `(L, D_a)`, `attention_mask` `(L,)`; metadata `model_identity`, `caption`.
- `audio_latents/<clip>.safetensors` (optional): `latents` `(C_a, T, M)` float32 normalized audio latents.
- `reference_latents/<clip>.safetensors` (IC-LoRA): `latents` `(C, F', H / f, W / f)`; metadata
  `control_type`, `reference_downscale_factor`.
The official trainer writes the same folders (as `.pt` files); the tensors here are what our pipelines use.
"""

from __future__ import annotations

import math
import os
import stat
import uuid
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

__all__ = ["write_entry", "read_entry", "DataSpec", "DatasetError", "PrecomputedDataset", "collate"]

FOLDERS = ("latents", "conditions", "audio_latents", "reference_latents")


def write_entry(path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict | None = None) -> Path:
    """Write one safetensors file atomically: streamed into a hidden temporary sibling, renamed into place. A crash
    never leaves a half-written file under the final name and a failure removes the temporary file; a write error
    (a full disk: ENOSPC) is an `OSError` naming `path`. The file gets the permission bits a plain `open()` gives
    (0o666 minus the umask, or the replaced file's), as every other output (safetensors' `save_file` writes 0600)."""
    from ..conversion.streaming import OutputTensor, SafetensorsStreamWriter

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    meta = {k: str(v) for k, v in (metadata or {}).items()}
    writer = None
    try:
        writer = SafetensorsStreamWriter(tmp, [OutputTensor(k, v.dtype, tuple(v.shape)) for k, v in tensors.items()],
                                         meta)
        for k, v in tensors.items():
            writer.write(k, v)
        writer.close()
        if path.is_file():  # replacing a file keeps its permission bits, as a plain open() would
            os.chmod(tmp, stat.S_IMODE(os.stat(path).st_mode))
        os.replace(tmp, path)
    except BaseException as err:
        if writer is not None:
            writer.abort()
        tmp.unlink(missing_ok=True)
        if isinstance(err, OSError) and err.errno is not None and not err.filename:
            raise OSError(err.errno, err.strerror or os.strerror(err.errno), str(path)) from err
        raise
    return path


def read_entry(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """`(tensors, metadata)` of one entry."""
    with safe_open(str(path), framework="pt", device="cpu") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})


@dataclass(frozen=True)
class DataSpec:
    """What a model needs of the dataset: `latent_channels` (video latents `C`), `audio_channels` (`C_a * M` of
    audio latents), `video_context_dim` / `audio_context_dim` (connector-stage prompt widths), the VAE's
    `temporal_factor` / `spatial_factor` (8 / 32 for LTX-2) and `audio_latents_per_second` (25)."""

    latent_channels: int | None = None
    audio_channels: int | None = None
    video_context_dim: int | None = None
    audio_context_dim: int | None = None
    temporal_factor: int = 8
    spatial_factor: int = 32
    audio_latents_per_second: float = 25.0

    @classmethod
    def from_config(cls, config) -> "DataSpec":
        """From an `LTX2VideoTransformer3DModel` config (mapping or `FrozenDict`)."""
        from ..loaders.identity import context_dims

        config = dict(config)
        vd, ad = context_dims(config)
        t, sh, _ = config.get("vae_scale_factors", (8, 32, 32))
        rate = config.get("audio_sampling_rate", 16000) / config.get("audio_hop_length", 160) / config.get(
            "audio_scale_factor", 4)
        return cls(int(config["in_channels"]), int(config["audio_in_channels"]), vd, ad, int(t), int(sh), float(rate))


class DatasetError(ValueError):
    """Clips of a preprocessed dataset that cannot be trained on; the message names every bad file and why."""


def _load_checked(path: Path, problems: list[str]) -> tuple[dict[str, torch.Tensor], dict[str, str]] | None:
    """The entry's tensors and metadata, or `None` with the reason in `problems` (truncated, unreadable, NaN)."""
    from ..conversion.errors import ConversionError
    from ..conversion.streaming import read_header

    try:
        read_header(path)  # names a truncated / padded / malformed file before any tensor is read
        tensors, meta = read_entry(path)
    except ConversionError as err:
        problems.append(str(err))
        return None
    except Exception as err:  # safetensors' SafetensorError, OSError
        problems.append(f"{path}: unreadable ({err})")
        return None
    for key, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            problems.append(f"{path}: {key} holds NaN or inf values")
    return tensors, meta


def _tensor(entry, path: Path, key: str, ndim: int, problems: list[str]) -> torch.Tensor | None:
    tensors = entry[0]
    t = tensors.get(key)
    if t is None:
        problems.append(f"{path}: no {key!r} tensor (has {sorted(tensors)})")
    elif t.ndim != ndim:
        problems.append(f"{path}: {key} has shape {tuple(t.shape)}, expected {ndim} dimensions")
    else:
        return t
    return None


def _meta_number(meta: dict, key: str, path: Path, problems: list[str], kind=float):
    if key not in meta:
        return None
    try:
        value = kind(float(meta[key])) if kind is int else float(meta[key])
    except (ValueError, OverflowError):
        value = None
    if value is None or not math.isfinite(value) or value <= 0 or (kind is int and float(meta[key]) != value):
        what = "integer" if kind is int else "number"
        problems.append(f"{path}: metadata {key} = {meta[key]!r} is not a positive {what}")
        return None
    return value


class PrecomputedDataset(torch.utils.data.Dataset):
    """Clips under `root` that have every folder the strategy needs, each checked when the dataset is indexed.

    Every file of every clip is read once here: a truncated or unreadable file, a tensor of the wrong rank, NaN /
    inf values, metadata that disagrees with the latents (`fps` not a positive number, latent frames vs
    `num_frames`, latent height / width vs `height` / `width` at the VAE's factors), prompt embeddings whose
    lengths differ, audio latents whose length is not `round(num_frames / fps * 25)`, references that are not the
    target grid divided by the reference downscale factor, and widths that differ from `spec` (the model's, when
    known; else from the other clips) raise `DatasetError` naming every bad file, before any model loads. Clips
    lacking a folder are skipped (listed in `skipped`).

    Args:
        root: the preprocessed data root.
        with_audio: require `audio_latents/`.
        with_reference: require `reference_latents/`.
        control_types: if given, only references whose `control_type` is listed are used.
        reference_downscale_factor: the factor references must have been made with (IC-LoRA).
        spec: the model's `DataSpec`, when known before it loads (`check_spec` checks it later otherwise).

    Raises `DatasetError` (a `ValueError`) for bad files, or when no clip is complete (naming what is missing).
    """

    def __init__(self, root: str | os.PathLike, *, with_audio: bool = False, with_reference: bool = False,
                 control_types: list[str] | None = None, reference_downscale_factor: int | None = None,
                 spec: DataSpec | None = None):
        self.root = Path(root)
        self.with_audio, self.with_reference = with_audio, with_reference
        self.reference_downscale_factor = reference_downscale_factor
        needed = ["conditions"] + (["audio_latents"] if with_audio else []) + (["reference_latents"] if with_reference else [])
        stems = sorted(p.stem for p in (self.root / "latents").glob("*.safetensors"))
        self.names, incomplete, self._widths = [], [], {}
        problems: list[str] = []
        from tqdm.auto import tqdm

        quiet = int(os.environ.get("RANK", "0")) != 0
        for s in tqdm(stems, desc="checking dataset", disable=True if quiet else None, leave=False):
            lacking = [d for d in needed if not (self.root / d / f"{s}.safetensors").is_file()]
            if lacking:
                incomplete.append(f"{s} (no {', '.join(lacking)})")
                continue
            found = self._check_clip(s, spec or DataSpec(), problems)
            if found is None:
                continue
            ctype = found.pop("control_type")
            if with_reference and control_types is not None and ctype not in control_types:
                incomplete.append(f"{s} (control_type {ctype!r} not in {control_types})")
                continue
            self._widths[s] = found
            self.names.append(s)
        self.skipped = incomplete
        problems += self._width_problems(spec)
        if problems:
            shown = problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else [])
            raise DatasetError(f"{len(problems)} problem(s) in the dataset under {self.root} (fix or remove these "
                               "clips, or preprocess them again):\n  " + "\n  ".join(shown))
        if not self.names:
            raise ValueError(f"no usable clip under {self.root}: " + ("; ".join(incomplete) or "latents/ is empty"))

    def _check_clip(self, name: str, spec: DataSpec, problems: list[str]) -> dict | None:
        """Check one clip's files; its widths (for the cross-clip / model check), or `None` when it is bad."""
        before = len(problems)
        path = self.root / "latents" / f"{name}.safetensors"
        widths: dict = {}
        entry = _load_checked(path, problems)
        grid = None
        if entry is not None:
            lat = _tensor(entry, path, "latents", 4, problems)
            meta = entry[1]
            _meta_number(meta, "fps", path, problems)
            frames = _meta_number(meta, "num_frames", path, problems, int)
            if lat is not None:
                c, f, h, w = lat.shape
                widths["latent_channels"], grid = c, (f, h, w)
                if frames is not None and ((frames - 1) % spec.temporal_factor or
                                           (frames - 1) // spec.temporal_factor + 1 != f):
                    problems.append(f"{path}: {f} latent frames, but its metadata says num_frames {frames} "
                                    f"({(frames - 1) // spec.temporal_factor + 1} latent frames at "
                                    f"{spec.temporal_factor}x)")
                for key, n in (("height", h), ("width", w)):
                    px = _meta_number(meta, key, path, problems, int)
                    if px is not None and px != n * spec.spatial_factor:
                        problems.append(f"{path}: latent {key} {n} ({n * spec.spatial_factor} px at "
                                        f"{spec.spatial_factor}x), but its metadata says {key} {px}")
        path = self.root / "conditions" / f"{name}.safetensors"
        entry = _load_checked(path, problems)
        if entry is not None:
            vc = _tensor(entry, path, "video_context", 2, problems)
            ac = _tensor(entry, path, "audio_context", 2, problems)
            mask = _tensor(entry, path, "attention_mask", 1, problems)
            if vc is not None and ac is not None and mask is not None:
                if not (vc.shape[0] == ac.shape[0] == mask.shape[0]):
                    problems.append(f"{path}: video_context {tuple(vc.shape)}, audio_context {tuple(ac.shape)} and "
                                    f"attention_mask {tuple(mask.shape)} differ in length")
                elif not bool(((mask == 0) | (mask == 1)).all()):
                    problems.append(f"{path}: attention_mask holds values other than 0 and 1")
                widths["video_context_dim"], widths["audio_context_dim"] = vc.shape[1], ac.shape[1]
        if self.with_audio:
            path = self.root / "audio_latents" / f"{name}.safetensors"
            entry = _load_checked(path, problems)
            if entry is not None:
                a = _tensor(entry, path, "latents", 3, problems)
                fps = _meta_number(entry[1], "fps", path, problems)
                frames = _meta_number(entry[1], "num_frames", path, problems, int)
                if a is not None:
                    widths["audio_channels"] = a.shape[0] * a.shape[2]
                    if fps is not None and frames is not None:
                        want = round(frames / fps * spec.audio_latents_per_second)
                        if a.shape[1] != want:
                            problems.append(f"{path}: {a.shape[1]} audio latents, but num_frames {frames} at "
                                            f"fps {fps:g} need {want}")
        ctype = None
        if self.with_reference:
            path = self.root / "reference_latents" / f"{name}.safetensors"
            entry = _load_checked(path, problems)
            if entry is not None:
                ref = _tensor(entry, path, "latents", 4, problems)
                ctype = entry[1].get("control_type")
                factor = self.reference_downscale_factor
                if ref is not None and grid is not None:
                    if ref.shape[0] != widths.get("latent_channels"):
                        problems.append(f"{path}: {ref.shape[0]} channels, the clip's latents have "
                                        f"{widths.get('latent_channels')}")
                    elif factor is not None and (ref.shape[2] * factor, ref.shape[3] * factor) != grid[1:]:
                        problems.append(f"{path}: reference grid {ref.shape[2]}x{ref.shape[3]} times "
                                        f"reference_downscale_factor {factor} is not the target's {grid[1]}x{grid[2]} "
                                        f"(preprocess with --reference-downscale-factor {factor})")
        if len(problems) > before:
            return None
        widths["control_type"] = ctype
        return widths

    def _width_problems(self, spec: DataSpec | None) -> list[str]:
        """Clips whose widths differ from the model's (`spec`), or, without it, from the other clips' (the most
        common value taken as right)."""
        from collections import Counter

        folder = {"latent_channels": ("latents", "channels"),
                  "audio_channels": ("audio_latents", "channels x mel bins"),
                  "video_context_dim": ("conditions", "video_context width"),
                  "audio_context_dim": ("conditions", "audio_context width")}
        problems = []
        for key, (sub, what) in folder.items():
            values = {n: w[key] for n, w in self._widths.items() if key in w}
            expected = getattr(spec, key) if spec is not None else None
            source = "the model's"
            if expected is None and values:
                counts = Counter(values.values()).most_common()
                if len(counts) < 2:
                    continue
                expected, source = counts[0][0], "the other clips'"
            for n, v in values.items():
                if expected is not None and v != expected:
                    problems.append(f"{self.root / sub / (n + '.safetensors')}: {what} {v}, {source} is {expected}")
        return problems

    def check_spec(self, spec: DataSpec) -> None:
        """Check the indexed clips against the model's `DataSpec` (once it is known); `DatasetError` names every
        file whose width differs."""
        problems = self._width_problems(spec)
        if problems:
            shown = problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else [])
            raise DatasetError(f"the dataset under {self.root} does not fit the model:\n  " + "\n  ".join(shown))

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> dict:
        name = self.names[index]
        lat, meta = read_entry(self.root / "latents" / f"{name}.safetensors")
        cond, cmeta = read_entry(self.root / "conditions" / f"{name}.safetensors")
        item = {
            "name": name, "latents": lat["latents"].float(), "fps": float(meta.get("fps", 24.0)),
            "video_context": cond["video_context"].float(), "audio_context": cond["audio_context"].float(),
            "attention_mask": cond["attention_mask"],
        }
        if self.with_audio:
            item["audio_latents"] = read_entry(self.root / "audio_latents" / f"{name}.safetensors")[0]["latents"].float()
        if self.with_reference:
            ref, rmeta = read_entry(self.root / "reference_latents" / f"{name}.safetensors")
            item["reference_latents"] = ref["latents"].float()
            item["control_type"] = rmeta.get("control_type", "")
        return item


def collate(items: list[dict]) -> dict:
    """Stack a list of items into a batch (shapes must agree within a batch)."""
    out: dict = {}
    for key in items[0]:
        values = [it[key] for it in items]
        if isinstance(values[0], torch.Tensor):
            shapes = {tuple(v.shape) for v in values}
            if len(shapes) > 1:
                raise ValueError(f"clips {[it['name'] for it in items]} have different {key} shapes {sorted(shapes)}: "
                                 "use batch_size 1 or preprocess to one resolution / length")
            out[key] = torch.stack(values)
        else:
            out[key] = values
    out["fps"] = torch.tensor(out["fps"], dtype=torch.float32)
    return out
