"""The one place official LTX-2 key names are mapped to the diffusers layout.

Pure functions over key strings (no tensors): :class:`KeyMapper` routes each key of an official single
file (or of a 2.5 file set, named as in a single file by `files.inspect_set`) to a diffusers component
(``transformer``, ``connectors``, ``vae``, ``audio_vae``, ``vocoder``; 2.5: ``diffusion_decoder``,
``duration_head``) and renames it. The transformer rule reuses diffusers' own
``convert_ltx2_transformer_to_diffusers`` (correct for the keys it knows) and adds the 2.3 prompt-AdaLN modules it leaves unmapped. The video VAE rule is
derived from the checkpoint's ``encoder_blocks`` / ``decoder_blocks`` (diffusers' single-file version
hard-codes the 2.0 block order and forgets the decoder's timestep embedder), and the connector, audio VAE
and vocoder rules cover what diffusers' single-file loader drops.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from diffusers.loaders.single_file_utils import convert_ltx2_transformer_to_diffusers

from .configs import parse_decoder_blocks, parse_encoder_blocks
from .files import DIFFUSION_VAE_PREFIX, TEXT_ENCODER_PREFIX

TRANSFORMER_PREFIX = "model.diffusion_model."
VIDEO_CONNECTOR_PREFIX = TRANSFORMER_PREFIX + "video_embeddings_connector."
AUDIO_CONNECTOR_PREFIX = TRANSFORMER_PREFIX + "audio_embeddings_connector."
PROJECTION_PREFIX = "text_embedding_projection."
VAE_PREFIX = "vae."
AUDIO_VAE_PREFIX = "audio_vae."
VOCODER_PREFIX = "vocoder."
DURATION_HEAD_PREFIX = "duration_head."

COMPONENTS = ("transformer", "connectors", "vae", "audio_vae", "vocoder", "diffusion_decoder", "duration_head")

#: Statistics some released files carry next to the two the models use; nothing reads them.
_UNUSED_STATISTICS = ("channel", "mean-of-stds", "mean-of-stds_over_std-of-means")

#: ``.weight_scale`` / ``.input_scale`` of prequantized FP8 files are consumed by the FP8 handling.
FP8_SCALE_SUFFIXES = (".weight_scale", ".input_scale")

_PROJECTIONS = {
    "aggregate_embed.": "text_proj_in.",  # 2.0: one projection shared by both connectors
    "video_aggregate_embed.": "video_text_proj_in.",  # 2.3: separate video / audio projections
    "audio_aggregate_embed.": "audio_text_proj_in.",
}


def map_transformer_key(local: str) -> str:
    """Official DiT key (without ``model.diffusion_model.``) -> ``LTX2VideoTransformer3DModel`` key."""
    out = convert_ltx2_transformer_to_diffusers({TRANSFORMER_PREFIX + local: None})
    (new,) = out.keys()
    # diffusers 0.42.1 leaves the 2.3 prompt AdaLN modules under their official names.
    if new.startswith("audio_prompt_adaln_single."):
        new = "audio_prompt_adaln." + new.removeprefix("audio_prompt_adaln_single.")
    elif new.startswith("prompt_adaln_single."):
        new = "prompt_adaln." + new.removeprefix("prompt_adaln_single.")
    return new


def map_connector_key(local: str, modality: str) -> str:
    """Official ``{video,audio}_embeddings_connector.*`` key (without prefix) -> ``LTX2TextConnectors`` key."""
    new = local.replace("transformer_1d_blocks.", "transformer_blocks.")
    new = new.replace(".q_norm.", ".norm_q.").replace(".k_norm.", ".norm_k.")
    return f"{modality}_connector.{new}"


def map_projection_key(local: str) -> str | None:
    """``text_embedding_projection.*`` key (without prefix) -> connectors key, ``None`` if unknown."""
    for src, dst in _PROJECTIONS.items():
        if local.startswith(src):
            return dst + local.removeprefix(src)
    return None


def map_audio_vae_key(local: str) -> str:
    """Official audio VAE key (without ``audio_vae.``) -> ``AutoencoderKLLTX2Audio`` key."""
    if local == "per_channel_statistics.mean-of-means":
        return "latents_mean"
    if local == "per_channel_statistics.std-of-means":
        return "latents_std"
    return local


_VOCODER_RENAMES = (
    (re.compile(r"(^|\.)conv_pre\."), r"\1conv_in."),
    (re.compile(r"(^|\.)conv_post\."), r"\1conv_out."),
    (re.compile(r"(^|\.)ups\."), r"\1upsamplers."),
    (re.compile(r"(^|\.)resblocks\."), r"\1resnets."),
    (re.compile(r"(^|\.)act_post\."), r"\1act_out."),
    (re.compile(r"\.downsample\.lowpass\.filter$"), ".downsample.filter"),
)


def map_vocoder_key(local: str) -> str:
    """Official vocoder key (without ``vocoder.``) -> ``LTX2Vocoder`` / ``LTX2VocoderWithBWE`` key.

    BWE files nest ``vocoder.``, ``bwe_generator.`` and ``mel_stft.`` under the same prefix; the names inside
    each generator follow the plain vocoder's rules.
    """
    new = local
    for pattern, repl in _VOCODER_RENAMES:
        new = pattern.sub(repl, new)
    return new


@dataclass(frozen=True)
class Route:
    """Where one source tensor goes inside a component: the diffusers key, a row chunk ``(index, count)`` of a fused
    tensor (``qkv`` -> ``to_q`` / ``to_k`` / ``to_v``), and the source key of a static gate folded into it."""

    key: str
    chunk: tuple[int, int] | None = None
    gate: str | None = None


# ------------------------------------------------------------------ LTX-2.5: diffusion video decoder, duration head
# ltx-core 1.2.0's loader (`_build_diffusion_vae_decoder_sd_ops`) renames ``t_embedder.mlp.{0,2}`` to the PixArt
# embedder's ``linear_{1,2}``, splits each fused ``qkv`` Linear, drops the bundled preview head (``coarse_*``) and
# folds static AdaLN gates into the Linear they gate (``W <- g * W``, ``b <- g * b``); diffusers' module also names
# ``attn.proj`` ``to_out.0`` and the QK norms ``norm_q`` / ``norm_k``. The duration head's pooler is a
# `torch.nn.MultiheadAttention` (fused ``in_proj_*``, ``out_proj``), diffusers' has separate Linears (q, k, v order).

_GATES = (".gate_msa", ".gate_mlp", ".gate_ctx")
_GATE_TARGETS = (  # (raw Linear leaf, the gate folded into it)
    (".attn.proj.weight", ".gate_msa"), (".attn.proj.bias", ".gate_msa"),
    (".mlp.w_down.weight", ".gate_mlp"), (".mlp.w_down.bias", ".gate_mlp"),
    (".context_proj.weight", ".gate_ctx"), (".context_proj.bias", ".gate_ctx"),
)
_RENAMES = (
    ("t_embedder.mlp.0.", "t_embedder.timestep_embedder.linear_1."),
    ("t_embedder.mlp.2.", "t_embedder.timestep_embedder.linear_2."),
    (".attn.proj.", ".attn.to_out.0."),
    (".attn.q_norm.", ".attn.norm_q."),
    (".attn.k_norm.", ".attn.norm_k."),
)


def map_diffusion_decoder_key(local: str, has_key) -> list[Route]:
    """Official diffusion VAE key (without its ``vae.`` prefix) -> diffusers routes; ``[]`` for a dropped key.

    ``has_key(raw)``: whether the file holds another raw key (the gate of a Linear). Encoder keys are dropped: the
    encoder is the conv VAE's (the release keeps it byte for byte), converted from that file.

    Raises:
        KeyError: a key no rule knows.
    """
    if local.startswith("encoder."):
        return []
    if local == "per_channel_statistics.mean-of-means":
        return [Route("latents_mean")]
    if local == "per_channel_statistics.std-of-means":
        return [Route("latents_std")]
    if local.startswith("per_channel_statistics."):
        return []  # statistics nothing reads (channel, mean-of-stds, ...)
    if not local.startswith("decoder."):
        raise KeyError(local)
    raw = local.removeprefix("decoder.")
    if raw.startswith("coarse_") or ".coarse_" in raw or raw.endswith(_GATES):
        return []  # the bundled preview head; gates are folded into their Linear below
    gate = None
    for leaf, suffix in _GATE_TARGETS:
        if raw.endswith(leaf):
            candidate = "decoder." + raw[: -len(leaf)] + suffix
            gate = candidate if has_key(candidate) else None
            break
    new = raw
    for old, rep in _RENAMES:
        new = new.replace(old, rep)
    if new.endswith((".qkv.weight", ".qkv.bias")):
        leaf = new.rsplit(".", 1)[1]
        base = new[: -len(f"qkv.{leaf}")]
        return [Route(f"decoder.{base}{name}.{leaf}", chunk=(i, 3))
                for i, name in enumerate(("to_q", "to_k", "to_v"))]
    return [Route(f"decoder.{new}", gate=gate)]


def map_duration_head_key(local: str) -> list[Route]:
    """Official key (without ``duration_head.``) -> `LTX2DurationHead` routes (fused projections split)."""
    fused = "attention_pooler.cross_attn.in_proj_"
    if local.startswith(fused):
        leaf = "weight" if local.endswith("weight") else "bias"
        return [Route(f"attention_pooler.{name}.{leaf}", chunk=(i, 3))
                for i, name in enumerate(("to_q", "to_k", "to_v"))]
    if local.startswith("attention_pooler.cross_attn.out_proj."):
        return [Route("attention_pooler.to_out." + local.removeprefix("attention_pooler.cross_attn.out_proj."))]
    return [Route(local)]


@dataclass
class VideoVAEKeyMap:
    """Maps official video VAE keys using the block layout from the checkpoint's ``vae`` config."""

    vae_config: dict
    _enc: dict = field(init=False)
    _dec: dict = field(init=False)

    def __post_init__(self) -> None:
        self._enc = {b["index"]: b for b in parse_encoder_blocks(self.vae_config)}
        self._dec = {b["index"]: b for b in parse_decoder_blocks(self.vae_config)}

    @staticmethod
    def _res_rest(rest: str) -> str:
        return "resnets." + rest.removeprefix("res_blocks.") if rest.startswith("res_blocks.") else rest

    def map(self, local: str) -> str | None:
        """Official key (without ``vae.``) -> ``AutoencoderKLLTX2Video`` key; ``None`` when not a VAE key."""
        if local == "per_channel_statistics.mean-of-means":
            return "latents_mean"
        if local == "per_channel_statistics.std-of-means":
            return "latents_std"
        m = re.match(r"^(encoder|decoder)\.(down_blocks|up_blocks)\.(\d+)\.(.+)$", local)
        if m is None:
            m2 = re.match(r"^decoder\.(last_time_embedder|last_scale_shift_table)(.*)$", local)
            if m2:
                head = "time_embedder" if m2.group(1) == "last_time_embedder" else "scale_shift_table"
                return f"decoder.{head}{m2.group(2)}"
            return local
        part, kind, index, rest = m.group(1), m.group(2), int(m.group(3)), m.group(4)
        plan = self._enc if part == "encoder" else self._dec
        if (kind == "down_blocks") != (part == "encoder") or index not in plan:
            return None
        block = plan[index]
        if block["role"] == "mid":
            return f"{part}.mid_block.{self._res_rest(rest)}"
        if block["role"] == "res":
            group = "down_blocks" if part == "encoder" else "up_blocks"
            return f"{part}.{group}.{block['block']}.{self._res_rest(rest)}"
        if block["role"] == "down":
            return f"encoder.down_blocks.{block['block']}.downsamplers.0.{rest}"
        return f"decoder.up_blocks.{block['block']}.upsamplers.0.{rest}"


class KeyMapper:
    """Routes official keys (single-file names; `files.inspect_set` gives split files the same names) to diffusers
    components.

    ``routes`` returns ``[(component, Route), ...]``: empty for keys that are known but intentionally dropped
    (unused latent statistics, FP8 scales handled elsewhere, the text encoder file's Gemma tensors, which
    `text_encoder.py` copies), several for a fused tensor split into diffusers' separate ones; it raises
    ``KeyError`` for keys no rule knows, so the caller can list every unknown key before writing anything.
    """

    def __init__(self, config: dict, has_key=lambda key: False):
        self.config = config
        self.has_key = has_key
        self.vae = VideoVAEKeyMap(config.get("vae", {})) if config.get("vae") else None

    def map(self, key: str) -> tuple[str, str] | None:
        """``(component, new_key)`` of a key with one plain route, ``None`` for a dropped key, or ``KeyError``."""
        routes = self.routes(key)
        if not routes:
            return None
        if len(routes) != 1 or routes[0][1].chunk or routes[0][1].gate:
            raise KeyError(f"{key} splits into several tensors; use KeyMapper.routes")
        return routes[0][0], routes[0][1].key

    def routes(self, key: str) -> list[tuple[str, Route]]:
        """Every ``(component, Route)`` the tensor ``key`` feeds (see the class doc)."""
        if key.endswith(FP8_SCALE_SUFFIXES) or key.startswith(TEXT_ENCODER_PREFIX):
            return []
        for prefix in (VAE_PREFIX, AUDIO_VAE_PREFIX):
            if key.startswith(prefix + "per_channel_statistics.") and key.rsplit(".", 1)[-1] in _UNUSED_STATISTICS:
                return []
        one = lambda component, new: [(component, Route(new))]  # noqa: E731
        if key.startswith(VIDEO_CONNECTOR_PREFIX):
            return one("connectors", map_connector_key(key.removeprefix(VIDEO_CONNECTOR_PREFIX), "video"))
        if key.startswith(AUDIO_CONNECTOR_PREFIX):
            return one("connectors", map_connector_key(key.removeprefix(AUDIO_CONNECTOR_PREFIX), "audio"))
        if key.startswith(PROJECTION_PREFIX):
            new = map_projection_key(key.removeprefix(PROJECTION_PREFIX))
            if new is not None:
                return one("connectors", new)
        elif key.startswith(TRANSFORMER_PREFIX):
            return one("transformer", map_transformer_key(key.removeprefix(TRANSFORMER_PREFIX)))
        elif key.startswith(VAE_PREFIX) and self.vae is not None:
            new = self.vae.map(key.removeprefix(VAE_PREFIX))
            if new is not None:
                return one("vae", new)
        elif key.startswith(DIFFUSION_VAE_PREFIX):
            has = lambda raw: self.has_key(DIFFUSION_VAE_PREFIX + raw)  # noqa: E731
            return [("diffusion_decoder", replace(r, gate=DIFFUSION_VAE_PREFIX + r.gate) if r.gate else r)
                    for r in map_diffusion_decoder_key(key.removeprefix(DIFFUSION_VAE_PREFIX), has)]
        elif key.startswith(DURATION_HEAD_PREFIX):
            return [("duration_head", r) for r in map_duration_head_key(key.removeprefix(DURATION_HEAD_PREFIX))]
        elif key.startswith(AUDIO_VAE_PREFIX):
            return one("audio_vae", map_audio_vae_key(key.removeprefix(AUDIO_VAE_PREFIX)))
        elif key.startswith(VOCODER_PREFIX):
            return one("vocoder", map_vocoder_key(key.removeprefix(VOCODER_PREFIX)))
        raise KeyError(key)


__all__ = [
    "COMPONENTS",
    "FP8_SCALE_SUFFIXES",
    "KeyMapper",
    "Route",
    "VideoVAEKeyMap",
    "map_diffusion_decoder_key",
    "map_duration_head_key",
    "map_audio_vae_key",
    "map_connector_key",
    "map_projection_key",
    "map_transformer_key",
    "map_vocoder_key",
]
