"""`ltx2 generate --dfr`: LTX-2.5's DFR recipe (official ltx-pipelines 1.2 `dfr_pipeline.py`: keyframe-slot base
at half size, x2 spatial detailing, 0-2 temporal x2 rounds) through `LTX2DFRPipeline`. Its options, checked before
anything heavy is imported, and how they turn into the pipeline's loading and call. The spatial upscaler and the
distilled LoRA are `--two-stage`'s `--upsampler` / `--distilled-lora` (same meaning; 1.2 applies the distilled LoRA
in every stage)."""

from __future__ import annotations

import os

from ..json_files import read_json
from .guidance_args import GUIDANCE_OPTIONS
from .lora_args import LORA_FORM, parse_lora_spec
from .options import Option, text, was_given, whole
from .sampling_args import SAMPLING_OPTIONS

GROUP = "DFR (LTX-2.5: keyframe slots, spatial detailing, temporal rounds: official dfr_pipeline)"

#: the folder `ltx2 convert` writes the temporal upscaler of a 2.5 set to
TEMPORAL_FOLDER = "temporal_latent_upsampler"

DFR_OPTIONS = (
    Option("--dfr", "DFR (LTX-2.5 checkpoints): half-size base with generated keyframe slots, x2 spatial detailing "
                    "at --height x --width (multiples of 64), then --temporal-upsample-rounds; needs --upsampler "
                    "(or the folder's latent_upsampler/) and --distilled-lora", switch=True, group=GROUP),
    Option("--temporal-upsample-rounds", "temporal x2 rounds, 0-2: the clip gets (num_frames - 1) * 2**N + 1 "
                                         "frames at frame_rate * 2**N fps", whole(0, 2), default=0, metavar="N",
           group=GROUP),
    Option("--temporal-upsampler", "temporal x2 latent upscaler: the official ltx-2.5-latent-temporal-upscaler-x2 "
                                   "file or a converted folder", text, metavar="PATH",
           default_text=f"the model folder's {TEMPORAL_FOLDER}/", group=GROUP),
    Option("--detailing-lora", f"x2 spatial detailing IC-LoRA, active in the detailing stage only, {LORA_FORM}",
           parse_lora_spec, metavar="PATH[:STRENGTH]", group=GROUP),
)

_DFR_DESTS = ("dfr", "temporal_upsample_rounds", "temporal_upsampler", "detailing_lora")

#: options of `ltx2 generate` a DFR run does not use (it has its own schedule, sampler and no guidance)
_NOT_WITH_DFR = (
    ("--two-stage", "two_stage"), ("--preset", "preset"), ("--window", "window"), ("--audio-only", "audio_only"),
    ("--video", "video"), ("--audio", "audio"), ("--steps", "steps"),
    ("--negative-prompt", "negative_prompt"), ("--negative-conditioning", "negative_conditioning"),
    ("--sequential-passes", "sequential_passes"),
    *((o.flag, o.dest) for o in (*GUIDANCE_OPTIONS, *SAMPLING_OPTIONS) if o.dest != "seed"),
)


def check_dfr_arguments(args) -> None:
    """Every `--dfr` rule that needs no import (run before the shared checks): without `--dfr` the DFR options are
    refused; with it, options DFR does not use, a checkpoint without the 2.5 keyframe embedding, a frame count
    the keyframe canvas cannot use, a missing temporal upscaler for rounds > 0, a missing or non-positive
    detailing LoRA. Raises ValueError / FileNotFoundError. (Upsampler, distilled LoRA, sizes: as `--two-stage`.)"""
    if not args.dfr:
        used = [f"--{d.replace('_', '-')}" for d in _DFR_DESTS[1:] if was_given(args, d)]
        if used:
            raise ValueError(f"{' / '.join(used)} only apply with --dfr")
        return
    used = [flag for flag, dest in _NOT_WITH_DFR if was_given(args, dest)]
    if used:
        raise ValueError(f"--dfr runs the official DFR recipe (distilled sigmas, no guidance, conditioned on text "
                         f"and --image only): it does not take {' / '.join(used)}")
    config = os.path.join(args.model, "transformer", "config.json")
    if os.path.isfile(config) and not read_json(config).get("use_keyframes_abs_pos_embedding", False):
        raise ValueError(f"--dfr generates keyframe slots: it needs an LTX-2.5 checkpoint ({args.model} is not)")
    if args.num_frames is not None:
        from ..dfr.layout import resolve_canvas

        try:
            resolve_canvas(args.num_frames)
        except ValueError as err:
            raise ValueError(f"--num-frames {args.num_frames}: {err}") from None
    if args.temporal_upsample_rounds:
        if args.temporal_upsampler is not None:
            if not os.path.exists(args.temporal_upsampler):
                raise FileNotFoundError(f"--temporal-upsampler not found: {args.temporal_upsampler}")
        elif not os.path.isdir(os.path.join(args.model, TEMPORAL_FOLDER)):
            raise ValueError(f"--temporal-upsample-rounds {args.temporal_upsample_rounds} needs a temporal "
                             f"upscaler: pass --temporal-upsampler PATH (the model folder {args.model} has no "
                             f"{TEMPORAL_FOLDER}/)")
    elif args.temporal_upsampler is not None:
        raise ValueError("--temporal-upsampler is used by --temporal-upsample-rounds 1 or 2 only")
    if args.detailing_lora is not None:
        from .media_args import check_spec_suffix

        spec = args.detailing_lora
        check_spec_suffix(spec.path, "--detailing-lora", ":", "STRENGTH", LORA_FORM)
        if not os.path.isfile(spec.path):
            raise FileNotFoundError(f"--detailing-lora not found: {spec.path}")
        if not spec.strength > 0:
            raise ValueError(f"--detailing-lora STRENGTH must be a positive number, got {spec.strength:g}")


def dfr_setup(args, dtype, two_stage_setup):
    """`setup(pipe)` for `load_pipeline`: `two_stage_setup` (spatial upscaler, distilled LoRA), the temporal
    upscaler (given, or the model folder's when its `model_index.json` did not load it) and the detailing LoRA (`pipe.load_detailing_lora`)."""
    def setup(pipe):
        from .two_stage import load_upsampler

        two_stage_setup(pipe)
        if args.temporal_upsample_rounds and (args.temporal_upsampler is not None
                                              or pipe.temporal_latent_upsampler is None):  # else: the folder's, loaded
            from ..dfr.temporal import check_temporal_upsampler

            path = args.temporal_upsampler or os.path.join(args.model, TEMPORAL_FOLDER)
            upsampler = load_upsampler(path, dtype)
            try:
                check_temporal_upsampler(upsampler)
            except ValueError as err:
                raise ValueError(f"--temporal-upsampler {path}: {err}") from None
            pipe.register_modules(temporal_latent_upsampler=upsampler)
        if args.detailing_lora is not None:
            spec = args.detailing_lora
            try:
                pipe.load_detailing_lora(spec.path, strength=spec.strength)
            except ValueError as err:
                raise ValueError(f"--detailing-lora {spec.text}: {err}") from None

    return setup


def dfr_call(call: dict, args) -> dict:
    """`LTX2DFRPipeline.__call__`'s keyword arguments from the one-stage `call` (the recipe's own sigmas; no
    guider, sampler or negative prompt; `--image` entries as `conditions=`, 1.2's `images=`). Sets `args.output_frame_rate` (the rounds multiply the frame rate)."""
    keep = ("prompt", "prompt_embeds", "height", "width", "num_frames", "frame_rate", "generator",
            "max_sequence_length")
    out = {k: call[k] for k in keep if k in call}
    out["temporal_upsample_rounds"] = args.temporal_upsample_rounds
    if getattr(args, "conditions", None):
        out["conditions"] = args.conditions
    args.output_frame_rate = float(args.frame_rate) * 2 ** args.temporal_upsample_rounds
    return out
