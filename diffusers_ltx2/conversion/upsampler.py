"""Official latent spatial upsampler files (`ltx-2-spatial-upscaler-x2-*.safetensors`, the x1.5 variant) ->
diffusers' `LTX2LatentUpsamplerModel`.

The official file is one safetensors file whose metadata key `config` holds the JSON read by ltx-core's
`LatentUpsamplerConfigurator` (`in_channels`, `mid_channels`, `num_blocks_per_stage`, `dims`, `spatial_upsample`,
`temporal_upsample`, `spatial_scale`, `rational_resampler`); its tensor names are the module names of ltx-core's
`LatentUpsampler`, which diffusers' `LTX2LatentUpsamplerModel` reproduces one for one. Only the config keys are
renamed (`spatial_scale` -> `rational_spatial_scale`, `rational_resampler` -> `use_rational_resampler`); every tensor
is checked against the diffusers module (no unknown, no missing keys, same shapes) before anything is written.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import torch
from diffusers.pipelines.ltx2.latent_upsampler import RATIONAL_RESAMPLER_SCALE_MAPPING, LTX2LatentUpsamplerModel
from safetensors import safe_open

from ..json_files import parse_json, read_json
from .errors import CorruptCheckpointError, KeyMismatchError, UnsupportedCheckpointError

#: ltx-core `LatentUpsamplerConfigurator` defaults (used for keys a file's config leaves out).
OFFICIAL_DEFAULTS = {
    "in_channels": 128, "mid_channels": 512, "num_blocks_per_stage": 4, "dims": 3, "spatial_upsample": True,
    "temporal_upsample": False, "spatial_scale": 2.0, "rational_resampler": False,
}
UPSAMPLER_FOLDER = "latent_upsampler"


def diffusers_upsampler_config(official: dict) -> dict:
    """Official upsampler config -> `LTX2LatentUpsamplerModel` init kwargs.

    Raises `UnsupportedCheckpointError` for a scale diffusers' rational resampler does not implement
    (supported: 0.75, 1.5, 2.0, 4.0) or a file that upsamples nothing.
    """
    cfg = {**OFFICIAL_DEFAULTS, **{k: v for k, v in official.items() if k in OFFICIAL_DEFAULTS}}
    scale = float(cfg["spatial_scale"])
    if cfg["rational_resampler"] and scale not in RATIONAL_RESAMPLER_SCALE_MAPPING:
        raise UnsupportedCheckpointError(
            f"upsampler scale {scale} is not supported by diffusers' rational resampler "
            f"(supported: {sorted(RATIONAL_RESAMPLER_SCALE_MAPPING)})"
        )
    if not (cfg["spatial_upsample"] or cfg["temporal_upsample"]):
        raise UnsupportedCheckpointError("upsampler config upsamples neither space nor time")
    return {
        "in_channels": int(cfg["in_channels"]), "mid_channels": int(cfg["mid_channels"]),
        "num_blocks_per_stage": int(cfg["num_blocks_per_stage"]), "dims": int(cfg["dims"]),
        "spatial_upsample": bool(cfg["spatial_upsample"]), "temporal_upsample": bool(cfg["temporal_upsample"]),
        "rational_spatial_scale": scale, "use_rational_resampler": bool(cfg["rational_resampler"]),
    }


def read_upsampler_config(path: str | os.PathLike) -> dict:
    """The official config stored in an upsampler file's metadata (`CorruptCheckpointError` if unreadable,
    `UnsupportedCheckpointError` if it is no upsampler file)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            keys = list(f.keys())
    except Exception as exc:  # safetensors raises several types for bad headers
        raise CorruptCheckpointError(f"{path}: not a readable safetensors file ({exc})") from exc
    if not is_upsampler_keys(keys):
        raise UnsupportedCheckpointError(f"{path}: not an LTX-2 latent upsampler file (no initial_conv / final_conv)")
    if "config" not in meta:
        raise UnsupportedCheckpointError(f"{path}: upsampler file without the 'config' metadata")
    try:
        return parse_json(meta["config"], f"{path}: 'config' metadata")
    except ValueError as exc:
        raise CorruptCheckpointError(str(exc)) from exc


def is_upsampler_keys(keys) -> bool:
    """Whether a tensor-name list is a latent upsampler's (as opposed to a full checkpoint or a LoRA)."""
    keys = set(keys)
    return "initial_conv.weight" in keys and "final_conv.weight" in keys


def is_upsampler_file(path: str | os.PathLike) -> bool:
    """Whether `path` is an official latent upsampler safetensors file."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return is_upsampler_keys(f.keys())
    except Exception:
        return False


def check_latent_upsampler(upsampler, latent_channels: int | None = None) -> None:
    """Refuse what cannot be a working latent upsampler, before anything runs: another model (e.g. the video VAE
    passed as `latent_upsampler`), one made for other latents (`latent_channels`: the video VAE's), or NaN / inf
    weights (a corrupt or diverged file: every stage-2 latent would be NaN).

    Raises:
        ValueError: naming the problem.
    """
    if upsampler is None:
        return
    if not isinstance(upsampler, LTX2LatentUpsamplerModel):
        raise ValueError(f"latent_upsampler must be diffusers' LTX2LatentUpsamplerModel (an official upsampler file "
                         f"loads with load_official_upsampler / `ltx2 convert --upsampler`), got "
                         f"{type(upsampler).__name__}")
    channels = upsampler.config.in_channels
    if latent_channels is not None and channels != latent_channels:
        raise ValueError(f"latent_upsampler takes {channels}-channel latents but the video VAE makes {latent_channels} "
                         "(an upsampler for another model?)")
    bad = [n for n, t in upsampler.state_dict().items()
           if t.is_floating_point() and t.device.type != "meta" and not torch.isfinite(t).all()]
    if bad:
        raise ValueError(f"latent_upsampler has NaN or inf values in {len(bad)} tensors (e.g. {bad[0]}): a corrupt "
                         "or diverged upsampler")


def load_official_upsampler(path: str | os.PathLike, dtype: torch.dtype | None = None) -> LTX2LatentUpsamplerModel:
    """Build diffusers' `LTX2LatentUpsamplerModel` from an official upsampler file (tensors checked one for one).

    Args:
        path: official `.safetensors` (e.g. `ltx-2-spatial-upscaler-x2-1.0.safetensors`).
        dtype: dtype of the weights (`None` keeps the file's).

    Raises:
        CorruptCheckpointError, UnsupportedCheckpointError, KeyMismatchError; ValueError for NaN / inf weights.
    """
    config = diffusers_upsampler_config(read_upsampler_config(path))
    model = LTX2LatentUpsamplerModel(**config)
    expected = model.state_dict()
    with safe_open(str(path), framework="pt") as f:
        keys = set(f.keys())
        unknown = sorted(keys - set(expected))
        missing = sorted(f"latent_upsampler: {k}" for k in set(expected) - keys)
        if unknown or missing:
            raise KeyMismatchError(unknown, missing)
        state = {}
        for k in sorted(keys):
            t = f.get_tensor(k)
            if tuple(t.shape) != tuple(expected[k].shape):
                raise KeyMismatchError(missing=[f"latent_upsampler: {k} has shape {tuple(t.shape)}, "
                                                f"expected {tuple(expected[k].shape)}"])
            state[k] = t
    model.load_state_dict(state, strict=True, assign=True)
    check_latent_upsampler(model)
    if dtype is not None:
        model = model.to(dtype)
    return model.eval()


def _save_replacing(model, dst: str, parent: str) -> None:
    """`model.save_pretrained` into a temporary folder under `parent`, then move it to `dst` (replacing a folder
    already there); if saving fails, the temporary folder is removed and `dst` is untouched."""
    tmp = tempfile.mkdtemp(prefix=".upsampler-", dir=parent)
    try:
        model.save_pretrained(tmp)
        if os.path.exists(dst):
            shutil.rmtree(dst)
        os.replace(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def convert_upsampler_file(
    src: str | os.PathLike, dst: str | os.PathLike, *, dtype: torch.dtype | None = None, overwrite: bool = False,
) -> str:
    """Convert an official upsampler file into a diffusers model folder (`config.json` + safetensors).

    The folder is written to a temporary sibling and renamed into place, so a failure leaves nothing behind and an
    existing `dst` is only replaced (with `overwrite=True`) after success. Returns `dst`.
    """
    dst = os.fspath(dst)
    if os.path.exists(dst) and not overwrite:
        raise FileExistsError(f"{dst} exists (pass overwrite=True to replace it)")
    model = load_official_upsampler(src, dtype=dtype)
    parent = os.path.dirname(os.path.abspath(dst)) or "."
    os.makedirs(parent, exist_ok=True)
    _save_replacing(model, dst, parent)
    return dst


def add_upsampler_to_folder(folder: str | os.PathLike, upsampler: LTX2LatentUpsamplerModel) -> str:
    """Save `upsampler` as the `latent_upsampler/` component of a converted pipeline folder and list it in the
    folder's `model_index.json` (so `LTX2TwoStagePipeline.from_pretrained(folder)` loads it). The component is
    written to a temporary folder first and `model_index.json` is replaced atomically; returns the component path."""
    folder = os.fspath(folder)
    index_path = os.path.join(folder, "model_index.json")
    if not os.path.isfile(index_path):
        raise FileNotFoundError(f"{folder} is not a converted pipeline folder (no model_index.json)")
    index = read_json(index_path)
    if not isinstance(index, dict):
        raise ValueError(f"{index_path} is not a diffusers model index (a JSON object)")
    dst = os.path.join(folder, UPSAMPLER_FOLDER)
    _save_replacing(upsampler, dst, folder)
    # the library diffusers itself records for this class (its module lives in diffusers.pipelines.ltx2)
    index[UPSAMPLER_FOLDER] = ["ltx2", "LTX2LatentUpsamplerModel"]
    tmp_index = index_path + ".tmp"
    with open(tmp_index, "w") as f:
        json.dump(index, f, indent=2, sort_keys=True)
    os.replace(tmp_index, index_path)
    return dst
