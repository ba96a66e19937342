"""`ltx2 ui`: a local web app over the pipelines, built on the command line's argument layer.

- `command`: the `ltx2 ui` command (the `ltx2` registry names it as it names every command);
- `jobs`: the queue (progress, cancel, outputs + settings); `modes`: forms -> `ltx2` command values;
- `uploads`: upload checks; `planner`: device and memory plan; `previews`: retake window, control video;
- `render`: the queue and gallery HTML; `app`: the Gradio page; `server`: FastAPI + the output-folder file guard;
- `demo_model`: the tiny random-weight demo files.
"""
