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

import os
import stat
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

__all__ = ["write_entry", "read_entry", "PrecomputedDataset", "collate"]

FOLDERS = ("latents", "conditions", "audio_latents", "reference_latents")


def write_entry(path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict | None = None) -> Path:
    """Write one safetensors file atomically (a crash never leaves a half-written file under the final name), with
    the permission bits a plain `open()` gives, as every other output (safetensors itself writes 0600)."""
    from ..export import new_temp_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(new_temp_file(str(path), str(path.parent), suffix=".safetensors"))
    try:
        mode = stat.S_IMODE(os.stat(tmp).st_mode)  # 0o666 minus the umask, or the replaced file's
        save_file({k: v.contiguous().cpu() for k, v in tensors.items()}, str(tmp),
                  metadata={k: str(v) for k, v in (metadata or {}).items()})
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def read_entry(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """`(tensors, metadata)` of one entry."""
    with safe_open(str(path), framework="pt", device="cpu") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})


class PrecomputedDataset(torch.utils.data.Dataset):
    """Clips under `root` that have every folder the strategy needs.

    Args:
        root: the preprocessed data root.
        with_audio: require `audio_latents/`.
        with_reference: require `reference_latents/`.
        control_types: if given, only references whose `control_type` is listed are used.

    Raises `ValueError` when no clip is complete (naming what is missing).
    """

    def __init__(self, root: str | os.PathLike, *, with_audio: bool = False, with_reference: bool = False,
                 control_types: list[str] | None = None):
        self.root = Path(root)
        self.with_audio, self.with_reference = with_audio, with_reference
        needed = ["conditions"] + (["audio_latents"] if with_audio else []) + (["reference_latents"] if with_reference else [])
        stems = sorted(p.stem for p in (self.root / "latents").glob("*.safetensors"))
        self.names, incomplete = [], []
        for s in stems:
            lacking = [d for d in needed if not (self.root / d / f"{s}.safetensors").is_file()]
            if lacking:
                incomplete.append(f"{s} (no {', '.join(lacking)})")
                continue
            if with_reference and control_types is not None:
                ctype = read_entry(self.root / "reference_latents" / f"{s}.safetensors")[1].get("control_type")
                if ctype not in control_types:
                    incomplete.append(f"{s} (control_type {ctype!r} not in {control_types})")
                    continue
            self.names.append(s)
        self.skipped = incomplete
        if not self.names:
            raise ValueError(f"no usable clip under {self.root}: " + ("; ".join(incomplete) or "latents/ is empty"))

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
