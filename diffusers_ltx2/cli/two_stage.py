"""`ltx2 generate --two-stage`: options of the two-stage recipe (half-size generation, latent upsampler, refinement
with the distilled LoRA), checked before anything heavy is imported, and how they turn into an
`LTX2TwoStagePipeline` call. `--lora` files apply to both stages; the distilled LoRA is added in stage 2 only."""

from __future__ import annotations

import os

from ..presets import PRESETS
from .lora_args import LORA_FORM, LoraSpec, parse_lora_spec
from .options import Option, text, was_given

GROUP = "two-stage (generate at half size, upsample the latent 2x, refine in 3 steps: official " \
        "ti2vid_two_stages / distilled pipelines)"

TWO_STAGE_OPTIONS = (
    Option("--two-stage", "two-stage generation at --height x --width (multiples of 64); with --distilled: the "
                          "distilled two-stage recipe (8 + 3 fixed steps, no guidance, no distilled LoRA)",
           switch=True, group=GROUP),
    Option("--upsampler", "latent spatial upsampler: the official ltx-2-spatial-upscaler-x2-*.safetensors or a "
                          "converted folder", text, metavar="PATH", default_text="the model folder's "
                                                                              "latent_upsampler/", group=GROUP),
    Option("--distilled-lora", "distilled LoRA added in stage 2 on top of the --lora files (official "
                               f"ltx-2-19b-distilled-lora-*.safetensors), {LORA_FORM}; not with --distilled",
           parse_lora_spec, metavar="PATH[:STRENGTH]", group=GROUP),
    Option("--preset", "hq: the official HQ recipe (ti2vid_two_stages_hq: res_2s in both stages, 15 steps on the "
                       "token-count-shifted schedule, STG off, distilled LoRA 0.25 in stage 1 and 0.5 in stage 2, "
                       "the stage-1 audio, 1088x1920, seed 10); flags you give win", choices=tuple(PRESETS),
           group=GROUP),
)

#: `ltx2 generate` dests a preset fills when they are not given (the guidance dials: `video_cfg`, ...)
_PRESET_DESTS = ("height", "width", "num_frames", "frame_rate", "seed", "sampler", "stage_2_sampler")
_PRESET_DIALS = ("cfg", "stg", "modality_scale", "rescale")

#: sizes of a two-stage clip: the half-size first stage must still be a multiple of 32
TWO_STAGE_MULTIPLE = 64


def check_two_stage_arguments(args) -> None:
    """Every `--two-stage` rule that needs no import: an upsampler (given or in the model folder), a distilled
    LoRA file unless `--distilled`, a positive strength; raises ValueError / FileNotFoundError. Without
    `--two-stage` the two-stage options are refused; `--dfr` (`cli.dfr_args`) shares `--upsampler` and
    `--distilled-lora` with the same rules. (Sizes: `check_clip(size_multiple=TWO_STAGE_MULTIPLE)`.)"""
    dfr = getattr(args, "dfr", False)
    if not args.two_stage:
        used = [f for f, v in (("--upsampler", args.upsampler), ("--distilled-lora", args.distilled_lora),
                               ("--preset", args.preset)) if v and not (dfr and f != "--preset")]
        if used:
            raise ValueError(f"{' / '.join(used)} only apply with --two-stage")
        if not dfr:
            return
    mode = "--two-stage" if args.two_stage else "--dfr"
    from .media_args import check_spec_suffix

    if args.upsampler is not None:
        if not os.path.exists(args.upsampler):
            raise FileNotFoundError(f"--upsampler not found: {args.upsampler}")
    elif not os.path.isdir(os.path.join(args.model, "latent_upsampler")):
        raise ValueError(f"{mode} needs a latent upsampler: pass --upsampler PATH (the model folder "
                         f"{args.model} has no latent_upsampler/)")
    if args.distilled:
        if args.distilled_lora:
            raise ValueError("--distilled (a distilled checkpoint) refines without the distilled LoRA: drop "
                             "--distilled-lora")
        return
    if not args.distilled_lora:
        raise ValueError(f"{mode} refines with the distilled LoRA: pass --distilled-lora PATH[:STRENGTH], "
                         "or --distilled for a distilled checkpoint")
    spec: LoraSpec = args.distilled_lora
    check_spec_suffix(spec.path, "--distilled-lora", ":", "STRENGTH", LORA_FORM)
    if not os.path.isfile(spec.path):
        raise FileNotFoundError(f"--distilled-lora not found: {spec.path}")
    if not spec.strength > 0:
        raise ValueError(f"--distilled-lora STRENGTH must be a positive number, got {spec.strength:g}")


def apply_preset(args) -> None:
    """Fill the `--preset` recipe's values into the options not given (sizes, frames, frame rate, seed, samplers,
    steps, the guidance dials; `--steps` is the preset's before `check_clip` sets the default). No import.
    Raises ValueError with `--distilled` (the recipe runs the dev checkpoint with the distilled LoRA)."""
    if not getattr(args, "preset", None):
        return
    if args.distilled:
        raise ValueError(f"--preset {args.preset} runs the dev checkpoint with the distilled LoRA: drop --distilled")
    preset = PRESETS[args.preset]
    for dest in _PRESET_DESTS:
        if not was_given(args, dest):
            setattr(args, dest, getattr(preset, dest))
    if not was_given(args, "steps"):
        args.steps = preset.num_inference_steps
    for modality in ("video", "audio"):
        for field in _PRESET_DIALS:
            if not was_given(args, f"{modality}_{field}"):
                setattr(args, f"{modality}_{field}", getattr(preset, modality)[field])


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
            spec = args.distilled_lora
            try:
                pipe.load_distilled_lora(spec.path, strength=spec.strength)
            except ValueError as err:
                raise ValueError(f"--distilled-lora {spec.text}: {err}") from None

    return setup


def two_stage_call(call: dict, args) -> dict:
    """The one-stage call arguments turned into the two-stage pipeline's (`--distilled` selects the recipe
    instead of one-stage distilled sigmas; `--stage-2-sampler` the refinement's sampler, default euler)."""
    call = dict(call)
    call.pop("sigmas", None)
    call["distilled"] = bool(args.distilled)
    call["stage_2_sampler"] = args.stage_2_sampler or "euler"
    if getattr(args, "preset", None):  # `pipe.generate_hq`: the schedule, strengths and audio of the recipe
        spec = args.distilled_lora
        call["num_inference_steps"] = args.steps
        call["distilled_lora_strength"] = spec.strength if spec.text != spec.path else None
    return call
