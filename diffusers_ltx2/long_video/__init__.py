"""Long clips in sliding windows (ComfyUI-LTXVideo `LTXVLoopingSampler` semantics), one concept per module:
`layout` (which frames each window generates), `prompt_schedule` (a prompt per segment), `routing` (whole-clip
conditions to windows), `adain` (latent statistics) and `seams` (joining windows). The loop over the pipeline's
calls is `pipelines.sliding` (`pipe.generate_long_video`), as every workflow calling `pipe(...)`.

`layout` and `prompt_schedule` are plain Python (the command line checks with them before importing torch); the
other names load on first use."""

from importlib import import_module

from .layout import Window, audio_placements, check_window_numbers, plan_windows, window_of_frame
from .prompt_schedule import PromptSegment, parse_schedule_text, read_schedule_file, window_prompts

_LAZY = {"adain_latents": "adain", "route_conditions": "routing", "blend_audio_latents": "seams",
         "blend_video_latents": "seams"}

__all__ = [
    "PromptSegment", "Window", "adain_latents", "audio_placements", "blend_audio_latents", "blend_video_latents",
    "check_window_numbers", "parse_schedule_text", "plan_windows", "read_schedule_file",
    "route_conditions", "window_of_frame", "window_prompts",
]


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
