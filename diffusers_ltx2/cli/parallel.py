"""`ltx2 generate --prompts FILE` and `--parallel passes|sequence|passes+sequence`: one clip on several ranks, or
a prompt list spread over ranks (see `diffusers_ltx2.distributed`).

    torchrun --nproc-per-node 2 -m diffusers_ltx2 generate --model M --prompt "..." --output a.mp4 --parallel passes
    torchrun --nproc-per-node 4 -m diffusers_ltx2 generate --model M --prompts list.txt --output clips/
    ltx2 generate --model M --prompts list.txt --output clips/          # one process, clip after clip

`accelerate launch --num_processes N -m diffusers_ltx2 generate ...` works the same. The options are declared
once (`PARALLEL_OPTIONS`); every check that needs no model and no import runs in the command's check stage
(`check_parallel_arguments`: bad flags, a bad prompt list, a rank count the layout cannot use: one line, exit 2);
rank 0 prints another rank's failure as one line naming that rank and exits 1.
"""

from __future__ import annotations

import os
import sys
from types import SimpleNamespace

from ..distributed.layout import MODES, SEQUENCE_ATTENTION
from .options import Option, number, text, whole
from .timing import say

GROUP = "several ranks / prompt lists (launch with torchrun or accelerate launch)"

PARALLEL_OPTIONS = (
    Option("--prompts", "prompt list: one clip per line ('PROMPT', 'SEED<TAB>PROMPT' or a JSON object with prompt / "
                        "seed / name); --output is then a folder; finished clips are skipped", text, metavar="FILE",
           group=GROUP),
    Option("--parallel", "split one clip over ranks: its guidance passes, its video tokens, or both", choices=MODES,
           group=GROUP),
    Option("--ranks-per-clip", "ranks making one clip", whole(1),
           default_text="all ranks with --parallel, else 1", group=GROUP),
    Option("--sequence-attention", "how video self-attention crosses sequence shards", choices=SEQUENCE_ATTENTION,
           default="auto", group=GROUP),
    Option("--parallel-timeout", "seconds a rank waits for the others before the job ends with an error",
           number(minimum=0.001), default=600.0, group=GROUP),
)


def layout_flags_set(args) -> list[str]:
    """The flags of the options that only shape a multi-rank job (every `PARALLEL_OPTIONS` entry but `--prompts` /
    `--parallel` themselves) whose value is not their default."""
    return [o.flag for o in PARALLEL_OPTIONS
            if o.dest not in ("prompts", "parallel") and getattr(args, o.dest) != o.default]


def uses_ranks(args) -> bool:
    """Whether the command runs through `run_parallel` (a prompt list or a split clip)."""
    return args.prompts is not None or args.parallel is not None


def _check_output_folder(path: str) -> str:
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"--output {path!r} exists and is not a folder; with --prompts it names the output folder")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise FileNotFoundError(f"--output: the output folder's parent does not exist: {parent}")
    return path


def check_parallel_arguments(args, check_clip) -> None:
    """Every check of the parallel options that needs no model, no process group and no heavy import; runs the
    single-clip command's own check `check_clip(args)` too. With `--prompts` that check runs on a copy standing
    for the list's first clip (its prompt, an .mp4 beside the output folder), whose derived values are kept.
    Sets `args.clips` (the prompt list, or None) and `args.layout` (`ParallelLayout`)."""
    from ..distributed.launch import launch_env
    from ..distributed.layout import ParallelLayout
    from ..distributed.prompt_list import read_prompt_list

    args.clips = None
    if args.prompts is not None:
        if args.prompt is not None or args.conditioning is not None:
            raise ValueError("--prompts gives the prompts: drop --prompt / --conditioning")
        if args.audio_only:
            raise ValueError("--prompts writes MP4 clips: --audio-only is not supported with it")
        args.clips = read_prompt_list(args.prompts, default_seed=args.seed)
        _check_output_folder(args.output)
        probe = SimpleNamespace(**vars(args))
        probe.prompt = args.clips[0].prompt
        probe.output = os.path.join(os.path.dirname(os.path.abspath(args.output)), "clip.mp4")
        check_clip(probe)
        vars(args).update({k: v for k, v in vars(probe).items() if k != "output"})  # the stand-in prompt stays
    else:
        check_clip(args)
    if uses_ranks(args) and args.enhance_prompt:
        raise ValueError("--enhance-prompt runs the enhancer on one process: not with --prompts / --parallel")
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
    if args.clips is None and per_clip != world:
        raise ValueError(f"one clip ({'--prompt' if args.prompt else '--conditioning'}) uses every rank: "
                         f"--ranks-per-clip must be {world} (or use --prompts)")
    args.layout = ParallelLayout.from_mode(args.parallel, per_clip, args.sequence_attention)


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
    for entry in texts:
        embeddings, error = None, None
        if runtime.rank == 0:
            try:
                if isinstance(encoder, BaseException):
                    raise encoder
                embeddings = encoder.encode([entry], device=runtime.device)
            except Exception as exc:  # noqa: BLE001 - broadcast to the others
                error = exc
        out = broadcast_embeddings(embeddings, src=0, group=None, runtime=runtime, error=error)
        if entry in keep:
            table[entry] = out
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


def run_parallel(args, timer, *, prepare, call, load) -> int:
    """`ltx2 generate` with `--prompts` and / or `--parallel` (see the module docstring); returns the exit code.
    `prepare(args)`, `call(args)` and `load(args, timer)` are the single-clip command's stages."""
    import torch.distributed as dist

    from ..distributed import DistributedJobError, build_context, enable_parallel, init_distributed

    prepare(args)
    backend = "nccl" if str(args.device).startswith("cuda") else "gloo"
    runtime = init_distributed(backend=backend, timeout_s=args.parallel_timeout, allow_single=args.parallel is None)
    try:
        with runtime.guard("ltx2 generate"):
            return _generate(args, timer, runtime, build_context(runtime, args.layout), call, load, enable_parallel)
    except DistributedJobError as err:
        say(f"ltx2 generate: error (rank {runtime.rank}): {err}", sys.stderr)
        return 1
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _generate(args, timer, runtime, context, call, load, enable_parallel) -> int:
    import torch

    from ..distributed.prompt_list import clips_of_group, output_path
    from .media_args import write_output

    clips = args.clips
    todo = None
    if clips is not None:  # decided before any model loads: a finished list loads nothing
        todo = _plan_list(clips, args, runtime)
        if runtime.rank == 0 and len(todo) < len(clips):
            say(f"{len(clips) - len(todo)} of {len(clips)} clips already in {args.output}: skipped")
        if not todo:
            return 0
    if runtime.backend == "nccl":
        args.device = str(runtime.device)
    args.text_encoder_needed = bool(args.text_encoder_needed) and runtime.rank == 0  # one Gemma for the job
    tag = f"[rank {runtime.rank}] " if runtime.world_size > 1 else ""
    kwargs = call(args)
    pipe = load(args, timer)
    enable_parallel(pipe, context)
    if runtime.rank != 0:
        pipe.set_progress_bar_config(disable=True)
    if todo is None:  # one clip on every rank; rank 0 writes it
        with timer.stage("generate"):
            out = pipe(**kwargs)
        if context.is_clip_leader:
            with timer.stage("write"):
                write_output(out, args)
            say(f"wrote {os.path.abspath(args.output)} ({timer.summary()})")
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
        clip_call = dict(kwargs, prompt=clip.prompt, generator=torch.Generator(device="cpu").manual_seed(clip.seed))
        with timer.stage(f"generate {clip.name}"):
            out = pipe(**clip_call)
        if context.is_clip_leader:
            path = output_path(args.output, clip)
            write_output(out, SimpleNamespace(**{**vars(args), "output": path}))
            say(f"{tag}wrote {os.path.abspath(path)}")
    return 0
