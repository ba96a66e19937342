"""Shared fixtures: tiny random-weight LTX-2 components built once per session by the package's factory."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from diffusers_ltx2.factory import TINY, build_components


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


@pytest.fixture(scope="session")
def ltx25_set(tmp_path_factory):
    """A tiny official LTX-2.5 file set (one file per component, the release's key layout and metadata), written
    once per session by ltx-core 1.2.0's own configurators in a subprocess (`ltx12_reference.build_set`).
    Returns ``{role: path}`` plus ``"folder"``."""
    import ltx12_reference

    folder = tmp_path_factory.mktemp("ltx25") / "official"
    files = ltx12_reference.run("build_set", folder=folder, seed=0)
    return {**{k: Path(v) for k, v in files.items()}, "folder": folder}
