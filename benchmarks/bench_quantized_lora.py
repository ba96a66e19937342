"""Quantized formats and LoRAs on the tiny model (CPU, fp32 compute): the figures of the README's quantization
section.

Per format that quantizes on this machine (and a GGUF Q8_0 file written with the `gguf` package):
* deviation of 3-step latents from the unquantized model (relative L2, video / audio);
* a LoRA's effect (latents with - without, 2 steps) vs its effect on the unquantized model, relative to the latter;
* `fuse_lora()` vs the unfused LoRA (relative to the LoRA's effect), and the quantized weights after fuse +
  unfuse vs before (worst relative L2 over three adapted layers);
* growth of the stored transformer bytes on loading the LoRA vs the LoRA factors' bytes.

    python benchmarks/bench_quantized_lora.py
"""

from __future__ import annotations

import copy
import logging
import sys
import tempfile
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from diffusers_ltx2 import ClassifierFreeGuidance, LTX2AudioVideoPipeline, LTX2Scheduler  # noqa: E402
from diffusers_ltx2.factory import TINY, TINY_CLIP, build_components  # noqa: E402
from diffusers_ltx2.quantization import quantize_transformer_, weight_bytes  # noqa: E402
from diffusers_ltx2.quantization.lora import dequantize_weight  # noqa: E402

FORMATS = ("fp8-cast", "fp8-scaled-mm", "fp8", "int8", "int4", "torchao-int8", "torchao-fp8-weight")
LAYERS = ("transformer_blocks.1.attn1.to_q", "transformer_blocks.1.attn1.to_v", "transformer_blocks.1.ff.net.0.proj")


def pipe_of(components, mode):
    comps = {k: copy.deepcopy(v) for k, v in components.items()}
    if mode is not None:
        quantize_transformer_(comps["transformer"], mode)
    pipe = LTX2AudioVideoPipeline(scheduler=LTX2Scheduler(), guider=ClassifierFreeGuidance(1.0, 1.0), **comps)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def latents(pipe, steps):
    out = pipe("a cat", num_inference_steps=steps, output_type="latent", generator=torch.Generator().manual_seed(0),
               **TINY_CLIP)
    return out.frames.float().flatten(), out.audio.float().flatten()


def rel(a, b):
    return ((a - b).norm() / b.norm()).item()


def lora_rows(pipe, lora, base_cat, ref_delta):
    """(LoRA effect deviation, fused vs unfused, weights after fuse + unfuse, bytes growth, LoRA bytes)."""
    weights = {n: dequantize_weight(pipe.transformer.get_submodule(n)) for n in LAYERS}
    before = weight_bytes(pipe.transformer)
    pipe.load_lora_weights(lora, adapter_name="style", reference_downscale_factor=1)
    lora_bytes = sum(p.numel() * p.element_size() for n, p in pipe.transformer.named_parameters() if "lora_" in n)
    growth = weight_bytes(pipe.transformer) - before
    unfused = torch.cat(latents(pipe, 2))
    effect = rel(unfused - base_cat, ref_delta) if ref_delta is not None else 0.0
    pipe.fuse_lora()
    fused = ((torch.cat(latents(pipe, 2)) - unfused).norm() / ref_delta.norm()).item()
    pipe.unfuse_lora()
    back = max(rel(dequantize_weight(pipe.transformer.get_submodule(n).base_layer), w) for n, w in weights.items())
    return effect, fused, back, growth, lora_bytes


def main() -> None:
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    from test_ic_lora_loading import write_lora

    components = build_components(TINY, seed=0)
    folder = Path(tempfile.mkdtemp(prefix="ltx2-qlora-"))
    lora = str(folder / "style.safetensors")
    write_lora(lora, components["transformer"], blocks=(0, 1))
    plain = pipe_of(components, None)
    ref3 = latents(plain, 3)
    base = torch.cat(latents(plain, 2))
    plain.load_lora_weights(lora, adapter_name="style", reference_downscale_factor=1)
    ref_delta = torch.cat(latents(plain, 2)) - base
    print("tiny model, fp32, CPU; deviation: relative L2; LoRA figures relative to the LoRA's effect on the "
          "unquantized model")
    print("| format | 3-step latents vs unquantized (video / audio) | LoRA effect vs unquantized | fused vs unfused "
          "| weights after fuse + unfuse | stored bytes growth / LoRA bytes |")
    print("|---|---|---|---|---|---|")
    for mode in FORMATS:
        pipe = pipe_of(components, mode)
        v, a = latents(pipe, 3)
        base_q = torch.cat(latents(pipe, 2))
        effect, fused, back, growth, lb = lora_rows(pipe, lora, base_q, ref_delta)
        print(f"| {mode} | {rel(v, ref3[0]):.4f} / {rel(a, ref3[1]):.4f} | {effect:.4f} | {fused:.4f} | {back:.4f} | "
              f"{growth} / {lb} |", flush=True)
    gguf_rows(folder)


def gguf_rows(folder: Path) -> None:
    """The same LoRA figures for a Q8_0 GGUF of a 32-wide LTX-2.0 transformer vs its unquantized folder."""
    from official_checkpoints import official_state_dict, write_official_checkpoint
    from test_conversion_pipeline import _consistent_config, _embeddings
    from test_ic_lora_loading import write_lora

    import gguf_files as gf
    from diffusers_ltx2.conversion import convert_single_file

    config = _consistent_config("2.0")
    config["transformer"].update(attention_head_dim=16, cross_attention_dim=32, audio_attention_head_dim=16,
                                 audio_cross_attention_dim=32)
    write_official_checkpoint(folder / "official.safetensors", "2.0", seed=3, config=config)
    model = convert_single_file(folder / "official.safetensors", folder / "model", progress=False)
    sd = official_state_dict(config, seed=3)
    prefix = "model.diffusion_model."
    gf.write_gguf(folder / "t.gguf", {k.removeprefix(prefix): v for k, v in sd.items() if k.startswith(prefix)},
                  "Q8_0", prefix=prefix)

    def run(pipe):
        out = pipe(prompt_embeds=_embeddings(pipe), height=64, width=64, num_frames=9, num_inference_steps=2,
                   output_type="latent", guider=ClassifierFreeGuidance(1.0, 1.0),
                   generator=torch.Generator().manual_seed(0))
        return torch.cat([out.frames.float().flatten(), out.audio.float().flatten()])

    plain = LTX2AudioVideoPipeline.from_pretrained(model, dtype=torch.float32)
    pipe = LTX2AudioVideoPipeline.from_pretrained(model, gguf_file=str(folder / "t.gguf"), dtype=torch.float32)
    for p in (plain, pipe):
        p.set_progress_bar_config(disable=True)
    ref, base = run(plain), run(pipe)
    lora = str(folder / "gguf_lora.safetensors")
    write_lora(lora, plain.transformer, blocks=(0, 1))
    plain.load_lora_weights(lora, adapter_name="style", reference_downscale_factor=1)
    ref_delta = run(plain) - ref
    before = weight_bytes(pipe.transformer)
    pipe.load_lora_weights(lora, adapter_name="style", reference_downscale_factor=1)
    lb = sum(p.numel() * p.element_size() for n, p in pipe.transformer.named_parameters() if "lora_" in n)
    unfused = run(pipe)
    pipe.fuse_lora()
    fused = ((run(pipe) - unfused).norm() / ref_delta.norm()).item()
    print(f"| gguf-Q8_0 (32-wide model) | {rel(base, ref):.4f} (2 steps, both) | "
          f"{rel(unfused - base, ref_delta):.4f} | {fused:.4f} | - | {weight_bytes(pipe.transformer) - before} / {lb} |")


if __name__ == "__main__":
    main()
