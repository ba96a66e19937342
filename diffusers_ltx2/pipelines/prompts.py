"""`PromptContextsMixin`: a pipeline's prompts -> the connector-stage `TextContexts` its denoising loop reads.

Prompts go through the pipeline's `prompt_encoder` (e.g. `LTXAPIPromptEncoder`) or its local Gemma (checked against
the Gemma the checkpoint's connectors were trained on, `loaders.gemma_version`); given embeddings (`PromptEmbeddings`,
a conditioning file, a ComfyUI conditioning list) are checked against the model's identity and context widths;
feature-stage embeddings go through the `connectors`.
"""

from __future__ import annotations

import os

import torch

from ..loaders.gemma import DEFAULT_MAX_SEQUENCE_LENGTH, GemmaPromptEncoder, run_connectors
from ..loaders.gemma_version import check_gemma_version
from ..loaders.prompt_embeddings import PromptEmbeddings
from ..transformer import TextContexts

__all__ = ["PromptContextsMixin"]


class PromptContextsMixin:
    """Prompt encoding of `LTX2PipelineBase` and the model identity embeddings are checked against (`model_identity`,
    `model_version`); needs its `text_encoder`, `tokenizer`, `connectors`, `transformer`, `prompt_encoder` and
    `config.model_identity` / `gemma_version` / `model_version`."""

    def _active_prompt_encoder(self, max_sequence_length: int | None = None):
        if self.prompt_encoder is not None:
            return self.prompt_encoder
        if self.text_encoder is None or self.tokenizer is None:
            raise ValueError(
                "this pipeline has no text encoder: pass prompt_embeds, or load it with a prompt_encoder "
                "(e.g. LTXAPIPromptEncoder) or with Gemma"
            )
        check_gemma_version(self.text_encoder, expected=getattr(self.config, "gemma_version", None),
                            model_version=getattr(self.config, "model_version", None))
        if max_sequence_length is None:
            max_sequence_length = min(DEFAULT_MAX_SEQUENCE_LENGTH, int(self.tokenizer.model_max_length))
        return GemmaPromptEncoder(self.tokenizer, self.text_encoder, max_sequence_length=max_sequence_length)

    def encode_text_contexts(
        self,
        prompts: list[str] | None,
        negative_prompts: list[str] | None,
        *,
        prompt_embeds: PromptEmbeddings | None = None,
        negative_prompt_embeds: PromptEmbeddings | None = None,
        need_negative: bool,
        num_videos_per_prompt: int = 1,
        max_sequence_length: int | None = None,
        device: torch.device | None = None,
    ) -> TextContexts:
        """Encode (or take) the prompt embeddings and bring them to the connector stage.

        Prompts go through `prompt_encoder` (or the local Gemma); feature-stage embeddings go through the
        pipeline's connectors; connector-stage embeddings are used as they are. `max_sequence_length` is the
        padded prompt length for the local Gemma (default: 1024, or the tokenizer's maximum if smaller).
        Every embedding is repeated `num_videos_per_prompt` times per prompt, in prompt order; a negative of
        batch 1 is used for every prompt.
        """
        device = device or self._execution_device
        encoder = None
        if prompt_embeds is None or (need_negative and negative_prompt_embeds is None):
            encoder = self._active_prompt_encoder(max_sequence_length)
        positive = prompt_embeds if prompt_embeds is not None else encoder.encode(prompts, device=device)
        negative = None
        if need_negative:
            negative = negative_prompt_embeds
            if negative is None:
                negative = encoder.encode(negative_prompts or [""] * positive.batch_size, device=device)
            if negative.batch_size == 1 and positive.batch_size > 1:
                negative = negative.repeat(positive.batch_size)
        positive = self._to_connector_stage(positive, device).repeat(num_videos_per_prompt)
        if negative is not None:
            negative = self._to_connector_stage(negative, device).repeat(num_videos_per_prompt)
        return TextContexts(positive=positive, negative=negative)

    def _to_connector_stage(self, embeddings: PromptEmbeddings, device) -> PromptEmbeddings:
        from ..loaders.identity import check_model_identity

        # an API model_id or a cached entry of another checkpoint fails here, naming both models
        check_model_identity(embeddings.model_identity, self.model_identities(), source="prompt embeddings",
                             warn_if_unknown=False)
        embeddings = embeddings.to(device=device)
        if embeddings.stage == "features":
            embeddings = run_connectors(self.connectors, embeddings)
        self._check_context_width(embeddings)
        return embeddings

    def _check_context_width(self, embeddings: PromptEmbeddings) -> None:
        from ..loaders.identity import context_dims

        expected = context_dims(self.transformer)  # 2.0: caption_channels twice; 2.3: the stream widths
        got = (embeddings.video_context.shape[-1], embeddings.audio_context.shape[-1])
        if got != expected:
            raise ValueError(
                f"prompt embeddings are (video {got[0]}, audio {got[1]}) wide but this transformer expects "
                f"(video {expected[0]}, audio {expected[1]}): they were made for a different model"
            )

    def _load_embeddings(self, embeddings):
        """Checked `PromptEmbeddings` for `prompt_embeds=`: a conditioning file or a ComfyUI conditioning list
        is loaded and refused when made for another model (identity or widths); `PromptEmbeddings` pass
        through here and are checked with every other source in `_to_connector_stage`."""
        if embeddings is None or isinstance(embeddings, PromptEmbeddings):
            return embeddings
        if not isinstance(embeddings, (str, os.PathLike, list, tuple)):
            raise ValueError(
                "prompt embeddings must be PromptEmbeddings, a conditioning file path or a tensor with its "
                f"attention mask, got {type(embeddings).__name__}"
            )
        from ..loaders.conditioning_file import as_prompt_embeddings
        from ..loaders.identity import context_dims

        video_dim, audio_dim = context_dims(self.transformer)
        return as_prompt_embeddings(embeddings, model_identities=self.model_identities(),
                                    video_dim=video_dim, audio_dim=audio_dim)

    @property
    def model_identity(self) -> str | None:
        """The official checkpoint's model id (`encrypted_wandb_properties`) when known, else `None`."""
        return getattr(self.config, "model_identity", None)

    @property
    def model_version(self) -> str:
        """``"2.0"``, ``"2.3"`` or ``"2.5"``: the recorded ``model_version``, else what the transformer config
        implies."""
        from ..versions import model_version_of

        transformer = getattr(self, "transformer", None)
        return model_version_of(transformer.config if transformer is not None else None,
                                getattr(self.config, "model_version", None))

    def model_identities(self) -> list[str]:
        """Identities prompt embeddings may carry to be accepted by this pipeline: the checkpoint's model id
        and the fingerprint of its text connectors (what locally encoded embeddings record)."""
        from ..loaders.identity import connector_fingerprint

        return [i for i in (self.model_identity, connector_fingerprint(self.connectors)) if i]
