"""The Gradio page of `ltx2 ui`: a tab per mode, the shared panels (clip, prompt source, guidance, LoRAs, memory
and format), the queue with progress and cancel, and the gallery.

The page only collects values: `modes.job_request` turns a form into the arguments of an `ltx2` command, the
`JobQueue` checks them with the command's own argument layer and runs them. Uploads are checked on arrival and
again when queued (`uploads.check_upload`); every error is one line in the page (`#ltx2-message`), never a
traceback.
"""

from __future__ import annotations

import html
import os
import traceback
from dataclasses import dataclass, field

from .. import cli
from ..cli.sampling_args import SAMPLER_NAMES
from ..memory_modes import OFFLOAD_MODES, QUANTIZATION_MODES, TEXT_ENCODER_QUANTIZATION_MODES
from . import modes as M
from .jobs import JobQueue
from .render import file_url, render_gallery, render_queue
from .uploads import KINDS, check_upload

CSS = """
.ltx2-warning {background: #fff3cd; color: #5c4400; border: 1px solid #e0c060; padding: 6px 10px; border-radius: 6px}
.ltx2-error {color: #a00000; font-weight: 600}
.ltx2-ok {color: #1b5e20}
#ltx2-gallery {display: flex; flex-wrap: wrap; gap: 10px}
#ltx2-gallery video {width: 256px; max-height: 256px; background: #000}
#ltx2-queue table {width: 100%} #ltx2-queue progress {width: 120px}
.ltx2-steps {white-space: normal; font-size: 11px}
"""

#: upload fields -> (kind, the flag it becomes)
UPLOADS = {"keyframes": ("image", "--image"), "audio": ("audio", "--audio"), "input": ("video", "--input"),
           "control_video": ("video", "--control-video"), "conditioning": ("conditioning", "--conditioning")}


@dataclass
class AppContext:
    """What the page works on: the model folder (and whether it is the random demo), the LoRA folder, the queue,
    the upload limit, the LTX API settings (`ltx2 encode` values; the key stays in the environment)."""

    model: str
    queue: JobQueue
    demo: bool = False
    lora_dir: str | None = None
    max_upload_bytes: int = 500 * 1000**2
    api: dict = field(default_factory=dict)
    upsampler: str | None = None
    device: tuple = ("cpu", None, "")


def _message(text: str, error: bool = True) -> str:
    kind = "ltx2-error" if error else "ltx2-ok"
    prefix = "Error: " if error else ""
    return f'<div id="ltx2-message-text" class="{kind}">{prefix}{html.escape(text)}</div>'


def _user_error(err: BaseException) -> str | None:
    return cli.describe_error(err) if isinstance(err, cli._user_errors()) else None


def _checked(fn):
    """Run a page action; a user error becomes the page's message, anything else a one-line internal error (the
    traceback goes to the server log only)."""
    def wrapper(*args):
        try:
            return fn(*args)
        except Exception as err:  # noqa: BLE001 - shown in the page as one line
            text = _user_error(err)
            if text is None:
                traceback.print_exc()
                text = f"internal error ({type(err).__name__}); see the server log"
            return _message(text)

    return wrapper


def build_app(ctx: AppContext):
    """The `gr.Blocks` page over `ctx`."""
    import gradio as gr

    demo, dev = ctx.demo, ctx.device
    loras = ["", *M.list_loras(ctx.lora_dir)]
    shared: dict = {}
    with gr.Blocks(title="LTX-2 · diffusers-ltx2", analytics_enabled=False) as blocks:
        gr.HTML("<h2>LTX-2 audio + video (diffusers-ltx2)</h2>")
        if demo:
            gr.HTML('<div id="ltx2-model" class="ltx2-warning"><b>Tiny demo model: RANDOM WEIGHTS.</b> Clips are '
                    "coloured noise with hiss; it shows every mode works. Start <code>ltx2 ui --model FOLDER</code> "
                    "on a converted checkpoint for real clips.</div>")
        else:
            gr.HTML(f'<div id="ltx2-model">Model: <code>{html.escape(ctx.model)}</code></div>')
        key_set = bool(os.environ.get("LTX_API_KEY", "").strip())
        key_text = ("set in the environment (LTX_API_KEY)" if key_set else
                    "not set (set LTX_API_KEY before starting to encode prompts with the LTX API)")
        gr.HTML(f'<div id="ltx2-api">LTX API key: {key_text}</div>')
        with gr.Row():
            with gr.Column(scale=3):
                shared["prompt"] = gr.Textbox(label="Prompt", lines=3, elem_id="ltx2-prompt")
                shared["negative_prompt"] = gr.Textbox(label="Negative prompt (optional)", lines=1)
                tabs = {}
                with gr.Tabs():
                    for label, mode in M.MODES.items():
                        with gr.Tab(label):
                            gr.Markdown(mode.help)
                            tabs[label] = _mode_fields(gr, label, ctx, loras)
                            tabs[label]["_button"] = gr.Button(f"Queue: {label}", variant="primary",
                                                               elem_id=f"ltx2-queue-{_slug(label)}")
                _shared_panels(gr, shared, ctx, loras, demo, dev)
            with gr.Column(scale=2):
                message = gr.HTML(elem_id="ltx2-message")
                with gr.Row():
                    cancel_id = gr.Number(label="Job #", precision=0, elem_id="ltx2-cancel-id", scale=1)
                    cancel = gr.Button("Cancel job", elem_id="ltx2-cancel", scale=1)
                queue_html = gr.HTML(render_queue([]))
                gallery_html = gr.HTML(render_gallery([]))
        shared_names = list(shared)

        for label, fields in tabs.items():
            names = [n for n in fields if n != "_button"]
            inputs = [shared[n] for n in shared_names] + [fields[n] for n in names]

            def submit(*values, _label=label, _names=shared_names + names):
                return _submit(ctx, _label, dict(zip(_names, values)))

            fields["_button"].click(_checked(submit), inputs, message)
            for name in names:
                if name in UPLOADS:
                    fields[name].upload(_checked(lambda v, _n=name: _check_upload_field(ctx, _n, v)), fields[name],
                                        message)
        shared["conditioning"].upload(_checked(lambda v: _check_upload_field(ctx, "conditioning", v)),
                                      shared["conditioning"], message)
        cancel.click(_checked(lambda job_id: _cancel(ctx, job_id)), cancel_id, message)

        seen = gr.State(("", ""))

        def refresh(last):
            jobs = ctx.queue.jobs()
            queue, gallery = render_queue(jobs), render_gallery(jobs)
            return (queue if queue != last[0] else gr.skip(), gallery if gallery != last[1] else gr.skip(),
                    (queue, gallery))

        gr.Timer(0.5).tick(refresh, seen, [queue_html, gallery_html, seen], show_progress="hidden")
        blocks.load(refresh, seen, [queue_html, gallery_html, seen])
    return blocks


def _slug(label: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in label.lower()).strip("-")


def _mode_fields(gr, label: str, ctx: AppContext, loras: list) -> dict:
    """The mode's own inputs (names as `modes.job_request` reads them)."""
    f: dict = {}
    video_types = list(KINDS["video"][0])
    if label == "text/image to video":
        f["keyframes"] = gr.File(label="Keyframe images (optional)", file_count="multiple",
                                 file_types=list(KINDS["image"][0]), type="filepath")
        f["keyframe_frames"] = gr.Textbox(label="Their frames (comma-separated; default 0, -1 = first and last)")
        f["image_strength"] = gr.Slider(0, 1, value=1.0, label="Keyframe strength")
    elif label == "audio to video":
        f["audio"] = gr.File(label="Sound", file_types=list(KINDS["audio"][0]), type="filepath", elem_id="ltx2-audio")
        f["audio_start"] = gr.Number(0.0, label="Start in the sound (s)")
    elif label in ("video to audio (foley)", "retake", "extend"):
        f["input"] = gr.File(label="Clip", file_types=video_types, type="filepath",
                             elem_id=f"ltx2-input-{_slug(label)}")
        if label == "retake":
            with gr.Row():
                f["start"] = gr.Number(0.0, label="Window start (s)")
                f["end"] = gr.Number(1.0, label="Window end (s)")
                f["ramp"] = gr.Number(0.0, label="Soft edges (s)")
            f["retake_what"] = gr.Radio(list(M.RETAKE_WHAT), value=M.RETAKE_WHAT[0], label="Regenerate")
            preview = gr.Gallery(label="Window: first and last frame", columns=2, height=180)
            window = gr.HTML(elem_id="ltx2-retake-window")
            for trigger in (f["input"].upload, f["start"].change, f["end"].change):
                trigger(lambda path, start, end: _window_preview(ctx, path, start, end),
                        [f["input"], f["start"], f["end"]], [preview, window])
        elif label == "extend":
            f["frames"] = gr.Number(16, precision=0, label="Frames to add (multiple of 8)")
            f["overlap"] = gr.Number(16, precision=0, label="Overlap frames (multiple of 8)")
            f["overlap_strength"] = gr.Slider(0, 1, value=0.5, label="Overlap strength")
    elif label == "IC-LoRA control":
        f["control_video"] = gr.File(label="Control / reference video", file_types=video_types, type="filepath",
                                     elem_id="ltx2-control-video")
        f["preprocess"] = gr.Radio(["none", "canny", "depth", "pose"], value="none",
                                   label="Preprocess (none: the video already is edges / depth / pose)")
        f["preprocess_model"] = gr.Textbox(label="Depth / pose model folder (local transformers model)")
        union = next((n for n in loras if "ic" in n.lower()), "")
        f["ic_lora"] = gr.Dropdown(loras, value=union, label="IC-LoRA (canny / depth / pose / union) from the "
                                                             "LoRA folder")
        f["ic_lora_strength"] = gr.Slider(0, 2, value=1.0, label="IC-LoRA strength")
        f["control_strength"] = gr.Slider(0, 1, value=1.0, label="Control strength")
        f["attention_strength"] = gr.Slider(0, 1, value=1.0, label="Conditioning attention strength")
        preview = gr.HTML(elem_id="ltx2-control-preview")
        for trigger in (f["control_video"].upload, f["preprocess"].change):
            trigger(_checked(lambda path, pre, model: _control_preview(ctx, path, pre, model)),
                    [f["control_video"], f["preprocess"], f["preprocess_model"]], preview)
    elif label == "two-stage / distilled":
        f["distilled_two_stage"] = gr.Checkbox(label="distilled checkpoint (8 + 3 fixed steps, no distilled LoRA)")
        distilled = next((n for n in loras if "distilled" in n.lower()), "")
        f["distilled_lora"] = gr.Dropdown(loras, value=distilled, label="Distilled LoRA (stage 2)")
        f["distilled_lora_strength"] = gr.Slider(0, 2, value=1.0, label="Distilled LoRA strength")
        f["upsampler"] = gr.Textbox(ctx.upsampler or "", label="Latent upsampler (file or folder; empty: the "
                                                               "model folder's latent_upsampler/)")
    return f


def _shared_panels(gr, shared: dict, ctx: AppContext, loras: list, demo: bool, dev: tuple) -> None:
    with gr.Accordion("Clip and sampling", open=True):
        with gr.Row():
            shared["num_frames"] = gr.Number(9 if demo else 121, precision=0, label="Frames (8k+1)")
            shared["height"] = gr.Number(64 if demo else 512, precision=0, label="Height")
            shared["width"] = gr.Number(64 if demo else 768, precision=0, label="Width")
            shared["frame_rate"] = gr.Number(24.0, label="Frame rate")
        with gr.Row():
            shared["seed"] = gr.Number(0, precision=0, label="Seed")
            shared["steps"] = gr.Number(2 if demo else 40, precision=0, label="Steps")
            shared["distilled"] = gr.Checkbox(label="distilled sigmas (8 steps)")
            shared["sampler"] = gr.Dropdown(list(SAMPLER_NAMES), value="euler", label="Sampler")
    with gr.Accordion("Prompt source", open=False):
        shared["prompt_source"] = gr.Radio(list(M.PROMPT_SOURCES), value=M.LOCAL, label="Encode the prompt with")
        shared["conditioning"] = gr.File(label="Saved conditioning (.safetensors from ltx2 encode)",
                                         file_types=[".safetensors"], type="filepath")
    with gr.Accordion("Guidance", open=False):
        preset = next(iter(M.GUIDANCE_PRESETS))
        shared["guidance_preset"] = gr.Dropdown(list(M.GUIDANCE_PRESETS), value=preset, label="Preset")
        dials = []
        for modality in ("video", "audio"):
            values = M.GUIDANCE_PRESETS[preset][modality]
            with gr.Row():
                for dial in M._DIALS:
                    name = f"{modality}_{dial}"
                    shared[name] = gr.Number(values[dial], label=f"{modality} {dial.replace('_', ' ')}",
                                             precision=0 if dial == "skip_step" else None)
                    dials.append(shared[name])
        shared["guidance_preset"].change(_preset_values, shared["guidance_preset"], dials)
    with gr.Accordion("LoRAs", open=False):
        gr.Markdown(f"From the LoRA folder `{ctx.lora_dir or '(none: start with --lora-dir FOLDER)'}`")
        for i in (1, 2, 3):
            with gr.Row():
                shared[f"lora_{i}"] = gr.Dropdown(loras, value="", label=f"LoRA {i}")
                shared[f"lora_{i}_strength"] = gr.Slider(-2, 2, value=1.0, label="strength")
    with gr.Accordion("Memory and format", open=False):
        name, memory, text = dev
        gr.HTML(f'<div id="ltx2-device">Detected: {html.escape(name)} ({html.escape(text)})</div>')
        from .planner import budget_text

        with gr.Row():
            shared["dtype"] = gr.Dropdown(["bf16", "fp16", "fp32"], value="fp32" if demo or name == "cpu" else "bf16",
                                          label="dtype")
            shared["device"] = gr.Textbox(name, label="Device")
            shared["vram_budget"] = gr.Textbox(budget_text(memory), label="VRAM budget (e.g. 16GB; empty: none)")
            shared["sequential_passes"] = gr.Checkbox(label="sequential guidance passes (less memory)")
        with gr.Row():
            shared["quantize"] = gr.Dropdown(["none", *QUANTIZATION_MODES], value="none", label="Quantize")
            shared["text_encoder_quantize"] = gr.Dropdown(["none", *TEXT_ENCODER_QUANTIZATION_MODES], value="none",
                                                          label="Text encoder quantize")
            shared["offload"] = gr.Dropdown(["none", *OFFLOAD_MODES], value="none", label="Offload")
        plan_button = gr.Button("Plan for this clip", elem_id="ltx2-plan")
        plan_text = gr.Textbox(label="Memory plan", lines=8, interactive=False, elem_id="ltx2-plan-text")
        plan_inputs = [shared[n] for n in ("num_frames", "height", "width", "frame_rate", "vram_budget")]
        plan_button.click(lambda *v: _plan(ctx, *v), plan_inputs,
                          [plan_text, shared["quantize"], shared["text_encoder_quantize"], shared["offload"]])


def _preset_values(preset):
    import gradio as gr

    values = M.GUIDANCE_PRESETS.get(preset)
    if not values:  # custom / no guidance: the dials stay as they are
        return [gr.skip()] * (2 * len(M._DIALS))
    return [values[m][d] for m in ("video", "audio") for d in M._DIALS]


def _plan(ctx: AppContext, num_frames, height, width, frame_rate, budget):
    import gradio as gr

    from .planner import plan_for

    if not (budget or "").strip():
        return ("No VRAM budget: the model loads whole on the device (give a budget, e.g. 16GB, to plan).",
                gr.skip(), gr.skip(), gr.skip())
    try:
        plan = plan_for(ctx.model, num_frames, height, width, frame_rate, budget.strip())
    except (ValueError, OSError) as err:
        return f"Error: {cli.describe_error(err)}", gr.skip(), gr.skip(), gr.skip()
    return (plan["text"], plan["quantize"] or "none", plan["text_encoder_quantize"] or "none",
            plan["offload"] or "none")


def _check_upload_field(ctx: AppContext, name: str, value) -> str:
    kind, flag = UPLOADS[name]
    for path in value if isinstance(value, list) else [value]:
        check_upload(path, kind, flag, max_bytes=ctx.max_upload_bytes)
    return _message(f"{flag}: upload checked", error=False)


def _submit(ctx: AppContext, label: str, form: dict) -> str:
    for name, value in form.items():
        if name in UPLOADS and value:
            if name == "conditioning" and form.get("prompt_source") != M.SAVED:
                form[name] = None  # not used by this job
                continue
            _check_upload_field(ctx, name, value)
    request = M.job_request(label, form, model=ctx.model, lora_dir=ctx.lora_dir, api=ctx.api)
    job = ctx.queue.submit(request.mode, request.command, request.values, label=request.label,
                           encode=request.encode)
    return _message(f"queued job #{job.id} ({label})", error=False)


def _cancel(ctx: AppContext, job_id) -> str:
    if job_id is None:
        raise ValueError("give the number of the job to cancel")
    if not ctx.queue.cancel(int(job_id)):
        raise ValueError(f"job #{int(job_id)} is not queued or running")
    return _message(f"cancel asked for job #{int(job_id)}: it stops at the end of its current step", error=False)


def _window_preview(ctx: AppContext, path, start, end):
    if not path or start is None or end is None:
        return [], ""
    from .previews import retake_window

    try:
        pictures, text = retake_window(ctx.model, path, float(start), float(end), ctx.queue.output_dir)
    except (ValueError, OSError) as err:  # named by the upload's file name, not the server's temporary path
        return [], _message(cli.describe_error(err).replace(path, os.path.basename(path)))
    return pictures, f"<div>{html.escape(text)}</div>"


def _control_preview(ctx: AppContext, path, preprocess, model):
    if not path:
        return ""
    from .previews import control_preview

    out = control_preview(path, preprocess or "none", os.path.join(ctx.queue.output_dir, ".previews"), model)
    return (f'<div>Control video as the IC-LoRA sees it ({html.escape(preprocess or "none")}):</div>'
            f'<video controls muted autoplay loop src="{file_url(out)}" width="256"></video>')
