"""Regional compilation of the LTX-2 transformer: `torch.compile` on each repeated block's `forward`.

diffusers' `compile_repeated_blocks` idea (the 48 identical `LTX2VideoTransformerBlock`s are compiled, one code
object shared by all, so compiling costs one block), with one difference that matters for this package: the
block's `forward` is compiled, not the module call. Module hooks stay outside the compiled region and run
eagerly - the guidance attention control's shared-prefix hooks (`transformer.attention`, which compare rows with
data-dependent `torch.equal`), diffusers' group-offloading and cache hooks. Compiled through `module.compile()`
(diffusers' way) those hooks are traced: measured on the tiny model, a graph break on `torch.equal` in every
block and a recompile on every call ("cache line invalidated because hidden_states got deallocated").

Recompilations (a guard failing) come from what changes between calls: the number of batched rows (guidance
passes, shared prefixes: the first change marks the batch dimension dynamic), the clip size (token counts:
likewise), the LoRA configuration (active adapters and strengths are Python values the trace specializes on) and
the processors the guidance control installs. `tests/acceleration/test_compile.py` counts them across a two-stage call and a
change of clip size.

Each distinct structure is one cached graph of the shared block code: measured on the tiny two-stage run, 4 on
the first call (3 and 4 batched rows, the 1-row stage 2, the blocks with and without the user LoRA), none on a
repeat, 2 for the first new clip size (token counts become dynamic), none after. Dynamo's default limit of 8
graphs per code object would fall back to eager silently for models with more block variants (a LoRA on some
blocks only, several adapters); `compile_blocks` raises it to at least `RECOMPILE_LIMIT`.

Compile before offloading (`pipe.compile()` then `apply_offload`, as `ltx2 ... --compile` does): the offload
hooks then wrap the compiled forward and stay eager.
"""

from __future__ import annotations

import torch
from torch import nn

#: Dynamo's per-code-object graph limit while LTX-2 blocks are compiled (its default, 8, is below what a two-stage
#: run with LoRAs on some blocks and several clip sizes can need)
RECOMPILE_LIMIT = 32


def repeated_blocks(transformer: nn.Module) -> list[nn.Module]:
    """The modules of `transformer` whose class is listed in its `_repeated_blocks` (diffusers' attribute)."""
    names = getattr(transformer, "_repeated_blocks", None) or ()
    return [m for m in transformer.modules() if type(m).__name__ in names]


def compile_blocks(transformer: nn.Module, *, backend="inductor", mode: str | None = None,
                   dynamic: bool | None = None, fullgraph: bool = False, options: dict | None = None) -> int:
    """Compile each repeated block's `forward` in place (`block.forward = torch.compile(block.forward, ...)`);
    returns the number of blocks. Arguments as `torch.compile`'s. Calling it again is a no-op.

    Raises:
        ValueError: the model declares no repeated blocks (not an LTX-2 transformer).
    """
    blocks = repeated_blocks(transformer)
    if not blocks:
        raise ValueError(f"{type(transformer).__name__} declares no _repeated_blocks to compile")
    if getattr(transformer, "_ltx2_compiled", None):
        return len(blocks)
    kwargs = dict(backend=backend, mode=mode, dynamic=dynamic, fullgraph=fullgraph, options=options)
    config = torch._dynamo.config
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    setattr(config, name, max(getattr(config, name), RECOMPILE_LIMIT))
    for block in blocks:
        block.forward = torch.compile(type(block).forward.__get__(block), **kwargs)
    transformer._ltx2_compiled = kwargs
    return len(blocks)


def is_compiled(transformer: nn.Module) -> bool:
    """True after `compile_blocks`."""
    return bool(getattr(transformer, "_ltx2_compiled", None))
