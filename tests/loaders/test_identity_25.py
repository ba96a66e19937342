"""LTX-2.5 model identities in the prompt-conditioning paths: the LTX API encoder reads the model id of an official
split set (one file per component) from its transformer file; 2.5 and 2.3 contexts have the same widths, so only
the identity tells them apart in saved conditioning and the prompt cache; a Gemma-4 encoder's embeddings carry the
2.5 connectors' fingerprint."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file
from test_api_encoder import FAST, KEY, MODEL_ID, api  # noqa: F401  (the fake LTX API server)

from diffusers_ltx2.factory import TINY
from diffusers_ltx2.factory_gemma import build_gemma4_components
from diffusers_ltx2.loaders.api import LTXAPIPromptEncoder
from diffusers_ltx2.loaders.cache import CachedPromptEncoder
from diffusers_ltx2.loaders.conditioning_file import load_conditioning, save_conditioning
from diffusers_ltx2.loaders.gemma import GemmaPromptEncoder
from diffusers_ltx2.loaders.identity import ModelIdentityMismatchError, connector_fingerprint, read_model_id
from diffusers_ltx2.loaders.prompt_embeddings import PromptEmbeddings

ID_23 = "enc:gAAAAA-ltx-2.3-22b-dev=="


def _component(path, sections: dict, model_id: str | None = None, **extra):
    metadata = {"config": json.dumps(sections), **extra}
    if model_id:
        metadata["encrypted_wandb_properties"] = model_id
    save_file({"w": torch.zeros(2)}, path, metadata=metadata)


@pytest.fixture()
def split_set(tmp_path):
    """An official-style LTX-2.5 folder: one file per component; only the transformer's id is the model's (the
    audio VAE file, first in name order, carries an id of its own)."""
    folder = tmp_path / "ltx-2.5"
    folder.mkdir()
    _component(folder / "ltx-2.5-22b-audio-vae.safetensors", {"audio_vae": {}, "vocoder": {}}, "enc:audio-vae-id")
    _component(folder / "ltx-2.5-22b-dev.safetensors", {"transformer": {}, "scheduler": {}}, MODEL_ID,
               model_version="2.5.0", gemma_source_checkpoint=json.dumps({"gemma_version": "gemma4-12b-ltx-v1"}))
    _component(folder / "ltx-2.5-22b-video-vae.safetensors", {"vae": {}}, "enc:video-vae-id")
    save_file({"w": torch.zeros(2)}, folder / "gemma4-12b-ltx-text-encoder.safetensors",
              metadata={"gemma_config": "{}"})
    return folder


def test_model_id_of_a_split_set_is_the_transformers(split_set):
    assert read_model_id(split_set) == MODEL_ID
    assert read_model_id(split_set / "ltx-2.5-22b-dev.safetensors") == MODEL_ID


def test_api_encoder_on_a_split_set(api, split_set):  # noqa: F811
    encoder = LTXAPIPromptEncoder(api_key=KEY, checkpoint=split_set, base_url=api.url, video_dim=4096,
                                  audio_dim=2048, **FAST)
    from test_api_encoder import conditioning_pickle, Reply

    api.script.append(lambda request: Reply(200, conditioning_pickle(json.loads(request["body"])["prompt"],
                                                                     width=4096 + 2048)))
    embeddings = encoder.encode(["a fox"])
    assert json.loads(api.requests[0]["body"])["model_id"] == MODEL_ID
    assert embeddings.model_identity == MODEL_ID
    assert embeddings.video_context.shape[-1] == 4096 and embeddings.audio_context.shape[-1] == 2048


def test_same_widths_as_23_told_apart_by_identity(tmp_path):
    """A 2.5 conditioning file loads for the 2.5 model and is refused for 2.3 (same 4096 + 2048 widths)."""
    context = torch.randn(1, 8, 4096 + 2048)
    embeddings = PromptEmbeddings(video_context=context[..., :4096], audio_context=context[..., 4096:],
                                  attention_mask=torch.ones(1, 8, dtype=torch.int64), model_identity=MODEL_ID,
                                  stage="connector")
    path = tmp_path / "fox.safetensors"
    save_conditioning(path, embeddings)
    loaded = load_conditioning(path, model_identities=[MODEL_ID], video_dim=4096, audio_dim=2048)
    assert torch.equal(loaded.video_context, embeddings.video_context)
    with pytest.raises(ModelIdentityMismatchError, match="re-encode"):
        load_conditioning(path, model_identities=[ID_23], video_dim=4096, audio_dim=2048)


def test_gemma4_encoder_cache_and_fingerprint(tmp_path):
    """Local Gemma-4 encoding through the prompt cache: the second call comes from disk, identical; the entry is
    keyed by (and carries) the 2.5 connectors' fingerprint, which another model's connectors do not match."""
    from diffusers.pipelines.ltx2 import LTX2TextConnectors

    from diffusers_ltx2.factory import reinit_parameters_

    def connectors(seed):
        c = LTX2TextConnectors(caption_channels=TINY.gemma_hidden, text_proj_in_factor=TINY.gemma_layers + 1,
                               video_connector_num_attention_heads=2, video_connector_attention_head_dim=8,
                               audio_connector_num_attention_heads=2, audio_connector_attention_head_dim=4,
                               video_connector_num_layers=1, audio_connector_num_layers=1,
                               video_connector_num_learnable_registers=16, audio_connector_num_learnable_registers=16,
                               per_modality_projections=True, video_hidden_dim=16, audio_hidden_dim=8,
                               proj_bias=True, rope_type="split")
        return reinit_parameters_(c, torch.Generator().manual_seed(seed)).eval()

    gemma = build_gemma4_components(TINY)
    ours = connectors(0)
    encoder = GemmaPromptEncoder(gemma["tokenizer"], gemma["text_encoder"], ours,
                                 model_identity=connector_fingerprint(ours), max_sequence_length=32)
    cached = CachedPromptEncoder(encoder, tmp_path / "cache")
    first = cached.encode(["a fox runs"])
    calls = []
    gemma["text_encoder"].register_forward_pre_hook(lambda *a: calls.append(1))
    second = cached.encode(["a fox runs"])
    assert calls == [] and torch.equal(first.video_context, second.video_context)
    assert second.model_identity == connector_fingerprint(ours) != connector_fingerprint(connectors(1))
    assert first.video_context.shape[-1] == 16 and first.audio_context.shape[-1] == 8
