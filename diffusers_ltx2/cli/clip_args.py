"""The options every generating command shares (model, prompt, output, clip size, sampling, device, guidance,
memory, LoRAs, progress), their checks in the three stages of `cli.command`, loading the pipeline and running it.

`check_clip` needs no heavy import: file paths, the model folder's index, frame count and sizes (with the nearest
valid values), `--distilled` against `--steps`, memory flags, LoRA paths. `prepare_clip` runs before any model
loads: the device exists, the quantization runs there, conditioning files load, the guider builds, the LoRA
files hold LoRA factors, and the `--vram-budget` plan fits (or the command stops).
"""

from __future__ import annotations

import os

from ..rules import frame_count_problem, size_problem
from .common import (
    DTYPE_METAVAR, check_conditioning_file, check_device, check_model_folder, check_output_path, device_name,
    dtype_name, quiet_loading, torch_dtype,
)
from .guidance_args import GUIDANCE_OPTIONS, guidance_passes, guider_from_args
from .lora_args import LORA_OPTION, check_lora_specs, load_loras, read_lora_header
from .memory_args import (
    MEMORY_OPTIONS, apply_memory_settings, check_memory_arguments, memory_settings, prepare_memory_arguments,
)
from .options import Option, number, text, whole
from .settings import FROM_SETTINGS_OPTION
from .timing import say, secondary_rank

#: official LTX-2 steps: 40 guided (dev checkpoints), 8 fixed sigmas (distilled checkpoints)
DEFAULT_STEPS, DISTILLED_STEPS = 40, 8


def clip_options(*, from_input: bool = False, size_help: str = "a multiple of 32, at least 64") -> tuple:
    """The shared options; `from_input`: the clip's frames / size / frame rate default to the `--input` clip's."""
    given = (lambda default: dict(default=None, default_text="from --input")) if from_input else (
        lambda default: dict(default=default))
    return (
        Option("--model", "diffusers-layout LTX-2 folder (`ltx2 convert` output)", text, required=True,
               metavar="PATH"),
        Option("--prompt", "text prompt (or --conditioning)", text, call="prompt"),
        Option("--negative-prompt", "what the clip should not show (the guider's negative passes; default: an "
                                    "empty prompt)", text, call="negative_prompt"),
        Option("--conditioning", "saved conditioning file (`ltx2 encode`) used instead of --prompt", text,
               metavar="PATH"),
        Option("--negative-conditioning", "saved conditioning file for the negative prompt", text, metavar="PATH"),
        Option("--output", "output .mp4 path (.wav / .flac for audio-only output)", text, required=True,
               metavar="PATH"),
        Option("--num-frames", "frames, 8k+1 (121 = 5 s at 24 fps)", whole(1), call="num_frames", **given(121)),
        Option("--height", f"pixels, {size_help}", whole(1), call="height", **given(512)),
        Option("--width", f"pixels, {size_help}", whole(1), call="width", **given(768)),
        Option("--frame-rate", "frames per second", number(0.001, 1000), call="frame_rate", **given(24.0)),
        Option("--steps", "denoising steps", whole(1), default_text=f"{DEFAULT_STEPS}; {DISTILLED_STEPS} with "
                                                                   "--distilled"),
        Option("--distilled", f"distilled checkpoints: the {DISTILLED_STEPS} fixed distilled sigmas", switch=True),
        Option("--seed", "seed of the initial noise", whole(0), default=0),
        Option("--dtype", "model dtype", dtype_name, default="bfloat16", default_text="bf16",
               metavar=DTYPE_METAVAR),
        Option("--device", "torch device: cpu, cuda, cuda:1, mps", device_name,
               default_text="cuda if available, else cpu"),
        Option("--sequential-passes", "run guidance passes one by one (less memory)", switch=True),
        Option("--max-sequence-length", "padded prompt length of the local Gemma", whole(1),
               default_text="1024, or the tokenizer's maximum if smaller", call="max_sequence_length"),
        Option("--no-progress", "no progress bars", switch=True),
        *GUIDANCE_OPTIONS, *MEMORY_OPTIONS, LORA_OPTION, FROM_SETTINGS_OPTION,
    )


def check_frames_and_size(args, size_multiple: int = 32, why: str = "") -> None:
    """`--num-frames` 8k+1 and `--height` / `--width` multiples of `size_multiple` (at least 64), with the
    nearest valid values; `why` says where a larger multiple comes from. Values not known yet (`None`: taken
    from an input clip later) are skipped."""
    problem = frame_count_problem(args.num_frames) if args.num_frames is not None else None
    if problem:
        raise ValueError(f"--num-frames {problem}")
    for flag, value in (("--height", args.height), ("--width", args.width)):
        problem = size_problem(value, size_multiple) if value is not None else None
        if problem:
            raise ValueError(f"{flag} {problem}{why}")


def check_clip(args, *, audio_output: bool = False, size_multiple: int = 32, why: str = "") -> None:
    """Stage-2 checks of the shared options (no heavy import). Sets `args.steps` (40, or 8 with `--distilled`)."""
    if not audio_output:
        check_output_path(args.output)
    if (args.prompt is None) == (args.conditioning is None):
        raise ValueError("pass exactly one of --prompt or --conditioning")
    if args.negative_prompt is not None and args.negative_conditioning is not None:
        raise ValueError("pass at most one of --negative-prompt or --negative-conditioning")
    check_model_folder(args.model, optional=("text_encoder", "tokenizer"))  # those two: once we know they load
    for flag, path in (("--conditioning", args.conditioning), ("--negative-conditioning", args.negative_conditioning)):
        if path is not None and not os.path.isfile(path):
            raise FileNotFoundError(f"{flag}: conditioning file not found: {path}")
    check_frames_and_size(args, size_multiple, why)
    if args.distilled and args.steps not in (None, DISTILLED_STEPS):
        raise ValueError(f"--distilled runs the {DISTILLED_STEPS} fixed distilled sigmas: drop --steps "
                         f"{args.steps} (or drop --distilled for {args.steps} steps of the dev schedule)")
    if args.steps is None:
        args.steps = DISTILLED_STEPS if args.distilled else DEFAULT_STEPS
    check_memory_arguments(args)
    check_lora_specs(args.lora)


def prepare_clip(args) -> None:
    """Stage-3 checks (torch imported, no model loaded). Sets `args.device`, `args.guider`,
    `args.text_encoder_needed` (False when every prompt comes from a conditioning file) and `args.memory` (the
    memory settings, after the `--vram-budget` plan)."""
    from ..quantization import check_quantized_runtime

    args.device = check_device(args.device)
    check_quantized_runtime(args.quantize, args.device, torch_dtype(args.dtype))  # int8 + bf16 on CPU crashes
    prepare_memory_arguments(args)  # the GGUF file's header, the attention backend's package
    for path in (args.conditioning, args.negative_conditioning):
        if path is not None:
            check_conditioning_file(path)
    args.guider = guider_from_args(args)
    negative_from_text = args.negative_prompt is not None or (
        args.negative_conditioning is None and args.guider.uses_negative_prompt)
    args.text_encoder_needed = args.prompt is not None or negative_from_text
    if args.text_encoder_needed:
        check_model_folder(args.model)
    for spec in args.lora:
        read_lora_header(spec.path)
    args.memory = memory_settings(args, guidance_passes(args) if args.vram_budget else 1)
    check_quantized_runtime(args.memory.quantization, args.device, torch_dtype(args.dtype))  # the plan's choice


def load_pipeline(cls, args, timer, setup=None, lora_kwargs: dict | None = None):
    """`cls.from_pretrained(args.model)` in the requested dtype and quantization (without the text encoder when
    no prompt needs it), the `--lora` files (`pipe.load_lora_weights`), optional `setup(pipe)` (IC-LoRAs, the
    upsampler...), then onto the device or offloaded. diffusers' own loading bars are off; one line says what
    loads."""
    settings = args.memory
    extra = {} if args.text_encoder_needed else {"text_encoder": None, "tokenizer": None}
    if settings.gguf_file is not None:
        extra["gguf_file"] = settings.gguf_file
    quiet_loading()
    if not secondary_rank():  # under a launcher, rank 0 speaks for the job
        say(f"loading {args.model} ...")
    with timer.stage("load"):
        pipe = cls.from_pretrained(args.model, dtype=torch_dtype(args.dtype), quantization=settings.quantization,
                                   text_encoder_quantization=settings.text_encoder_quantization, **extra)
        load_loras(pipe, args.lora, **(lora_kwargs or {}))
        if setup is not None:
            setup(pipe)
        apply_memory_settings(pipe, settings, args.device)
    if args.no_progress:
        pipe.set_progress_bar_config(disable=True)
    return pipe


def clip_call(args) -> dict:
    """Keyword arguments of a pipeline call from the shared options (after `prepare_clip`)."""
    import torch

    from ..schedulers import DISTILLED_SIGMAS
    from .options import call_kwargs

    call = call_kwargs(clip_options(), args)
    call.update(
        prompt_embeds=args.conditioning, negative_prompt_embeds=args.negative_conditioning,
        num_inference_steps=args.steps, sigmas=list(DISTILLED_SIGMAS) if args.distilled else None,
        guider=args.guider, max_batch_passes=1 if args.sequential_passes else None,
        generator=torch.Generator(device="cpu").manual_seed(args.seed),
    )
    return call


def conditioned_call(args) -> dict:
    """`clip_call` with the conditions `prepare` built (`args.conditions`): retake and foley."""
    return dict(clip_call(args), conditions=args.conditions)


def load_one_stage(args, timer):
    """`LTX2AudioVideoPipeline` loaded as `args` say (`load_pipeline`)."""
    from ..pipelines import LTX2AudioVideoPipeline

    return load_pipeline(LTX2AudioVideoPipeline, args, timer)


def clip_runner(prepare, call, load, invoke=None):
    """The `run(args, timer)` of a generating command: `prepare(args)`, the call's keyword arguments, `load(args,
    timer)` the pipeline, then `invoke(pipe, args, call)` (default `pipe(**call)`) written by `run_and_write`."""
    def run(args, timer) -> int:
        prepare(args)
        kwargs = call(args)
        pipe = load(args, timer)
        method = None if invoke is None else (lambda **kw: invoke(pipe, args, kw))
        return run_and_write(pipe, args, timer, method=method, **kwargs)

    return run


def run_and_write(pipe, args, timer, method=None, **call) -> int:
    """`pipe(**call)` (or `method(**call)`), the enhanced prompt when the call rewrote it, the result written to
    `--output` (`media_args.write_output`), then where it went and the timings, the total counted from the start
    of the process. Returns 0."""
    from .media_args import write_output

    with timer.stage("generate"):
        out = (method or pipe)(**call)
    if getattr(out, "enhanced_prompts", None):  # --enhance-prompt: what the clip was generated from
        print(f"enhanced prompt: {out.enhanced_prompts[0]}", flush=True)
    with timer.stage("write"):
        write_output(out, args)
    print(f"wrote {os.path.abspath(args.output)} ({timer.summary()})", flush=True)
    return 0
