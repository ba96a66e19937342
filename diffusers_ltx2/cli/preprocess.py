"""``ltx2 preprocess``: videos + captions -> latents / conditions / reference latents for ``ltx2 train``.

Examples::

    ltx2 preprocess clips/ --model ./ltx2-pipeline --output data/ --height 512 --width 768 --num-frames 121
    ltx2 preprocess clips.csv --model ./ltx2-pipeline --output data/ --height 512 --width 768 --num-frames 121 \\
        --reference-downscale-factor 2 --control canny --control depth=./depth-anything

    LTX_API_KEY=... ltx2 preprocess clips/ --model ./ltx2-pipeline --output data/ --height 512 --width 768 \\
        --num-frames 121 --with-audio --api --cache-dir prompt-cache/

Captions: a folder with ``<clip>.txt`` next to each video, or a CSV / JSONL with ``video``, ``caption`` (and
optionally ``control_type``). Prompts are encoded by the pipeline's Gemma, or by the LTX API with ``--api`` (the
flags of ``ltx2 encode``); ``--cache-dir`` keeps the embeddings per prompt. ``--with-audio`` also encodes each
clip's audio track into ``audio_latents/`` (for ``text_to_video`` with ``with_audio: true``).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from ..json_files import read_json
from ..rules import frame_count_problem, size_problem
from .command import Command
from .common import check_model_folder
from .options import Option, number, text, whole

CONTROL_TYPES = ("canny", "depth", "pose")
PROMPTS = "prompt encoding (as `ltx2 encode`)"

OPTIONS = (
    Option("source", "folder of videos + .txt captions, or a .csv / .jsonl", text),
    Option("--model", "pipeline folder (vae/, connectors/, text_encoder/, tokenizer/) or factory:tiny", text,
           required=True, metavar="PATH"),
    Option("--output", "dataset root to write", text, required=True, metavar="PATH", aliases=("-o",)),
    Option("--height", "clip height in pixels: a multiple of 32 (of 32 x --reference-downscale-factor)", whole(1),
           required=True),
    Option("--width", "clip width in pixels: a multiple of 32 (of 32 x --reference-downscale-factor)", whole(1),
           required=True),
    Option("--num-frames", "frames per clip, 8k+1 (shorter clips are skipped)", whole(1), required=True),
    Option("--frame-rate", "frames per second stored with each clip (with --with-audio the videos must run at it)",
           number(0.001, 1000), default=24.0),
    Option("--reference-downscale-factor", "make IC-LoRA references at (height / f, width / f)", whole(1)),
    Option("--control", "control type of the references: canny, depth=MODEL_PATH, pose=MODEL_PATH; repeat for a "
                        "union dataset", text, repeat=True, metavar="TYPE[=MODEL_PATH]"),
    Option("--with-audio", "also encode each clip's audio track (the frames' time window) into audio_latents/",
           switch=True),
    Option("--missing-audio", "with --with-audio, a clip without a usable audio track: skip it or keep it without "
                              "audio latents; both are listed in the report", choices=("skip", "video_only"),
           default="skip"),
    Option("--api", "encode captions with the LTX API (key from LTX_API_KEY) instead of a local Gemma", switch=True,
           group=PROMPTS),
    Option("--model-id", "--api: the model id, instead of reading it from --model", text, group=PROMPTS),
    Option("--enhance-prompt", "--api: let the API enhance the captions", switch=True, group=PROMPTS),
    Option("--base-url", "--api: API root (https)", text, default_text="the LTX API", group=PROMPTS),
    Option("--timeout", "--api: seconds per request", number(above=0), default=60.0, group=PROMPTS),
    Option("--retries", "--api: retries on 429/5xx/timeouts", whole(0), default=3, group=PROMPTS),
    Option("--cache-dir", "reuse/store per-caption embeddings in this folder", text, metavar="PATH", group=PROMPTS),
    Option("--max-sequence-length", "local: padded caption length", whole(1),
           default_text="1024, or the tokenizer's maximum if smaller, as the pipeline does", group=PROMPTS),
    Option("--no-progress", "no progress bar", switch=True),
)


def _controls(specs: list[str]):
    from ..control import get_preprocessor

    types, preprocessors = [], {}
    for spec in specs:
        name, _, path = spec.partition("=")
        if name in types:
            raise ValueError(f"--control {name} given twice")
        types.append(name)
        preprocessors[name] = get_preprocessor(name, path or None)
    return types, preprocessors


def _pipeline(model: str, model_identity: str | None = None, with_gemma: bool = True):
    """The pipeline of `--model` (without Gemma unless `with_gemma`); a factory model stands in for the model
    `model_identity` (`--model-id`)."""
    from .. import LTX2ICLoRAPipeline

    if model.startswith("factory:"):
        from ..factory import SMALL, TINY, build_components
        from ..schedulers import LTX2Scheduler

        parts = model.split(":")
        size = {"tiny": TINY, "small": SMALL}.get(parts[1])
        if size is None:
            raise ValueError("factory models are factory:tiny or factory:small")
        return LTX2ICLoRAPipeline(scheduler=LTX2Scheduler(), model_identity=model_identity,
                                  **build_components(size, int(parts[2]) if len(parts) > 2 else 0))
    without = {} if with_gemma else {"text_encoder": None, "tokenizer": None}
    return LTX2ICLoRAPipeline.from_pretrained(model, **without)


def check(args) -> None:
    """Everything checkable before an import, a model loads or the API is called (`ValueError` /
    `FileNotFoundError` naming the flag, with the nearest valid values)."""
    if not os.path.exists(args.source):
        raise FileNotFoundError(f"dataset source not found: {args.source}")
    if os.path.exists(args.output) and not os.path.isdir(args.output):
        raise ValueError(f"--output {args.output} is a file, not a folder")
    factor = args.reference_downscale_factor
    unit = 32 * (factor or 1)
    why = f" (32 x --reference-downscale-factor {factor})" if factor and factor > 1 else ""
    for flag, value in (("--height", args.height), ("--width", args.width)):
        problem = size_problem(value, unit, minimum=unit)
        if problem:
            raise ValueError(f"{flag} {problem}{why}")
    problem = frame_count_problem(args.num_frames)
    if problem:
        raise ValueError(f"--num-frames {problem}")
    names = []
    for spec in args.control:
        name, _, path = spec.partition("=")
        if name not in CONTROL_TYPES:
            raise ValueError(f"--control {spec}: unknown control type {name!r} (choose from "
                             f"{', '.join(CONTROL_TYPES)})")
        if name in names:
            raise ValueError(f"--control {name} given twice")
        if name in ("depth", "pose") and not path:
            raise ValueError(f"--control {name} needs its model: --control {name}=MODEL_PATH")
        if path and not os.path.isdir(path):
            raise FileNotFoundError(f"--control {spec}: model folder not found: {path}")
        names.append(name)
    if args.control and factor is None:
        raise ValueError("--control needs --reference-downscale-factor")
    if args.missing_audio != "skip" and not args.with_audio:
        raise ValueError("--missing-audio applies with --with-audio only")
    if args.cache_dir is not None and os.path.exists(args.cache_dir) and not os.path.isdir(args.cache_dir):
        raise ValueError(f"--cache-dir {args.cache_dir} is a file, not a folder")
    if args.model.startswith("factory:"):
        if args.model.split(":")[1] not in ("tiny", "small"):
            raise ValueError("--model: factory models are factory:tiny or factory:small")
    else:  # with --api, Gemma is neither needed nor loaded
        check_model_folder(args.model, optional=("text_encoder", "tokenizer") if args.api else ())
    if args.api:
        if args.max_sequence_length is not None:
            raise ValueError("--max-sequence-length applies to local encoding only (the LTX API sets its own)")
    else:
        for flag in ("model_id", "base_url"):
            if getattr(args, flag) is not None:
                raise ValueError(f"--{flag.replace('_', '-')} applies with --api only")
        if args.enhance_prompt:
            raise ValueError("--enhance-prompt applies with --api only")


def prepare(args) -> None:
    """The checks needing torch, before any model loads or the API is called: the library's
    `check_preprocess_arguments` (as `preprocess_dataset` takes them), which also refuses an `--output` already
    holding clips made with other settings (size, frame count, frame rate, reference factor; read from their
    files' headers)."""
    from ..training.preprocess import check_preprocess_arguments

    check_preprocess_arguments(height=args.height, width=args.width, num_frames=args.num_frames,
                               frame_rate=args.frame_rate, reference_downscale_factor=args.reference_downscale_factor,
                               control_types=[c.partition("=")[0] for c in args.control] or None,
                               missing_audio=args.missing_audio, output=args.output)


def _recorded_model_id(folder: str) -> str | None:
    try:
        return read_json(Path(folder) / "model_index.json").get("model_identity") or None
    except (OSError, ValueError, AttributeError):
        return None


def _api_encoder(args):
    """The LTX API encoder, built (key, model id, base URL checked) before any model loads; its context widths
    are set from the loaded pipeline."""
    from ..loaders.api import DEFAULT_BASE_URL, LTXAPIPromptEncoder
    from ..loaders.identity import read_model_id

    model_id = args.model_id
    if model_id is None:
        if args.model.startswith("factory:"):
            raise ValueError("--api with a factory model needs --model-id")
        # the pipeline folder's recorded model id, else the checkpoint metadata (ValueError when neither)
        model_id = _recorded_model_id(args.model) or read_model_id(args.model)
    return LTXAPIPromptEncoder(model_id=model_id, enhance_prompt=args.enhance_prompt,
                               base_url=args.base_url or DEFAULT_BASE_URL, timeout=args.timeout, retries=args.retries)


def _local_encoder(pipe, max_sequence_length: int | None):
    """The pipeline's Gemma with its connectors (connector-stage embeddings carrying the connectors' fingerprint),
    built as `ltx2 encode` builds its local encoder."""
    from ..loaders.gemma import DEFAULT_MAX_SEQUENCE_LENGTH, GemmaPromptEncoder
    from ..loaders.identity import connector_fingerprint

    if pipe.text_encoder is None or pipe.tokenizer is None:
        raise ValueError(f"{pipe.__class__.__name__} has no local text encoder (tokenizer/, text_encoder/): "
                         "encode the captions with --api")
    length = max_sequence_length or min(DEFAULT_MAX_SEQUENCE_LENGTH, int(pipe.tokenizer.model_max_length))
    return GemmaPromptEncoder(pipe.tokenizer, pipe.text_encoder, pipe.connectors,
                              model_identity=connector_fingerprint(pipe.connectors), max_sequence_length=length)


def run(args, timer) -> int:
    from ..loaders.api import LTXAPIError
    from ..loaders.cache import CachedPromptEncoder
    from ..loaders.identity import context_dims
    from ..training.preprocess import find_clips, preprocess_dataset
    from .common import quiet_loading

    prepare(args)
    clips = find_clips(args.source)
    api = _api_encoder(args) if args.api else None
    types, preprocessors = _controls(args.control)
    quiet_loading()
    with timer.stage("load"):
        pipe = _pipeline(args.model, args.model_id, with_gemma=not args.api)
    if api is not None:
        api.video_dim, api.audio_dim = context_dims(pipe.transformer)
    encoder = api or _local_encoder(pipe, args.max_sequence_length)
    if args.cache_dir:
        encoder = CachedPromptEncoder(encoder, args.cache_dir)
    try:
        with timer.stage("preprocess"):
            report = preprocess_dataset(
                pipe, clips, args.output, height=args.height, width=args.width, num_frames=args.num_frames,
                frame_rate=args.frame_rate, prompt_encoder=encoder,
                reference_downscale_factor=args.reference_downscale_factor,
                control_types=types or None, preprocessors=preprocessors, with_audio=args.with_audio,
                missing_audio=args.missing_audio, progress=not args.no_progress,
            )
    except LTXAPIError as err:
        print(f"ltx2 preprocess: error: {err}", file=sys.stderr)
        return 1
    print(json.dumps(report.to_json()))
    if not report.written and not report.existing:
        reasons = "; ".join(f"{name}: {reason}" for name, reason in report.skipped[:3])
        raise ValueError(f"no clip was encoded: all {len(report.skipped)} were skipped ({reasons}"
                         f"{'; ...' if len(report.skipped) > 3 else ''}); `ltx2 train` would find no data")
    print(f"dataset written to {os.path.abspath(args.output)}: {len(report.written)} clip(s) encoded, "
          f"{len(report.existing)} already there, {len(report.skipped)} skipped ({timer.summary()})")
    return 0


COMMAND = Command(
    "preprocess", "encode videos + captions into a training dataset (latents, conditions, references)", OPTIONS, run,
    check=check, prepare=prepare,
    description="Encode a video dataset once so `ltx2 train` needs neither the VAE nor Gemma. Resumable; bad clips "
                "are reported and skipped.")
add_parser = COMMAND.add_to
