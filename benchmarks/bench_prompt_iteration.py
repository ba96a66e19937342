"""How long from a new prompt to the first denoising step, for each way of getting prompt conditioning.

Scenarios (each timed over several *new* prompts, after one warm-up prompt):

  (a) gemma-per-prompt  Gemma is loaded for every prompt (what a memory-starved setup does: load Gemma,
                        encode, free it, load the DiT...). "cold disk": Gemma's files are dropped from the
                        page cache first (posix_fadvise DONTNEED), as a 24 GB Gemma-3-12B would not stay
                        cached; "page cache": they stay cached (safetensors are mmapped, loading is cheap).
  (b) gemma-resident    Gemma stays in memory; the pipeline encodes with it.
  (c) saved             A conditioning file made beforehand (``ltx2 encode``): load, check identity, go.
  (c') cache-hit        `CachedPromptEncoder` serving a prompt it has seen.
  (d) api-local         `LTXAPIPromptEncoder` against an LTX-API-compatible server on 127.0.0.1 that already
                        holds the embeddings: HTTP + safe unpickling. A real API call adds network latency and
                        the server's own encode time.

The clock starts when the prompt is handed over and stops at the end of the first denoising step (a
callback interrupts the pipeline there; latents are returned, nothing is decoded). The DiT is the tiny one
(one step costs milliseconds), while Gemma is a random Gemma-3 scaled up so that
encoding and loading costs are visible: by default 8 layers of width 1024 plus Gemma-3's real 262k-row
embedding table (~400M parameters, 1.6 GB in float32: load cost without compute). The real Gemma-3-12B is
~30x larger and runs on a GPU, where loading dominates even more.

Run:  python benchmarks/bench_prompt_iteration.py [--prompts 3] [--gemma-hidden 1024 --gemma-layers 8]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import gc
import json
import os
import pickle
import statistics
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import torch

PROMPTS = [
    "a red fox runs across the snow at sunrise, cinematic",
    "waves crash on dark rocks under a stormy sky, loud thunder",
    "a small boat drifts on a calm lake at night, soft ambient music",
    "a man walks down a busy city street in the rain, footsteps",
    "a bird sings on a tree branch in a green forest",
    "a train moves slowly through a snowy mountain village",
]
WARMUP = "a cat sits on a chair in a warm kitchen"


def build(args):
    from diffusers_ltx2.factory import TINY, build_components, build_scheduler
    from diffusers_ltx2.guiders import ClassifierFreeGuidance
    from diffusers_ltx2.pipelines import LTX2AudioVideoPipeline

    size = dataclasses.replace(
        TINY, name="bench-gemma", gemma_hidden=args.gemma_hidden, gemma_layers=args.gemma_layers,
        gemma_heads=args.gemma_hidden // 128, gemma_kv_heads=max(1, args.gemma_hidden // 256), gemma_head_dim=128,
        gemma_intermediate=4 * args.gemma_hidden, connector_heads=args.gemma_hidden // 128, connector_head_dim=128,
        connector_layers=2, max_sequence_length=args.seq_len,
    )
    components = build_components(size, seed=0)
    text_encoder = components["text_encoder"]
    if args.gemma_vocab > text_encoder.config.text_config.vocab_size:
        # Gemma-3's real 262k-token embedding table: weight to load, no compute (the tokenizer uses few ids).
        from transformers import Gemma3ForConditionalGeneration

        config = copy.deepcopy(text_encoder.config)
        config.text_config.vocab_size = args.gemma_vocab
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            components["text_encoder"] = Gemma3ForConditionalGeneration(config).eval().requires_grad_(False)
    guider = ClassifierFreeGuidance(guidance_scale=1.0, audio_guidance_scale=1.0)  # no negative prompt
    pipe = LTX2AudioVideoPipeline(scheduler=build_scheduler(), guider=guider, **components)
    pipe.set_progress_bar_config(disable=True)
    return size, components, pipe


def first_step_time(pipe, args, **inputs) -> float:
    """Run the pipeline until the end of its first denoising step; returns the time it took."""
    marks = {}

    def stop(p, step, sigma, tensors):
        marks["t"] = time.perf_counter()
        p._interrupt = True
        return {}

    start = time.perf_counter()
    pipe(**inputs, height=64, width=64, num_frames=9, num_inference_steps=args.steps, output_type="latent",
         max_sequence_length=args.seq_len, generator=torch.Generator().manual_seed(0), callback_on_step_end=stop)
    return marks["t"] - start


class _FakeAPI:
    """Speaks the LTX API protocol; replies with embeddings it already holds (as a warm server would)."""

    def __init__(self, replies: dict[str, bytes], key: str):
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.headers.get("Authorization") != f"Bearer {key}":
                    self.send_response(401)
                    self.end_headers()
                    return
                data = replies[body["prompt"]]
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=3, help="new prompts per scenario (max %d)" % len(PROMPTS))
    parser.add_argument("--gemma-hidden", type=int, default=1024)
    parser.add_argument("--gemma-layers", type=int, default=8)
    parser.add_argument("--gemma-vocab", type=int, default=262208, help="embedding rows (Gemma-3: 262208)")
    parser.add_argument("--seq-len", type=int, default=128, help="padded prompt length (real models: 1024)")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="passes over the prompts")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    import transformers

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    prompts = PROMPTS[: args.prompts]

    from transformers import AutoTokenizer, Gemma3ForConditionalGeneration

    from diffusers_ltx2.loaders import (
        CachedPromptEncoder,
        GemmaPromptEncoder,
        LTXAPIPromptEncoder,
        as_prompt_embeddings,
        connector_fingerprint,
        save_conditioning,
    )

    t0 = time.perf_counter()
    size, components, pipe = build(args)
    gemma_params = sum(p.numel() for p in components["text_encoder"].parameters())
    identity = connector_fingerprint(components["connectors"])
    print(f"built models in {time.perf_counter() - t0:.1f} s; Gemma {gemma_params / 1e6:.0f}M parameters "
          f"(hidden {size.gemma_hidden}, {size.gemma_layers} layers, vocabulary {args.gemma_vocab}), "
          f"prompt length {args.seq_len}, "
          f"{args.threads} threads")

    work = Path(tempfile.mkdtemp(prefix="bench_prompt_iteration_"))
    components["tokenizer"].save_pretrained(work / "tokenizer")
    components["text_encoder"].save_pretrained(work / "text_encoder")
    on_disk = sum(f.stat().st_size for f in (work / "text_encoder").glob("*.safetensors"))

    # Conditioning made ahead of time (the pipeline's own connectors, as `ltx2 encode` would).
    resident = GemmaPromptEncoder(components["tokenizer"], components["text_encoder"], components["connectors"],
                                  model_identity=identity, max_sequence_length=args.seq_len)
    files, replies = {}, {}
    for i, prompt in enumerate([WARMUP] + prompts):
        emb = resident.encode([prompt])
        files[prompt] = save_conditioning(work / f"cond_{i}.safetensors", emb, prompt=prompt)
        replies[prompt] = pickle.dumps([[torch.cat([emb.video_context, emb.audio_context], -1),
                                         {"attention_mask": emb.attention_mask}]])
    cache = CachedPromptEncoder(resident, work / "cache")
    cache.encode([WARMUP] + prompts)  # the cache has seen every prompt
    api = _FakeAPI(replies, key="bench-key")
    api_encoder = LTXAPIPromptEncoder(api_key="bench-key", model_id=identity, base_url=api.url,
                                      model_config=components["connectors"])
    dims = (size.caption_channels, size.caption_channels)
    baseline_emb = {p: resident.encode([p]) for p in [WARMUP] + prompts}

    load_times = {"cold disk": [], "page cache": []}
    os.sync()  # the saved weights must be clean pages for the cold runs to be able to drop them

    def evict_gemma_from_page_cache():
        """Drop Gemma's files from the page cache (no root needed): the next load reads the disk."""
        gc.collect()  # release the mmaps of the previous load
        for file in (work / "text_encoder").glob("*.safetensors"):
            fd = os.open(file, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)

    def gemma_per_prompt_cold(prompt):
        evict_gemma_from_page_cache()
        return gemma_per_prompt(prompt, cache="cold disk")

    def gemma_per_prompt(prompt, cache="page cache"):
        start = time.perf_counter()
        tokenizer = AutoTokenizer.from_pretrained(work / "tokenizer")
        text_encoder = Gemma3ForConditionalGeneration.from_pretrained(work / "text_encoder").eval()
        loaded = time.perf_counter() - start
        load_times[cache].append(loaded)
        pipe.prompt_encoder = GemmaPromptEncoder(tokenizer, text_encoder, max_sequence_length=args.seq_len)
        try:
            return loaded + first_step_time(pipe, args, prompt=prompt)
        finally:
            pipe.prompt_encoder = None
            del text_encoder

    def gemma_resident(prompt):
        return first_step_time(pipe, args, prompt=prompt)

    def saved(prompt):
        start = time.perf_counter()
        emb = as_prompt_embeddings(files[prompt], model_identities=[identity], video_dim=dims[0], audio_dim=dims[1])
        return time.perf_counter() - start + first_step_time(pipe, args, prompt_embeds=emb)

    def cache_hit(prompt):
        pipe.prompt_encoder = cache
        try:
            return first_step_time(pipe, args, prompt=prompt)
        finally:
            pipe.prompt_encoder = None

    def api_local(prompt):
        pipe.prompt_encoder = api_encoder
        try:
            return first_step_time(pipe, args, prompt=prompt)
        finally:
            pipe.prompt_encoder = None

    def floor(prompt):
        return first_step_time(pipe, args, prompt_embeds=baseline_emb[prompt])

    scenarios = [
        ("(a) gemma-per-prompt, cold disk", gemma_per_prompt_cold),
        ("(a) gemma-per-prompt, page cache", gemma_per_prompt),
        ("(b) gemma-resident", gemma_resident),
        ("(c) saved", saved),
        ("(c') cache-hit", cache_hit),
        ("(d) api-local", api_local),
        ("    floor: embeddings in memory", floor),
    ]
    for _, run in scenarios:
        run(WARMUP)
    for values in load_times.values():
        values.clear()
    load_before = os.getloadavg()[0]
    # Rounds interleave the scenarios so that load from other processes affects them alike.
    times = {name: [] for name, _ in scenarios}
    for _ in range(args.rounds):
        for prompt in prompts:
            for name, run in scenarios:
                times[name].append(run(prompt))
    results = {
        name: {"median_s": statistics.median(t), "min_s": min(t), "max_s": max(t), "times_s": t}
        for name, t in times.items()
    }

    print(f"\ntime from a new prompt to the end of the first denoising step ({len(prompts)} prompts x "
          f"{args.rounds} rounds, "
          f"Gemma weights on disk: {on_disk / 1e6:.0f} MB)")
    print(f"load average during the run: {load_before:.1f} -> {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; "
          "other processes only add time, so 'min' is the least disturbed measurement")
    print(f"{'scenario':34s} {'min':>9s} {'median':>9s} {'max':>9s}")
    for name, r in results.items():
        print(f"{name:34s} {r['min_s'] * 1e3:7.0f}ms {r['median_s'] * 1e3:7.0f}ms {r['max_s'] * 1e3:7.0f}ms")
    for cache, values in load_times.items():
        print(f"of which loading Gemma in (a), {cache}: min {min(values) * 1e3:.0f}ms, "
              f"median {statistics.median(values) * 1e3:.0f}ms")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "gemma_parameters": gemma_params, "gemma_hidden": size.gemma_hidden, "gemma_layers": size.gemma_layers,
            "gemma_vocab": args.gemma_vocab,
            "seq_len": args.seq_len, "threads": args.threads, "prompts": len(prompts), "rounds": args.rounds,
            "results": results, "gemma_load_times_s": load_times,
        }, indent=2))
    api.server.shutdown()


if __name__ == "__main__":
    main()
