"""Official LTX-2 checkpoint metadata -> diffusers component configs.

An official single-file checkpoint carries its architecture in the safetensors metadata key ``config``
(a JSON object with ``transformer``, ``vae``, ``audio_vae``, ``vocoder`` sections) plus ``model_version``.
Every function here derives a diffusers ``from_config`` dict from those sections, reading the same keys
with the same defaults as ltx-core's configurators (``ltx_core/model/*/model_configurator.py``), so a
release with new sizes converts without a table per release. Values diffusers cannot express raise
:class:`UnsupportedCheckpointError` rather than converting into a silently different model.
"""

from __future__ import annotations

from typing import Any

from .errors import UnsupportedCheckpointError

#: Versions this converter knows. Matching is on the major.minor prefix of ``model_version``; 2.4 (the 2.5
#: pre-release line, same architecture switches) is read as itself.
SUPPORTED_VERSIONS = ("2.0", "2.3", "2.4", "2.5")

#: Transformer settings ltx-core rejects when they differ (it raises in ``check_config_value``);
#: diffusers hard-codes the same behaviour, so any other value would convert into a different model.
_TRANSFORMER_FIXED = {
    "dropout": 0.0,
    "attention_bias": True,
    "activation_fn": "gelu-approximate",
    "qk_norm": "rms_norm",
    "standardization_norm": "rms_norm",
    "norm_elementwise_affine": False,
    "positional_embedding_type": "rope",
    "use_audio_video_cross_attention": True,
    "share_ff": False,
    "use_middle_indices_grid": True,
}

#: STG block per release (LTX2_FACTS: 2.0 perturbs block 29, 2.3 block 28); scaled to the block count.
_DEFAULT_STG_BLOCK = {"2.0": 29, "2.3": 28, "2.4": 28, "2.5": 28}  # 1.2: LTX_2_4_PARAMS = 2.3's (block 28)


def normalize_version(model_version: str | None, config: dict) -> str:
    """Return ``"2.0"``, ``"2.3"``, ``"2.4"`` or ``"2.5"`` for a checkpoint's ``model_version`` metadata.

    A missing version is inferred from the config (no feed-forward bias or the keyframe embedding mean 2.5,
    separate aggregate projections 2.3); a present but unknown version raises :class:`UnsupportedCheckpointError`.
    Pre-release tags keep their generation (``"2.4-rc2"`` is 2.4, as ltx-pipelines 1.2 normalizes them).
    """
    if model_version is None or str(model_version).strip() == "":
        t = config.get("transformer", {})
        if t.get("ff_bias") is False or t.get("use_keyframes_abs_pos_embedding"):
            return "2.5"
        return "2.3" if t.get("caption_proj_before_connector", False) else "2.0"
    text = str(model_version).strip().lstrip("vV").replace("-", ".")
    parts = text.split(".")
    major_minor = ".".join(parts[:2]) if len(parts) >= 2 else text
    if major_minor not in SUPPORTED_VERSIONS:
        raise UnsupportedCheckpointError(
            f"Unsupported model_version {model_version!r}: this converter knows LTX-2 versions "
            f"{', '.join(SUPPORTED_VERSIONS)}."
        )
    return major_minor


def _check_fixed(section: dict, fixed: dict, where: str) -> None:
    for key, expected in fixed.items():
        if key in section and section[key] != expected:
            raise UnsupportedCheckpointError(
                f"{where}: config value {key}={section[key]!r} is not supported (expected {expected!r})."
            )


# ----------------------------------------------------------------------------------------------- video VAE


def _block_list(blocks: list) -> list[tuple[str, dict]]:
    """Normalise ``[[name, int | dict], ...]`` as ltx-core does (an int means ``num_layers``)."""
    out = []
    for entry in blocks:
        name, params = entry[0], entry[1] if len(entry) > 1 else {}
        out.append((name, {"num_layers": params} if isinstance(params, int) else dict(params)))
    return out


_DOWN_TYPES = {"compress_space_res": "spatial", "compress_time_res": "temporal", "compress_all_res": "spatiotemporal"}
_UP_TYPES = {"compress_space": "spatial", "compress_time": "temporal", "compress_all": "spatiotemporal"}
_STRIDES = {"spatial": (1, 2, 2), "temporal": (2, 1, 1), "spatiotemporal": (2, 2, 2)}


def parse_encoder_blocks(vae: dict) -> list[dict]:
    """Split ``vae.encoder_blocks`` into diffusers down blocks.

    Returns one dict per official block index with ``role`` (``"res"``/``"down"``/``"mid"``) and the diffusers
    block index. diffusers needs the pattern ``res_x, (compress_*_res, res_x)*``.
    """
    blocks = _block_list(vae.get("encoder_blocks", []))
    if not blocks or len(blocks) % 2 == 0:
        raise UnsupportedCheckpointError(f"vae.encoder_blocks has an unsupported layout: {blocks}")
    plan = []
    for j, (name, params) in enumerate(blocks):
        if j % 2 == 0:
            if name != "res_x":
                raise UnsupportedCheckpointError(f"vae.encoder_blocks[{j}] is {name!r}; diffusers expects 'res_x' here.")
            role = "mid" if j == len(blocks) - 1 else "res"
        else:
            if name not in _DOWN_TYPES:
                raise UnsupportedCheckpointError(
                    f"vae.encoder_blocks[{j}] is {name!r}; diffusers supports {sorted(_DOWN_TYPES)} here."
                )
            role = "down"
        plan.append({"index": j, "name": name, "params": params, "role": role, "block": j // 2})
    return plan


def parse_decoder_blocks(vae: dict) -> list[dict]:
    """Split ``vae.decoder_blocks`` (stored in encoder order, run reversed) into diffusers up blocks.

    The returned list is in ltx-core's ``up_blocks`` order (the reversed metadata list); each entry has
    ``role`` (``"mid"``/``"up"``/``"res"``) and the diffusers up-block index.
    """
    blocks = list(reversed(_block_list(vae.get("decoder_blocks", []))))
    if not blocks or len(blocks) % 2 == 0:
        raise UnsupportedCheckpointError(f"vae.decoder_blocks has an unsupported layout: {blocks}")
    plan = []
    for j, (name, params) in enumerate(blocks):
        if j % 2 == 0:
            if name != "res_x":
                raise UnsupportedCheckpointError(f"vae.decoder_blocks entry {name!r} where diffusers expects 'res_x'.")
            role = "mid" if j == 0 else "res"
        else:
            if name not in _UP_TYPES:
                raise UnsupportedCheckpointError(
                    f"vae.decoder_blocks entry {name!r}; diffusers supports {sorted(_UP_TYPES)} here."
                )
            role = "up"
        plan.append({"index": j, "name": name, "params": params, "role": role, "block": (j - 1) // 2})
    return plan


def video_vae_config(config: dict) -> dict[str, Any]:
    """``AutoencoderKLLTX2Video`` config from the official ``vae`` section."""
    vae = config.get("vae", {})
    _check_fixed(vae, {"dims": 3, "norm_layer": "pixel_norm", "latent_log_var": "uniform"}, "vae")
    latent = vae.get("latent_channels", 128)
    patch = vae.get("patch_size", 4)

    enc = parse_encoder_blocks(vae)
    layers, down_types, block_out = [], [], []
    channels = latent  # ltx-core's encoder starts at latent_channels wide
    time_factor, space_factor = 1, patch
    for b in enc:
        if b["role"] in ("res", "mid"):
            layers.append(b["params"]["num_layers"])
        else:
            kind = _DOWN_TYPES[b["name"]]
            down_types.append(kind)
            channels *= b["params"].get("multiplier", 2)
            block_out.append(channels)
            time_factor *= _STRIDES[kind][0]
            space_factor *= _STRIDES[kind][1]

    dec = parse_decoder_blocks(vae)
    base = vae.get("decoder_base_channels", 128)
    channels = base * 8  # ltx-core: "feature_channels = base_channels * 8"
    dec_layers, up_types, residual, factors, dec_out, noise = [], [], [], [], [], []
    for b in dec:
        if b["role"] in ("mid", "res"):
            dec_layers.append(b["params"]["num_layers"])
            noise.append(bool(b["params"].get("inject_noise", False)))
        else:
            mult = b["params"].get("multiplier", 1)
            up_types.append(_UP_TYPES[b["name"]])
            residual.append(bool(b["params"].get("residual", False)))
            factors.append(mult)
            dec_out.append(channels)  # diffusers' per-block value is the pre-upsample width
            channels //= mult
    # diffusers stores every decoder list except `upsample_type` in encoder order (it reverses them).
    return {
        "in_channels": vae.get("in_channels", 3),
        "out_channels": vae.get("out_channels", 3),
        "latent_channels": latent,
        "block_out_channels": tuple(block_out),
        "down_block_types": ("LTX2VideoDownBlock3D",) * len(block_out),
        "decoder_block_out_channels": tuple(reversed(dec_out)),
        "layers_per_block": tuple(layers),
        "decoder_layers_per_block": tuple(reversed(dec_layers)),
        "spatio_temporal_scaling": (True,) * len(block_out),
        "decoder_spatio_temporal_scaling": (True,) * len(dec_out),
        "decoder_inject_noise": tuple(reversed(noise)),
        "downsample_type": tuple(down_types),
        "upsample_type": tuple(up_types),
        "upsample_residual": tuple(reversed(residual)),
        "upsample_factor": tuple(reversed(factors)),
        "timestep_conditioning": bool(vae.get("timestep_conditioning", True)),
        "patch_size": patch,
        "patch_size_t": 1,
        "resnet_norm_eps": 1e-6,
        "scaling_factor": float(vae.get("scaling_factor", 1.0)),
        "encoder_causal": True,
        "decoder_causal": bool(vae.get("causal_decoder", False)),
        "encoder_spatial_padding_mode": vae.get("spatial_padding_mode", "zeros"),
        "decoder_spatial_padding_mode": vae.get("spatial_padding_mode", "reflect"),
        "spatial_compression_ratio": space_factor,
        "temporal_compression_ratio": time_factor,
    }


# ----------------------------------------------------------------------------------------------- audio


def _audio_sections(config: dict) -> tuple[dict, dict, dict, dict]:
    audio = config.get("audio_vae", {})
    params = audio.get("model", {}).get("params", {})
    pre = audio.get("preprocessing", {})
    return params, params.get("ddconfig", {}), pre, audio.get("variables", {})


def audio_vae_config(config: dict) -> dict[str, Any]:
    """``AutoencoderKLLTX2Audio`` config from the official ``audio_vae`` section (ltx-core defaults)."""
    params, dd, pre, variables = _audio_sections(config)
    stft, mel = pre.get("stft", {}), pre.get("mel", {})
    mel_bins = dd.get("mel_bins") or mel.get("n_mel_channels") or variables.get("mel_bins")
    attn = dd.get("attn_resolutions", None)
    return {
        "base_channels": dd.get("ch", 128),
        "output_channels": dd.get("out_ch", 2),
        "ch_mult": tuple(dd.get("ch_mult", (1, 2, 4))),
        "num_res_blocks": dd.get("num_res_blocks", 2),
        "attn_resolutions": tuple(attn) if attn else None,
        "in_channels": dd.get("in_channels", 2),
        "resolution": dd.get("resolution", 256),
        "latent_channels": dd.get("z_channels", 8),
        "norm_type": dd.get("norm_type", "pixel"),
        "causality_axis": dd.get("causality_axis", "height"),
        "dropout": dd.get("dropout", 0.0),
        "mid_block_add_attention": dd.get("mid_block_add_attention", True),
        "sample_rate": params.get("sampling_rate", 16000),
        "mel_hop_length": stft.get("hop_length", 160),
        "is_causal": stft.get("causal", True),
        "mel_bins": mel_bins,
        "double_z": dd.get("double_z", True),
    }


def _vocoder_kwargs(cfg: dict, *, final_activation: bool, prefix: str = "") -> dict[str, Any]:
    amp = cfg.get("resblock", "1") == "AMP1"
    if not amp and cfg.get("resblock", "1") != "1":
        raise UnsupportedCheckpointError(f"vocoder resblock {cfg.get('resblock')!r} is not supported.")
    final = None
    if final_activation:
        final = "tanh" if cfg.get("use_tanh_at_final", True) else "clamp"
    return {
        f"{prefix}in_channels": 128,  # ltx-core hard-codes 2 stereo channels x 64 mel bins
        f"{prefix}hidden_channels": cfg.get("upsample_initial_channel", 1024),
        f"{prefix}out_channels": 2,
        f"{prefix}upsample_kernel_sizes": list(cfg.get("upsample_kernel_sizes", [16, 15, 8, 4, 4])),
        f"{prefix}upsample_factors": list(cfg.get("upsample_rates", [6, 5, 2, 2, 2])),
        f"{prefix}resnet_kernel_sizes": list(cfg.get("resblock_kernel_sizes", [3, 7, 11])),
        f"{prefix}resnet_dilations": [list(d) for d in cfg.get("resblock_dilation_sizes", [[1, 3, 5]] * 3)],
        f"{prefix}act_fn": cfg.get("activation", "snake") if amp else "leaky_relu",
        f"{prefix}leaky_relu_negative_slope": 0.1,
        f"{prefix}antialias": amp,
        f"{prefix}final_act_fn": final,
        f"{prefix}final_bias": bool(cfg.get("use_bias_at_final", True)),
    }


def vocoder_class_name(config: dict) -> str:
    """``"LTX2VocoderWithBWE"`` when the vocoder section has a bandwidth extender, else ``"LTX2Vocoder"``."""
    return "LTX2VocoderWithBWE" if "bwe" in config.get("vocoder", {}) else "LTX2Vocoder"


def vocoder_config(config: dict) -> dict[str, Any]:
    """``LTX2Vocoder`` / ``LTX2VocoderWithBWE`` config from the official ``vocoder`` section."""
    cfg = config.get("vocoder", {})
    if "bwe" not in cfg:
        out = _vocoder_kwargs(cfg, final_activation=True)
        out["output_sampling_rate"] = cfg.get("output_sampling_rate", 24000)
        return out
    voc, bwe = cfg.get("vocoder", {}), cfg["bwe"]
    if bwe.get("apply_final_activation", False):
        raise UnsupportedCheckpointError("vocoder.bwe.apply_final_activation=True is not supported by diffusers.")
    out = _vocoder_kwargs(voc, final_activation=True)
    out.update(_vocoder_kwargs(bwe, final_activation=False, prefix="bwe_"))
    out.update(
        {
            "filter_length": bwe["n_fft"],
            "hop_length": bwe["hop_length"],
            "window_length": bwe.get("win_size", bwe["n_fft"]),
            "num_mel_channels": bwe["num_mels"],
            "input_sampling_rate": bwe["input_sampling_rate"],
            "output_sampling_rate": bwe["output_sampling_rate"],
        }
    )
    return out


# ----------------------------------------------------------------------------------------------- transformer


def transformer_config(config: dict, version: str) -> dict[str, Any]:
    """``LTX2VideoTransformer3DModel`` config from the official ``transformer`` section.

    ``perturbed_attn`` is always ``True`` so the converted model honours STG (diffusers silently ignores
    STG otherwise).
    """
    t = config.get("transformer", {})
    _check_fixed(t, _TRANSFORMER_FIXED, "transformer")
    if t.get("positional_embedding_type", "rope") != "rope":
        raise UnsupportedCheckpointError("transformer: only RoPE positional embeddings are supported.")
    vae = video_vae_config(config) if config.get("vae") else None
    params, _, pre, _ = _audio_sections(config)
    audio_ch_mult = config.get("audio_vae", {}).get("model", {}).get("params", {}).get("ddconfig", {}).get(
        "ch_mult", (1, 2, 4)
    )
    max_pos = list(t.get("positional_embedding_max_pos", [20, 2048, 2048]))
    audio_max_pos = list(t.get("audio_positional_embedding_max_pos", [20]))
    gated = bool(t.get("apply_gated_attention", False))
    cross_adaln = bool(t.get("cross_attention_adaln", False))
    return {
        "in_channels": t.get("in_channels", 128),
        "out_channels": t.get("out_channels", 128),
        "patch_size": 1,
        "patch_size_t": 1,
        "num_attention_heads": t.get("num_attention_heads", 32),
        "attention_head_dim": t.get("attention_head_dim", 128),
        "cross_attention_dim": t.get("cross_attention_dim", 4096),
        "vae_scale_factors": (
            (vae["temporal_compression_ratio"], vae["spatial_compression_ratio"], vae["spatial_compression_ratio"])
            if vae
            else (8, 32, 32)
        ),
        "pos_embed_max_pos": max_pos[0],
        "base_height": max_pos[1],
        "base_width": max_pos[2],
        "gated_attn": gated,
        "cross_attn_mod": cross_adaln,
        "audio_in_channels": t.get("audio_in_channels", 128),
        "audio_out_channels": t.get("audio_out_channels", 128),
        "audio_patch_size": 1,
        "audio_patch_size_t": 1,
        "audio_num_attention_heads": t.get("audio_num_attention_heads", 32),
        "audio_attention_head_dim": t.get("audio_attention_head_dim", 64),
        "audio_cross_attention_dim": t.get("audio_cross_attention_dim", 2048),
        "audio_scale_factor": 2 ** (len(audio_ch_mult) - 1),
        "audio_pos_embed_max_pos": audio_max_pos[0],
        "audio_sampling_rate": params.get("sampling_rate", 16000),
        "audio_hop_length": pre.get("stft", {}).get("hop_length", 160),
        "audio_gated_attn": gated,
        "audio_cross_attn_mod": cross_adaln,
        "num_layers": t.get("num_layers", 48),
        "activation_fn": "gelu-approximate",
        "qk_norm": "rms_norm_across_heads",
        "norm_elementwise_affine": False,
        "norm_eps": t.get("norm_eps", 1e-6),
        "caption_channels": t.get("caption_channels", 3840),
        "attention_bias": True,
        "attention_out_bias": True,
        "rope_theta": float(t.get("positional_embedding_theta", 10000.0)),
        "rope_double_precision": t.get("frequencies_precision", False) == "float64",
        "causal_offset": 1,
        "timestep_scale_multiplier": int(t.get("timestep_scale_multiplier", 1000)),
        "cross_attn_timestep_scale_multiplier": int(t.get("av_ca_timestep_scale_multiplier", 1)),
        "rope_type": t.get("rope_type", "interleaved"),
        "use_prompt_embeddings": not t.get("caption_proj_before_connector", False),
        "perturbed_attn": True,
        "ff_bias": bool(t.get("ff_bias", True)),
        "audio_ff_bias": bool(t.get("audio_ff_bias", True)),
        "use_prompt_adaln_single": bool(t.get("use_prompt_adaln_single", True)),
        "use_keyframes_abs_pos_embedding": bool(t.get("use_keyframes_abs_pos_embedding", False)),
    }


def default_stg_blocks(config: dict, version: str) -> list[int]:
    """The block index the official recipe perturbs for STG, clipped to the model's depth."""
    layers = config.get("transformer", {}).get("num_layers", 48)
    return [min(_DEFAULT_STG_BLOCK[version], layers - 1)]


def connectors_config(config: dict, projection_shapes: dict[str, tuple[int, ...]]) -> dict[str, Any]:
    """``LTX2TextConnectors`` config from the ``transformer`` section and the projection weight shapes.

    ``projection_shapes`` maps the official ``text_embedding_projection.*.weight`` keys to their shapes:
    the flattened Gemma width (hidden x layers) is read from the file, not assumed to be Gemma-3-12B.
    """
    t = config.get("transformer", {})
    per_modality = bool(t.get("caption_proj_before_connector", False))
    if per_modality:
        shape = projection_shapes.get("text_embedding_projection.video_aggregate_embed.weight")
        caption_channels = t.get("caption_channels", 3840)
    else:
        shape = projection_shapes.get("text_embedding_projection.aggregate_embed.weight")
        caption_channels = shape[0] if shape else t.get("caption_channels", 3840)
    if shape is None:
        raise UnsupportedCheckpointError("The checkpoint has no text_embedding_projection weights.")
    if shape[1] % caption_channels:
        raise UnsupportedCheckpointError(
            f"text projection input width {shape[1]} is not a multiple of caption_channels {caption_channels}."
        )
    heads = t.get("connector_num_attention_heads", 30)
    head_dim = t.get("connector_attention_head_dim", 128)
    registers = t.get("connector_num_learnable_registers", 128)
    gated = bool(t.get("connector_apply_gated_attention", False))
    max_pos = t.get("connector_positional_embedding_max_pos", [1])
    return {
        "caption_channels": caption_channels,
        "text_proj_in_factor": shape[1] // caption_channels,
        "video_connector_num_attention_heads": heads,
        "video_connector_attention_head_dim": head_dim,
        "video_connector_num_layers": t.get("connector_num_layers", 2),
        "video_connector_num_learnable_registers": registers,
        "video_gated_attn": gated,
        "audio_connector_num_attention_heads": t.get("audio_connector_num_attention_heads", heads),
        "audio_connector_attention_head_dim": t.get("audio_connector_attention_head_dim", head_dim),
        "audio_connector_num_layers": t.get("audio_connector_num_layers", t.get("connector_num_layers", 2)),
        "audio_connector_num_learnable_registers": registers,
        "audio_gated_attn": gated,
        "connector_rope_base_seq_len": int(max_pos[0]),
        "rope_theta": 10000.0,  # ltx-core's connector configurator never passes a theta
        "rope_double_precision": t.get("frequencies_precision", False) == "float64",
        "causal_temporal_positioning": False,
        "rope_type": t.get("rope_type", "interleaved"),
        "per_modality_projections": per_modality,
        "video_hidden_dim": t.get("num_attention_heads", 32) * t.get("attention_head_dim", 128),
        "audio_hidden_dim": t.get("audio_num_attention_heads", 32) * t.get("audio_attention_head_dim", 64),
        "proj_bias": per_modality,
    }


def zero_filled_tensors(config: dict, component: str) -> set[str]:
    """Tensors a checkpoint switches off but the diffusers module always has, to be filled with zeros (a Linear
    without bias is the Linear with a zero bias, exactly).

    ltx-core 1.2.0 added ``connector_ff_bias`` (default True) to the text connectors' feed-forward; diffusers
    0.42.1's `LTX2TextConnectors` always has those biases.
    """
    t = config.get("transformer", {})
    if component != "connectors" or t.get("connector_ff_bias", True):
        return set()
    layers = {"video": t.get("connector_num_layers", 2),
              "audio": t.get("audio_connector_num_layers", t.get("connector_num_layers", 2))}
    return {f"{m}_connector.transformer_blocks.{i}.ff.{leaf}" for m, n in layers.items() for i in range(n)
            for leaf in ("net.0.proj.bias", "net.2.bias")}


def check_connector_dims(conn: dict) -> None:
    """2.0 feeds the projected Gemma features straight into the connector: its width must match."""
    if not conn["per_modality_projections"]:
        width = conn["video_connector_num_attention_heads"] * conn["video_connector_attention_head_dim"]
        if width != conn["caption_channels"]:
            raise UnsupportedCheckpointError(
                f"connector width {width} differs from caption_channels {conn['caption_channels']}."
            )



# ----------------------------------------------------------------------------------------------- LTX-2.5 parts
# The diffusion video decoder (``ltx-2.5-video-vae-*``): ltx-core 1.2.0 `_build_diffusion_video_decoder` reads
# ``vae.decoder`` (falling back to ``vae`` itself) and ``vae.model_output_type``, leaving absent architecture fields
# at `DiffusionVideoDecoder`'s defaults. The duration head: `DurationHeadConfigurator`.

# ltx-core 1.2.0 `diffusion_video_decoder.py` class defaults (used for fields a config leaves out)
_STAGE_CHANNELS = (1024, 512, 256, 256, 128)
_STAGE_DEPTHS = (4, 6, 4, 2, 8)
_STAGE_KERNELS = ((3, 7, 7), (3, 7, 7), (3, 5, 5), (3, 5, 5), (3, 3, 3))
_UPSAMPLES = (((1, 2, 2), 2), ((2, 1, 1), 2), ((2, 2, 2), 1), ((2, 2, 2), 2))
_STAGE5_KERNEL = (3, 7, 7)


def diffusion_decoder_config(vae: dict) -> dict[str, Any]:
    """`LTX2VideoDiffusionDecoderModel` config from an official diffusion VAE's ``vae`` section.

    Raises:
        UnsupportedCheckpointError: settings diffusers' model cannot express (a stage-5 width other than the last
            stage's, a custom RoPE split, inconsistent stage widths).
    """
    dec = vae.get("decoder", vae)
    channels = tuple(int(c) for c in dec.get("stage_channels", _STAGE_CHANNELS))
    depths = tuple(int(d) for d in dec.get("stage_depths", _STAGE_DEPTHS))
    kernels = tuple(tuple(int(k) for k in kern) for kern in dec.get("stage_kernels", _STAGE_KERNELS))
    upsamples = tuple((tuple(int(s) for s in stride), int(red)) for stride, red in dec.get("upsamples", _UPSAMPLES))
    head_dim = int(dec.get("head_dim", dec.get("na_head_dim", 64)))
    if "stage5_channels" in dec and int(dec["stage5_channels"]) != channels[-1]:
        raise UnsupportedCheckpointError(
            f"vae.decoder.stage5_channels={dec['stage5_channels']} differs from the last stage width {channels[-1]}; "
            "diffusers' LTX2VideoDiffusionDecoderModel has no separate stage-5 width"
        )
    if dec.get("rope_dim_split") is not None:
        raise UnsupportedCheckpointError(
            "vae.decoder.rope_dim_split is not supported by diffusers (default split only)")
    if not len(channels) == len(depths) == len(kernels) == len(upsamples) + 1:
        raise UnsupportedCheckpointError(
            f"vae.decoder: {len(channels)} stage widths, {len(depths)} depths, {len(kernels)} kernels and "
            f"{len(upsamples)} upsamples do not describe one decoder"
        )
    for i, (_, reduction) in enumerate(upsamples):
        if channels[i] // reduction != channels[i + 1]:
            raise UnsupportedCheckpointError(
                f"vae.decoder: stage {i + 1} width {channels[i + 1]} is not stage {i} width {channels[i]} / "
                f"upsample reduction {reduction}"
            )
    out_type = vae.get("model_output_type", "v")
    if out_type not in ("v", "x0"):
        raise UnsupportedCheckpointError(f"vae.model_output_type={out_type!r} is not supported ('v' or 'x0')")
    space = dec.get("patch_size", 4)
    time = 1
    for (st, sh, _), _ in upsamples:
        space *= sh
        time *= st
    return {
        "out_channels": int(dec.get("out_channels", 3)),
        "latent_channels": int(dec.get("in_channels", vae.get("latent_channels", 128))),
        "patch_size": int(dec.get("patch_size", 4)),
        "scaling_factor": 1.0,
        "decoder_head_dim": head_dim,
        "decoder_stage_channels": channels,
        "decoder_stage_depths": depths,
        "decoder_stage_kernels": kernels[: len(upsamples)],  # the last entry is the conv NA decoder's, unused here
        "decoder_upsample_strides": tuple(stride for stride, _ in upsamples),
        "decoder_upsample_channel_reductions": tuple(red for _, red in upsamples),
        "decoder_stage5_kernel": tuple(int(k) for k in dec.get("stage5_kernel", _STAGE5_KERNEL)),
        "decoder_t_emb_dim": int(dec.get("t_emb_dim", 384)),
        "decoder_timestep_scale_multiplier": float(dec.get("timestep_scale_multiplier", 1.0)),
        "decoder_model_output_type": out_type,
        "decoder_num_inference_steps": int(dec.get("default_num_inference_steps", 2)),
        "spatial_compression_ratio": int(space),
        "temporal_compression_ratio": int(time),
    }



def duration_head_config(config: dict, shapes: dict[str, tuple[int, ...]] | None = None) -> dict[str, Any]:
    """`LTX2DurationHead` config from the official ``transformer`` / ``duration_head`` sections.

    ``shapes`` (``duration_head.*`` key -> shape, from the file's header) override the widths the config states,
    so a file whose config section is missing still converts to the module its tensors describe.
    """
    t, head = config.get("transformer", {}), config.get("duration_head", {})
    out = {
        "video_cross_attention_dim": int(t.get("cross_attention_dim", 4096)),
        "audio_cross_attention_dim": int(t.get("audio_cross_attention_dim", 2048)),
        "pooler_hidden_dim": int(head.get("pooler_hidden_dim", 256)),
        "num_queries": int(head.get("num_queries", 1)),
        "num_pooler_heads": int(head.get("num_pooler_heads", 4)),
        "mlp_hidden_dim": int(head.get("mlp_hidden", 256)),
    }
    shapes = shapes or {}
    p = "duration_head."
    if p + "video_input_proj.weight" in shapes:
        out["pooler_hidden_dim"], out["video_cross_attention_dim"] = shapes[p + "video_input_proj.weight"]
    if p + "audio_input_proj.weight" in shapes:
        out["audio_cross_attention_dim"] = shapes[p + "audio_input_proj.weight"][1]
    if p + "attention_pooler.query_tokens" in shapes:
        out["num_queries"] = shapes[p + "attention_pooler.query_tokens"][0]
    if p + "mlp_hidden.weight" in shapes:
        out["mlp_hidden_dim"] = shapes[p + "mlp_hidden.weight"][0]
    return out


__all__ = [
    "SUPPORTED_VERSIONS",
    "audio_vae_config",
    "check_connector_dims",
    "connectors_config",
    "default_stg_blocks",
    "diffusion_decoder_config",
    "duration_head_config",
    "zero_filled_tensors",
    "normalize_version",
    "parse_decoder_blocks",
    "parse_encoder_blocks",
    "transformer_config",
    "video_vae_config",
    "vocoder_class_name",
    "vocoder_config",
]

