"""Per-step cost of the denoising loop itself (guider plan and combine, clamping, the sampler step, state handling),
without a transformer: the passes return fixed predictions. What a refactor of the loop could add to every step.

Multimodal guidance (cfg, stg, modality on both modalities: 4 passes), 288 video and 18 audio tokens of 128
channels, 200 steps per run, the best of 5 runs, one thread. Runs on checkouts from before issue 21 too (the loop
then took a scheduler), so `compare_commits.py` can measure both:

    python benchmarks/bench_loop_overhead.py
    python benchmarks/compare_commits.py --other ../main-checkout --rounds 4 -- benchmarks/bench_loop_overhead.py
"""

from __future__ import annotations

import inspect
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffusers_ltx2.guiders import MultimodalGuider, Prediction  # noqa: E402
from diffusers_ltx2.loaders.prompt_embeddings import PromptEmbeddings  # noqa: E402
from diffusers_ltx2.pipelines.denoising import denoise  # noqa: E402
from diffusers_ltx2.schedulers import LTX2Scheduler  # noqa: E402

try:
    from diffusers_ltx2.latents.state import ModalityLatents
    from diffusers_ltx2.transformer.passes import TextContexts
except ImportError:  # before issue 21
    from diffusers_ltx2.pipelines.denoising import ModalityLatents, TextContexts

STEPS = 200


def _state(tokens: int, channels: int = 128) -> ModalityLatents:
    x = torch.randn(1, tokens, channels, generator=torch.Generator().manual_seed(tokens))
    return ModalityLatents(latent=x, clean=torch.zeros_like(x), denoise_mask=torch.ones(1, tokens),
                           coords=torch.zeros(1, 3, tokens, 2), num_target_tokens=tokens)


def _passes(plan, video, audio, contexts, sigma):
    return {p.name: Prediction(video=video.latent * 0.5, audio=audio.latent * 0.5) for p in plan.passes}


def main() -> None:
    torch.set_num_threads(1)
    prompt = PromptEmbeddings(torch.zeros(1, 4, 8), torch.zeros(1, 4, 8), torch.ones(1, 4, dtype=torch.int64))
    contexts = TextContexts(prompt, prompt)
    scheduler = LTX2Scheduler()
    scheduler.set_timesteps(STEPS)
    takes_sigmas = "sigmas" in inspect.signature(denoise).parameters
    schedule = dict(sigmas=scheduler.sigmas) if takes_sigmas else dict(scheduler=scheduler)
    runs = []
    for _ in range(5):
        start = time.perf_counter()
        denoise(passes=_passes, guider=MultimodalGuider(skip_blocks=[1]), video=_state(288), audio=_state(18),
                contexts=contexts, **schedule)
        runs.append((time.perf_counter() - start) / STEPS * 1e6)
    print("| loop | us per step | min / median / max |")
    print("|---|---|---|")
    print(f"| 288 + 18 tokens | multimodal guidance | {min(runs):.0f} / {statistics.median(runs):.0f} / "
          f"{max(runs):.0f} |")


if __name__ == "__main__":
    main()
