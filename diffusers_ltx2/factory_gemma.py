"""Tiny random-weight Gemma-4 text models (LTX-2.5), built offline, for tests and demos.

LTX-2.5 encodes prompts with an LTX fine-tune of Gemma-4 12B (`gemma4_unified`, version `gemma4-12b-ltx-v1`) and
rewrites them with a separate instruct Gemma-4 (`gemma4`, the `prompt_enhancer` component of diffusers' 2.5
pipelines). These builders give transformers' own classes with the dimensions of a `factory.ModelSize`, so they
drop into `factory.build_components(size)` in place of its Gemma-3 (same hidden size and layer count, hence the
same connector input width), plus a word-level tokenizer that behaves like Gemma-4's: no `<bos>` added by
tokenization (the LTX encoder prepends it, as ltx-core 1.2 does) and a Gemma-4 style chat template.
"""

from __future__ import annotations

import torch

from .factory import SPECIAL_TOKENS, TINY, VOCAB_WORDS, ModelSize, reinit_parameters_

__all__ = [
    "GEMMA3_CHAT_TEMPLATE", "GEMMA4_CHAT_TEMPLATE", "GEMMA4_VERSION", "build_gemma3_vlm_components",
    "build_gemma4_components",
    "build_gemma4_tokenizer", "with_chat_template",
]

#: The encoder version of the official LTX-2.5 checkpoints (`gemma_source_checkpoint.gemma_version`).
GEMMA4_VERSION = "gemma4-12b-ltx-v1"

_CHAT_TOKENS = ("<|turn>", "<turn|>", "<start_of_turn>", "<end_of_turn>", "<|image|>", "<boi>", "<eoi>")
_CHAT_WORDS = ("system", "user", "model", "prompt", "raw", "input", "write", "caption", "video", "image")

# Gemma-4's turn format: <bos><|turn>role\ncontent<turn|>\n ... <|turn>model\n; list contents (I2V) put an image
# placeholder before the text.
GEMMA4_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|turn>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<|image|>{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<turn|>\n{% endfor %}{% if add_generation_prompt %}<|turn>model\n{% endif %}"
)
# Gemma-3's: no system role, the system prompt opens the first user turn.
GEMMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}{% set ns = namespace(sys='') %}{% for m in messages %}{% if m['role'] == 'system' %}"
    "{% set ns.sys = m['content'] + '\n\n' %}{% else %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' "
    "else m['role'] }}\n{% if loop.index0 == 1 %}{{ ns.sys }}{% endif %}{% if m['content'] is string %}"
    "{{ m['content'] }}"
    "{% else %}{% for c in m['content'] %}{% if c['type'] == 'image' %}<start_of_image>{% else %}{{ c['text'] }}"
    "{% endif %}{% endfor %}{% endif %}<end_of_turn>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


def build_gemma4_tokenizer(model_max_length: int = 1024):
    """A Gemma-4-like word-level tokenizer: `factory.VOCAB_WORDS` plus chat words and tokens, lower-casing,
    left padding with `<pad>` (id 0), `<eos>` = 1, `<bos>` = 2, `<unk>` = 3, no `<bos>` added on tokenization
    (as Gemma-4's), `GEMMA4_CHAT_TEMPLATE`, and the image tokens transformers' Gemma processors look for."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = tuple(dict.fromkeys(VOCAB_WORDS + _CHAT_WORDS))
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + _CHAT_TOKENS + words)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(list(SPECIAL_TOKENS + _CHAT_TOKENS))  # matched whole, before pre-tokenization
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>", unk_token="<unk>",
        padding_side="left", model_max_length=model_max_length,
        chat_template=GEMMA4_CHAT_TEMPLATE,
        extra_special_tokens={"image_token": "<|image|>", "boi_token": "<boi>", "eoi_token": "<eoi>"},
    )


def with_chat_template(tokenizer, template: str = GEMMA3_CHAT_TEMPLATE):
    """`tokenizer` with a chat template (the factory's Gemma-3 tokenizer has none; prompt enhancement needs one)."""
    tokenizer.chat_template = template
    return tokenizer


_GEMMA3_IMAGE_TOKENS = ("<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<end_of_image>",
                        "<image_soft_token>")


def build_gemma3_vlm_components(size: ModelSize = TINY, seed: int = 0) -> dict:
    """A tiny Gemma-3 that can look at images, for image-to-video prompt enhancement (LTX-2.0 / 2.3): `tokenizer`
    (adds `<bos>` like Gemma-3's, with the image tokens and `GEMMA3_CHAT_TEMPLATE`), `text_encoder`
    (`Gemma3ForConditionalGeneration` whose image token ids are the tokenizer's; an 8x8 SigLIP, one token per
    image) and `processor` (transformers' `Gemma3Processor` with the PIL image processor, 8x8 images)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import (Gemma3Config, Gemma3ForConditionalGeneration, Gemma3ImageProcessorPil, Gemma3Processor,
                              Gemma3TextConfig, PreTrainedTokenizerFast, SiglipVisionConfig)

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + _GEMMA3_IMAGE_TOKENS + VOCAB_WORDS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(list(SPECIAL_TOKENS + _GEMMA3_IMAGE_TOKENS))
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", pair="<bos> $A $B",
                                                       special_tokens=[("<bos>", vocab["<bos>"])])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>", unk_token="<unk>",
        padding_side="left", model_max_length=size.max_sequence_length, chat_template=GEMMA3_CHAT_TEMPLATE,
        extra_special_tokens={"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
                              "image_token": "<image_soft_token>"},
    )
    text = Gemma3TextConfig(
        vocab_size=len(tokenizer), hidden_size=size.gemma_hidden, intermediate_size=size.gemma_intermediate,
        num_hidden_layers=size.gemma_layers, num_attention_heads=size.gemma_heads,
        num_key_value_heads=size.gemma_kv_heads, head_dim=size.gemma_head_dim,
        query_pre_attn_scalar=size.gemma_head_dim, max_position_embeddings=2048, sliding_window=512,
        layer_types=["sliding_attention" if (i + 1) % 2 else "full_attention" for i in range(size.gemma_layers)],
        pad_token_id=0, eos_token_id=1, bos_token_id=2,
    )
    vision = SiglipVisionConfig(hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=1,
                                image_size=8, patch_size=4)
    config = Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=1,
                          image_token_index=vocab["<image_soft_token>"], boi_token_index=vocab["<start_of_image>"],
                          eoi_token_index=vocab["<end_of_image>"])
    component_seed = seed * 1000 + 102
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(component_seed)
        model = Gemma3ForConditionalGeneration(config)
    reinit_parameters_(model, torch.Generator().manual_seed(component_seed))
    processor = Gemma3Processor(image_processor=Gemma3ImageProcessorPil(size={"height": 8, "width": 8}),
                                tokenizer=tokenizer, image_seq_length=1, chat_template=GEMMA3_CHAT_TEMPLATE)
    return {"tokenizer": tokenizer, "text_encoder": model.eval().requires_grad_(False), "processor": processor}


def _text_config(cls, size: ModelSize, vocab_size: int, **extra):
    return cls(
        vocab_size=vocab_size, hidden_size=size.gemma_hidden, intermediate_size=size.gemma_intermediate,
        num_hidden_layers=size.gemma_layers, num_attention_heads=size.gemma_heads,
        num_key_value_heads=size.gemma_kv_heads, head_dim=size.gemma_head_dim, global_head_dim=size.gemma_head_dim,
        max_position_embeddings=2048, sliding_window=512,
        layer_types=["sliding_attention" if (i + 1) % 2 else "full_attention" for i in range(size.gemma_layers)],
        pad_token_id=0, eos_token_id=1, bos_token_id=2, **extra,
    )


def _build_text_encoder(size: ModelSize, vocab_size: int, gemma_version: str | None):
    from transformers import Gemma4UnifiedConfig, Gemma4UnifiedForConditionalGeneration, Gemma4UnifiedTextConfig

    ids = {k: vocab_size + i for i, k in enumerate(("boi_token_id", "eoi_token_id", "image_token_id",
                                                      "video_token_id", "boa_token_id", "eoa_token_index",
                                                      "audio_token_id"))}
    config = Gemma4UnifiedConfig(text_config=_text_config(Gemma4UnifiedTextConfig, size, vocab_size),
                                 vision_config=None, audio_config=None, **ids)
    if gemma_version is not None:
        config.gemma_version = gemma_version  # top-level, as the official LTX Gemma-4 config.json carries it
    return Gemma4UnifiedForConditionalGeneration(config)


def _build_prompt_enhancer(size: ModelSize, vocab_size: int):
    from transformers import Gemma4Config, Gemma4ForConditionalGeneration, Gemma4TextConfig

    text = _text_config(Gemma4TextConfig, size, vocab_size, hidden_size_per_layer_input=8,
                        vocab_size_per_layer_input=vocab_size)
    return Gemma4ForConditionalGeneration(Gemma4Config(text_config=text, vision_config=None, audio_config=None))


def build_gemma4_components(size: ModelSize = TINY, seed: int = 0, dtype: torch.dtype = torch.float32,
                            gemma_version: str | None = GEMMA4_VERSION) -> dict:
    """`tokenizer` (`build_gemma4_tokenizer`), `text_encoder` (`Gemma4UnifiedForConditionalGeneration`, the
    LTX-2.5 encoder, `config.gemma_version = gemma_version`) and `prompt_enhancer` (`Gemma4ForConditionalGeneration`,
    the 2.5 enhancer) with `size`'s Gemma dimensions and deterministic random weights (seeds `seed * 1000 + 100`
    and `+ 101`; the caller's RNG is left untouched), in `.eval()` and `dtype`."""
    tokenizer = build_gemma4_tokenizer(size.max_sequence_length)
    vocab_size = len(tokenizer)
    out = {"tokenizer": tokenizer}
    for index, (name, build) in enumerate((
            ("text_encoder", lambda: _build_text_encoder(size, vocab_size, gemma_version)),
            ("prompt_enhancer", lambda: _build_prompt_enhancer(size, vocab_size)))):
        component_seed = seed * 1000 + 100 + index
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(component_seed)
            model = build()
        reinit_parameters_(model, torch.Generator().manual_seed(component_seed))
        if dtype != torch.float32:
            model = torch.nn.Module.to(model, dtype=dtype)
        out[name] = model.eval().requires_grad_(False)
    return out
