"""The README's main Python example runs as written (on this machine's CPU, or a GPU where there is one), with
only the model folder and the clip size swapped for the tiny random-weight model."""

from __future__ import annotations

import re
from pathlib import Path

import av
import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def _python_block(after_heading: str) -> str:
    text = README.read_text()
    section = text[text.index(after_heading):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
def test_readme_generation_example_runs(tiny_pipe, tmp_path, monkeypatch):
    tiny_pipe.save_pretrained(tmp_path / "tiny")
    code = _python_block("## Using a real checkpoint")
    swaps = {
        '"path/to/LTX-2"': repr(str(tmp_path / "tiny")),
        "height=512, width=768, num_frames=121": "height=64, width=64, num_frames=9",
        "num_inference_steps=40": "num_inference_steps=2",
    }
    for old, new in swaps.items():
        assert old in code, f"the README example changed: {old!r} not found; update this test"
        code = code.replace(old, new)
    assert "torch_dtype" not in README.read_text(), "the README uses the deprecated torch_dtype="
    monkeypatch.chdir(tmp_path)
    exec(compile(code, str(README), "exec"), {"__name__": "readme_example"})
    with av.open(str(tmp_path / "trio.mp4")) as container:
        assert sorted(s.type for s in container.streams) == ["audio", "video"]
        assert sum(1 for _ in container.decode(video=0)) == 9


def test_from_single_file_takes_dtype_like_from_pretrained(tmp_path):
    """The README spells the dtype `dtype=` everywhere; `from_single_file` takes it (and the older
    `torch_dtype=`, refusing a contradiction)."""
    import torch
    from official_checkpoints import write_official_checkpoint

    from diffusers_ltx2 import LTX2AudioVideoPipeline

    src = tmp_path / "official.safetensors"
    write_official_checkpoint(src, "2.0")
    pipe = LTX2AudioVideoPipeline.from_single_file(src, dtype=torch.bfloat16, progress=False)
    assert pipe.transformer.dtype == torch.bfloat16 and pipe.vae.dtype == torch.bfloat16
    old_spelling = LTX2AudioVideoPipeline.from_single_file(src, torch_dtype=torch.float32, progress=False)
    assert old_spelling.transformer.dtype == torch.float32
    with pytest.raises(ValueError, match="disagree"):
        LTX2AudioVideoPipeline.from_single_file(src, dtype=torch.bfloat16, torch_dtype=torch.float32)
