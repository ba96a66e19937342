"""The memory panel of `ltx2 ui`: the detected device and its memory, and the `--vram-budget` plan
(`memory.budget.plan` over the model folder's configs, as `ltx2 generate --vram-budget` prints it)."""

from __future__ import annotations

import os

from ..memory.budget import Clip, format_bytes, plan


def detect_device() -> tuple[str, int | None, str]:
    """`(device, memory in bytes or None, description)`: the first CUDA GPU and its total memory, else the CPU."""
    import torch

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return "cuda", int(props.total_memory), f"{props.name}, {format_bytes(props.total_memory)}"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps", None, "Apple GPU (MPS), memory shared with the system"
    return "cpu", None, "no GPU: the model runs on the CPU in system memory"


def budget_text(memory: int | None) -> str:
    """A `--vram-budget` value for `memory` bytes (rounded down to 0.1 GiB), or "" without one."""
    return "" if not memory else f"{int(memory / 1024**3 * 10) / 10:g}GiB"


def plan_for(model: str, num_frames: int, height: int, width: int, frame_rate: float, budget: str,
             passes: int | None = None) -> dict:
    """The plan for a clip under `budget` (a `--vram-budget` value): `{"quantize", "text_encoder_quantize",
    "offload", "text"}` (text: the plan as `ltx2 generate --vram-budget` prints it). `passes`: guidance passes
    batched per call, by default those `ltx2 generate` counts for its default (recommended) guidance. Raises
    `ValueError` for a bad budget, clip or model folder."""
    from .. import cli
    from ..cli.guidance_args import guidance_passes
    from ..cli.memory_args import parse_bytes
    from ..memory.footprint import footprint_from_folder

    amount = parse_bytes(budget)
    if passes is None:
        args = cli.resolve("generate", dict(model=model, prompt="plan", output=os.path.join(model, "plan.mp4"),
                                            num_frames=num_frames, height=height, width=width)).args
        passes = guidance_passes(args)
    fp = footprint_from_folder(model)
    chosen = plan(fp, Clip(int(num_frames), int(height), int(width), float(frame_rate)), amount, passes=passes)
    return {"quantize": chosen.quantization, "text_encoder_quantize": chosen.text_encoder_quantization,
            "offload": chosen.offload,
            "text": f"--vram-budget {budget} = {format_bytes(amount)} ({passes} guidance passes batched):\n"
                    + chosen.describe()}
