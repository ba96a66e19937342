"""Run a snippet against the official ltx-core 1.2.0 (`../shared/ltx2-official-1.2.0`) in a subprocess.

ltx-core 1.0.0 stays installed in this interpreter; 1.2.0 is imported in a child with its `src` first on
`PYTHONPATH` (see the folder's SOURCE.md). Tensors go in and out through `torch.save` files.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2] / "shared" / "ltx2-official-1.2.0" / "packages" / "ltx-core" / "src"
if not ROOT.is_dir():  # the shared folder beside the checkout
    ROOT = Path("/work/shared/ltx2-official-1.2.0/packages/ltx-core/src")


def run_official_12(code: str, inputs: dict, tmp_path) -> dict:
    """Execute `code` with `inputs` (a dict of tensors / numbers) bound to `inp` in a child importing ltx-core
    1.2.0; the child must fill the dict `out`, which is returned. Skips when the reference is absent."""
    if not ROOT.is_dir():
        pytest.skip("ltx-core 1.2.0 reference not found")
    src, dst = Path(tmp_path) / "official12_in.pt", Path(tmp_path) / "official12_out.pt"
    torch.save(inputs, src)
    script = ("import torch, ltx_core, ltx_core.loader\n"
              f"assert ltx_core.__file__.startswith({str(ROOT)!r}), ltx_core.__file__\n"
              f"inp = torch.load({str(src)!r})\nout = {{}}\n" + textwrap.dedent(code)
              + f"\ntorch.save(out, {str(dst)!r})\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return torch.load(dst)
