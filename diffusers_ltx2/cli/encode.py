"""``ltx2 encode``: turn prompts into a conditioning file, with local Gemma or the LTX API.

Examples::

    ltx2 encode --prompt "a red fox in the snow" --output fox.safetensors --model ./ltx2-pipeline
    LTX_API_KEY=... ltx2 encode --api --model ltx-2-19b-dev.safetensors --prompt "..." --output fox.safetensors

The file loads with ``load_conditioning`` / the pipeline's ``prompt_embeds=`` and, for connector outputs,
with ComfyUI's ``LTXVLoadConditioning`` node.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ..json_files import read_json
from .command import Command
from .common import DTYPE_METAVAR, check_device, check_output_path, device_name, dtype_name
from .options import Option, number, text, whole

OPTIONS = (
    Option("--prompt", "prompt to encode; repeat for a batch", text, repeat=True, required=True),
    Option("--output", "conditioning file to write (.safetensors)", text, required=True, metavar="PATH",
           aliases=("-o",)),
    Option("--api", "encode with the LTX API (key from LTX_API_KEY) instead of a local Gemma", switch=True),
    Option("--model", "local: pipeline folder with tokenizer/, text_encoder/, connectors/. --api: checkpoint file or "
                      "folder to read the model id (and widths) from", text, metavar="PATH"),
    Option("--model-id", "--api: the model id, instead of reading it from --model", text),
    Option("--enhance-prompt", "--api: let the API enhance the prompt", switch=True),
    Option("--base-url", "--api: API root (https)", text, default_text="the LTX API"),
    Option("--timeout", "--api: seconds per request", number(above=0), default=60.0),
    Option("--retries", "--api: retries on 429/5xx/timeouts", whole(0), default=3),
    Option("--video-dim", "--api: video context width", whole(1), default_text="from the model"),
    Option("--audio-dim", "--api: audio context width", whole(1), default_text="from the model"),
    Option("--dtype", "store the embeddings in this dtype", dtype_name, metavar=DTYPE_METAVAR,
           default_text="as encoded"),
    Option("--cache-dir", "reuse/store per-prompt embeddings in this folder", text, metavar="PATH"),
    Option("--device", "local: device for Gemma and the connectors", device_name, default_text="cpu"),
    Option("--max-sequence-length", "local: padded prompt length", whole(1),
           default_text="1024, or the tokenizer's maximum if smaller, as the pipeline does"),
)


def _connectors_config(model: Path | None) -> dict | None:
    if model is None or not model.is_dir():
        return None
    config = model / "connectors" / "config.json"
    if not config.is_file():
        return None
    return read_json(config)


def _api_encoder(args):
    from ..loaders.api import DEFAULT_BASE_URL, LTXAPIPromptEncoder
    from ..loaders.identity import context_dims, read_model_id

    model = Path(args.model) if args.model else None
    model_id = args.model_id or (read_model_id(model) if model is not None else None)
    if not model_id:
        raise ValueError("--api needs --model (a checkpoint carrying the model id) or --model-id")
    video_dim, audio_dim = args.video_dim, args.audio_dim
    config = _connectors_config(model)
    if config is not None and video_dim is None and audio_dim is None:
        video_dim, audio_dim = context_dims(config)
    return LTXAPIPromptEncoder(
        model_id=model_id, enhance_prompt=args.enhance_prompt, base_url=args.base_url or DEFAULT_BASE_URL,
        timeout=args.timeout, retries=args.retries, video_dim=video_dim, audio_dim=audio_dim,
    )


def _local_encoder(args):
    import torch
    import transformers
    from diffusers.pipelines.ltx2 import LTX2TextConnectors

    from ..loaders.gemma import DEFAULT_MAX_SEQUENCE_LENGTH, GemmaPromptEncoder
    from ..loaders.identity import connector_fingerprint

    model = Path(args.model)  # checked by _check_args
    device = torch.device(args.device)
    tokenizer = transformers.AutoTokenizer.from_pretrained(model / "tokenizer")
    config = transformers.AutoConfig.from_pretrained(model / "text_encoder")
    architecture = (getattr(config, "architectures", None) or ["Gemma3ForConditionalGeneration"])[0]
    model_class = getattr(transformers, architecture, transformers.Gemma3ForConditionalGeneration)
    text_encoder = model_class.from_pretrained(model / "text_encoder").to(device).eval()
    connectors = LTX2TextConnectors.from_pretrained(model / "connectors").to(device).eval()
    length = args.max_sequence_length or min(DEFAULT_MAX_SEQUENCE_LENGTH, int(tokenizer.model_max_length))
    return GemmaPromptEncoder(
        tokenizer, text_encoder, connectors, model_identity=connector_fingerprint(connectors),
        max_sequence_length=length,
    )


def check(args) -> None:
    """Everything checkable before an import, Gemma loads or the API is called (`ValueError` /
    `FileNotFoundError`)."""
    check_output_path(args.output, suffix=".safetensors")
    if args.cache_dir is not None and os.path.exists(args.cache_dir) and not os.path.isdir(args.cache_dir):
        raise ValueError(f"--cache-dir {args.cache_dir} is a file, not a folder")
    if args.api:
        if args.model is not None and not Path(args.model).exists():
            raise FileNotFoundError(f"--model not found: {args.model}")
        if args.device is not None:
            raise ValueError("--device applies to local encoding only (the LTX API runs remotely)")
    else:
        if not args.model:
            raise ValueError("local encoding needs --model (a pipeline folder with tokenizer/, text_encoder/, "
                             "connectors/); or use --api")
        model = Path(args.model)
        if not model.is_dir():
            raise FileNotFoundError(f"--model: model folder not found: {model}")
        missing = [sub for sub in ("tokenizer", "text_encoder", "connectors") if not (model / sub).is_dir()]
        if missing:
            raise ValueError(f"--model {model} is not a pipeline folder with a local text encoder: missing "
                             f"{', '.join(m + '/' for m in missing)} (encode with --api, or convert with --gemma)")


def run(args, timer) -> int:
    """Encode ``args.prompt`` and write ``args.output``; returns the exit code."""
    import torch

    from ..loaders.api import LTXAPIError
    from ..loaders.cache import CachedPromptEncoder
    from ..loaders.conditioning_file import save_conditioning
    from ..loaders.identity import short_identity

    if not args.api:
        args.device = check_device(args.device or "cpu")
    try:
        with timer.stage("load"):
            encoder = _api_encoder(args) if args.api else _local_encoder(args)
        kind = encoder.kind
        if args.cache_dir:
            encoder = CachedPromptEncoder(encoder, args.cache_dir)
        with timer.stage("encode"):
            embeddings = encoder.encode(list(args.prompt))
    except LTXAPIError as err:
        print(f"ltx2 encode: error: {err}", file=sys.stderr)
        return 1
    prompt = args.prompt[0] if len(args.prompt) == 1 else list(args.prompt)
    dtype = getattr(torch, args.dtype) if args.dtype else None
    path = save_conditioning(args.output, embeddings, dtype=dtype, prompt=prompt, encoder=kind)
    widths = f"video {embeddings.video_context.shape[-1]}"
    if embeddings.audio_context is not None:
        widths += f" + audio {embeddings.audio_context.shape[-1]}"
    print(
        f"wrote {path}: {embeddings.batch_size} prompt(s), {embeddings.video_context.shape[1]} tokens, {widths} "
        f"({embeddings.stage}), model {short_identity(embeddings.model_identity)} ({timer.summary()})"
    )
    return 0


COMMAND = Command("encode", "encode prompts into a conditioning file (local Gemma or the LTX API)", OPTIONS, run,
                  check=check, description="Encode prompts once and save the conditioning, so generation can run "
                                           "without Gemma.", loading="PyTorch and transformers",
                  imports=("torch", "transformers", "diffusers"))
add_parser = COMMAND.add_to
