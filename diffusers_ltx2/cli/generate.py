"""`ltx2 generate`: text (or image) to an MP4 with audio from a diffusers-layout LTX-2 folder."""

from __future__ import annotations

import argparse
import os

import torch

from .common import StageTimer, check_output_path, default_device, parse_dtype, write_clip


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("generate", help="generate a clip with audio from a prompt",
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", required=True, help="diffusers-layout LTX-2 folder (see `ltx2 convert`)")
    p.add_argument("--prompt", help="text prompt (or use --conditioning)")
    p.add_argument("--negative-prompt", default=None)
    p.add_argument("--conditioning", help="saved conditioning file used instead of --prompt")
    p.add_argument("--negative-conditioning", help="saved conditioning file for the negative prompt")
    p.add_argument("--output", required=True, help="output .mp4 path")
    p.add_argument("--num-frames", type=int, default=121, help="8k+1 frames")
    p.add_argument("--height", type=int, default=512, help="multiple of 32")
    p.add_argument("--width", type=int, default=768, help="multiple of 32")
    p.add_argument("--frame-rate", type=float, default=24.0)
    p.add_argument("--steps", type=int, default=40, help="denoising steps")
    p.add_argument("--distilled", action="store_true", help="use the 8-step distilled sigmas (distilled checkpoints)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image", help="first-frame image file")
    p.add_argument("--image-strength", type=float, default=1.0)
    p.add_argument("--dtype", default="bf16", help="model dtype: bf16, fp16 or fp32")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available)")
    p.add_argument("--cpu-offload", action="store_true", help="enable diffusers model CPU offload")
    p.add_argument("--sequential-passes", action="store_true", help="run guidance passes one by one (less memory)")
    add_guidance_flags(p)
    p.set_defaults(func=run)


def add_guidance_flags(p) -> None:
    """Guidance flags; the full multimodal set when available."""
    try:
        from .guidance_args import add_guidance_arguments
    except ModuleNotFoundError:
        p.add_argument("--cfg", type=float, default=3.0, help="video cfg scale (1 = off)")
        p.add_argument("--audio-cfg", type=float, default=7.0, help="audio cfg scale (1 = off)")
        return
    add_guidance_arguments(p)


def guider_from_flags(args):
    try:
        from .guidance_args import guider_from_args
    except ModuleNotFoundError:
        from ..guiders import ClassifierFreeGuidance

        return ClassifierFreeGuidance(guidance_scale=args.cfg, audio_guidance_scale=args.audio_cfg)
    return guider_from_args(args)


def run(args) -> int:
    from ..pipelines import LTX2AudioVideoPipeline
    from ..pipelines import validation as V
    from ..schedulers import DISTILLED_SIGMAS

    # Everything that can be checked without a model is checked first.
    check_output_path(args.output)
    if (args.prompt is None) == (args.conditioning is None):
        raise ValueError("pass exactly one of --prompt or --conditioning")
    if not os.path.isdir(args.model):
        raise FileNotFoundError(f"model folder not found: {args.model}")
    for path in (args.conditioning, args.negative_conditioning, args.image):
        if path is not None and not os.path.isfile(path):
            raise FileNotFoundError(f"file not found: {path}")
    V.check_num_frames(args.num_frames)
    V.check_resolution(args.height, args.width)
    dtype = parse_dtype(args.dtype)
    guider = guider_from_flags(args)
    device = args.device or default_device()

    timer = StageTimer()
    with timer.stage("load"):
        pipe = LTX2AudioVideoPipeline.from_pretrained(args.model, torch_dtype=dtype)
        if args.cpu_offload:
            pipe.enable_model_cpu_offload(device=device)
        else:
            pipe.to(device)
    image = None
    if args.image:
        from PIL import Image

        image = Image.open(args.image).convert("RGB")
    with timer.stage("generate"):
        out = pipe(
            prompt=args.prompt, negative_prompt=args.negative_prompt,
            prompt_embeds=args.conditioning, negative_prompt_embeds=args.negative_conditioning,
            height=args.height, width=args.width, num_frames=args.num_frames, frame_rate=args.frame_rate,
            num_inference_steps=args.steps, sigmas=list(DISTILLED_SIGMAS) if args.distilled else None,
            guider=guider, image=image, image_strength=args.image_strength,
            max_batch_passes=1 if args.sequential_passes else None,
            generator=torch.Generator(device="cpu").manual_seed(args.seed),
        )
    with timer.stage("write"):
        write_clip(out, args.output, args.frame_rate)
    print(f"wrote {os.path.abspath(args.output)} ({timer.summary()})")
    return 0
