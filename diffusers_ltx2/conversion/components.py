"""Diffusers component classes and configs for an official checkpoint, instantiated without memory."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from . import configs as C

#: component -> (library, class) as written into ``model_index.json``.
LIBRARY = "diffusers"


@dataclass
class ComponentSpec:
    """One diffusers component: its class name, the config dict and the folder it is saved in."""

    name: str
    class_name: str
    config: dict[str, Any]

    def model_class(self) -> type:
        """The diffusers class (imported lazily: diffusers' pipeline modules are slow to import)."""
        import diffusers
        from diffusers.pipelines import ltx2

        return getattr(ltx2, self.class_name, None) or getattr(diffusers, self.class_name)

    def build_meta(self) -> torch.nn.Module:
        """The module with every tensor on the ``meta`` device (no allocation)."""
        with torch.device("meta"):
            return self.model_class().from_config(self.config)


def component_specs(config: dict, version: str, projection_shapes: dict[str, tuple[int, ...]],
                    duration_head_shapes: dict[str, tuple[int, ...]] | None = None, *,
                    has_transformer: bool = True) -> dict[str, ComponentSpec]:
    """The diffusers components an official ``config`` converts into, in save order.

    A 2.5 file set may lack components (``transformer`` without its file; ``connectors`` without the text encoder
    file, which carries the projection): they are left out. The diffusion VAE's decoder becomes
    ``diffusion_decoder`` (`LTX2VideoDiffusionDecoderModel`), the duration head ``duration_head``.
    """
    specs = {}
    if has_transformer:
        specs["transformer"] = ComponentSpec(
            "transformer", "LTX2VideoTransformer3DModel", C.transformer_config(config, version))
    # the connectors live in the transformer file, their input projection (2.5) in the text encoder file
    if has_transformer and (projection_shapes or version in ("2.0", "2.3")):
        conn = C.connectors_config(config, projection_shapes)
        C.check_connector_dims(conn)
        specs["connectors"] = ComponentSpec("connectors", "LTX2TextConnectors", conn)
    if config.get("vae"):
        specs["vae"] = ComponentSpec("vae", "AutoencoderKLLTX2Video", C.video_vae_config(config))
    if config.get("audio_vae"):
        specs["audio_vae"] = ComponentSpec("audio_vae", "AutoencoderKLLTX2Audio", C.audio_vae_config(config))
    if config.get("vocoder"):
        specs["vocoder"] = ComponentSpec("vocoder", C.vocoder_class_name(config), C.vocoder_config(config))
    if config.get("vae_diffusion"):
        specs["diffusion_decoder"] = ComponentSpec(
            "diffusion_decoder", "LTX2VideoDiffusionDecoderModel", C.diffusion_decoder_config(config["vae_diffusion"]))
    if "duration_head" in config:
        specs["duration_head"] = ComponentSpec(
            "duration_head", "LTX2DurationHead", C.duration_head_config(config, duration_head_shapes))
    return specs


def expected_tensors(module: torch.nn.Module) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Persistent state-dict entries of ``module`` with shape and dtype (works on meta modules)."""
    return {k: (tuple(v.shape), v.dtype) for k, v in module.state_dict().items()}
