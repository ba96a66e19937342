"""`ltx2 control`: IC-LoRA video-to-video (canny / depth / pose / union control) to an MP4 with audio."""

from __future__ import annotations

import argparse
import os
import sys

import torch

from .common import StageTimer, check_output_path, default_device, parse_dtype, write_clip
from .generate import add_guidance_flags, guider_from_flags

PREPROCESSORS = ("none", "canny", "depth", "pose")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("control", help="generate a clip that follows a control video through an IC-LoRA",
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", required=True, help="diffusers-layout LTX-2 folder (see `ltx2 convert`)")
    p.add_argument("--lora", required=True, action="append",
                   help="IC-LoRA .safetensors (official or diffusers format); repeat for several")
    p.add_argument("--lora-strength", type=float, action="append", default=None,
                   help="strength per --lora (default 1.0 each)")
    p.add_argument("--control-video", required=True, help="control / reference video file")
    p.add_argument("--preprocess", choices=PREPROCESSORS, default="none",
                   help="turn the control video into edges / depth / pose first (none: it already is one)")
    p.add_argument("--preprocess-model", default=None, help="local transformers model folder for depth / pose")
    p.add_argument("--reference-downscale-factor", type=int, default=None,
                   help="override the factor read from the LoRA metadata")
    p.add_argument("--control-strength", type=float, default=1.0)
    p.add_argument("--attention-strength", type=float, default=1.0, help="conditioning attention strength")
    p.add_argument("--prompt", help="text prompt (or use --conditioning)")
    p.add_argument("--negative-prompt", default=None)
    p.add_argument("--conditioning", help="saved conditioning file used instead of --prompt")
    p.add_argument("--output", required=True, help="output .mp4 path")
    p.add_argument("--num-frames", type=int, default=121, help="8k+1 frames")
    p.add_argument("--height", type=int, default=512, help="multiple of 32 * the reference downscale factor")
    p.add_argument("--width", type=int, default=768, help="multiple of 32 * the reference downscale factor")
    p.add_argument("--frame-rate", type=float, default=24.0)
    p.add_argument("--steps", type=int, default=40, help="denoising steps")
    p.add_argument("--distilled", action="store_true", help="use the 8-step distilled sigmas")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", default="bf16", help="model dtype: bf16, fp16 or fp32")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available)")
    p.add_argument("--cpu-offload", action="store_true", help="enable diffusers model CPU offload")
    p.add_argument("--max-sequence-length", type=int, default=None, help="padded prompt length (local Gemma)")
    add_guidance_flags(p)
    p.set_defaults(func=run)


def _check_args(args) -> None:
    """Everything checkable without a model, so mistakes fail in a second with exit code 2."""
    from ..pipelines import validation as V

    check_output_path(args.output)
    if (args.prompt is None) == (args.conditioning is None):
        raise ValueError("pass exactly one of --prompt or --conditioning")
    if not os.path.isdir(args.model):
        raise FileNotFoundError(f"model folder not found: {args.model}")
    for path in [args.control_video, args.conditioning, *args.lora]:
        if path is not None and not os.path.isfile(path):
            raise FileNotFoundError(f"file not found: {path}")
    if args.lora_strength is not None and len(args.lora_strength) != len(args.lora):
        raise ValueError(f"got {len(args.lora_strength)} --lora-strength values for {len(args.lora)} --lora files")
    if args.preprocess in ("depth", "pose") and not args.preprocess_model:
        raise ValueError(f"--preprocess {args.preprocess} needs --preprocess-model (a local transformers model)")
    if args.preprocess_model and not os.path.isdir(args.preprocess_model):
        raise FileNotFoundError(f"preprocessor model folder not found: {args.preprocess_model}")
    V.check_num_frames(args.num_frames)
    V.check_resolution(args.height, args.width)
    V.check_strength("--control-strength", args.control_strength)
    V.check_strength("--attention-strength", args.attention_strength)


def run(args) -> int:
    from ..control import get_preprocessor
    from ..pipelines import LTX2ICLoRAPipeline
    from ..schedulers import DISTILLED_SIGMAS

    _check_args(args)
    dtype = parse_dtype(args.dtype)
    guider = guider_from_flags(args)
    device = args.device or default_device()
    preprocessor = None
    if args.preprocess != "none":
        preprocessor = get_preprocessor(args.preprocess, args.preprocess_model)

    timer = StageTimer(stream=sys.stdout)  # the current stdout (the class default is bound at import time)
    with timer.stage("load"):
        pipe = LTX2ICLoRAPipeline.from_pretrained(args.model, torch_dtype=dtype)
        strengths = args.lora_strength or [1.0] * len(args.lora)
        for i, (path, strength) in enumerate(zip(args.lora, strengths)):
            pipe.load_lora_weights(path, adapter_name=f"control_{i}", strength=strength,
                                   reference_downscale_factor=args.reference_downscale_factor)
        if args.cpu_offload:
            pipe.enable_model_cpu_offload(device=device)
        else:
            pipe.to(device)
    print(f"reference downscale factor: {pipe.reference_downscale_factor}")
    with timer.stage("generate"):
        out = pipe(
            prompt=args.prompt, negative_prompt=args.negative_prompt, prompt_embeds=args.conditioning,
            control_video=args.control_video, control_preprocessor=preprocessor,
            control_strength=args.control_strength, conditioning_attention_strength=args.attention_strength,
            height=args.height, width=args.width, num_frames=args.num_frames, frame_rate=args.frame_rate,
            num_inference_steps=args.steps, sigmas=list(DISTILLED_SIGMAS) if args.distilled else None,
            guider=guider, max_sequence_length=args.max_sequence_length,
            generator=torch.Generator(device="cpu").manual_seed(args.seed),
        )
    with timer.stage("write"):
        write_clip(out, args.output, args.frame_rate)
    print(f"wrote {os.path.abspath(args.output)} ({timer.summary()})")
    return 0
