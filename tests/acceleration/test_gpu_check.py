"""`benchmarks/gpu_check.py --smoke`: the GPU check runs end to end on the CPU at tiny sizes (its numbers mean
nothing there), so the script is ready when a GPU is lent."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"


@pytest.mark.slow
def test_gpu_check_smoke(capsys):
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--smoke", "--formats", "bf16,fp8-scaled-mm,torchao-int8,gguf-Q8_0,torchao-fp8", "--compile", "on",
                 "--steps", "1"])
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| ")]
    formats = {r.split("|")[1].strip() for r in rows}
    assert {"bf16", "fp8-scaled-mm", "torchao-int8", "gguf-Q8_0"} <= formats
    assert any(r.startswith("| torchao-fp8 |") and "unavailable" in r for r in rows)  # GPU-only: listed, refused
    bf16 = next(r for r in rows if r.startswith("| bf16 | on |"))
    assert bf16.rstrip(" |").endswith("0.0000")  # the reference
    assert "ours, max_batch_passes=None" in out and "diffusers call pattern" in out
