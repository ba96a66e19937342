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

import argparse
import json
import os
import sys
from pathlib import Path

from ..json_files import read_json
from .common import check_model_folder, non_negative_int, positive_float, positive_int


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``preprocess`` subcommand."""
    parser = subparsers.add_parser(
        "preprocess", help="encode videos + captions into a training dataset (latents, conditions, references)",
        description="Encode a video dataset once so `ltx2 train` needs neither the VAE nor Gemma. Resumable; "
                    "bad clips are reported and skipped.",
    )
    parser.add_argument("source", help="folder of videos + .txt captions, or a .csv / .jsonl")
    parser.add_argument("--model", required=True,
                        help="pipeline folder (vae/, connectors/, text_encoder/, tokenizer/) or factory:tiny")
    parser.add_argument("--output", "-o", required=True, help="dataset root to write")
    parser.add_argument("--height", type=int, required=True)
    parser.add_argument("--width", type=int, required=True)
    parser.add_argument("--num-frames", type=int, required=True, help="frames per clip (8k + 1)")
    parser.add_argument("--frame-rate", type=float, default=24.0)
    parser.add_argument("--reference-downscale-factor", type=int,
                        help="make IC-LoRA references at (height / f, width / f)")
    parser.add_argument("--control", action="append", default=[],
                        help="control type for the references: canny, depth=MODEL_PATH, pose=MODEL_PATH; "
                             "repeat for a union dataset")
    parser.add_argument("--with-audio", action="store_true",
                        help="also encode each clip's audio track (the frames' time window) into audio_latents/; "
                             "the videos must run at --frame-rate")
    parser.add_argument("--missing-audio", choices=("skip", "video_only"), default="skip",
                        help="--with-audio, a clip without a usable audio track: skip it (default) or keep it "
                             "without audio latents; both are listed in the report")
    prompts = parser.add_argument_group("prompt encoding (as `ltx2 encode`)")
    prompts.add_argument("--api", action="store_true",
                         help="encode captions with the LTX API (key from LTX_API_KEY) instead of a local Gemma")
    prompts.add_argument("--model-id", help="--api: the model id, instead of reading it from --model")
    prompts.add_argument("--enhance-prompt", action="store_true", help="--api: let the API enhance the captions")
    prompts.add_argument("--base-url", default=None, help="--api: API root (https; default: the LTX API)")
    prompts.add_argument("--timeout", type=positive_float, default=60.0, help="--api: seconds per request")
    prompts.add_argument("--retries", type=non_negative_int, default=3, help="--api: retries on 429/5xx/timeouts")
    prompts.add_argument("--cache-dir", help="reuse/store per-caption embeddings in this folder")
    prompts.add_argument("--max-sequence-length", type=positive_int,
                         help="local: padded caption length (default: 1024, or the tokenizer's maximum if smaller, "
                              "as the pipeline does)")
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(func=run)
    return parser


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


def _check_args(args) -> None:
    """Everything checkable before a model loads or the API is called (`ValueError` / `FileNotFoundError`): the
    library's `check_preprocess_arguments` (sizes, frame count and rate, reference factor, an output made with
    other settings), then the flags' combinations."""
    from ..training.preprocess import check_preprocess_arguments

    if args.control and args.reference_downscale_factor is None:
        raise ValueError("--control needs --reference-downscale-factor")
    check_preprocess_arguments(height=args.height, width=args.width, num_frames=args.num_frames,
                               frame_rate=args.frame_rate, reference_downscale_factor=args.reference_downscale_factor,
                               control_types=[c.partition("=")[0] for c in args.control] or None,
                               missing_audio=args.missing_audio, output=args.output)
    if args.missing_audio != "skip" and not args.with_audio:
        raise ValueError("--missing-audio applies with --with-audio only")
    if args.cache_dir is not None and os.path.exists(args.cache_dir) and not os.path.isdir(args.cache_dir):
        raise ValueError(f"--cache-dir {args.cache_dir} is a file, not a folder")
    if not args.model.startswith("factory:"):  # with --api, Gemma is neither needed nor loaded
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


def run(args) -> int:
    from ..loaders.api import LTXAPIError
    from ..loaders.cache import CachedPromptEncoder
    from ..loaders.identity import context_dims
    from ..training.preprocess import find_clips, preprocess_dataset

    _check_args(args)
    clips = find_clips(args.source)
    api = _api_encoder(args) if args.api else None
    types, preprocessors = _controls(args.control)
    pipe = _pipeline(args.model, args.model_id, with_gemma=not args.api)
    if api is not None:
        api.video_dim, api.audio_dim = context_dims(pipe.transformer)
    encoder = api or _local_encoder(pipe, args.max_sequence_length)
    if args.cache_dir:
        encoder = CachedPromptEncoder(encoder, args.cache_dir)
    try:
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
    return 0
