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
