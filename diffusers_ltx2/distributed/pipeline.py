"""Turn a pipeline of this package into one rank of a clip group (`enable_parallel`) and back.

What changes on the pipeline object (nothing in its code):
- `pipe.pass_executor`: the step's passes run through `ParallelPasses` (pass groups, x0 all-gather);
- the transformer: sequence parallelism when the layout has shards (`sequence.enable_sequence_parallel`);
- `pipe.vae._decode`: tiles decoded over the clip group (`vae.ParallelTiledDecode`);
- `pipe._active_prompt_encoder`: prompts encoded on the clip group's leader only (the others may be loaded with
  `text_encoder=None, tokenizer=None`), connector outputs broadcast (`text.BroadcastPromptEncoder`);
- progress bars only on the leader.

Every rank of the clip group must then make the same calls with the same arguments (same generator seeds): the
ranks end with identical latents and outputs; the leader writes files.

Example (`torchrun --nproc-per-node 2 script.py`):
    >>> from diffusers_ltx2.distributed import ParallelLayout, build_context, enable_parallel, init_distributed
    >>> context = build_context(init_distributed(), ParallelLayout(passes=2))
    >>> pipe = LTX2AudioVideoPipeline.from_pretrained(folder, **({} if context.is_clip_leader else
    ...                                                 {"text_encoder": None, "tokenizer": None}))
    >>> enable_parallel(pipe.to(context.device), context)
    >>> out = pipe("a fox in the snow", generator=torch.Generator().manual_seed(0))
"""

from __future__ import annotations

from .layout import ParallelContext
from .passes import ParallelPasses
from .sequence import disable_sequence_parallel, enable_sequence_parallel
from .text import BroadcastPromptEncoder, ConnectorOutputEncoder
from .vae import disable_parallel_decode, enable_parallel_decode

__all__ = ["enable_parallel", "disable_parallel"]


def enable_parallel(pipe, context: ParallelContext, *, parallel_decode: bool = True):
    """Make `pipe` one rank of the context's clip group (see the module docstring). Returns `pipe`.

    Raises:
        ValueError: from `enable_sequence_parallel` when the layout's sequence attention cannot run here.
    """
    runtime = context.runtime
    leader = context.clip_leader
    if context.layout.size > 1:
        pipe.pass_executor = lambda local: ParallelPasses(local, context)
        if context.layout.sequence > 1:
            enable_sequence_parallel(pipe.transformer, context)
        if parallel_decode:
            enable_parallel_decode(pipe.vae, context.clip_ranks, context.clip_group, runtime)
        original = type(pipe)._active_prompt_encoder

        def active_prompt_encoder(max_sequence_length=None):
            inner = None
            if runtime.rank == leader:
                try:
                    inner = ConnectorOutputEncoder(original(pipe, max_sequence_length), pipe.connectors)
                except Exception as exc:  # noqa: BLE001 - raised on every rank by the broadcast
                    inner = exc
            return BroadcastPromptEncoder(inner, src=leader, group=context.clip_group, runtime=runtime)

        pipe._active_prompt_encoder = active_prompt_encoder
    if not context.is_clip_leader:
        pipe.set_progress_bar_config(disable=True)
    pipe._ltx2_parallel_context = context
    return pipe


def disable_parallel(pipe):
    """Undo `enable_parallel` (the pipeline runs on this process alone again). Returns `pipe`."""
    pipe.pass_executor = None
    disable_sequence_parallel(pipe.transformer)
    disable_parallel_decode(pipe.vae)
    pipe.__dict__.pop("_active_prompt_encoder", None)
    pipe.__dict__.pop("_ltx2_parallel_context", None)
    return pipe
