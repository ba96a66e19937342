"""Local prompt encoding with Gemma-3 (the default when a text encoder is loaded)."""

from __future__ import annotations

import torch

from .prompt_embeddings import PromptEmbeddings

DEFAULT_MAX_SEQUENCE_LENGTH = 1024


def gemma_features(
    tokenizer,
    text_encoder,
    prompts: list[str],
    *,
    max_sequence_length: int = DEFAULT_MAX_SEQUENCE_LENGTH,
    device: torch.device | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokenize (left padding, fixed length) and return Gemma's stacked hidden states.

    Returns `(features, mask)`: features `(B, L, hidden * (num_layers + 1))` with the layer index fastest
    (the layout diffusers' `LTX2TextConnectors` unflattens), mask `(B, L)` int64.
    """
    if not prompts:
        raise ValueError("prompts must be a non-empty list of strings")
    if not all(isinstance(p, str) for p in prompts):
        raise ValueError(f"prompts must be strings, got {[type(p).__name__ for p in prompts]}")
    device = device if device is not None else text_encoder.device
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokens = tokenizer(
        [p.strip() for p in prompts],
        padding="max_length",
        max_length=max_sequence_length,
        truncation=True,
        add_special_tokens=True,
        return_tensors="pt",
    )
    input_ids = tokens.input_ids.to(device)
    mask = tokens.attention_mask.to(device)
    with torch.no_grad():
        out = text_encoder(input_ids=input_ids, attention_mask=mask, output_hidden_states=True)
    features = torch.stack(out.hidden_states, dim=-1).flatten(2, 3)
    return features, mask


class GemmaPromptEncoder:
    """Prompt encoder running a local Gemma-3 text encoder.

    Without `connectors` it returns raw Gemma features (`stage="features"`; the pipeline runs its text
    connectors on them). With `connectors` it returns connector outputs (`stage="connector"`), which is what
    saved conditioning files and the LTX API hold.

    Args:
        tokenizer: the Gemma tokenizer.
        text_encoder: `Gemma3ForConditionalGeneration` (or any model returning `hidden_states`).
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
