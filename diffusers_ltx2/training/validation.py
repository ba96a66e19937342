"""Validation clips during training: the package's own pipeline, on the transformer being trained (LoRA active),
rendered to MP4 with audio every `validation.interval` steps.

Prompts come from the dataset's stored embeddings (`validation.conditions`: clip names under `conditions/`), so
no Gemma is needed; IC-LoRA runs take one `validation.reference_videos` entry per prompt (a control video, used
by `LTX2ICLoRAPipeline` as at inference). Sampling is unguided (`inference_steps` Euler steps).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..loaders.prompt_embeddings import PromptEmbeddings
from .config import TrainingConfig, VideoToVideoConfig
from .data import read_entry

__all__ = ["ValidationRenderer"]


def _other_components(model_path: str) -> dict:
    """Everything but the transformer (VAEs, connectors, vocoder) from a pipeline folder or a factory model."""
    if model_path.startswith("factory:"):
        from ..factory import SMALL, TINY, build_components

        parts = model_path.split(":")
        comps = build_components({"tiny": TINY, "small": SMALL}[parts[1]], seed=int(parts[2]) if len(parts) > 2 else 0)
    elif os.path.isdir(model_path):
        from diffusers import AutoencoderKLLTX2Audio, AutoencoderKLLTX2Video
        from diffusers.pipelines.ltx2 import LTX2TextConnectors

        comps = {"vae": AutoencoderKLLTX2Video.from_pretrained(model_path, subfolder="vae"),
                 "audio_vae": AutoencoderKLLTX2Audio.from_pretrained(model_path, subfolder="audio_vae"),
                 "connectors": LTX2TextConnectors.from_pretrained(model_path, subfolder="connectors")}
        from diffusers.pipelines.ltx2 import LTX2Vocoder

        comps["vocoder"] = LTX2Vocoder.from_pretrained(model_path, subfolder="vocoder")
    else:
        from ..conversion import load_components_from_single_file

        comps = load_components_from_single_file(model_path)
    return {k: comps[k] for k in ("vae", "audio_vae", "connectors", "vocoder")}


class ValidationRenderer:
    """Renders the configured validation clips; the pipeline's other components are loaded on first use."""

    def __init__(self, config: TrainingConfig):
        v = config.validation
        ic = isinstance(config.training_strategy, VideoToVideoConfig)
        if ic and len(v.reference_videos) != len(v.conditions):
            raise ValueError(f"validation needs one reference video per condition for IC-LoRA, got "
                             f"{len(v.reference_videos)} for {len(v.conditions)}")
        root = Path(config.data.preprocessed_data_root) / "conditions"
        missing = [c for c in v.conditions if not (root / f"{c}.safetensors").is_file()]
        if missing:
            raise ValueError(f"validation conditions {missing} are not in {root}")
        self.config, self.ic, self.pipe = config, ic, None

    def _pipeline(self, transformer):
        from .. import ClassifierFreeGuidance, LTX2AudioVideoPipeline, LTX2ICLoRAPipeline, LTX2Scheduler

        if self.pipe is None:
            cls = LTX2ICLoRAPipeline if self.ic else LTX2AudioVideoPipeline
            comps = _other_components(self.config.model.model_path)
            self.pipe = cls(scheduler=LTX2Scheduler(), text_encoder=None, tokenizer=None, transformer=transformer,
                            guider=ClassifierFreeGuidance(1.0, 1.0), **comps)
            self.pipe.set_progress_bar_config(disable=True)
        return self.pipe.to(next(transformer.parameters()).device)

    @torch.no_grad()
    def render(self, transformer, step: int, out_dir: Path) -> list[Path]:
        """Render every validation clip at `step` into `out_dir/step_NNNNN_<condition>.mp4`."""
        from ..export import export_to_video_with_audio

        v = self.config.validation
        pipe = self._pipeline(transformer)
        was_training = transformer.training
        transformer.eval()
        width, height, frames = v.video_dims
        paths = []
        try:
            for i, name in enumerate(v.conditions):
                cond, _ = read_entry(Path(self.config.data.preprocessed_data_root) / "conditions" / f"{name}.safetensors")
                embeds = PromptEmbeddings(video_context=cond["video_context"][None],
                                          audio_context=cond["audio_context"][None],
                                          attention_mask=cond["attention_mask"][None])
                kwargs = dict(prompt_embeds=embeds, height=height, width=width, num_frames=frames,
                              frame_rate=v.frame_rate, num_inference_steps=v.inference_steps, output_type="np",
                              generator=torch.Generator().manual_seed(v.seed))
                if self.ic:
                    kwargs["control_video"] = v.reference_videos[i]
                out = pipe(**kwargs)
                path = out_dir / f"step_{step:05d}_{name}.mp4"
                out_dir.mkdir(parents=True, exist_ok=True)
                export_to_video_with_audio(out.frames[0], out.audio[0], path, fps=v.frame_rate,
                                           sample_rate=out.sample_rate)
                paths.append(path)
        finally:
            transformer.train(was_training)
        return paths
