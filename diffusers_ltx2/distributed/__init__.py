"""Several ranks for one clip or many: guidance-pass parallel, sequence parallel, parallel VAE decode, the text
encoder on one rank, prompt lists - on one `torch.distributed` process group (torchrun / accelerate launch;
NCCL on GPUs, gloo on CPU).

Modules (one concept each):
- `launch`: what the launcher told this process (environment only, no torch);
- `runtime`: process group from the launcher's environment, timeouts, errors naming the failing rank;
- `layout`: ranks arranged as clip groups x pass groups x sequence shards, and their process groups;
- `passes`: `ParallelPasses`, the distributed per-step pass executor (x0 all-gather);
- `sequence`: sequence parallelism through diffusers' context parallelism, with LTX-2 fixes;
- `vae`: tiled VAE decode spread over ranks, blended as on one device;
- `text`: prompts encoded on one rank, embeddings broadcast;
- `pipeline`: `enable_parallel(pipe, context)` puts the pieces on a pipeline;
- `prompt_list`: the prompt-list file format, output names, the clips left to make;
- `comm`: exact communication bytes per step from shapes (benchmarks).
"""

from __future__ import annotations

import importlib

#: public name -> submodule (imported on first use, so that `ltx2 generate --help` does not import torch)
_EXPORTS = {
    "MODES": ".layout", "SEQUENCE_ATTENTION": ".layout", "ParallelContext": ".layout", "ParallelLayout": ".layout",
    "build_context": ".layout", "ParallelPasses": ".passes", "assign_passes": ".passes",
    "disable_parallel": ".pipeline", "enable_parallel": ".pipeline", "DEFAULT_TIMEOUT_S": ".runtime",
    "DistributedJobError": ".runtime", "PeerLostError": ".runtime", "RankFailedError": ".runtime",
    "Runtime": ".runtime", "init_distributed": ".runtime", "launch_env": ".launch",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
