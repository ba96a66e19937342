"""CachedPromptEncoder in front of a real tiny Gemma and of the LTX API encoder (local server)."""

from __future__ import annotations

import logging
import os

import pytest
import torch

from diffusers_ltx2.factory import TINY, build_components
from diffusers_ltx2.loaders.api import LTXAPIPromptEncoder
from diffusers_ltx2.loaders.cache import CachedPromptEncoder
from diffusers_ltx2.loaders.gemma import GemmaPromptEncoder
from diffusers_ltx2.loaders.identity import connector_fingerprint

from diffusers_ltx2.loaders.conditioning_file import load_conditioning

# unusable conditioning files (one per fault kind)
from test_conditioning_file import UNUSABLE_FILES, write_ours

# the fake LTX API server and its fixture
from test_api_encoder import AUDIO, FAST, KEY, MODEL_ID, VIDEO, api, reference_tensor  # noqa: F401


@pytest.fixture(scope="module")
def models():
    return {seed: build_components(TINY, seed=seed) for seed in (0, 1)}


def gemma(models, seed=0, connectors=True, **kw):
    c = models[seed]
    return GemmaPromptEncoder(c["tokenizer"], c["text_encoder"], c["connectors"] if connectors else None,
                              max_sequence_length=TINY.max_sequence_length, **kw)


def entries(folder):
    return sorted(p for p in os.listdir(folder) if p.endswith(".safetensors"))


def test_second_encode_comes_from_disk_and_is_identical(models, tmp_path):
    cached = CachedPromptEncoder(gemma(models), tmp_path)
    prompts = ["a red fox runs in the snow", "rain on a window at night"]
    first = cached.encode(prompts)
    assert (cached.hits, cached.misses) == (0, 2) and len(entries(tmp_path)) == 2
    assert first.model_identity == connector_fingerprint(models[0]["connectors"])

    again = CachedPromptEncoder(gemma(models), tmp_path)  # a new process would see the same files
    second = again.encode(list(reversed(prompts)) + [prompts[0]])
    assert (again.hits, again.misses) == (3, 0)
    direct = gemma(models).encode(prompts)
    for row, j in enumerate([1, 0, 0]):  # rows of `direct` for reversed(prompts) + [prompts[0]]
        assert torch.equal(second.video_context[row], direct.video_context[j])
        assert torch.equal(second.audio_context[row], direct.audio_context[j])
        assert torch.equal(second.attention_mask[row], direct.attention_mask[j])


def test_duplicates_in_one_batch_are_encoded_once(models, tmp_path):
    cached = CachedPromptEncoder(gemma(models), tmp_path)
    out = cached.encode(["a dog", "a cat", "a dog"])
    assert cached.misses == 3 and len(entries(tmp_path)) == 2
    assert torch.equal(out.video_context[0], out.video_context[2])
    assert not torch.equal(out.video_context[0], out.video_context[1])


def test_key_depends_on_the_model(models, tmp_path):
    a = CachedPromptEncoder(gemma(models, seed=0), tmp_path)
    b = CachedPromptEncoder(gemma(models, seed=1), tmp_path)
    out_a, out_b = a.encode(["the same prompt"]), b.encode(["the same prompt"])
    assert b.misses == 1 and len(entries(tmp_path)) == 2
    assert out_a.model_identity != out_b.model_identity
    assert not torch.equal(out_a.video_context, out_b.video_context)
    assert torch.equal(out_b.video_context, gemma(models, seed=1).encode(["the same prompt"]).video_context)


def test_key_depends_on_the_encoder_kind_and_its_settings(models, api, tmp_path):
    local = CachedPromptEncoder(gemma(models), tmp_path)
    remote = CachedPromptEncoder(
        LTXAPIPromptEncoder(api_key=KEY, model_id=MODEL_ID, base_url=api.url, video_dim=VIDEO, audio_dim=AUDIO, **FAST),
        tmp_path,
    )
    enhanced = CachedPromptEncoder(
        LTXAPIPromptEncoder(api_key=KEY, model_id=MODEL_ID, base_url=api.url, video_dim=VIDEO, audio_dim=AUDIO,
                            enhance_prompt=True, **FAST),
        tmp_path,
    )
    prompt = "a red car"
    local.encode([prompt])
    out = remote.encode([prompt])
    remote.encode([prompt])
    enhanced.encode([prompt])
    assert len(api.requests) == 2  # plain once, enhanced once; the repeat came from disk
    assert len(entries(tmp_path)) == 3
    assert out.model_identity == MODEL_ID
    assert torch.equal(out.video_context[0], reference_tensor(prompt)[0, :, :VIDEO])
    assert remote.kind == "cached-ltx-api"


def test_unusable_entries_are_reencoded(models, tmp_path, caplog):
    cached = CachedPromptEncoder(gemma(models), tmp_path)
    good = cached.encode(["waves on the beach"])
    path = cached.path_for("waves on the beach")
    path.write_bytes(path.read_bytes()[:50])  # corrupt
    with caplog.at_level(logging.WARNING, logger="diffusers_ltx2"):
        again = cached.encode(["waves on the beach"])
    assert "unusable prompt cache entry" in caplog.text
    assert torch.equal(again.video_context, good.video_context) and cached.misses == 2

    # an entry of another model under this key (e.g. copied by hand) is not trusted
    other = CachedPromptEncoder(gemma(models, seed=1), tmp_path)
    other.encode(["waves on the beach"])
    os.replace(other.path_for("waves on the beach"), path)
    third = cached.encode(["waves on the beach"])
    assert torch.equal(third.video_context, good.video_context) and cached.misses == 3


def test_encoder_without_identity_needs_one(models, tmp_path):
    features_only = gemma(models, connectors=False)  # raw Gemma features: no connectors to fingerprint
    with pytest.raises(ValueError, match="model_identity="):
        CachedPromptEncoder(features_only, tmp_path).encode(["x"])
    cached = CachedPromptEncoder(features_only, tmp_path, model_identity="gemma-tiny-seed0")
    out = cached.encode(["a dog"])
    assert out.stage == "features" and out.model_identity == "gemma-tiny-seed0"
    again = CachedPromptEncoder(features_only, tmp_path, model_identity="gemma-tiny-seed0").encode(["a dog"])
    assert torch.equal(again.video_context, out.video_context)
    with pytest.raises(TypeError):
        CachedPromptEncoder(object(), tmp_path)


@pytest.mark.parametrize("name", sorted(UNUSABLE_FILES))
def test_every_kind_of_unusable_entry_is_reencoded_not_raised(models, tmp_path, name):
    tensors, metadata, _ = UNUSABLE_FILES[name]
    features = metadata.get("stage") == "features"
    inner = gemma(models, connectors=False) if features else gemma(models)
    cached = CachedPromptEncoder(inner, tmp_path, model_identity="gemma-tiny-seed0" if features else None)
    prompt = "a lighthouse in a storm"
    path = cached.path_for(prompt)
    write_ours(path, tensors, identity=cached.model_identity, **metadata)  # under this model's key and identity

    out = cached.encode([prompt])
    fresh = inner.encode([prompt])
    assert cached.misses == 1 and cached.hits == 0
    assert torch.equal(out.video_context, fresh.video_context) and torch.equal(out.attention_mask, fresh.attention_mask)
    assert torch.equal(load_conditioning(path).video_context, fresh.video_context)  # the entry was replaced
