"""Regional compilation (`pipe.compile()`, `--compile`): the transformer blocks' `forward` compiled, hooks left
eager; recompilations counted with a counting `torch.compile` backend (eager code underneath, so results equal
the uncompiled run exactly) across a two-stage call, a repeat and changes of clip size; composition with LoRA
switching, STG / modality guidance, quantized weights and offload."""

from __future__ import annotations

import copy

import pytest
import torch

from diffusers_ltx2 import LTX2AudioVideoPipeline, LTX2Scheduler, MultimodalGuider
from diffusers_ltx2.acceleration.compile import RECOMPILE_LIMIT, compile_blocks, is_compiled, repeated_blocks
from diffusers_ltx2.factory import TINY_CLIP

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


class CountingBackend:
    """A `torch.compile` backend that counts the graphs it is given and runs them as traced (no codegen)."""

    def __init__(self):
        self.graphs = 0

    def __call__(self, gm, example_inputs):
        self.graphs += 1
        return gm.forward


@pytest.fixture()
def fresh_dynamo():
    """Dynamo's caches are per code object (all LTX-2 blocks share one): start and end clean."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    yield counters
    torch._dynamo.reset()


def test_compile_targets_the_blocks_once(tiny_components):
    from torch import nn

    pipe = LTX2AudioVideoPipeline(scheduler=LTX2Scheduler(), guider=MultimodalGuider(), **tiny_components)
    blocks = repeated_blocks(pipe.transformer)
    assert len(blocks) == 2 and not is_compiled(pipe.transformer)
    assert pipe.compile(backend="eager") is pipe and is_compiled(pipe.transformer)
    compiled = [b.forward for b in blocks]
    pipe.compile(backend="eager")  # again: a no-op
    assert [b.forward for b in blocks] == compiled
    assert all("forward" in vars(b) for b in blocks)  # the instance's forward, not the module call (hooks stay out)
    limit = getattr(torch._dynamo.config, "recompile_limit", None) or torch._dynamo.config.cache_size_limit
    assert limit >= RECOMPILE_LIMIT
    with pytest.raises(ValueError, match="no _repeated_blocks"):
        compile_blocks(nn.Linear(2, 2))


@pytest.mark.slow
def test_recompiles_across_a_two_stage_call_and_clip_sizes(tiny_components_master, tmp_path, fresh_dynamo):
    """Two-stage (stage 1: cfg + STG + modality isolation, 4 passes batched with a shared prefix, a user LoRA on
    block 1; stage 2: 1 pass at twice the size with the distilled LoRA switched on). Measured graphs: 4 on the
    first call, 0 on a repeat, 2 for the first new clip size, 0 for another; no graph break; results equal
    eager."""
    from diffusers.pipelines.ltx2.latent_upsampler import LTX2LatentUpsamplerModel

    from diffusers_ltx2 import LTX2TwoStagePipeline
    from two_stage_files import write_official_lora

    def build():
        comps = copy.deepcopy(tiny_components_master)
        torch.manual_seed(0)
        up = LTX2LatentUpsamplerModel(in_channels=comps["vae"].config.latent_channels, mid_channels=32,
                                      num_blocks_per_stage=1, use_rational_resampler=False).eval()
        pipe = LTX2TwoStagePipeline(scheduler=LTX2Scheduler(), guider=MultimodalGuider(), latent_upsampler=up,
                                    **comps)
        pipe.set_progress_bar_config(disable=True)
        write_official_lora(tmp_path / "style.safetensors", pipe.transformer, seed=1, blocks=(1,))
        write_official_lora(tmp_path / "distilled.safetensors", pipe.transformer, seed=2)
        pipe.load_lora_weights(str(tmp_path / "style.safetensors"), adapter_name="style",
                               reference_downscale_factor=1)
        pipe.load_distilled_lora(str(tmp_path / "distilled.safetensors"), strength=0.8)
        return pipe

    def run(pipe, height=128, width=128):
        out = pipe("a cat", negative_prompt="dark", height=height, width=width, num_frames=17, frame_rate=24.0,
                   num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="latent")
        return torch.cat([out.frames.flatten(), out.audio.flatten()])

    eager = build()
    ref = run(eager)
    ref_wide = run(eager, 128, 192)
    backend = CountingBackend()
    pipe = build().compile(backend=backend)
    torch.testing.assert_close(run(pipe), ref, rtol=0, atol=0)
    first = backend.graphs
    torch.testing.assert_close(run(pipe), ref, rtol=0, atol=0)
    repeat = backend.graphs - first
    torch.testing.assert_close(run(pipe, 128, 192), ref_wide, rtol=0, atol=0)
    new_size = backend.graphs - first - repeat
    run(pipe, 192, 128)
    another = backend.graphs - first - repeat - new_size
    assert (first, repeat, new_size, another) == (4, 0, 2, 0)
    assert not fresh_dynamo["graph_break"]
    assert backend.graphs <= RECOMPILE_LIMIT


@pytest.mark.slow
@pytest.mark.parametrize("offload", [None, "blocks"])
def test_compile_with_quantized_lora_and_offload(offload, tiny_components_master, tmp_path, fresh_dynamo):
    """fp8-cast + a LoRA, guided with STG and modality isolation, compiled then block-offloaded: equal to the
    uncompiled resident run."""
    from diffusers_ltx2.memory import apply_offload
    from diffusers_ltx2.quantization import quantize_transformer_
    from test_ic_lora_loading import write_lora

    lora = tmp_path / "l.safetensors"
    write_lora(lora, tiny_components_master["transformer"])

    def build():
        pipe = LTX2AudioVideoPipeline(scheduler=LTX2Scheduler(), guider=MultimodalGuider(),
                                      **copy.deepcopy(tiny_components_master))
        pipe.set_progress_bar_config(disable=True)
        quantize_transformer_(pipe.transformer, "fp8-cast")
        pipe.load_lora_weights(str(lora), adapter_name="style", reference_downscale_factor=1)
        return pipe

    def run(pipe):
        out = pipe("a cat", negative_prompt="dark", num_inference_steps=2, output_type="latent",
                   generator=torch.Generator().manual_seed(0), **TINY_CLIP)
        return torch.cat([out.frames.flatten(), out.audio.flatten()])

    ref = run(build())
    backend = CountingBackend()
    pipe = build().compile(backend=backend)
    if offload:
        apply_offload(pipe, offload, "cpu")
    torch.testing.assert_close(run(pipe), ref, rtol=0, atol=0)
    assert backend.graphs > 0 and not fresh_dynamo["graph_break"]


@pytest.mark.slow
def test_cli_compile_and_attention(tiny_pipe, tmp_path, fresh_dynamo):
    from diffusers_ltx2.cli import main

    tiny_pipe.save_pretrained(tmp_path / "m")
    out = tmp_path / "o.mp4"
    rc = main(["generate", "--model", str(tmp_path / "m"), "--prompt", "a cat", "--output", str(out), "--num-frames",
               "9", "--height", "64", "--width", "64", "--steps", "2", "--dtype", "fp32", "--device", "cpu",
               "--compile", "eager", "--attention", "native"])
    assert rc == 0 and out.is_file()
    assert fresh_dynamo["stats"]["unique_graphs"] > 0  # the blocks really ran compiled
