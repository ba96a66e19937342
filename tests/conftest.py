"""Shared fixtures: tiny random-weight LTX-2 components built once per session by the package's factory."""

from __future__ import annotations

import copy

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
