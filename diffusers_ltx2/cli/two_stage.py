"""`ltx2 generate --two-stage`: options of the two-stage recipe (half-size generation, latent upsampler, refinement
with the distilled LoRA), checked before any model loads, and how they turn into an `LTX2TwoStagePipeline` call."""

from __future__ import annotations

import os


def add_two_stage_arguments(p) -> None:
    """`--two-stage`, `--upsampler PATH`, `--distilled-lora PATH[:STRENGTH]` (with `--distilled`: the distilled
    two-stage recipe)."""
    g = p.add_argument_group("two-stage", "generate at half size, upsample the latent 2x, refine in 3 steps "
                                          "(official ti2vid_two_stages / distilled pipelines)")
    g.add_argument("--two-stage", action="store_true",
                   help="two-stage generation at --height x --width (multiples of 64); with --distilled: the "
                        "distilled two-stage recipe (8 + 3 fixed steps, no guidance, no distilled LoRA)")
    g.add_argument("--upsampler", metavar="PATH",
                   help="latent spatial upsampler: the official ltx-2-spatial-upscaler-x2-*.safetensors or a "
                        "converted folder (default: the model folder's latent_upsampler/)")
    g.add_argument("--distilled-lora", metavar="PATH[:STRENGTH]",
                   help="distilled LoRA used in stage 2 on top of the other LoRAs (official "
                        "ltx-2-19b-distilled-lora-*.safetensors), STRENGTH default 1.0; not with --distilled")


def parse_lora_spec(text: str) -> tuple[str, float]:
    """`"lora.safetensors:0.8"` -> `("lora.safetensors", 0.8)`; a path containing ':' (Windows drive) is kept whole
    unless it ends with `:<number>`."""
    path, sep, tail = text.rpartition(":")
    if sep and path:
        try:
            return path, float(tail)
        except ValueError:
            pass
    return text, 1.0


def check_two_stage_arguments(args) -> None:
    """Every `--two-stage` rule that needs no model: sizes multiples of 64 (nearest valid values in the message),
    an upsampler (given or in the model folder), a distilled LoRA file unless `--distilled`; raises ValueError /
    FileNotFoundError. Without `--two-stage` the two-stage options are refused."""
    if not args.two_stage:
        used = [f for f, v in (("--upsampler", args.upsampler), ("--distilled-lora", args.distilled_lora)) if v]
        if used:
            raise ValueError(f"{' / '.join(used)} only apply with --two-stage")
        return
    from ..pipelines import validation as V  # here, not at import: `ltx2 --help` loads no torch
    from .media_args import check_spec_suffix

    V.check_resolution(args.height, args.width, 64)
    if args.upsampler is not None:
        if not os.path.exists(args.upsampler):
            raise FileNotFoundError(f"--upsampler not found: {args.upsampler}")
    elif not os.path.isdir(os.path.join(args.model, "latent_upsampler")):
        raise ValueError(f"--two-stage needs a latent upsampler: pass --upsampler PATH (the model folder "
                         f"{args.model} has no latent_upsampler/)")
    if args.distilled:
        if args.distilled_lora:
            raise ValueError("--distilled (a distilled checkpoint) refines without the distilled LoRA: drop "
                             "--distilled-lora")
    else:
        if not args.distilled_lora:
            raise ValueError("--two-stage refines with the distilled LoRA: pass --distilled-lora PATH[:STRENGTH], "
                             "or --distilled for a distilled checkpoint")
        path, strength = parse_lora_spec(args.distilled_lora)
        check_spec_suffix(path, "--distilled-lora", ":", "STRENGTH",
                          "PATH[:STRENGTH] (STRENGTH a positive number), e.g. lora.safetensors:0.8")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"--distilled-lora not found: {path}")
        V.check_positive("--distilled-lora STRENGTH", strength)


def load_upsampler(path: str, dtype):
    """An `LTX2LatentUpsamplerModel` from an official file (converted in memory) or a diffusers folder."""
    if os.path.isdir(path):
        from diffusers.pipelines.ltx2.latent_upsampler import LTX2LatentUpsamplerModel

        name = LTX2LatentUpsamplerModel.load_config(path).get("_class_name")
        if name != LTX2LatentUpsamplerModel.__name__:  # diffusers would build a random upsampler from it
            raise ValueError(f"--upsampler {path}: a {name} folder, not a latent upsampler "
                             f"({LTX2LatentUpsamplerModel.__name__})")
        return LTX2LatentUpsamplerModel.from_pretrained(path, torch_dtype=dtype)
    from ..conversion.upsampler import load_official_upsampler

    return load_official_upsampler(path, dtype=dtype)


def two_stage_setup(args, dtype):
    """`setup(pipe)` for `load_pipeline`: the upsampler and the distilled LoRA."""
    def setup(pipe):
        if args.upsampler is not None:
            from ..conversion.upsampler import check_latent_upsampler

            upsampler = load_upsampler(args.upsampler, dtype)
            check_latent_upsampler(upsampler, pipe.vae.config.latent_channels)
            pipe.register_modules(latent_upsampler=upsampler)
        if args.distilled_lora:
            path, strength = parse_lora_spec(args.distilled_lora)
            pipe.load_distilled_lora(path, strength=strength)

    return setup


def two_stage_call(call: dict, args) -> dict:
    """The one-stage call arguments turned into the two-stage pipeline's (`--distilled` selects the recipe
    instead of one-stage distilled sigmas)."""
    call = dict(call)
    call.pop("sigmas", None)
    call["distilled"] = bool(args.distilled)
    return call
