"""Prompt enhancement on tiny random Gemmas: the rewritten prompt (gibberish, but deterministic) equals ltx-core
1.2.0's `LTXGemmaTextEncoder.enhance_t2v` + ltx-pipelines' `clean_response` with the same model, tokenizer, seed
and settings; the pipeline's `enable_prompt_enhancement=True` path, its checks and its output field.

ltx-core's `_enhance` reads text through a transformers processor. transformers' Gemma-4 processor needs
torchvision (not installed) and the factory's Gemma-3 tokenizer has no image tokens, so the official side gets a
text-only stand-in processor that calls the tokenizer (what the Gemma processors do for text alone); everything
else (chat template, alignment padding, sampling settings, seeding, decoding, cleaning) is ltx-core's code.
"""

from __future__ import annotations

import pytest
import torch
from official_12 import requires_official_12, run_official_12

from diffusers_ltx2 import LTX2AudioVideoPipeline, LTX2Scheduler
from diffusers_ltx2.factory import TINY
from diffusers_ltx2.factory_gemma import build_gemma3_vlm_components, build_gemma4_components, with_chat_template
from diffusers_ltx2.loaders.prompt_enhancement import (
    clean_response,
    default_system_prompt,
    enhance_prompt,
    enhancement_image,
)

PROMPTS = ["a cat walks on the road", "two dogs play in the snow at night"]
SEEDS = (10, 3)

OFFICIAL = """
from transformers import AutoTokenizer, Gemma3ForConditionalGeneration, Gemma4ForConditionalGeneration
from ltx_core.text_encoders.gemma.encoders import base_encoder as B
from ltx_pipelines.utils.helpers import clean_response
from ltx_pipelines.utils.media_io import resize_aspect_ratio_preserving

class TextProcessor:  # the Gemma processors' text-only path
    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
    def __call__(self, text, images=None, return_tensors="pt"):
        assert images is None
        return self.tokenizer(text, return_tensors=return_tensors)

for family, cls in (("gemma3", Gemma3ForConditionalGeneration), ("gemma4", Gemma4ForConditionalGeneration)):
    folder = IN[family]
    model = cls.from_pretrained(folder).eval()
    encoder = B.LTXGemmaTextEncoder(model=model, processor=TextProcessor(AutoTokenizer.from_pretrained(folder)))
    OUT[family] = {(p, s, n): clean_response(encoder.enhance_t2v(p, max_new_tokens=n, seed=s))
                   for f, p, s, n in IN["cases"] if f == family}
from transformers import Gemma3ImageProcessorPil, Gemma3Processor
folder = IN["vlm"]
tokenizer = AutoTokenizer.from_pretrained(folder)
processor = Gemma3Processor(image_processor=Gemma3ImageProcessorPil(size={"height": 8, "width": 8}),
                            tokenizer=tokenizer, image_seq_length=1, chat_template=tokenizer.chat_template)
encoder = B.LTXGemmaTextEncoder(model=Gemma3ForConditionalGeneration.from_pretrained(folder).eval(),
                                processor=processor)
image = resize_aspect_ratio_preserving(IN["vlm_image"], 896).to(torch.uint8)  # as generate_enhanced_prompt
OUT["i2v"] = {(p, s): clean_response(encoder.enhance_i2v(p, image, max_new_tokens=IN["tokens"], seed=s))
              for p in IN["prompts"] for s in IN["seeds"]}
OUT["system_prompts"] = {("gemma3", False): B.default_gemma3_t2v_system_prompt(),
                         ("gemma3", True): B.default_gemma3_i2v_system_prompt(),
                         ("gemma4", False): B.default_gemma4_t2v_system_prompt(),
                         ("gemma4", True): B.default_gemma4_i2v_system_prompt()}
OUT["images"] = [resize_aspect_ratio_preserving(image, 896).to(torch.uint8) for image in IN["images"]]
OUT["clean"] = [clean_response(t) for t in IN["texts"]]
"""

_Y, _X = torch.meshgrid(torch.linspace(0, 1, 48), torch.linspace(0, 1, 80), indexing="ij")
# smooth colour ramps: the 8x8 image the tiny SigLIP sees still differs from other images (noise would average out)
VLM_IMAGE = (torch.stack([_X, _Y, 1 - _X * _Y], -1) * 255).round().to(torch.uint8)
TEXTS = ["\u201cQuoted\u201d \u2014 dash", "  123 ...Starts later", "\u2018it\u2019s\u00a0fine\u2212ok", "!!!", ""]


@pytest.fixture(scope="module")
def enhancers(tmp_path_factory):
    """The tiny Gemma-3 text encoder (2.0 / 2.3 enhancer, with a Gemma-3 chat template) and the tiny Gemma-4
    prompt enhancer (2.5), each saved with its tokenizer."""
    from diffusers_ltx2.factory import build_components

    gemma3 = build_components(TINY)
    gemma4 = build_gemma4_components(TINY)
    vlm = build_gemma3_vlm_components(TINY)
    out = {"gemma3": (gemma3["text_encoder"], with_chat_template(gemma3["tokenizer"])),
           "gemma4": (gemma4["prompt_enhancer"], gemma4["tokenizer"]),
           "vlm": (vlm["text_encoder"], vlm["tokenizer"])}
    folders = {}
    for family, (model, tokenizer) in out.items():
        folders[family] = tmp_path_factory.mktemp(family)
        model.save_pretrained(folders[family])
        tokenizer.save_pretrained(folders[family])
    return out, folders


TOKENS = 12
# (family, prompt, seed, max_new_tokens): short runs for every prompt and seed, plus one run at the official
# default length (600 greedy tokens for Gemma-4; Gemma-3's 512 sampled tokens would only be slower)
CASES = [(f, p, s, TOKENS) for f in ("gemma3", "gemma4") for p in PROMPTS for s in SEEDS] + [
    ("gemma4", PROMPTS[0], 10, None)]


@pytest.fixture(scope="module")
def official(enhancers, tmp_path_factory):
    _, folders = enhancers
    images = [torch.randint(0, 256, (37, 53, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(i))
              for i in range(2)] + [torch.randint(0, 256, (1000, 600, 3), dtype=torch.uint8)]
    return run_official_12(OFFICIAL, dict(gemma3=str(folders["gemma3"]), gemma4=str(folders["gemma4"]),
                                          vlm=str(folders["vlm"]), vlm_image=VLM_IMAGE, prompts=PROMPTS, seeds=SEEDS,
                                          tokens=TOKENS, cases=CASES, images=images, texts=TEXTS),
                           tmp_path_factory.mktemp("official")) | {"inputs": images}


@requires_official_12
@pytest.mark.parametrize("family", ["gemma3", "gemma4"])
def test_enhanced_prompt_equals_official(enhancers, official, family):
    models, _ = enhancers
    model, tokenizer = models[family]
    results = set()
    for (prompt, seed, tokens), expected in official[family].items():
        ours = enhance_prompt(model, prompt, tokenizer=tokenizer, seed=seed,
                              max_new_tokens=tokens if tokens is not None else None)
        assert ours == expected, (prompt, seed, tokens)
        results.add(ours)
    assert len(results) > 1 and all(results)  # different prompts / seeds give different, non-empty rewrites


@requires_official_12
def test_system_prompts_image_prep_and_cleaning_equal_official(official):
    for (family, image), text in official["system_prompts"].items():
        assert default_system_prompt(family, image=image) == text
    for image, expected in zip(official["inputs"], official["images"]):
        assert torch.equal(enhancement_image(image), expected)
    assert max(enhancement_image(official["inputs"][2]).shape) == 896
    assert [clean_response(t) for t in TEXTS] == official["clean"]


@requires_official_12
def test_image_to_video_enhancement_equals_official(enhancers, official, tiny_components):
    """A tiny Gemma-3 that sees images, through transformers' Gemma3Processor: the pipeline's image-to-video
    enhancement (the call's `image`, uint8 as a decoded file) equals ltx-core's `enhance_i2v` on the image
    `generate_enhanced_prompt` prepares; the image changes the result."""
    model, tokenizer = enhancers[0]["vlm"]
    processor = build_gemma3_vlm_components(TINY)["processor"]
    tiny_components.update(text_encoder=model, tokenizer=tokenizer)
    pipe = LTX2AudioVideoPipeline(scheduler=LTX2Scheduler(), guider=None, processor=processor, **tiny_components)
    for (prompt, seed), expected in official["i2v"].items():
        out = pipe(prompt, image=VLM_IMAGE.numpy(), enable_prompt_enhancement=True, prompt_enhancement_seed=seed,
                   **RUN)
        assert out.enhanced_prompts == [expected], (prompt, seed)
    black = pipe.enhance_prompt(PROMPTS[0], seed=3, max_new_tokens=TOKENS, image=torch.zeros_like(VLM_IMAGE))
    assert black != [official["i2v"][(PROMPTS[0], 3)]]


# -- on the pipeline ---------------------------------------------------------------------------------------------
RUN = dict(height=64, width=64, num_frames=9, num_inference_steps=2, output_type="latent", max_sequence_length=32,
           prompt_max_new_tokens=TOKENS)


@pytest.fixture()
def pipe25(tiny_components):
    """A tiny pipeline with LTX-2.5's text side: Gemma-4 encoder and a separate Gemma-4 prompt enhancer."""
    gemma = build_gemma4_components(TINY)
    tiny_components.update(text_encoder=gemma["text_encoder"], tokenizer=gemma["tokenizer"])
    return LTX2AudioVideoPipeline(scheduler=LTX2Scheduler(), guider=None, prompt_enhancer=gemma["prompt_enhancer"],
                                  **tiny_components)


def test_pipeline_enhances_with_the_dedicated_enhancer(pipe25):
    state = torch.get_rng_state()
    out = pipe25(PROMPTS, enable_prompt_enhancement=True, generator=[torch.Generator().manual_seed(3)] * 2, **RUN)
    expected = [enhance_prompt(pipe25.prompt_enhancer, p, tokenizer=pipe25.tokenizer, seed=3,
                               max_new_tokens=TOKENS) for p in PROMPTS]
    assert out.enhanced_prompts == expected
    # the clip is generated from the enhanced prompts
    again = pipe25(expected, generator=[torch.Generator().manual_seed(3)] * 2, **RUN)
    assert torch.equal(out.frames, again.frames)
    assert again.enhanced_prompts is None
    plain = pipe25(PROMPTS, generator=[torch.Generator().manual_seed(3)] * 2, **RUN)
    assert not torch.equal(out.frames, plain.frames)
    # seed: prompt_enhancement_seed without a generator; the enhancer ran greedy (Gemma-4), so the seed does not
    # matter there, but the caller's RNG was not touched by the enhancement
    assert pipe25.enhance_prompt(PROMPTS[0], seed=5, max_new_tokens=TOKENS) == expected[:1]
    torch.set_rng_state(state)
    pipe25.enhance_prompt(PROMPTS[0], max_new_tokens=TOKENS)
    assert torch.equal(torch.get_rng_state(), state)


def test_gemma3_text_encoder_enhances_for_2_0(tiny_components):
    """No prompt_enhancer: the Gemma-3 text encoder rewrites (sampled, so the seed matters)."""
    with_chat_template(tiny_components["tokenizer"])
    pipe = LTX2AudioVideoPipeline(scheduler=LTX2Scheduler(), guider=None, **tiny_components)
    a = pipe.enhance_prompt(PROMPTS[0], seed=1, max_new_tokens=TOKENS)
    assert a == pipe.enhance_prompt(PROMPTS[0], seed=1, max_new_tokens=TOKENS)
    assert a != pipe.enhance_prompt(PROMPTS[0], seed=2, max_new_tokens=TOKENS)
    out = pipe(PROMPTS[0], enable_prompt_enhancement=True, prompt_enhancement_seed=1, **RUN)
    assert out.enhanced_prompts == a
    out = pipe(PROMPTS[0], enable_prompt_enhancement=True, prompt_enhancement_kwargs=dict(do_sample=False),
               system_prompt="Rewrite the prompt.", **RUN)
    assert out.enhanced_prompts == [enhance_prompt(pipe.text_encoder, PROMPTS[0], tokenizer=pipe.tokenizer,
                                                   system_prompt="Rewrite the prompt.", max_new_tokens=TOKENS,
                                                   generation_kwargs=dict(do_sample=False))]


@pytest.mark.parametrize("change,kwargs,message", [
    ("no_enhancer", {}, "only encodes; prompt enhancement needs the pipeline's prompt_enhancer"),
    ("no_template", {}, "no chat template"),
    (None, dict(prompt=None, prompt_embeds="EMBEDS"), "passes prompt_embeds"),
    (None, dict(image=torch.rand(3, 64, 64)), "through the processor component"),
])
def test_refused_before_any_model_runs(pipe25, change, kwargs, message):
    if change == "no_enhancer":
        pipe25.prompt_enhancer = None
    if change == "no_template":
        pipe25.tokenizer.chat_template = None
    if kwargs.get("prompt_embeds") == "EMBEDS":
        kwargs["prompt_embeds"] = pipe25.encode_text_contexts(["a cat"], None, need_negative=False,
                                                              max_sequence_length=32).positive
    calls = []
    for model in (pipe25.text_encoder, pipe25.prompt_enhancer, pipe25.transformer):
        if model is not None:
            model.register_forward_pre_hook(lambda *a: calls.append(1))
    with pytest.raises(ValueError, match=message):
        pipe25(**{"prompt": "a cat", **kwargs}, enable_prompt_enhancement=True, **RUN)
    assert calls == []


def test_processor_saved_and_loaded_or_left_out(tiny_components, tmp_path, monkeypatch, caplog):
    """A Gemma-3 processor (PIL image processor) round-trips through save / from_pretrained; a processor transformers
    cannot build here (Gemma-4's need torchvision: simulated) is left out with a warning instead of failing the
    load, and image-to-video enhancement then names it."""
    import transformers

    vlm = build_gemma3_vlm_components(TINY)
    tiny_components.update(text_encoder=vlm["text_encoder"], tokenizer=vlm["tokenizer"])
    LTX2AudioVideoPipeline(scheduler=LTX2Scheduler(), processor=vlm["processor"], **tiny_components).save_pretrained(
        tmp_path / "p")
    loaded = LTX2AudioVideoPipeline.from_pretrained(tmp_path / "p")
    assert type(loaded.processor).__name__ == "Gemma3Processor"

    def needs_torchvision(*args, **kwargs):
        raise ImportError("Gemma4VideoProcessor requires the Torchvision library but it was not found")

    monkeypatch.setattr(transformers.AutoProcessor, "from_pretrained", needs_torchvision)
    with caplog.at_level("WARNING"):
        loaded = LTX2AudioVideoPipeline.from_pretrained(tmp_path / "p")
    assert loaded.processor is None and "Torchvision" in caplog.text
    assert loaded.enhance_prompt("a cat", max_new_tokens=3)  # text-to-video reads through the tokenizer
    with pytest.raises(ValueError, match="through the processor component"):
        loaded("a cat", image=VLM_IMAGE.numpy(), enable_prompt_enhancement=True, **RUN)
