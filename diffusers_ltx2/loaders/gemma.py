"""Local prompt encoding with Gemma (the default when a text encoder is loaded): Gemma-3 for LTX-2.0 / 2.3,
the LTX fine-tune of Gemma-4 for LTX-2.5."""

from __future__ import annotations

import inspect

import torch

from .prompt_embeddings import PromptEmbeddings

DEFAULT_MAX_SEQUENCE_LENGTH = 1024


def tokenize_prompts(tokenizer, prompts: list[str], max_sequence_length: int = DEFAULT_MAX_SEQUENCE_LENGTH):
    """Token ids and mask `(B, max_sequence_length)` int64 of `prompts`, the way the LTX text encoders read them.

    Each prompt is stripped, tokenized without padding (truncated to `max_sequence_length`), given a leading
    `<bos>` when the tokenizer added none (Gemma-4 tokenizers add none, Gemma-3's do) and left-padded to
    `max_sequence_length`. Source followed: ltx-core 1.2 `LTXGemmaTokenizer.tokenize_with_weights` (for Gemma-3
    the same ids as diffusers' `_get_gemma_prompt_embeds`; for Gemma-4 diffusers 0.42.1 adds no `<bos>`).

    Raises:
        ValueError: empty or non-string prompts; a tokenizer without a `<bos>` token.
    """
    if not prompts:
        raise ValueError("prompts must be a non-empty list of strings")
    if not all(isinstance(p, str) for p in prompts):
        raise ValueError(f"prompts must be strings, got {[type(p).__name__ for p in prompts]}")
    bos = tokenizer.bos_token_id
    if bos is None:
        raise ValueError("the Gemma tokenizer has no <bos> token; LTX prompts start with one")
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    rows = []
    for prompt in prompts:
        ids = tokenizer(prompt.strip(), padding=False, truncation=True, max_length=max_sequence_length).input_ids
        if not ids or ids[0] != bos:
            ids = [bos, *ids][:max_sequence_length]
        rows.append(ids)
    padded = tokenizer.pad({"input_ids": rows}, padding="max_length", max_length=max_sequence_length,
                           return_tensors="pt", return_attention_mask=True)
    return padded.input_ids.long(), padded.attention_mask.long()


def gemma_features(
    tokenizer,
    text_encoder,
    prompts: list[str],
    *,
    max_sequence_length: int = DEFAULT_MAX_SEQUENCE_LENGTH,
    device: torch.device | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokenize (`tokenize_prompts`) and return Gemma's stacked hidden states.

    Works with Gemma-3 (`Gemma3ForConditionalGeneration`, LTX-2.0 / 2.3) and Gemma-4 (`Gemma4UnifiedForConditional
    Generation`, LTX-2.5) text encoders: both return their embeddings and every layer's output as `hidden_states`
    (49 for Gemma-3 12B). Only the last position's logits are computed (`logits_to_keep=1`, where supported): the
    LM head over 1024 tokens would cost ~1 GB for nothing (ltx-core calls the inner model for the same reason).

    Returns `(features, mask)`: features `(B, L, hidden * (num_layers + 1))` with the layer index fastest
    (the layout diffusers' `LTX2TextConnectors` unflattens), mask `(B, L)` int64.
    """
    device = device if device is not None else text_encoder.device
    input_ids, mask = tokenize_prompts(tokenizer, prompts, max_sequence_length)
    input_ids, mask = input_ids.to(device), mask.to(device)
    extra = {"logits_to_keep": 1} if _accepts(text_encoder, "logits_to_keep") else {}
    with torch.no_grad():
        out = text_encoder(input_ids=input_ids, attention_mask=mask, output_hidden_states=True, **extra)
    features = torch.stack(out.hidden_states, dim=-1).flatten(2, 3)
    return features, mask


def _accepts(module, name: str) -> bool:
    try:
        return name in inspect.signature(module.forward).parameters
    except (TypeError, ValueError):
        return False


class GemmaPromptEncoder:
    """Prompt encoder running a local Gemma text encoder (Gemma-3 for LTX-2.0 / 2.3, Gemma-4 for 2.5).

    Without `connectors` it returns raw Gemma features (`stage="features"`; the pipeline runs its text
    connectors on them). With `connectors` it returns connector outputs (`stage="connector"`), which is what
    saved conditioning files and the LTX API hold.

    Args:
        tokenizer: the Gemma tokenizer.
        text_encoder: `Gemma3ForConditionalGeneration` / `Gemma4UnifiedForConditionalGeneration` (or any model
            returning `hidden_states`).
        connectors: optional `LTX2TextConnectors`.
        model_identity: identity recorded on the embeddings (see `PromptEmbeddings.model_identity`).
        max_sequence_length: padded prompt length (1024 for the official models).
    """

    kind = "gemma"

    def __init__(
        self,
        tokenizer,
        text_encoder,
        connectors=None,
        model_identity: str | None = None,
        max_sequence_length: int = DEFAULT_MAX_SEQUENCE_LENGTH,
    ):
        if tokenizer is None or text_encoder is None:
            raise ValueError(
                "GemmaPromptEncoder needs a tokenizer and a text encoder; load them with the pipeline or pass "
                "a prompt_encoder (e.g. LTXAPIPromptEncoder) / prompt_embeds instead"
            )
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder
        self.connectors = connectors
        self.model_identity = model_identity
        self.max_sequence_length = max_sequence_length

    def encode(self, prompts: list[str], *, device: torch.device | None = None) -> PromptEmbeddings:
        """Encode `prompts` (a list of strings) into `PromptEmbeddings`."""
        features, mask = gemma_features(
            self.tokenizer, self.text_encoder, prompts, max_sequence_length=self.max_sequence_length, device=device
        )
        embeddings = PromptEmbeddings(
            video_context=features, audio_context=None, attention_mask=mask,
            model_identity=self.model_identity, stage="features",
        )
        if self.connectors is None:
            return embeddings
        return run_connectors(self.connectors, embeddings)


def run_connectors(connectors, embeddings: PromptEmbeddings) -> PromptEmbeddings:
    """Turn feature-stage embeddings into connector outputs (no-op for connector-stage embeddings)."""
    if embeddings.stage == "connector":
        return embeddings
    expected = connectors.config.caption_channels * connectors.config.text_proj_in_factor
    width = embeddings.video_context.shape[-1]
    if width != expected:
        raise ValueError(
            f"Gemma features are {width} wide but the loaded connectors expect {expected} "
            f"({connectors.config.caption_channels} x {connectors.config.text_proj_in_factor} layers): "
            "they come from a different text encoder"
        )
    from ..acceleration.attention_backends import connectors_backend

    dtype = next(connectors.parameters()).dtype
    with torch.no_grad(), connectors_backend():  # their masks need a mask-capable backend
        video, audio, mask = connectors(
            embeddings.video_context.to(dtype), embeddings.attention_mask, padding_side="left"
        )
    return PromptEmbeddings(
        video_context=video, audio_context=audio, attention_mask=mask,
        model_identity=embeddings.model_identity, stage="connector",
    )
