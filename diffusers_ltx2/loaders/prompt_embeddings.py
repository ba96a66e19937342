"""What a prompt encoder hands to the denoiser, and the interface every prompt encoder implements.

The pipeline never talks to Gemma directly: it asks a `PromptEncoder` for `PromptEmbeddings`. Encoders may
return either *connector outputs* (what the DiT cross-attends to, as the LTX API and ComfyUI's saved
conditioning hold them) or raw *Gemma features* (all hidden states stacked, before the text connectors);
the pipeline runs the connectors only for the latter.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal, Protocol, runtime_checkable

import torch

EmbeddingStage = Literal["connector", "features"]


@dataclass(frozen=True)
class PromptEmbeddings:
    """Prompt conditioning for one batch of prompts.

    Attributes:
        video_context: `(B, L, D_video)` connector output, or `(B, L, caption_channels * layers)` raw Gemma
            features when `stage == "features"`.
        audio_context: `(B, L, D_audio)` connector output; `None` when `stage == "features"`.
        attention_mask: `(B, L)`, 1 for tokens to attend to, 0 for padding.
        model_identity: the model these embeddings belong to (the checkpoint's `encrypted_wandb_properties`
            string or a fingerprint of the connector weights); `None` when unknown.
        stage: `"connector"` or `"features"`.
    """

    video_context: torch.Tensor
    audio_context: torch.Tensor | None
    attention_mask: torch.Tensor
    model_identity: str | None = None
    stage: EmbeddingStage = "connector"

    def __post_init__(self):
        if self.stage not in ("connector", "features"):
            raise ValueError(f"stage must be 'connector' or 'features', got {self.stage!r}")
        if self.video_context.ndim != 3:
            raise ValueError(f"video_context must be (batch, tokens, dim), got shape {tuple(self.video_context.shape)}")
        if self.stage == "connector" and self.audio_context is None:
            raise ValueError("connector-stage embeddings need an audio_context")
        if self.audio_context is not None and self.audio_context.shape[:2] != self.video_context.shape[:2]:
            raise ValueError(
                f"audio_context {tuple(self.audio_context.shape)} and video_context "
                f"{tuple(self.video_context.shape)} disagree on (batch, tokens)"
            )
        if tuple(self.attention_mask.shape) != tuple(self.video_context.shape[:2]):
            raise ValueError(
                f"attention_mask shape {tuple(self.attention_mask.shape)} does not match the context's "
                f"(batch, tokens) {tuple(self.video_context.shape[:2])}"
            )

    @property
    def batch_size(self) -> int:
        return self.video_context.shape[0]

    def to(self, device=None, dtype=None) -> "PromptEmbeddings":
        """Move the tensors (the mask keeps its dtype)."""
        audio = self.audio_context.to(device=device, dtype=dtype) if self.audio_context is not None else None
        return replace(
            self,
            video_context=self.video_context.to(device=device, dtype=dtype),
            audio_context=audio,
            attention_mask=self.attention_mask.to(device=device),
        )

    def repeat(self, n: int) -> "PromptEmbeddings":
        """Repeat each row `n` times (for `num_videos_per_prompt`)."""
        if n == 1:
            return self
        audio = self.audio_context.repeat_interleave(n, 0) if self.audio_context is not None else None
        return replace(
            self,
            video_context=self.video_context.repeat_interleave(n, 0),
            audio_context=audio,
            attention_mask=self.attention_mask.repeat_interleave(n, 0),
        )

    @staticmethod
    def cat(items: "list[PromptEmbeddings]") -> "PromptEmbeddings":
        """Concatenate along the batch; all items must be of one stage and one model."""
        stages = {e.stage for e in items}
        identities = {e.model_identity for e in items} - {None}
        if len(stages) != 1:
            raise ValueError(f"cannot mix embedding stages {sorted(stages)}")
        if len(identities) > 1:
            raise ValueError(f"cannot mix embeddings of different models: {sorted(identities)}")
        audio = None if items[0].audio_context is None else torch.cat([e.audio_context for e in items])
        return PromptEmbeddings(
            video_context=torch.cat([e.video_context for e in items]),
            audio_context=audio,
            attention_mask=torch.cat([e.attention_mask for e in items]),
            model_identity=next(iter(identities), None),
            stage=items[0].stage,
        )


@runtime_checkable
class PromptEncoder(Protocol):
    """Turns prompts into `PromptEmbeddings`.

    Implementations: `GemmaPromptEncoder` (local Gemma), `LTXAPIPromptEncoder` (remote), saved conditioning
    files, `CachedPromptEncoder`. The pipeline calls `encode` once per distinct prompt list.
    """

    def encode(self, prompts: list[str], *, device: torch.device | None = None) -> PromptEmbeddings:
        ...
