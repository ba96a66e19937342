"""Prompt conditioning: the `PromptEncoder` interface and its implementations."""

from .gemma import GemmaPromptEncoder, gemma_features, run_connectors
from .prompt_embeddings import PromptEmbeddings, PromptEncoder

__all__ = ["GemmaPromptEncoder", "PromptEmbeddings", "PromptEncoder", "gemma_features", "run_connectors"]
