"""Several ranks for one clip or many: guidance-pass parallel, sequence parallel, parallel VAE decode, the text
encoder on one rank, prompt lists - on one `torch.distributed` process group (torchrun / accelerate launch;
NCCL on GPUs, gloo on CPU).

Modules (one concept each):
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

from .layout import MODES, ParallelContext, ParallelLayout, build_context
from .passes import ParallelPasses, assign_passes
from .pipeline import disable_parallel, enable_parallel
from .runtime import (
    DEFAULT_TIMEOUT_S, DistributedJobError, PeerLostError, RankFailedError, Runtime, init_distributed, launch_env,
)

__all__ = [
    "DEFAULT_TIMEOUT_S", "DistributedJobError", "MODES", "ParallelContext", "ParallelLayout", "ParallelPasses",
    "PeerLostError", "RankFailedError", "Runtime", "assign_passes", "build_context", "disable_parallel",
    "enable_parallel", "init_distributed", "launch_env",
]
