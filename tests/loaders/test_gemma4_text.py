"""LTX-2.5 text encoding: a tiny random Gemma-4 (`gemma4_unified`) + the 2.5 projection and connectors, against
ltx-core 1.2.0's own encoder, and the checkpoint's encoder-version check against ltx-core 1.2.0's.

What ltx-core 1.2 runs here on transformers 5.25 (it pins < 5.15): its Gemma asset loading (`GemmaAssets`,
`build_gemma_hf_tokenizer`), its weight loader (`SingleGPUModelBuilder` with `get_gemma_ops`: key remapping,
meta-device build, rotary / embed-scale buffer population) minus the processor step (transformers' Gemma-4
image and video processors need torchvision, which is not installed), `LTXGemmaTextEncoder.encode` (tokenization
with the `<bos>` it prepends for Gemma-4, the Gemma forward), `EmbeddingsProcessorConfigurator.from_metadata`
(`_check_gemma_version`, `FeatureExtractorV2`, both connectors) and `process_hidden_states`. Its random weights
are converted with our key map and config reader; our `GemmaPromptEncoder` must give the same contexts.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from official_12 import requires_official_12, run_official_12

from diffusers_ltx2.conversion.configs import connectors_config
from diffusers_ltx2.conversion.keymap import (
    AUDIO_CONNECTOR_PREFIX,
    VIDEO_CONNECTOR_PREFIX,
    map_connector_key,
    map_projection_key,
)
from diffusers_ltx2.factory import TINY
from diffusers_ltx2.factory_gemma import GEMMA4_VERSION, build_gemma4_components
from diffusers_ltx2.loaders.gemma import GemmaPromptEncoder, tokenize_prompts
from diffusers_ltx2.loaders.gemma_version import GemmaVersionMismatchError, check_gemma_version

PROMPTS = ["A cat walks slowly on the road at sunset.", "  two dogs  ", "rain"]

# The LTX-2.5 transformer section as far as the text path reads it (V2 feature extractor: per-token RMS norm,
# video and audio aggregate projections with bias, before the connectors), at the tiny model's widths.
TRANSFORMER = {
    "caption_proj_before_connector": True, "caption_projection_first_linear": False,
    "caption_proj_input_norm": False, "caption_projection_second_linear": False,
    "num_attention_heads": TINY.video_heads, "attention_head_dim": TINY.video_head_dim,
    "audio_num_attention_heads": TINY.audio_heads, "audio_attention_head_dim": TINY.audio_head_dim,
    "connector_num_attention_heads": TINY.video_heads, "connector_attention_head_dim": TINY.video_head_dim,
    "audio_connector_num_attention_heads": TINY.audio_heads, "audio_connector_attention_head_dim": TINY.audio_head_dim,
    "connector_num_layers": 1, "connector_positional_embedding_max_pos": [4096], "rope_type": "split",
    "frequencies_precision": "float64",
    "caption_channels": TINY.gemma_hidden,  # read by our config reader; ltx-core takes it from the Gemma config
}
METADATA = {"config": {"transformer": TRANSFORMER}, "model_version": "2.5.0",
            "gemma_source_checkpoint": {"gemma_version": GEMMA4_VERSION}}

OFFICIAL = """
from ltx_core.loader.single_gpu_model_builder import SingleGPUModelBuilder as Builder
from ltx_core.text_encoders.gemma import (EmbeddingsProcessorConfigurator, GemmaTextEncoderConfigurator, get_gemma_ops,
                                          resolve_gemma_weight_paths)
from ltx_core.text_encoders.gemma.encoders.encoder_configurator import _check_gemma_version

root = IN["root"]
sd_ops, module_ops = get_gemma_ops(root)
builder = Builder(model_path=resolve_gemma_weight_paths(root),
                  model_class_configurator=GemmaTextEncoderConfigurator.with_gemma_model_path(root),
                  model_sd_ops=sd_ops, module_ops=tuple(m for m in module_ops if m.name != "ProcessorLoad"))
encoder = builder.build(device=torch.device("cpu"), dtype=torch.float32).eval()
torch.manual_seed(7)
processor = EmbeddingsProcessorConfigurator.with_gemma_model_path(root).from_metadata(IN["metadata"]).eval()
with torch.no_grad():
    for p in processor.parameters():  # away from the default init, so every weight matters
        p.add_(torch.randn_like(p) * 0.1)
    raw = encoder.encode(IN["prompts"])
    outs = [processor.process_hidden_states(hs, mask) for hs, mask in raw]
OUT["ids"] = [torch.tensor([t for t, _ in encoder.tokenizer.tokenize_with_weights(p)["gemma"]]) for p in IN["prompts"]]
OUT["hidden"] = [torch.stack(hs, dim=-1) for hs, _ in raw]
OUT["video"] = [o.video_encoding for o in outs]
OUT["audio"] = [o.audio_encoding for o in outs]
OUT["mask"] = [o.attention_mask for o in outs]
names = {"feature_extractor.": "text_embedding_projection.",
         "video_connector.": "model.diffusion_model.video_embeddings_connector.",
         "audio_connector.": "model.diffusion_model.audio_embeddings_connector."}
OUT["state"] = {next(v + k[len(p):] for p, v in names.items() if k.startswith(p)): t
                for k, t in processor.state_dict().items()}
verdicts = []
for metadata, config in IN["version_cases"]:
    try:
        _check_gemma_version(metadata, types.SimpleNamespace(**config), root)
        verdicts.append("ok")
    except ValueError as err:
        verdicts.append("refused")
OUT["verdicts"] = verdicts
"""


@pytest.fixture(scope="module")
def gemma4(tmp_path_factory):
    """The tiny LTX Gemma-4 saved as a Gemma folder (config.json with gemma_version, weights, tokenizer)."""
    components = build_gemma4_components(TINY)
    root = tmp_path_factory.mktemp("gemma4") / "gemma4-12b-ltx-tiny"
    components["text_encoder"].save_pretrained(root)
    components["tokenizer"].save_pretrained(root)
    # ltx-core requires the processor sidecar to exist; its contents are only read by the processor step
    (root / "processor_config.json").write_text(json.dumps({"processor_class": "Gemma4UnifiedProcessor"}))
    return components, root


VERSION_CASES = [  # (checkpoint metadata, Gemma config), judged by ltx-core and by us
    ({"gemma_source_checkpoint": {"gemma_version": GEMMA4_VERSION}},
     dict(gemma_version=GEMMA4_VERSION, model_type="gemma4_unified")),
    ({"gemma_source_checkpoint": {"gemma_version": GEMMA4_VERSION}}, dict(model_type="gemma4_unified")),  # vanilla
    ({"gemma_source_checkpoint": {"gemma_version": GEMMA4_VERSION}},
     dict(gemma_version="gemma4-12b-ltx-v2", model_type="gemma4_unified")),
    ({"gemma_source_checkpoint": {"gemma_version": GEMMA4_VERSION}}, dict(model_type="gemma3")),
    ({"model_version": "2.5.0"}, dict(gemma_version=GEMMA4_VERSION, model_type="gemma4_unified")),
    ({"model_version": "2.5.0"}, dict(model_type="gemma4_unified")),  # nothing to compare: a warning
    ({"model_version": "2.4.1"}, dict(gemma_version=GEMMA4_VERSION, model_type="gemma4_unified")),
    ({"model_version": "2.3.0"}, dict(model_type="gemma3")),
    ({"model_version": "2.3.rc1"}, dict(model_type="gemma4_unified")),
    ({"model_version": "2.0.0"}, dict(gemma_version=GEMMA4_VERSION, model_type="gemma4_unified")),
]


@pytest.fixture(scope="module")
def official(gemma4, tmp_path_factory):
    _, root = gemma4
    return run_official_12(OFFICIAL, dict(root=str(root), metadata=METADATA, prompts=PROMPTS,
                                          version_cases=VERSION_CASES), tmp_path_factory.mktemp("official"))


def _connectors_from_official(state: dict):
    """Our connectors, converted from ltx-core's random weights with the package's key map and config reader."""
    from diffusers.pipelines.ltx2 import LTX2TextConnectors

    shapes = {k: tuple(v.shape) for k, v in state.items() if k.startswith("text_embedding_projection.")}
    connectors = LTX2TextConnectors(**connectors_config(METADATA["config"], shapes)).eval()
    converted = {}
    for key, value in state.items():
        if key.startswith("text_embedding_projection."):
            converted[map_projection_key(key.removeprefix("text_embedding_projection."))] = value
        elif key.startswith(VIDEO_CONNECTOR_PREFIX):
            converted[map_connector_key(key.removeprefix(VIDEO_CONNECTOR_PREFIX), "video")] = value
        else:
            converted[map_connector_key(key.removeprefix(AUDIO_CONNECTOR_PREFIX), "audio")] = value
    connectors.load_state_dict(converted, strict=True)
    return connectors


@requires_official_12
@torch.no_grad()
def test_encoder_equals_ltx_core_12(gemma4, official):
    components, _ = gemma4
    connectors = _connectors_from_official(official["state"])
    encoder = GemmaPromptEncoder(components["tokenizer"], components["text_encoder"], connectors,
                                 max_sequence_length=1024)
    ids, mask = tokenize_prompts(components["tokenizer"], PROMPTS, 1024)
    embeddings = encoder.encode(PROMPTS)
    for i, prompt in enumerate(PROMPTS):
        assert torch.equal(ids[i], official["ids"][i]), prompt  # <bos> prepended, left padding to 1024
        assert ids[i][mask[i].bool()][0] == components["tokenizer"].bos_token_id
        # both fp32, the same operations: observed bit-exact; 1e-5 leaves room for other CPUs' kernels
        torch.testing.assert_close(embeddings.video_context[i:i + 1], official["video"][i], rtol=0, atol=1e-5)
        torch.testing.assert_close(embeddings.audio_context[i:i + 1], official["audio"][i], rtol=0, atol=1e-5)
        assert torch.equal(embeddings.attention_mask[i:i + 1].long(), official["mask"][i].long())
    assert official["video"][0].abs().max() > 0.1  # not trivially zero


@requires_official_12
@torch.no_grad()
def test_official_loader_gives_transformers_model(gemma4, official):
    """ltx-core 1.2's Gemma-4 loader runs on transformers 5.25 and gives the same hidden states as the model
    transformers loads (the Gemma step of both encoders is the same network)."""
    from diffusers_ltx2.loaders.gemma import gemma_features

    components, _ = gemma4
    features, _ = gemma_features(components["tokenizer"], components["text_encoder"], PROMPTS, max_sequence_length=1024)
    for i in range(len(PROMPTS)):
        torch.testing.assert_close(features[i:i + 1], official["hidden"][i].flatten(2, 3), rtol=0, atol=1e-5)


@requires_official_12
def test_version_check_agrees_with_ltx_core_12(official):
    ours = []
    for metadata, config in VERSION_CASES:
        expected = metadata.get("gemma_source_checkpoint", {}).get("gemma_version")
        try:
            check_gemma_version(SimpleNamespace(**config), expected=expected,
                                model_version=metadata.get("model_version"))
            ours.append("ok")
        except GemmaVersionMismatchError:
            ours.append("refused")
    assert ours == official["verdicts"]
    assert ours.count("refused") >= 5


def test_diffusers_adds_no_bos_for_gemma4():
    """diffusers 0.42.1's `encode_prompt` with a Gemma-4 tokenizer (which adds no <bos>) feeds no <bos>, unlike
    ltx-core 1.2 and us: the reason our encoder does not reuse diffusers' tokenization for 2.5."""
    from diffusers.pipelines.ltx2 import LTX2Pipeline

    components = build_gemma4_components(TINY)
    none = dict(scheduler=None, vae=None, audio_vae=None, connectors=None, transformer=None, vocoder=None)
    theirs = LTX2Pipeline(text_encoder=components["text_encoder"], tokenizer=components["tokenizer"], **none)
    _, their_mask, _, _ = theirs.encode_prompt("a cat", do_classifier_free_guidance=False, max_sequence_length=16)
    ids, mask = tokenize_prompts(components["tokenizer"], ["a cat"], 16)
    assert int(their_mask.sum()) == 2 and int(mask.sum()) == 3 and ids[0, -3] == components["tokenizer"].bos_token_id


def test_pipeline_checks_the_text_encoder_version(tiny_components):
    """A pipeline built for an LTX-2.5 checkpoint refuses a text encoder of another version before it runs;
    the matching one encodes."""
    from diffusers_ltx2 import LTX2AudioVideoPipeline, LTX2Scheduler

    gemma = build_gemma4_components(TINY)
    tiny_components.update(text_encoder=gemma["text_encoder"], tokenizer=gemma["tokenizer"])
    pipe = LTX2AudioVideoPipeline(scheduler=LTX2Scheduler(), guider=None, model_version="2.5.0",
                                  gemma_version=GEMMA4_VERSION, **tiny_components)
    out = pipe("a cat", height=64, width=64, num_frames=9, num_inference_steps=1, output_type="latent",
               max_sequence_length=32)
    assert out.frames.shape[2] == 2
    pipe.register_to_config(gemma_version="gemma4-12b-ltx-v2")
    calls = []
    pipe.text_encoder.register_forward_pre_hook(lambda *a: calls.append(1))
    for call in (lambda: pipe("a cat", num_frames=9, output_type="latent"),
                 lambda: pipe.encode_prompt("a cat", do_classifier_free_guidance=False)):
        with pytest.raises(GemmaVersionMismatchError, match="gemma4-12b-ltx-v2"):
            call()
    assert calls == []
