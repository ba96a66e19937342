"""Checks shared by the `ltx2` commands: dtype and device names, output paths, model folders, media and
conditioning files, and writing the clip.

Nothing here imports torch or diffusers at module level. The name checks (`dtype_name`, `device_name`) and the
path checks need neither; `check_device`, `torch_dtype` and the media-file checks import what they need.
Every failed check raises `ValueError` / `FileNotFoundError`, printed by the entry point as one line, exit code 2.
"""

from __future__ import annotations

import os
import re

from ..json_files import check_json_files, read_json
from .timing import StageTimer  # noqa: F401  (re-exported: commands and tests import it from here)

#: accepted `--dtype` spellings -> torch attribute names
DTYPES = {"bf16": "bfloat16", "bfloat16": "bfloat16", "fp16": "float16", "float16": "float16",
          "fp32": "float32", "float32": "float32"}
DTYPE_METAVAR = "{bf16,fp16,fp32}"


def dtype_name(raw) -> str:
    """`--dtype` value -> the torch attribute name (`"bf16"` -> `"bfloat16"`); the long names are accepted too.
    Raises `ValueError` naming the choices."""
    name = DTYPES.get(str(raw).lower()) if isinstance(raw, str) else None
    if name is None:
        raise ValueError(f"unknown dtype {raw!r}; choose bf16, fp16 or fp32 (or bfloat16, float16, float32)")
    return name


def torch_dtype(name: str):
    """`"bf16"` / `"bfloat16"` -> `torch.bfloat16` etc."""
    import torch

    return getattr(torch, dtype_name(name))


parse_dtype = torch_dtype  # the older name

_DEVICE = re.compile(r"^(cpu|cuda|mps|xpu)(:\d+)?$")


def device_name(raw) -> str:
    """`--device` value, checked for form only (`cpu`, `cuda`, `cuda:1`, `mps`); `check_device` checks this
    machine has it."""
    if not isinstance(raw, str) or not _DEVICE.match(raw.strip().lower()):
        raise ValueError(f"invalid device {raw!r}; examples: cpu, cuda, cuda:1, mps")
    return raw.strip().lower()


def default_device() -> str:
    """The default torch device: "cuda" when a GPU is available, else "cpu"."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def check_device(name: str | None) -> str:
    """The torch device to use (`None`: the default); `ValueError` for a malformed name or one this machine lacks
    (CUDA asked on a CPU-only PyTorch build or without a visible GPU, an out-of-range GPU index, no MPS)."""
    import torch

    if name is None:
        return default_device()
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ValueError(f"--device: invalid device {name!r}; examples: cpu, cuda, cuda:1, mps") from None
    if device.type == "cuda":
        if not torch.backends.cuda.is_built():
            raise ValueError(f"--device {name}: this PyTorch build has no CUDA support (use --device cpu, or "
                             "install a CUDA build of PyTorch)")
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name}: no CUDA GPU is visible (use --device cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {name}: MPS is not available on this machine")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"--device {name}: unsupported device type {device.type!r} (use cpu, cuda or mps)")
    return str(device)


def check_output_path(path: str, suffix: str | tuple[str, ...] = ".mp4", flag: str = "--output") -> str:
    """The output must be a `suffix` file path (not an existing folder) in an existing folder."""
    suffixes = (suffix,) if isinstance(suffix, str) else tuple(suffix)
    wanted = " or ".join(suffixes)
    if os.path.isdir(path):
        raise ValueError(f"{flag} {path!r} is a folder; give a {wanted} file path")
    if not path.lower().endswith(suffixes):
        raise ValueError(f"{flag} must be a {wanted} file, got {path!r}")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{flag}: output folder does not exist: {folder}")
    return path


def check_model_folder(path: str, optional: tuple[str, ...] = (), flag: str = "--model") -> str:
    """`path` must be a diffusers pipeline folder (`model_index.json`), e.g. the output of `ltx2 convert`, with a
    subfolder for every component its index lists (except those in `optional`, which will not be loaded)."""
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{flag}: model folder not found: {path}")
    index = os.path.join(path, "model_index.json")
    if not os.path.isfile(index):
        raise ValueError(f"{flag} {path} is not a diffusers pipeline folder (no model_index.json); convert an official "
                         "checkpoint with `ltx2 convert CHECKPOINT FOLDER`")
    entries = read_json(index)
    if not isinstance(entries, dict):
        raise ValueError(f"{index} is not a diffusers model index (a JSON object)")
    missing = [name for name, entry in entries.items()
               if not name.startswith("_") and name not in optional and isinstance(entry, list) and len(entry) == 2
               and entry[0] is not None and not os.path.isdir(os.path.join(path, name))]
    if missing:
        raise ValueError(f"{flag} {path} is incomplete: model_index.json lists {', '.join(missing)} but the folder "
                         f"has no "
                         f"{', '.join(m + '/' for m in missing)}")
    check_json_files(path)
    return path


def check_image_file(path: str) -> str:
    """`path` must be an image file PIL can read."""
    from PIL import Image, UnidentifiedImageError

    if not os.path.isfile(path):
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        with Image.open(path) as image:
            image.verify()
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError) as err:
        raise ValueError(f"{path} is not a readable image ({err})") from None
    return path


def check_video_file(path: str) -> str:
    """`path` must be a video file with at least one video stream (read through PyAV)."""
    import av

    if not os.path.isfile(path):
        raise FileNotFoundError(f"video file not found: {path}")
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise ValueError(f"{path} has no video stream")
            next(container.decode(video=0))  # the first frame decodes (FFmpeg guesses formats by name)
    except (av.error.FFmpegError, OSError, StopIteration) as err:
        reason = "no frames" if isinstance(err, StopIteration) else err
        raise ValueError(f"{path} is not a readable video ({reason})") from None
    return path


def check_conditioning_file(path: str) -> str:
    """`path` must be a conditioning file `ltx2 encode` (or ComfyUI) wrote; it is small and read in full."""
    from ..loaders.conditioning_file import load_conditioning

    if not os.path.isfile(path):
        raise FileNotFoundError(f"conditioning file not found: {path}")
    try:
        load_conditioning(path)
    except ValueError as err:
        raise ValueError(f"{path} is not a usable conditioning file ({err})") from None
    except Exception as err:  # safetensors' own error type for a file that is not safetensors at all
        if type(err).__name__ != "SafetensorError":
            raise
        raise ValueError(f"{path} is not a conditioning file ({err})") from None
    return path


def write_clip(output, path: str, frame_rate: float, *, audio: bool = True) -> str:
    """Write the first clip of a pipeline output (frames + audio, or frames alone with `audio=False`) to `path`
    as MP4."""
    from ..export import export_to_video_with_audio

    return export_to_video_with_audio(output.frames[0], output.audio[0] if audio else None, path, fps=frame_rate,
                                      sample_rate=output.sample_rate)


def quiet_loading() -> None:
    """No nested "Loading pipeline components" / "Loading checkpoint shards" bars from diffusers and
    transformers (the command prints its own loading line and time), and no diffusers deprecation notice of its
    optimum-quanto integration on every quantized run (it is what `--quantize fp8/int8/int4` uses; the notice
    is about diffusers 1.0)."""
    import warnings

    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", message=r".*Quanto.* is deprecated", category=FutureWarning)


