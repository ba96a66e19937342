"""The official-checkpoint fixtures: tiny *official* LTX-2 single-file checkpoints (`write_official_checkpoint`) and
ltx-core's own modules loaded back from them (`load_official`), for every parity test and the conversion benchmark.

Models are built with ltx-core's own configurators from a tiny ``config`` (the same sections and keys
as the released files' metadata), filled with random weights, and written with the official prefixes
(``model.diffusion_model.``, ``text_embedding_projection.``, ``vae.``, ``audio_vae.``, ``vocoder.``) and
``config`` / ``model_version`` metadata. The parity tests then load the references back through
ltx-core's loader (``SingleGPUModelBuilder`` with its own key ops), so a wrong prefix fails there too.
"""

from __future__ import annotations

import copy
import json

import torch
from safetensors.torch import save_file

import ltx_reference  # noqa: F401,E402  (stubs torchaudio before ltx-core is imported)

from ltx_core.loader import SingleGPUModelBuilder  # noqa: E402
from ltx_core.model.audio_vae.model_configurator import (  # noqa: E402
    AUDIO_VAE_DECODER_COMFY_KEYS_FILTER,
    VOCODER_COMFY_KEYS_FILTER,
    AudioDecoderConfigurator,
    AudioEncoderConfigurator,
    VocoderConfigurator,
)
from ltx_core.model.transformer.model_configurator import (  # noqa: E402
    LTXV_MODEL_COMFY_RENAMING_MAP,
    LTXModelConfigurator,
)
from ltx_core.model.video_vae.model_configurator import (  # noqa: E402
    VAE_DECODER_COMFY_KEYS_FILTER,
    VAE_ENCODER_COMFY_KEYS_FILTER,
    VideoDecoderConfigurator,
    VideoEncoderConfigurator,
)
from ltx_core.text_encoders.gemma.embeddings_connector import (  # noqa: E402
    AudioEmbeddings1DConnectorConfigurator,
    Embeddings1DConnectorConfigurator,
)
from ltx_core.text_encoders.gemma.embeddings_processor import EmbeddingsProcessor  # noqa: E402
from ltx_core.text_encoders.gemma.encoders.encoder_configurator import EMBEDDINGS_PROCESSOR_KEY_OPS  # noqa: E402
from ltx_core.text_encoders.gemma.feature_extractor import FeatureExtractorV1, FeatureExtractorV2  # noqa: E402

from official_configs import (  # noqa: E402,F401  (re-exported: tests import them from here)
    AUDIO_VAE, CONFIG_20, CONFIG_23, CONFIGS, GEMMA_HIDDEN, GEMMA_STATES, TRANSFORMER_20, TRANSFORMER_23, VAE_20,
    VAE_23, VOCODER_20, VOCODER_23,
)


def build_embeddings_processor(config: dict) -> EmbeddingsProcessor:
    """ltx-core's EmbeddingsProcessor with a tiny feature extractor (the released one hard-codes Gemma-3-12B)."""
    t = config["transformer"]
    flat = GEMMA_HIDDEN * GEMMA_STATES
    if t.get("caption_proj_before_connector", False):
        fe = FeatureExtractorV2(
            video_aggregate_embed=torch.nn.Linear(flat, t["num_attention_heads"] * t["attention_head_dim"]),
            embedding_dim=GEMMA_HIDDEN,
            audio_aggregate_embed=torch.nn.Linear(flat, t["audio_num_attention_heads"] * t["audio_attention_head_dim"]),
        )
    else:
        fe = FeatureExtractorV1(aggregate_embed=torch.nn.Linear(flat, GEMMA_HIDDEN, bias=False), is_av=True)
    return EmbeddingsProcessor(
        feature_extractor=fe,
        video_connector=Embeddings1DConnectorConfigurator.from_config(config),
        audio_connector=AudioEmbeddings1DConnectorConfigurator.from_config(config),
    )


class TinyEmbeddingsProcessorConfigurator:
    """Configurator for :func:`build_embeddings_processor`, usable with ltx-core's model builder."""

    @classmethod
    def from_config(cls, config: dict) -> EmbeddingsProcessor:
        return build_embeddings_processor(config)


def _randomize(module: torch.nn.Module, gen: torch.Generator, scale: float) -> None:
    """Random parameters, plus the checkpoint-loaded buffers (latent statistics, STFT/mel bases)."""
    with torch.no_grad():
        for mod in module.modules():  # ltx-core builds the 2.0 caption projections on the meta device
            for pname, p in list(mod._parameters.items()):
                if p is not None:
                    value = torch.randn(p.shape, generator=gen) * scale
                    if pname == "timestep_scale_multiplier":  # a parameter in the VAE decoder; keep it realistic
                        value = torch.full(p.shape, 1000.0)
                    mod._parameters[pname] = torch.nn.Parameter(value)
        for name, b in module.named_buffers():
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "std-of-means":
                b.copy_(torch.rand(b.shape, generator=gen) + 0.5)
            elif leaf == "mean-of-means":
                b.copy_(torch.randn(b.shape, generator=gen) * 0.1)
            elif leaf == "timestep_scale_multiplier":
                b.fill_(1000.0)
            elif leaf in ("mel_basis", "forward_basis", "inverse_basis"):
                b.copy_(torch.rand(b.shape, generator=gen) * 0.2)


def official_state_dict(config: dict, seed: int = 0, scale: float = 0.2) -> dict[str, torch.Tensor]:
    """Random official-layout state dict (all prefixes) for ``config``."""
    gen = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}

    transformer = LTXModelConfigurator.from_config(config)
    _randomize(transformer, gen, scale)
    sd.update({f"model.diffusion_model.{k}": v for k, v in transformer.state_dict().items()})

    proc = build_embeddings_processor(config)
    _randomize(proc, gen, scale)
    for k, v in proc.state_dict().items():
        if k.startswith("feature_extractor."):
            sd["text_embedding_projection." + k.removeprefix("feature_extractor.")] = v
        elif k.startswith("video_connector."):
            sd["model.diffusion_model.video_embeddings_connector." + k.removeprefix("video_connector.")] = v
        elif k.startswith("audio_connector."):
            sd["model.diffusion_model.audio_embeddings_connector." + k.removeprefix("audio_connector.")] = v

    for prefix, parts in (
        ("vae.", (VideoEncoderConfigurator, VideoDecoderConfigurator)),
        ("audio_vae.", (AudioEncoderConfigurator, AudioDecoderConfigurator)),
    ):
        stats = None
        for name, conf in zip(("encoder.", "decoder."), parts):
            mod = conf.from_config(config)
            _randomize(mod, gen, scale)
            for k, v in mod.state_dict().items():
                if k.startswith("per_channel_statistics."):
                    stats = stats or {}
                    stats.setdefault(k, v)  # one shared copy, as in the released files
                else:
                    sd[prefix + name + k] = v
        sd.update({prefix + k: v for k, v in stats.items()})

    vocoder = VocoderConfigurator.from_config(config)
    _randomize(vocoder, gen, scale)
    sd.update({f"vocoder.{k}": v for k, v in vocoder.state_dict().items()})
    return {k: v.detach().clone().contiguous() for k, v in sd.items()}


def write_official_checkpoint(path, version: str = "2.0", *, seed: int = 0, dtype=torch.float32,
                              model_version: str | None = None, config: dict | None = None) -> dict:
    """Write a tiny official single-file checkpoint; returns the config written into its metadata."""
    config = copy.deepcopy(config or CONFIGS[version])
    sd = official_state_dict(config, seed=seed)
    sd = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in sd.items()}
    meta = {"config": json.dumps(config), "model_version": model_version or f"{version}.0"}
    save_file(sd, str(path), metadata=meta)
    return config


def load_official(path, which: str):
    """Load one official component from ``path`` through ltx-core's own builder and key ops."""
    table = {
        "transformer": (LTXModelConfigurator, LTXV_MODEL_COMFY_RENAMING_MAP),
        "embeddings": (TinyEmbeddingsProcessorConfigurator, EMBEDDINGS_PROCESSOR_KEY_OPS),
        "vae_encoder": (VideoEncoderConfigurator, VAE_ENCODER_COMFY_KEYS_FILTER),
        "vae_decoder": (VideoDecoderConfigurator, VAE_DECODER_COMFY_KEYS_FILTER),
        "audio_decoder": (AudioDecoderConfigurator, AUDIO_VAE_DECODER_COMFY_KEYS_FILTER),
        "vocoder": (VocoderConfigurator, VOCODER_COMFY_KEYS_FILTER),
    }
    conf, ops = table[which]
    model = SingleGPUModelBuilder(model_class_configurator=conf, model_path=str(path), model_sd_ops=ops).build(
        device=torch.device("cpu"), dtype=torch.float32
    )
    meta = [n for n, p in list(model.named_parameters()) + list(model.named_buffers()) if p.device.type == "meta"]
    assert not meta, f"ltx-core left {which} tensors uninitialised: {meta[:5]}"
    return model.eval()
