"""`ltx2 ui`: a local web app (Gradio) over every mode, on a model folder or, without one, the tiny random-weight
demo model. Jobs run through the same argument layer and pipeline calls as the other commands (`diffusers_ltx2.ui`).

Needs the `ui` extra: `pip install "diffusers-ltx2[ui]"`. Bound to 127.0.0.1 unless `--host` says otherwise;
no analytics, no CDN, no hub: the page works offline.
"""

from __future__ import annotations

import importlib.util
import os

from ..cli.command import Command
from ..cli.common import check_model_folder
from ..cli.options import Option, text, whole

OPTIONS = (
    Option("--model", "diffusers-layout LTX-2 folder (`ltx2 convert` output)", text, metavar="PATH",
           default_text="the tiny random-weight demo model"),
    Option("--host", "address to listen on (0.0.0.0: every interface, reachable from the network)", text,
           default="127.0.0.1"),
    Option("--port", "port to listen on", whole(1, 65535), default=7860),
    Option("--output-dir", "folder for the outputs and their settings files (created if missing); the only "
                           "folder the server serves files from", text, default="ltx2-outputs", metavar="PATH"),
    Option("--lora-dir", "folder of LoRA .safetensors files offered in the page", text, metavar="PATH",
           default_text="the demo's LoRAs with the demo model, else none"),
    Option("--max-upload-mb", "largest upload accepted, in MB", whole(1), default=500),
    Option("--api-model-id", "LTX API model id for prompts encoded with the LTX API (key from LTX_API_KEY)", text,
           default_text="read from --model"),
    Option("--api-base-url", "LTX API root (https; http only on loopback)", text, default_text="the LTX API"),
    Option("--demo-dir", "where the demo model is built", text, metavar="PATH",
           default_text="$XDG_CACHE_HOME/diffusers-ltx2"),
)


def check(args) -> None:
    """Everything checkable without importing torch or gradio."""
    if importlib.util.find_spec("gradio") is None:
        raise ValueError('ltx2 ui needs gradio: pip install "diffusers-ltx2[ui]"')
    if not args.host.strip() or any(c.isspace() for c in args.host):
        raise ValueError(f"--host: not an address: {args.host!r}")
    if args.model is not None:
        check_model_folder(args.model, optional=("text_encoder", "tokenizer"))
    if args.lora_dir is not None and not os.path.isdir(args.lora_dir):
        raise FileNotFoundError(f"--lora-dir: folder not found: {args.lora_dir}")
    if os.path.exists(args.output_dir) and not os.path.isdir(args.output_dir):
        raise ValueError(f"--output-dir {args.output_dir} is a file, not a folder")
    parent = os.path.dirname(os.path.abspath(args.output_dir))
    if not os.path.isdir(parent):
        raise FileNotFoundError(f"--output-dir: parent folder does not exist: {parent}")


def run(args, timer) -> int:
    """Build the demo model if needed, start the queue and the server; serves until interrupted."""
    output_dir = os.path.abspath(args.output_dir)
    os.makedirs(output_dir, exist_ok=True)
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before gradio is imported: no calls home
    os.environ["GRADIO_TEMP_DIR"] = os.path.join(output_dir, ".uploads")  # uploads inside the served folder
    from .app import AppContext, build_app
    from .jobs import JobQueue
    from .planner import detect_device
    from .server import make_app, serve

    model, lora_dir, upsampler = args.model, args.lora_dir, None
    if model is None:
        from .demo_model import ensure_demo_model

        with timer.stage("demo model"):
            paths = ensure_demo_model(os.path.join(args.demo_dir, "ui-demo") if args.demo_dir else None)
        model, lora_dir, upsampler = paths["model"], lora_dir or paths["loras"], paths["upsampler"]
        print(f"ltx2 ui: no --model: the tiny demo model with RANDOM weights ({model}); clips will be noise")
    api = {k: v for k, v in (("model_id", args.api_model_id), ("base_url", args.api_base_url)) if v}
    ctx = AppContext(model=os.path.abspath(model), queue=JobQueue(output_dir), demo=args.model is None,
                     lora_dir=lora_dir, max_upload_bytes=args.max_upload_mb * 1000**2, api=api, upsampler=upsampler,
                     device=detect_device())
    import gradio as gr

    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "monospace"])  # no web fonts: works offline
    from .app import CSS

    app = make_app(build_app(ctx), output_dir, max_file_size=ctx.max_upload_bytes, theme=theme, css=CSS)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"ltx2 ui: listening on {args.host}: anyone who can reach this machine can use the app")
    print(f"ltx2 ui: http://{args.host}:{args.port}/ (outputs in {output_dir}); Ctrl-C to stop", flush=True)
    try:
        serve(app, args.host, args.port).run()
    finally:
        ctx.queue.close(timeout=5)
    return 0


COMMAND = Command("ui", "a local web app over every mode (Gradio)", OPTIONS, run, check=check,
                  loading="PyTorch and diffusers")
add_parser = COMMAND.add_to
