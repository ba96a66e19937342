"""Tiny random-weight LTX-2 models, built offline, for tests, the CLI demo and benchmarks.

Every component is one of diffusers' (or transformers') own LTX-2 classes, only with small dimensions, so code
exercised on these models runs unchanged on the real checkpoints. Two presets:

* `TINY`: the fastest configuration in which everything still works end to end (builds in ~0.1 s; a 2-step
  64x64x9 diffusers pipeline run takes ~0.25 s warm on 2 CPU cores, ~0.5 s at the default 1024-token prompts).
* `SMALL`: a benchmark configuration where the DiT dominates the run time (see its docstring).

Constraints of diffusers 0.42.1 that shape these configurations (all checked by `ModelSize.__post_init__`):

* Connector width == Gemma hidden size (`caption_channels`): the LTX-2.0 connectors have no input projection.
* Video and audio DiT streams need the same head count: with `rope_type="split"` the a2v / v2a cross-attention
  RoPE of the video side is laid out over the *video* head count and that of the audio side over the *audio* one
  (diffusers and ltx-core alike), so with unequal counts queries and keys are rotated in different layouts.
* `AutoencoderKLLTX2Audio` sizes its `latents_mean` / `latents_std` buffers by `base_channels`, but the pipeline
  normalises the *packed* audio latent (`latent_channels * 16` features) with them: `base_channels` must equal
  `latent_channels * mel_bins / 4` (true for the real 128 = 8 * 16).
* `AutoencoderKLLTX2Video` derives its compression ratios as `patch_size * 2 ** sum(scaling)` (64 and 16 for the
  real 4-block VAE), so the real conversion passes 32 / 8 explicitly; we do the same. The decoder widths must
  double per level (`decoder_block_out_channels = (c, 2c, 4c)`), down-sampling widths must be multiples of 8.
* The pipeline pads prompts to `max_sequence_length` (default 1024, *not* `tokenizer.model_max_length`); the
  connectors' register count must divide it. Pass `max_sequence_length=size.max_sequence_length` for speed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

__all__ = [
    "ModelSize", "TINY", "SMALL", "TINY_CLIP", "SMALL_CLIP", "LTX2_SCHEDULER_CONFIG", "VOCAB_WORDS",
    "build_components", "build_components_25", "build_diffusers_pipeline", "build_scheduler", "build_tokenizer",
    "parameter_counts", "reinit_parameters_",
]

MEL_BINS = 64
AUDIO_SAMPLE_RATE = 16000
AUDIO_HOP_LENGTH = 160
VOCODER_SAMPLE_RATE = 24000
SPECIAL_TOKENS = ("<pad>", "<eos>", "<bos>", "<unk>")  # ids 0..3, Gemma's order

# A small built-in vocabulary (lower-case). Unknown words map to <unk>.
_WORDS = """
a an the and or but with without of in on at to from by for over under into onto near behind above below
between through across around while as is are was were be being it its this that these those there here
he she they we you i his her their our your my me him them one two three four five many few some all every
cat cats dog dogs bird birds horse fish man men woman women child children person people girl boy baby
car cars train boat ship plane bike bicycle road street city town village house room kitchen window door
table chair bed wall floor roof bridge river lake sea ocean beach wave waves water rain snow wind storm
fire smoke light lights shadow sun moon star stars sky cloud clouds mountain mountains hill forest tree trees
flower flowers grass field garden park desert island rock stone sand ice sunset sunrise night day morning
evening red orange yellow green blue purple pink white black gray brown golden silver dark bright soft loud
quiet slow fast small large big tiny huge old young new happy sad calm angry warm cold wet dry
walks walking runs running jumps jumping flies flying swims swimming sits sitting stands standing looks
looking turns turning moves moving dances dancing sings singing talks talking speaks speaking plays playing
laughs smiles cries opens closes holds holding falls rises shines glows burns flows drives driving rides
camera shot close up wide aerial slow motion pan zoom tracking cinematic realistic style scene video
music sound voice voices song noise ambient footsteps birdsong thunder engine applause says said
"""
_PUNCTUATION = ". , ! ? ' \" - : ; ( )"
VOCAB_WORDS: tuple[str, ...] = tuple(dict.fromkeys(_WORDS.split() + _PUNCTUATION.split()))


@dataclass(frozen=True)
class ModelSize:
    """Dimensions of a random-weight LTX-2 model (all components).

    The DiT's `caption_channels` is the Gemma hidden size; its latent channels follow the VAEs.
    """

    name: str
    # DiT (LTX2VideoTransformer3DModel)
    num_layers: int
    video_heads: int
    video_head_dim: int
    audio_heads: int
    audio_head_dim: int
    # Gemma-3 text encoder and tokenizer
    gemma_hidden: int
    gemma_layers: int
    gemma_heads: int
    gemma_kv_heads: int
    gemma_head_dim: int
    gemma_intermediate: int
    max_sequence_length: int
    # text connectors (LTX2TextConnectors)
    connector_heads: int
    connector_head_dim: int
    connector_layers: int
    connector_registers: int
    # video VAE (three spatio-temporal 2x levels + patch 4 = 32x spatial, 8x temporal)
    latent_channels: int
    vae_block_out_channels: tuple[int, int, int]
    vae_layers_per_block: tuple[int, int, int, int]
    vae_decoder_block_out_channels: tuple[int, int, int]
    vae_decoder_layers_per_block: tuple[int, int, int, int]
    # audio VAE (three levels = 4x time / 4x mel compression)
    audio_latent_channels: int
    audio_vae_ch_mult: tuple[int, int, int]
    audio_vae_res_blocks: int
    # vocoder (total upsampling must be 240 = 24000 Hz / 100 mel frames per second)
    vocoder_hidden: int
    vocoder_upsample_factors: tuple[int, ...]
    vocoder_upsample_kernels: tuple[int, ...]
    vocoder_resnet_kernels: tuple[int, ...]
    vocoder_resnet_dilations: tuple[tuple[int, ...], ...]

    @property
    def video_inner_dim(self) -> int:
        return self.video_heads * self.video_head_dim

    @property
    def audio_inner_dim(self) -> int:
        return self.audio_heads * self.audio_head_dim

    @property
    def caption_channels(self) -> int:
        return self.gemma_hidden

    @property
    def text_proj_in_factor(self) -> int:
        """Number of Gemma hidden states fed to the connectors (embeddings + one per layer)."""
        return self.gemma_layers + 1

    @property
    def audio_latent_features(self) -> int:
        """Width of a packed audio token: latent channels x latent mel bins."""
        return self.audio_latent_channels * (MEL_BINS // 4)

    def __post_init__(self):
        errors = []
        if self.num_layers < 2:
            errors.append("num_layers must be >= 2")
        if self.video_heads != self.audio_heads:
            errors.append("video_heads must equal audio_heads (split-RoPE a2v/v2a layout)")
        if self.video_head_dim % 2 or self.audio_head_dim % 2:
            errors.append("head dims must be even")
        if self.connector_heads * self.connector_head_dim != self.gemma_hidden:
            errors.append("connector_heads * connector_head_dim must equal gemma_hidden")
        if self.gemma_hidden % self.gemma_heads:
            errors.append("gemma_hidden must be a multiple of gemma_heads")
        if self.max_sequence_length % self.connector_registers or 1024 % self.connector_registers:
            errors.append("connector_registers must divide max_sequence_length and 1024")
        c = self.vae_decoder_block_out_channels
        if c[1] != 2 * c[0] or c[2] != 2 * c[1]:
            errors.append("vae_decoder_block_out_channels must double per level")
        widths = (self.latent_channels,) + self.vae_block_out_channels
        if any(w % 8 for w in widths) or any((8 * a) % b for a, b in zip(widths, widths[1:])):
            errors.append("video VAE widths must be multiples of 8 with (8 * in) % out == 0")
        if math.prod(self.vocoder_upsample_factors) != VOCODER_SAMPLE_RATE * AUDIO_HOP_LENGTH // AUDIO_SAMPLE_RATE:
            errors.append("vocoder upsampling must total 240")
        if any((k - s) % 2 for k, s in zip(self.vocoder_upsample_kernels, self.vocoder_upsample_factors)):
            errors.append("vocoder kernel - stride must be even (exact length)")
        if self.vocoder_hidden % 2 ** len(self.vocoder_upsample_factors):
            errors.append("vocoder_hidden must halve cleanly at every upsampling")
        if errors:
            raise ValueError(f"invalid ModelSize {self.name!r}: " + "; ".join(errors))


TINY = ModelSize(
    name="tiny", num_layers=2, video_heads=2, video_head_dim=8, audio_heads=2, audio_head_dim=4,
    gemma_hidden=32, gemma_layers=2, gemma_heads=2, gemma_kv_heads=1, gemma_head_dim=16, gemma_intermediate=64,
    max_sequence_length=128, connector_heads=2, connector_head_dim=16, connector_layers=1, connector_registers=16,
    latent_channels=16, vae_block_out_channels=(8, 16, 32), vae_layers_per_block=(1, 1, 1, 1),
    vae_decoder_block_out_channels=(8, 16, 32), vae_decoder_layers_per_block=(1, 1, 1, 1),
    audio_latent_channels=2, audio_vae_ch_mult=(1, 1, 1), audio_vae_res_blocks=1,
    vocoder_hidden=32, vocoder_upsample_factors=(6, 5, 8), vocoder_upsample_kernels=(12, 15, 16),
    vocoder_resnet_kernels=(3,), vocoder_resnet_dilations=((1, 3),),
)
"""Fastest configuration that runs end to end (`TINY_CLIP`: 64x64 px, 9 frames -> 2x2x2 = 8 video tokens,
9 audio tokens). Parameter counts: transformer 38,928; text_encoder 29,864 (Gemma-3, 2 layers x 32, plus a
1-layer 8-wide SigLIP); connectors 29,376; vae 362,624; audio_vae 280,390; vocoder 41,510 (782,692 in all)."""

SMALL = ModelSize(
    name="small", num_layers=8, video_heads=8, video_head_dim=64, audio_heads=8, audio_head_dim=32,
    gemma_hidden=128, gemma_layers=4, gemma_heads=4, gemma_kv_heads=2, gemma_head_dim=32, gemma_intermediate=256,
    max_sequence_length=256, connector_heads=2, connector_head_dim=64, connector_layers=2, connector_registers=32,
    latent_channels=128, vae_block_out_channels=(32, 64, 128), vae_layers_per_block=(0, 1, 1, 1),
    vae_decoder_block_out_channels=(16, 32, 64), vae_decoder_layers_per_block=(1, 1, 1, 1),
    audio_latent_channels=8, audio_vae_ch_mult=(1, 1, 1), audio_vae_res_blocks=1,
    vocoder_hidden=64, vocoder_upsample_factors=(6, 5, 2, 2, 2), vocoder_upsample_kernels=(16, 15, 8, 4, 4),
    vocoder_resnet_kernels=(3, 7), vocoder_resnet_dilations=((1, 3), (1, 3)),
)
"""Small benchmark configuration large enough that transformer time dominates: a 512-wide video stream
(8 heads x 64) and a 256-wide audio stream (8 x 32), 8 blocks, the real 128 video / 8x16 audio latent channels,
for `SMALL_CLIP` (256x384 px, 17 frames -> 3x8x12 = 288 video tokens, 18 audio tokens). Parameter counts:
transformer 54,250,240; text_encoder 631,656; connectors 882,176; vae 2,928,765; audio_vae 4,460,050;
vocoder 154,188 (63,307,075 in all). On 2 CPU cores (warm) one transformer call at `SMALL_CLIP` takes ~0.2 s,
a VAE decode ~0.15 s."""

TINY_CLIP = dict(height=64, width=64, num_frames=9, frame_rate=24.0)
SMALL_CLIP = dict(height=256, width=384, num_frames=17, frame_rate=24.0)

# LTX-2's scheduler_config.json: exponential time shift mu = tokens * m + b between (1024, 0.95) and
# (4096, 2.05), last non-zero sigma stretched to 0.1 = the official LTX2Scheduler formula. Note: diffusers'
# LTX2Pipeline computes mu from the actual video token count, the official text-to-video pipelines from 4096.
# With num_inference_steps=1 diffusers' terminal stretch divides 0 by 0: NaN sigmas (use >= 2 steps).
LTX2_SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=True, base_shift=0.95, max_shift=2.05,
    base_image_seq_len=1024, max_image_seq_len=4096, shift_terminal=0.1, time_shift_type="exponential",
)


def build_tokenizer(model_max_length: int = 128):
    """A Gemma-like word-level tokenizer over `VOCAB_WORDS`: lower-cases, splits on whitespace and punctuation,
    prepends `<bos>`, pads on the left with `<pad>` (id 0); `<eos>` = 1, `<bos>` = 2, `<unk>` = 3."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + VOCAB_WORDS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", vocab["<bos>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>", unk_token="<unk>",
        padding_side="left", model_max_length=model_max_length,
    )


def _build_text_encoder(size: ModelSize, vocab_size: int):
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3TextConfig, SiglipVisionConfig

    text = Gemma3TextConfig(
        vocab_size=vocab_size, hidden_size=size.gemma_hidden, intermediate_size=size.gemma_intermediate,
        num_hidden_layers=size.gemma_layers, num_attention_heads=size.gemma_heads,
        num_key_value_heads=size.gemma_kv_heads, head_dim=size.gemma_head_dim,
        query_pre_attn_scalar=size.gemma_head_dim, max_position_embeddings=2048, sliding_window=512,
        layer_types=["sliding_attention" if (i + 1) % 2 else "full_attention" for i in range(size.gemma_layers)],
        pad_token_id=0, eos_token_id=1, bos_token_id=2,
    )
    # The vision tower is unused for text-to-video; it is as small as Gemma3's projector allows (1 token/image).
    vision = SiglipVisionConfig(
        hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=1, image_size=8, patch_size=4,
    )
    config = Gemma3Config(
        text_config=text, vision_config=vision, mm_tokens_per_image=1, image_token_index=vocab_size,
        boi_token_index=vocab_size + 1, eoi_token_index=vocab_size + 2,
    )
    return Gemma3ForConditionalGeneration(config)


def _build_models(size: ModelSize) -> dict[str, Callable[[], nn.Module]]:
    from diffusers import AutoencoderKLLTX2Audio, AutoencoderKLLTX2Video, LTX2VideoTransformer3DModel
    from diffusers.pipelines.ltx2 import LTX2TextConnectors
    from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder

    return {
        "text_encoder": lambda: _build_text_encoder(size, len(SPECIAL_TOKENS) + len(VOCAB_WORDS)),
        "connectors": lambda: LTX2TextConnectors(
            caption_channels=size.caption_channels, text_proj_in_factor=size.text_proj_in_factor,
            video_connector_num_attention_heads=size.connector_heads,
            video_connector_attention_head_dim=size.connector_head_dim,
            video_connector_num_layers=size.connector_layers,
            video_connector_num_learnable_registers=size.connector_registers,
            audio_connector_num_attention_heads=size.connector_heads,
            audio_connector_attention_head_dim=size.connector_head_dim,
            audio_connector_num_layers=size.connector_layers,
            audio_connector_num_learnable_registers=size.connector_registers,
            rope_type="split",
        ),
        "transformer": lambda: LTX2VideoTransformer3DModel(
            in_channels=size.latent_channels, out_channels=size.latent_channels,
            num_attention_heads=size.video_heads, attention_head_dim=size.video_head_dim,
            cross_attention_dim=size.video_inner_dim,
            audio_in_channels=size.audio_latent_features, audio_out_channels=size.audio_latent_features,
            audio_num_attention_heads=size.audio_heads, audio_attention_head_dim=size.audio_head_dim,
            audio_cross_attention_dim=size.audio_inner_dim, num_layers=size.num_layers,
            caption_channels=size.caption_channels, rope_type="split", perturbed_attn=False,
        ),
        "vae": lambda: AutoencoderKLLTX2Video(
            latent_channels=size.latent_channels, block_out_channels=size.vae_block_out_channels,
            down_block_types=("LTX2VideoDownBlock3D",) * 3, layers_per_block=size.vae_layers_per_block,
            spatio_temporal_scaling=(True, True, True), downsample_type=("spatiotemporal",) * 3,
            decoder_block_out_channels=size.vae_decoder_block_out_channels,
            decoder_layers_per_block=size.vae_decoder_layers_per_block,
            decoder_spatio_temporal_scaling=(True, True, True), decoder_inject_noise=(False,) * 4,
            upsample_type=("spatiotemporal",) * 3, upsample_residual=(True, True, True), upsample_factor=(2, 2, 2),
            timestep_conditioning=False, patch_size=4, patch_size_t=1, encoder_causal=True, decoder_causal=False,
            spatial_compression_ratio=32, temporal_compression_ratio=8,
        ),
        "audio_vae": lambda: AutoencoderKLLTX2Audio(
            base_channels=size.audio_latent_features, output_channels=2, in_channels=2,
            ch_mult=size.audio_vae_ch_mult, num_res_blocks=size.audio_vae_res_blocks,
            latent_channels=size.audio_latent_channels, norm_type="pixel", causality_axis="height",
            sample_rate=AUDIO_SAMPLE_RATE, mel_hop_length=AUDIO_HOP_LENGTH, mel_bins=MEL_BINS,
        ),
        "vocoder": lambda: LTX2Vocoder(
            in_channels=2 * MEL_BINS, hidden_channels=size.vocoder_hidden, out_channels=2,
            upsample_kernel_sizes=list(size.vocoder_upsample_kernels),
            upsample_factors=list(size.vocoder_upsample_factors),
            resnet_kernel_sizes=list(size.vocoder_resnet_kernels),
            resnet_dilations=[list(d) for d in size.vocoder_resnet_dilations],
            output_sampling_rate=VOCODER_SAMPLE_RATE,
        ),
    }


@torch.no_grad()
def reinit_parameters_(module: nn.Module, generator: torch.Generator, bias_std: float = 0.02,
                       noise_std: float = 0.02) -> nn.Module:
    """Re-draw every parameter of `module` from `generator` so activations stay O(1) through random stacks.

    Linear / conv / embedding weights ~ N(0, 1 / fan_in) (variance-preserving; for transposed convs the fan-in of
    one output sample, in * kernel / stride); their biases ~ N(0, bias_std^2). Every other parameter (norm weights,
    modulation tables, registers, ...) keeps its constructor value plus N(0, noise_std^2) noise, so nothing stays
    seed-independent while zero-centred / one-centred semantics are kept.
    """
    seen: set[int] = set()
    for _, mod in module.named_modules():
        for pname, p in mod.named_parameters(recurse=False):
            if id(p) in seen:  # tied weights (Gemma lm_head) are drawn once
                continue
            seen.add(id(p))
            noise = torch.randn(p.shape, generator=generator, dtype=torch.float32)
            if pname == "weight" and isinstance(mod, nn.modules.conv._ConvTransposeNd):
                fan_in = p.shape[0] * math.prod(mod.kernel_size) / math.prod(mod.stride)
                p.copy_(noise / math.sqrt(fan_in))
            elif pname == "weight" and isinstance(mod, (nn.Linear, nn.Embedding, nn.modules.conv._ConvNd)):
                p.copy_(noise / math.sqrt(p[0].numel()))
            elif pname == "bias" and isinstance(mod, (nn.Linear, nn.modules.conv._ConvNd)):
                p.copy_(noise * bias_std)
            else:
                p.add_(noise * noise_std)
    return module


def _set_latent_stats_(vae: nn.Module, generator: torch.Generator) -> None:
    """Non-trivial per-channel latent statistics: mean ~ N(0, 0.5^2), std = exp(N(0, 0.3^2))."""
    n = vae.latents_mean.numel()
    vae.latents_mean.copy_(0.5 * torch.randn(n, generator=generator))
    vae.latents_std.copy_(torch.exp(0.3 * torch.randn(n, generator=generator)))


_COMPONENT_ORDER = ("text_encoder", "connectors", "transformer", "vae", "audio_vae", "vocoder")


def build_components(size: ModelSize = TINY, seed: int = 0, dtype: torch.dtype = torch.float32) -> dict:
    """Build the components of an `LTX2Pipeline` with deterministic random weights.

    Returns a dict with `tokenizer`, `text_encoder`, `connectors`, `transformer`, `vae`, `audio_vae` and `vocoder`
    (no scheduler / guider: pipelines add those). Each model is constructed and re-initialised under its own
    seed (`seed * 1000 + index`), so a component's weights depend only on `(size, seed)` and not on the other
    components; the caller's global RNG state is left untouched. All modules are in `.eval()` and cast to `dtype`
    (built in float32 first).
    """
    builders = _build_models(size)
    components: dict = {"tokenizer": build_tokenizer(size.max_sequence_length)}
    for index, name in enumerate(_COMPONENT_ORDER):
        component_seed = seed * 1000 + index
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(component_seed)
            model = builders[name]()
        generator = torch.Generator().manual_seed(component_seed)
        reinit_parameters_(model, generator)
        if name in ("vae", "audio_vae"):
            _set_latent_stats_(model, generator)
        if dtype != torch.float32:  # plain nn.Module.to: diffusers' `to` warns about an *empty* keep-in-fp32 list
            model = nn.Module.to(model, dtype=dtype)
        components[name] = model.eval().requires_grad_(False)
    return components


def _build_models_25(size: ModelSize) -> dict[str, Callable[[], nn.Module]]:
    """The LTX-2.5 architecture at `size`: 2.3's (gated attention, prompt AdaLN, per-modality text projections in
    the connectors, caption channels projected before them) plus 2.5's switches (ltx-core 1.2 `model_configurator`:
    no feed-forward biases, the keyframe position embedding), the diffusion video decoder and the duration head."""
    from diffusers import LTX2VideoDiffusionDecoderModel, LTX2VideoTransformer3DModel
    from diffusers.pipelines.ltx2 import LTX2DurationHead, LTX2TextConnectors

    return {
        "connectors": lambda: LTX2TextConnectors(
            caption_channels=size.caption_channels, text_proj_in_factor=size.text_proj_in_factor,
            video_connector_num_attention_heads=size.video_heads,
            video_connector_attention_head_dim=size.video_head_dim,
            video_connector_num_layers=size.connector_layers,
            video_connector_num_learnable_registers=size.connector_registers, video_gated_attn=True,
            audio_connector_num_attention_heads=size.audio_heads,
            audio_connector_attention_head_dim=size.audio_head_dim,
            audio_connector_num_layers=size.connector_layers,
            audio_connector_num_learnable_registers=size.connector_registers, audio_gated_attn=True,
            rope_type="split", per_modality_projections=True, video_hidden_dim=size.video_inner_dim,
            audio_hidden_dim=size.audio_inner_dim, proj_bias=True,
        ),
        "transformer": lambda: LTX2VideoTransformer3DModel(
            in_channels=size.latent_channels, out_channels=size.latent_channels,
            num_attention_heads=size.video_heads, attention_head_dim=size.video_head_dim,
            cross_attention_dim=size.video_inner_dim,
            audio_in_channels=size.audio_latent_features, audio_out_channels=size.audio_latent_features,
            audio_num_attention_heads=size.audio_heads, audio_attention_head_dim=size.audio_head_dim,
            audio_cross_attention_dim=size.audio_inner_dim, num_layers=size.num_layers,
            caption_channels=size.caption_channels, rope_type="split", perturbed_attn=True,
            gated_attn=True, audio_gated_attn=True, cross_attn_mod=True, audio_cross_attn_mod=True,
            use_prompt_embeddings=False, cross_attn_timestep_scale_multiplier=1000,
            ff_bias=False, audio_ff_bias=False, use_keyframes_abs_pos_embedding=True,
        ),
        "diffusion_decoder": lambda: LTX2VideoDiffusionDecoderModel(
            out_channels=3, latent_channels=size.latent_channels, patch_size=4, decoder_head_dim=16,
            decoder_stage_channels=(64, 32, 16, 16, 16), decoder_stage_depths=(1, 1, 1, 1, 2),
            decoder_stage_kernels=((3, 3, 3),) * 4, decoder_upsample_channel_reductions=(2, 2, 1, 1),
            decoder_stage5_kernel=(3, 5, 5), decoder_t_emb_dim=16, decoder_num_inference_steps=1,
            decoder_model_output_type="x0",
        ),
        "duration_head": lambda: LTX2DurationHead(
            video_cross_attention_dim=size.video_inner_dim, audio_cross_attention_dim=size.audio_inner_dim,
            pooler_hidden_dim=16, num_queries=1, num_pooler_heads=2, mlp_hidden_dim=16,
        ),
    }


def build_components_25(size: ModelSize = TINY, seed: int = 0, dtype: torch.dtype = torch.float32) -> dict:
    """A tiny LTX-2.5 model: `build_components(size, seed, dtype)` (tokenizer, Gemma-3 text encoder, video VAE
    with the conv decoder, audio VAE, vocoder) with the 2.5 `transformer` and `connectors` instead, plus
    ``diffusion_decoder`` (`LTX2VideoDiffusionDecoderModel`, sharing the VAE's latent statistics) and
    ``duration_head`` (`LTX2DurationHead`). Seeds as in `build_components` (2.5 parts: ``seed * 1000 + 10 + i``).
    The Gemma-4 text encoder of a real 2.5 checkpoint: `factory_gemma.build_gemma4_components`; any encoder
    whose stacked hidden states are ``caption_channels * text_proj_in_factor`` wide feeds these connectors.
    """
    components = build_components(size, seed, dtype)
    for index, (name, build) in enumerate(_build_models_25(size).items()):
        component_seed = seed * 1000 + 10 + index
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(component_seed)
            model = build()
        reinit_parameters_(model, torch.Generator().manual_seed(component_seed))
        if name == "diffusion_decoder":
            model.latents_mean.copy_(components["vae"].latents_mean)
            model.latents_std.copy_(components["vae"].latents_std)
        if dtype != torch.float32:
            model = nn.Module.to(model, dtype=dtype)
        components[name] = model.eval().requires_grad_(False)
    return components


def build_scheduler():
    """A `FlowMatchEulerDiscreteScheduler` configured like LTX-2's (`LTX2_SCHEDULER_CONFIG`)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(**LTX2_SCHEDULER_CONFIG)


def build_diffusers_pipeline(size: ModelSize = TINY, seed: int = 0, dtype: torch.dtype = torch.float32):
    """diffusers' own `LTX2Pipeline` over `build_components(size, seed, dtype)` and `build_scheduler()`."""
    from diffusers import LTX2Pipeline

    return LTX2Pipeline(scheduler=build_scheduler(), **build_components(size, seed, dtype))


def parameter_counts(components: dict) -> dict[str, int]:
    """Number of parameters of every `nn.Module` component (tied weights counted once)."""
    modules = {name: m for name, m in components.items() if isinstance(m, nn.Module)}
    return {name: sum(p.numel() for p in m.parameters()) for name, m in modules.items()}


if __name__ == "__main__":  # python -m diffusers_ltx2.factory: build times and parameter counts
    import time

    for preset in (TINY, SMALL):
        start = time.perf_counter()
        built = build_components(preset)
        print(f"{preset.name}: built in {time.perf_counter() - start:.2f} s, params {parameter_counts(built)}")
