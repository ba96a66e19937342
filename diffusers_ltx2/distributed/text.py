"""The text encoder on one rank: prompts encoded by the clip group's leader, embeddings broadcast to the others.

Only the leader needs Gemma (or calls the LTX API); the other ranks load the pipeline without a text encoder
(`text_encoder=None, tokenizer=None`). The broadcast carries the encoder's own output (Gemma features or
connector outputs); every rank runs the text connectors itself (they are small and part of the pipeline).
An error of the leader's encoder reaches the others as `RankFailedError` naming the leader, not as a hang.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from ..loaders.gemma import run_connectors
from ..loaders.prompt_embeddings import PromptEmbeddings
from .runtime import RankFailedError, Runtime

__all__ = ["BroadcastPromptEncoder", "ConnectorOutputEncoder", "TablePromptEncoder", "broadcast_embeddings",
           "embedding_bytes"]

_FIELDS = ("video_context", "audio_context", "attention_mask")


def embedding_bytes(embeddings: PromptEmbeddings) -> int:
    """Bytes of the tensors `broadcast_embeddings` sends for `embeddings`."""
    return sum(t.numel() * t.element_size() for t in (getattr(embeddings, f) for f in _FIELDS) if t is not None)


def broadcast_embeddings(embeddings: PromptEmbeddings | None, *, src: int, group, runtime: Runtime,
                         error: BaseException | None = None) -> PromptEmbeddings:
    """Send `embeddings` from global rank `src` to the ranks of `group` (every member calls it; others pass
    `None`). On `src`, `error` instead tells the others that encoding failed; they raise `RankFailedError`.

    Returns the embeddings on `runtime.device` on every rank (`src` included)."""
    if dist.get_world_size(group) == 1:
        if error is not None:
            raise error
        return embeddings.to(device=runtime.device)
    if runtime.rank == src:
        if error is not None:
            header = {"error": f"prompt encoding: {type(error).__name__}: {error}"}
        else:
            header = {"model_identity": embeddings.model_identity, "stage": embeddings.stage,
                      "tensors": {f: None if getattr(embeddings, f) is None else
                                  (tuple(getattr(embeddings, f).shape), str(getattr(embeddings, f).dtype))
                                  for f in _FIELDS}}
    else:
        header = None
    box = [header]
    with runtime.guard("prompt broadcast"):
        dist.broadcast_object_list(box, src=src, group=group, device=runtime.device)
        header = box[0]
        if "error" in header:
            if runtime.rank == src:
                raise error
            raise RankFailedError(src, header["error"])
        tensors = {}
        for f in _FIELDS:
            meta = header["tensors"][f]
            if meta is None:
                tensors[f] = None
                continue
            shape, dtype = meta[0], getattr(torch, meta[1].removeprefix("torch."))
            if runtime.rank == src:
                t = getattr(embeddings, f).to(runtime.device).contiguous()
            else:
                t = torch.empty(shape, dtype=dtype, device=runtime.device)
            dist.broadcast(t, src=src, group=group)
            tensors[f] = t
    return PromptEmbeddings(**tensors, model_identity=header["model_identity"], stage=header["stage"])


class ConnectorOutputEncoder:
    """`inner` (a pipeline's prompt encoder or local Gemma) followed by the pipeline's text `connectors`: what
    travels is the connector output (for LTX-2 `(B, 1024, 3840 + 3840)` instead of Gemma's 49 stacked layers)."""

    kind = "connector-output"

    def __init__(self, inner, connectors):
        self.inner, self.connectors = inner, connectors

    def encode(self, prompts, *, device=None):
        return run_connectors(self.connectors, self.inner.encode(prompts, device=device))


class BroadcastPromptEncoder:
    """`PromptEncoder` for a clip group: `inner` (on the leader only; `None` elsewhere) encodes, everyone
    receives. Every rank of `group` must call `encode` with the same prompts at the same point."""

    kind = "broadcast"

    def __init__(self, inner, *, src: int, group, runtime: Runtime):
        self.inner, self.src, self.group, self.runtime = inner, src, group, runtime

    def encode(self, prompts: list[str], *, device: torch.device | None = None) -> PromptEmbeddings:
        embeddings, error = None, None
        if self.runtime.rank == self.src:
            try:
                if isinstance(self.inner, BaseException):
                    raise self.inner
                embeddings = self.inner.encode(prompts, device=device)
            except Exception as exc:  # noqa: BLE001 - the other ranks must hear about it
                error = exc
        out = broadcast_embeddings(embeddings, src=self.src, group=self.group, runtime=self.runtime, error=error)
        return out.to(device=device) if device is not None else out


class TablePromptEncoder:
    """`PromptEncoder` serving embeddings encoded earlier (a prompt list's prompts and negatives, received from
    rank 0), one row per prompt.

    Raises:
        ValueError: a prompt that was not encoded beforehand.
    """

    kind = "table"

    def __init__(self, table: dict[str, PromptEmbeddings]):
        self.table = table

    def encode(self, prompts: list[str], *, device: torch.device | None = None) -> PromptEmbeddings:
        missing = [p for p in prompts if p not in self.table]
        if missing:
            raise ValueError(f"prompt {missing[0]!r} was not encoded before the prompt list started")
        out = PromptEmbeddings.cat([self.table[p] for p in prompts])
        return out.to(device=device) if device is not None else out
