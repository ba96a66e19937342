"""Runs code of the official ltx-core / ltx-pipelines 1.2.0 (LTX-2.5 reference) in a subprocess.

1.0.0 stays installed as the reference for 2.0 / 2.3 (`ltx_reference.py`); 1.2.0 lives in
`../shared/ltx2-official-1.2.0/` (its SOURCE.md) and is imported in a child Python with `PYTHONPATH` pointing at its
sources. Modules it imports that we do not install are stubbed there: `torchaudio` (audio-encoder mel front-end,
no CPU wheel for torch 2.13) and `OpenImageIO` (media decoding in `ltx_pipelines.utils.media_io`), neither used by
what the tests run. Data goes in and out as `torch.save` files.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2] / "shared" / "ltx2-official-1.2.0"
if not ROOT.is_dir():  # the main checkout and the worktrees sit beside shared/
    ROOT = Path(os.environ.get("LTX2_OFFICIAL_12", "/work/shared/ltx2-official-1.2.0"))

PRELUDE = textwrap.dedent("""
    import importlib.machinery, sys, types
    import torch, transformers  # noqa: F401 (transformers probes torchaudio before the stub exists)
    for _name in ("torchaudio", "OpenImageIO"):
        if _name not in sys.modules:
            _m = types.ModuleType(_name)
            _m.__spec__ = importlib.machinery.ModuleSpec(_name, loader=None)
            sys.modules[_name] = _m
    IN = torch.load(sys.argv[1], weights_only=False)
    OUT = {}
""")
EPILOGUE = "\ntorch.save(OUT, sys.argv[2])\n"


def available() -> bool:
    return (ROOT / "packages" / "ltx-core" / "src" / "ltx_core").is_dir()


requires_official_12 = pytest.mark.skipif(not available(), reason=f"official 1.2.0 sources not found at {ROOT}")


def run_official_12(script: str, inputs: dict, tmp_path: Path, timeout: float = 900) -> dict:
    """Run `script` under ltx-core / ltx-pipelines 1.2.0; it reads the dict `IN` and fills the dict `OUT`.

    Raises:
        RuntimeError: the child failed (its stderr tail in the message).
    """
    src_in, src_out = tmp_path / "official_in.pt", tmp_path / "official_out.pt"
    torch.save(inputs, src_in)
    code = PRELUDE + textwrap.dedent(script) + EPILOGUE
    packages = ROOT / "packages"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(packages / "ltx-core" / "src"), str(packages / "ltx-pipelines" / "src")]))
    proc = subprocess.run([sys.executable, "-c", code, str(src_in), str(src_out)], env=env, capture_output=True,
                          text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"official 1.2.0 script failed:\n{proc.stderr[-4000:]}")
    return torch.load(src_out, weights_only=False)
