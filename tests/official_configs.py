"""Tiny official LTX-2 configs (the ``config`` metadata of the released files, shrunk): plain data, no imports.

Shared by the in-process builders (``official_checkpoints``, ltx-core 1.0.0) and the ltx-core 1.2.0 subprocess
(``ltx12_reference``), which cannot import ltx-core 1.0.0 modules.
"""

from __future__ import annotations

#: Tiny Gemma stand-in: hidden width and number of hidden states (embeddings + layers).
GEMMA_HIDDEN = 12
GEMMA_STATES = 3

_T_COMMON = {
    "_class_name": "AVTransformer3DModel",
    "activation_fn": "gelu-approximate", "attention_bias": True, "attention_type": "default",
    "cross_attention_norm": True, "double_self_attention": False, "dropout": 0.0,
    "norm_elementwise_affine": False, "norm_eps": 1e-06, "num_embeds_ada_norm": 1000, "num_vector_embeds": None,
    "only_cross_attention": False, "upcast_attention": False, "use_linear_projection": False,
    "qk_norm": "rms_norm", "standardization_norm": "rms_norm", "positional_embedding_type": "rope",
    "positional_embedding_theta": 10000.0, "positional_embedding_max_pos": [20, 2048, 2048],
    "timestep_scale_multiplier": 1000, "av_ca_timestep_scale_multiplier": 1000.0,
    "causal_temporal_positioning": True, "use_audio_video_cross_attention": True, "share_ff": False,
    "audio_positional_embedding_max_pos": [20], "av_cross_ada_norm": True, "use_embeddings_connector": True,
    "use_middle_indices_grid": True, "rope_type": "split", "frequencies_precision": "float64",
    "connector_positional_embedding_max_pos": [4096], "connector_num_learnable_registers": 128,
    "connector_norm_output": True,
    # tiny sizes
    "num_layers": 2, "num_attention_heads": 2, "attention_head_dim": 8, "in_channels": 8, "out_channels": 8,
    "cross_attention_dim": 16, "audio_num_attention_heads": 2, "audio_attention_head_dim": 4,
    "audio_in_channels": 8, "audio_out_channels": 8, "audio_cross_attention_dim": 8,
    "caption_channels": GEMMA_HIDDEN, "connector_num_layers": 1,
}
TRANSFORMER_20 = {**_T_COMMON, "connector_num_attention_heads": 3, "connector_attention_head_dim": 4}
TRANSFORMER_23 = {
    **_T_COMMON,
    "apply_gated_attention": True, "connector_apply_gated_attention": True, "cross_attention_adaln": True,
    "caption_proj_before_connector": True, "caption_projection_first_linear": False,
    "caption_projection_second_linear": False, "caption_proj_input_norm": False,
    "connector_learnable_registers_std": 1, "text_encoder_norm_type": "per_token_rms",
    "connector_num_attention_heads": 2, "connector_attention_head_dim": 8,
    "audio_connector_num_attention_heads": 2, "audio_connector_attention_head_dim": 4,
}


def _res(n, **kw):
    return ["res_x", {"num_layers": n, **kw}]


VAE_20 = {
    "_class_name": "CausalVideoAutoencoder", "dims": 3, "in_channels": 3, "out_channels": 3, "latent_channels": 8,
    "encoder_blocks": [
        _res(1), ["compress_space_res", {"multiplier": 2}], _res(1), ["compress_time_res", {"multiplier": 2}],
        _res(1), ["compress_all_res", {"multiplier": 2}], _res(1), ["compress_all_res", {"multiplier": 2}], _res(1),
    ],
    "decoder_blocks": [
        _res(1, inject_noise=False), ["compress_all", {"residual": True, "multiplier": 2}],
        _res(1, inject_noise=False), ["compress_all", {"residual": True, "multiplier": 2}],
        _res(1, inject_noise=False), ["compress_all", {"residual": True, "multiplier": 2}],
        _res(1, inject_noise=False),
    ],
    "scaling_factor": 1.0, "norm_layer": "pixel_norm", "patch_size": 4, "latent_log_var": "uniform",
    "use_quant_conv": False, "causal_decoder": False, "timestep_conditioning": True,
    "decoder_base_channels": 8,
}
VAE_23 = {
    **VAE_20,
    "encoder_blocks": [
        _res(1), ["compress_space_res", {"multiplier": 2}], _res(2), ["compress_time_res", {"multiplier": 2}],
        _res(1), ["compress_all_res", {"multiplier": 2}], _res(1), ["compress_all_res", {"multiplier": 1}], _res(1),
    ],
    "decoder_blocks": [
        _res(1), ["compress_space", {"multiplier": 2}], _res(2), ["compress_time", {"multiplier": 2}],
        _res(1), ["compress_all", {"multiplier": 1}], _res(1), ["compress_all", {"multiplier": 2}], _res(1),
    ],
    "timestep_conditioning": False, "encoder_base_channels": 8, "spatial_padding_mode": "zeros",
}
#: ltx-core normalises the patchified audio latent (z_channels x mel_bins/4 wide) with statistics of size
#: ``ch``; the released model has 8 x 16 = 128 = ch, the tiny one 2 x 16 = 32 = ch.
AUDIO_VAE = {
    "model": {"params": {"ddconfig": {
        "double_z": True, "mel_bins": 64, "z_channels": 2, "resolution": 256, "downsample_time": False,
        "in_channels": 2, "out_ch": 2, "ch": 32, "ch_mult": [1, 2, 4], "num_res_blocks": 1, "attn_resolutions": [],
        "dropout": 0.0, "mid_block_add_attention": False, "norm_type": "pixel", "causality_axis": "height",
    }, "sampling_rate": 16000}},
    "preprocessing": {
        "audio": {"sampling_rate": 16000, "max_wav_value": 32768.0, "duration": 5.12, "stereo": True,
                  "causal_padding": 3},
        "stft": {"filter_length": 1024, "hop_length": 160, "win_length": 1024, "causal": True},
        "mel": {"n_mel_channels": 64, "mel_fmin": 0, "mel_fmax": 8000},
    },
}
VOCODER_20 = {
    "upsample_initial_channel": 16, "resblock": "1", "upsample_rates": [2, 2], "resblock_kernel_sizes": [3, 5],
    "upsample_kernel_sizes": [4, 4], "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5]], "stereo": True,
    "output_sampling_rate": 24000,
}
_AMP = {"resblock": "AMP1", "stereo": True, "use_tanh_at_final": False, "activation": "snakebeta",
        "use_bias_at_final": False, "resblock_kernel_sizes": [3], "resblock_dilation_sizes": [[1, 3, 5]]}
VOCODER_23 = {
    "vocoder": {**_AMP, "upsample_initial_channel": 16, "upsample_rates": [2, 2], "upsample_kernel_sizes": [4, 4]},
    "bwe": {**_AMP, "upsample_initial_channel": 16, "upsample_rates": [3, 2, 2, 2],
            "upsample_kernel_sizes": [7, 4, 4, 4], "apply_final_activation": False, "input_sampling_rate": 16000,
            "output_sampling_rate": 48000, "hop_length": 8, "n_fft": 32, "win_size": 32, "num_mels": 64},
}

CONFIG_20 = {"transformer": TRANSFORMER_20, "vae": VAE_20, "audio_vae": AUDIO_VAE, "vocoder": VOCODER_20,
             "scheduler": {"_class_name": "RectifiedFlowScheduler", "sampler": "LinearQuadratic"}}
CONFIG_23 = {"transformer": TRANSFORMER_23, "vae": VAE_23, "audio_vae": AUDIO_VAE, "vocoder": VOCODER_23,
             "scheduler": {"_class_name": "RectifiedFlowScheduler", "sampler": "LinearQuadratic"}}
CONFIGS = {"2.0": CONFIG_20, "2.3": CONFIG_23}

# ----------------------------------------------------------------------------------------------- LTX-2.5
# 2.5 ships one file per component (ltx-core 1.2.0 `model_configurator.py` switches): no feed-forward biases, the
# learned first-frame (keyframe) position embedding; the connectors' feed-forward bias switch is new in 1.2 too.
#: the audio width is the audio VAE's packed latent (z_channels x mel_bins / 4), as released, so that whole runs
#: (generation to the audio decoder) work on the set
_AUDIO_PACKED = AUDIO_VAE["model"]["params"]["ddconfig"]["z_channels"] * \
    AUDIO_VAE["model"]["params"]["ddconfig"]["mel_bins"] // 4
TRANSFORMER_25 = {
    **TRANSFORMER_23,
    "ff_bias": False, "audio_ff_bias": False, "use_keyframes_abs_pos_embedding": True, "connector_ff_bias": False,
    "audio_in_channels": _AUDIO_PACKED, "audio_out_channels": _AUDIO_PACKED,
}
#: the KV-cacheable variant ltx-core 1.2 documents (`use_prompt_adaln_single=false`: no prompt AdaLN MLP)
TRANSFORMER_25_KV = {**TRANSFORMER_25, "use_prompt_adaln_single": False}

#: the conv-decoder video VAE (`ltx-2.5-video-vae-conv`): the 2.3 layout
VAE_25_CONV = VAE_23
#: the diffusion-decoder video VAE (`ltx-2.5-video-vae`): 2.3's encoder (nested, ``blocks``) and a tiny
#: neighborhood-attention diffusion decoder (ltx-core 1.2 `_build_diffusion_video_decoder` keys)
VAE_25_DIFFUSION = {
    "_class_name": "CausalDiffusionVAE",
    "latent_channels": 8,
    "model_output_type": "x0",
    "encoder": {
        "dims": 3, "in_channels": 3, "out_channels": 8, "blocks": VAE_23["encoder_blocks"], "patch_size": 4,
        "norm_layer": "pixel_norm", "latent_log_var": "uniform", "spatial_padding_mode": "zeros",
    },
    "decoder": {
        "in_channels": 8, "out_channels": 3, "patch_size": 4, "head_dim": 16,
        "stage_channels": [64, 32, 16, 16, 16], "stage_depths": [1, 1, 1, 1, 2],
        "stage_kernels": [[3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]],
        "upsamples": [[[1, 2, 2], 2], [[2, 1, 1], 2], [[2, 2, 2], 1], [[2, 2, 2], 1]],
        "stage5_kernel": [3, 5, 5], "t_emb_dim": 16, "default_num_inference_steps": 1,
        "timestep_scale_multiplier": 1000.0,
    },
}
#: the duration head's own sub-dict (ltx-core 1.2 `DurationHeadConfigurator`; its widths come from `transformer`)
DURATION_HEAD = {"pooler_hidden_dim": 16, "num_queries": 2, "num_pooler_heads": 2, "mlp_hidden": 12}

SCHEDULER = {"_class_name": "RectifiedFlowScheduler", "sampler": "LinearQuadratic"}
#: per-file ``config`` metadata of the 2.5 set (the transformer file also carries the text projection's layout)
CONFIGS_25 = {
    "transformer": {"transformer": TRANSFORMER_25, "scheduler": SCHEDULER},
    "video_vae_conv": {"vae": VAE_25_CONV},
    "video_vae_diffusion": {"vae": VAE_25_DIFFUSION},
    "audio_vae": {"audio_vae": AUDIO_VAE, "vocoder": VOCODER_23},
    "duration_head": {"transformer": TRANSFORMER_25, "duration_head": DURATION_HEAD},
}
MODEL_VERSION_25 = "2.5.0"
MODEL_ID_25 = "ltx-2.5-tiny-test-model-id"
#: the Gemma-4 encoder version 2.5 checkpoints declare (`gemma_source_checkpoint.gemma_version`)
GEMMA_VERSION_25 = "gemma4-12b-ltx-v1"
