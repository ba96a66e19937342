"""DFR tests' shared fixtures: a DFR pipeline on the tiny official 2.5 set and random prompt embeddings for it, one
of each per test module (a module that configures its pipeline, e.g. with LoRAs, defines its own `pipe`)."""

from __future__ import annotations

import pytest
from dfr_files import build_dfr_pipeline, random_embeds


@pytest.fixture(scope="module")
def pipe(ltx25_set):
    return build_dfr_pipeline(ltx25_set)


@pytest.fixture(scope="module")
def embeds(pipe):
    return random_embeds(pipe)
