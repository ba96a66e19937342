"""Shared fixtures: tiny random-weight LTX-2 components built once per session by the package's factory.

Tests live in one folder per area (`pipelines/`, `conditioning/`, `ic_lora/`, `two_stage/`, `guidance/`,
`sampling/`, `loaders/`, `conversion/` - quantization formats too -, `media/`, `memory/`, `training/`, `cli/`,
`acceleration/`, `distributed/`, `long_video/`, `ui/`, `package/`); helper modules shared by several areas sit here
(`official_checkpoints` - tiny official checkpoints and ltx-core's modules loaded from them -, `official_12` -
ltx-core / ltx-pipelines 1.2.0 run in a child process -, `ltx12_reference` - a tiny official LTX-2.5 set written by
it -, `official_configs`, `ltx_reference`, `media_files`, `http_peers`, `training_fixtures`, `two_stage_files`,
`upsampler_files`, `gguf_files`, `distributed_harness` / `parallel_workers` - spawned ranks -). A test module may
import another area's test module by name (its constants, helpers and fixtures): every area folder is on
`sys.path`, as the one flat folder was.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch

from diffusers_ltx2.factory import TINY, build_components

_HERE = Path(__file__).resolve().parent
for _area in sorted(p for p in _HERE.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))):
    if str(_area) not in sys.path:
        sys.path.append(str(_area))


@pytest.fixture(scope="session")
def tiny_components_master():
    torch.manual_seed(0)
    return build_components(TINY, seed=0)


@pytest.fixture()
def tiny_components(tiny_components_master):
    """A fresh deep copy per test, so tests may modify modules (LoRA, hooks) freely."""
    return {k: copy.deepcopy(v) for k, v in tiny_components_master.items()}


@pytest.fixture()
def tiny_pipe(tiny_components):
    from diffusers_ltx2 import ClassifierFreeGuidance, LTX2AudioVideoPipeline, LTX2Scheduler

    return LTX2AudioVideoPipeline(
        scheduler=LTX2Scheduler(), guider=ClassifierFreeGuidance(1.0, 1.0), **tiny_components
    )


@pytest.fixture()
def reference_spy(monkeypatch):
    """Records the video state around every `ReferenceVideo` application of the calls made in the test: a list of
    `(before, after)` shallow copies of the `ModalityLatents` (the reference appends new tensors, so `before`
    keeps the state it was given)."""
    from diffusers_ltx2.conditioning import ReferenceVideo

    seen = []
    original = ReferenceVideo.apply_to

    def spy(self, state, encoder, geometry):
        before = copy.copy(state.video)
        original(self, state, encoder, geometry)
        seen.append((before, copy.copy(state.video)))

    monkeypatch.setattr(ReferenceVideo, "apply_to", spy)
    return seen


@pytest.fixture(scope="session")
def ltx25_set(tmp_path_factory):
    """A tiny official LTX-2.5 file set (one file per component, the release's key layout and metadata), written
    once per session by ltx-core 1.2.0's own configurators in a subprocess (`ltx12_reference.build_set`).
    Returns ``{role: path}`` plus ``"folder"``."""
    import ltx12_reference

    folder = tmp_path_factory.mktemp("ltx25") / "official"
    files = ltx12_reference.run("build_set", folder=folder, seed=0)
    return {**{k: Path(v) for k, v in files.items()}, "folder": folder}
