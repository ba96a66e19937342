"""`ltx2 generate --prompts FILE` and `--parallel passes|sequence|passes+sequence`: one clip on several ranks, or
a prompt list spread over ranks (see `diffusers_ltx2.distributed`).

    torchrun --nproc-per-node 2 -m diffusers_ltx2 generate --model M --prompt "..." --output a.mp4 --parallel passes
    torchrun --nproc-per-node 4 -m diffusers_ltx2 generate --model M --prompts list.txt --output clips/
    ltx2 generate --model M --prompts list.txt --output clips/          # one process, clip after clip

`accelerate launch --num_processes N -m diffusers_ltx2 generate ...` works the same. Every check that needs no
model runs first (bad flags, a bad prompt list, a rank count the layout cannot use: one line, exit 2); rank 0
prints another rank's failure as one line naming that rank and exits 1.
"""

from __future__ import annotations

import argparse
import os
import sys

from .common import positive_float, positive_int


def add_parallel_arguments(p) -> None:
    """`--prompts`, `--parallel` and their options."""
    from ..distributed.layout import MODES, SEQUENCE_ATTENTION

    g = p.add_argument_group("several ranks / prompt lists", "launch with torchrun or accelerate launch")
    g.add_argument("--prompts", metavar="FILE",
                   help="prompt list: one clip per line ('PROMPT', 'SEED<TAB>PROMPT' or a JSON object with "
                        "prompt / seed / name); --output is then a folder; finished clips are skipped")
    g.add_argument("--parallel", choices=MODES, default=None,
                   help="split one clip over ranks: its guidance passes, its video tokens, or both")
    g.add_argument("--ranks-per-clip", type=positive_int, default=None,
                   help="ranks making one clip (None: all ranks with --parallel, else 1)")
    g.add_argument("--sequence-attention", choices=SEQUENCE_ATTENTION, default="auto",
                   help="how video self-attention crosses sequence shards")
    g.add_argument("--parallel-timeout", type=positive_float, default=600.0,
                   help="seconds a rank waits for the others before the job ends with an error")


def _check_output_folder(path: str) -> str:
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"--output {path!r} exists and is not a folder; with --prompts it names the output folder")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise FileNotFoundError(f"output folder's parent does not exist: {parent}")
    return path


def check_parallel_arguments(args, check_clip) -> tuple:
    """Every check that needs no model and no process group; returns `(conditions, modalities, clips, layout)`.

    `check_clip(args)` is the single-clip command's own check (conditions, modalities); with `--prompts` it runs
    on a copy standing for the list's first clip."""
    from ..distributed.layout import ParallelLayout
    from ..distributed.prompt_list import read_prompt_list
    from ..distributed.runtime import launch_env

    clips = None
    if args.prompts is not None:
        if args.prompt is not None or args.conditioning is not None:
            raise ValueError("--prompts gives the prompts: drop --prompt / --conditioning")
        if args.audio_only:
            raise ValueError("--prompts writes MP4 clips: --audio-only is not supported with it")
        clips = read_prompt_list(args.prompts, default_seed=args.seed)
        _check_output_folder(args.output)
        probe = argparse.Namespace(**vars(args))
        probe.prompt, probe.output = clips[0].prompt, os.path.join(os.path.dirname(os.path.abspath(args.output)),
                                                                    "clip.mp4")
        conditions, modalities = check_clip(probe)
        for name in ("device", "text_encoder_needed", "_guider"):
            setattr(args, name, getattr(probe, name, None))
    else:
        conditions, modalities = check_clip(args)
    env = launch_env()
    if args.parallel is not None and env is None:
        raise ValueError(f"--parallel {args.parallel} needs several ranks: start with `torchrun --nproc-per-node N "
                         "-m diffusers_ltx2 generate ...` or `accelerate launch --num_processes N ...`")
    world = env.world_size if env is not None else 1
    per_clip = args.ranks_per_clip or (world if args.parallel else 1)
    if per_clip > 1 and args.parallel is None:
        raise ValueError("--ranks-per-clip above 1 needs --parallel to say how a clip is split")
    if world % per_clip:
        raise ValueError(f"--ranks-per-clip {per_clip} does not divide the {world} ranks of the job")
    if clips is None and per_clip != world:
        raise ValueError(f"one clip ({'--prompt' if args.prompt else '--conditioning'}) uses every rank: "
                         f"--ranks-per-clip must be {world} (or use --prompts)")
    layout = ParallelLayout.from_mode(args.parallel, per_clip, args.sequence_attention)
    return conditions, modalities, clips, layout


def _prompt_table(pipe, runtime, texts: list[str], keep: set[str], max_sequence_length) -> dict:
    """Rank 0 encodes every text of `texts` (its Gemma / prompt encoder, then the connectors) and broadcasts it;
    every rank keeps those in `keep` (`{text: PromptEmbeddings}`)."""
    from ..distributed.text import ConnectorOutputEncoder, broadcast_embeddings

    encoder = None
    if runtime.rank == 0:
        try:
            encoder = ConnectorOutputEncoder(type(pipe)._active_prompt_encoder(pipe, max_sequence_length),
                                             pipe.connectors)
        except Exception as exc:  # noqa: BLE001 - broadcast to the others below
            encoder = exc
    table = {}
    for text in texts:
        embeddings, error = None, None
        if runtime.rank == 0:
            try:
                if isinstance(encoder, BaseException):
                    raise encoder
                embeddings = encoder.encode([text], device=runtime.device)
            except Exception as exc:  # noqa: BLE001 - broadcast to the others
                error = exc
        out = broadcast_embeddings(embeddings, src=0, group=None, runtime=runtime, error=error)
        if text in keep:
            table[text] = out
    return table


def _plan_list(clips, args, runtime):
    """Rank 0 decides which clips are left (and makes the folder); every rank gets the same list."""
    import torch.distributed as dist

    from ..distributed.prompt_list import pending_clips

    box = [None]
    if runtime.rank == 0:
        os.makedirs(args.output, exist_ok=True)
        box[0] = pending_clips(clips, args.output)
    if runtime.world_size > 1:
        dist.broadcast_object_list(box, src=0, device=runtime.device)
    return box[0]


def run_parallel(args, check_clip) -> int:
    """`ltx2 generate` with `--prompts` and / or `--parallel` (see the module docstring); returns the exit code."""
    conditions, modalities, clips, layout = check_parallel_arguments(args, check_clip)
    import torch.distributed as dist

    from ..distributed import DistributedJobError, build_context, enable_parallel, init_distributed

    backend = "nccl" if str(args.device).startswith("cuda") else "gloo"
    runtime = init_distributed(backend=backend, timeout_s=args.parallel_timeout, allow_single=args.parallel is None)
    try:
        with runtime.guard("ltx2 generate"):
            return _generate(args, runtime, build_context(runtime, layout), conditions, modalities, clips,
                             enable_parallel)
    except DistributedJobError as err:
        print(f"ltx2 generate: error (rank {runtime.rank}): {err}", file=sys.stderr)
        return 1
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _generate(args, runtime, context, conditions, modalities, clips, enable_parallel) -> int:
    import torch

    from ..distributed.prompt_list import clips_of_group, output_path
    from .common import StageTimer, clip_call_arguments, load_pipeline, parse_dtype
    from .media_args import write_output
    from .two_stage import two_stage_call, two_stage_setup

    todo = None
    if clips is not None:  # decided before any model loads: a finished list loads nothing
        todo = _plan_list(clips, args, runtime)
        if runtime.rank == 0 and len(todo) < len(clips):
            print(f"{len(clips) - len(todo)} of {len(clips)} clips already in {args.output}: skipped", flush=True)
        if not todo:
            return 0
    if runtime.backend == "nccl":
        args.device = str(runtime.device)
    args.text_encoder_needed = bool(args.text_encoder_needed) and runtime.rank == 0  # one Gemma for the job
    tag = f"[rank {runtime.rank}] " if runtime.world_size > 1 else ""
    timer = StageTimer(stream=None if runtime.rank == 0 else open(os.devnull, "w"))  # timings of rank 0
    call = clip_call_arguments(args)
    if args.two_stage:
        from ..pipelines.two_stage import LTX2TwoStagePipeline

        call = two_stage_call(call, args)
        pipe = load_pipeline(LTX2TwoStagePipeline, args, timer, setup=two_stage_setup(args, parse_dtype(args.dtype)))
    else:
        from ..pipelines import LTX2AudioVideoPipeline

        pipe = load_pipeline(LTX2AudioVideoPipeline, args, timer)
    enable_parallel(pipe, context)
    if runtime.rank != 0:
        pipe.set_progress_bar_config(disable=True)
    if conditions:
        call.update(conditions=conditions, output_modalities=modalities)
    if todo is None:  # one clip on every rank; rank 0 writes it
        with timer.stage("generate"):
            out = pipe(**call)
        if context.is_clip_leader:
            with timer.stage("write"):
                write_output(out, args)
            print(f"wrote {os.path.abspath(args.output)} ({timer.summary()})")
        return 0
    mine = clips_of_group(todo, context.clip_index, context.num_clip_groups)
    negatives = []  # what the pipeline may encode as the negative prompt (the one-stage / two-stage default)
    if args.negative_conditioning is None:
        from ..pipelines.two_stage import DEFAULT_NEGATIVE_PROMPT

        negatives = [args.negative_prompt] if args.negative_prompt is not None else ["", DEFAULT_NEGATIVE_PROMPT]
    texts = list(dict.fromkeys([c.prompt for c in todo] + negatives))
    with timer.stage("encode prompts"):
        table = _prompt_table(pipe, runtime, texts, {c.prompt for c in mine} | set(negatives), args.max_sequence_length)
    from ..distributed.text import TablePromptEncoder

    pipe._active_prompt_encoder = lambda max_sequence_length=None: TablePromptEncoder(table)
    for clip in mine:
        clip_call = dict(call, prompt=clip.prompt, generator=torch.Generator(device="cpu").manual_seed(clip.seed))
        with timer.stage(f"generate {clip.name}"):
            out = pipe(**clip_call)
        if context.is_clip_leader:
            path = output_path(args.output, clip)
            write_output(out, argparse.Namespace(output=path, frame_rate=args.frame_rate))
            print(f"{tag}wrote {os.path.abspath(path)}", flush=True)
    return 0
