"""VRAM budget planner: estimated peak memory of a run and the quantization / offload / tiling that fit a budget.

Pure functions over a `Footprint` (parameter counts read from the model configs on the meta device, no weights
loaded) and the clip size. The estimate has three phases, the peak being the largest:

* text: resident weights + the Gemma pass (small);
* denoising: resident weights + transformer activations of one call, `passes` guidance passes batched;
* decoding: resident weights + one (tiled, streamed) video-VAE decode (`vae_tiling.tiled_decode_bytes`), or the
  post-processing of its output (`POSTPROCESS_OUTPUTS` outputs: the decoded video, its [0, 1] rescaled copy and
  diffusers' stacked result), whichever is larger.

Transformer activations per sample: 18 x (video tokens x video width + audio tokens x audio width) + 2 x text
tokens x (video + audio width) values. The 18 is the FF peak of a block (residual, normed input, 4x hidden,
4x GELU output = 10 x T x D) plus the per-token AdaLN modulations held across the block (6 + 2 x T x D);
checked against measured allocations (`measure.AllocationTracker`) on the tiny and SMALL models. Attention is
assumed memory-efficient (SDPA flash / mem-efficient kernels on GPU: no T x T scores).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .vae_tiling import VaeTiling, plan_vae_tiling, tiled_decode_bytes

GiB = 1024**3
ACTIVATION_VALUES_PER_TOKEN_WIDTH = 18
TEXT_VALUES_PER_TOKEN_WIDTH = 2
QUANTO_INT4_GROUP = 128
POSTPROCESS_OUTPUTS = 3


def format_bytes(n: int) -> str:
    """Bytes in binary units scaled to the amount: `"37.25 GiB"`, `"3.10 MiB"`, `"512 B"` (never `"0.00 GiB"`)."""
    for unit, size in (("GiB", GiB), ("MiB", 1024**2), ("KiB", 1024)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} B"


@dataclass(frozen=True)
class Footprint:
    """Parameter counts and widths of an LTX-2 pipeline (from configs or modules)."""

    transformer_quantizable: int  # weights of the policy's linears (diffusers_ltx2.quantization.policy)
    transformer_quantizable_rows: int  # their output features (per-row scales) and bias values
    transformer_other: int  # everything the policy keeps
    transformer_block: int  # parameters of one transformer block
    num_layers: int
    video_dim: int
    audio_dim: int
    text_encoder: int  # Gemma parameters (0 without a local text encoder)
    text_encoder_layer: int  # one decoder layer
    text_encoder_layers: int
    others: int  # connectors, VAEs, vocoder
    vae_decoder_channels: int = 256
    vae_patch_size: int = 4
    spatial_ratio: int = 32
    temporal_ratio: int = 8
    audio_latents_per_second: float = 25.0
    block_quantizable: int = 0  # weights of the policy's linears in one transformer block
    block_quantizable_rows: int = 0  # their output features (per-row scales) and bias values
    transformer_quantizable_linears: int = 0  # number of the policy's linears (per-tensor scales)
    block_quantizable_linears: int = 0  # of them, in one transformer block


@dataclass(frozen=True)
class Clip:
    num_frames: int
    height: int
    width: int
    frame_rate: float = 24.0
    batch_size: int = 1
    text_tokens: int = 1024

    def video_tokens(self, fp: Footprint) -> int:
        f = (self.num_frames - 1) // fp.temporal_ratio + 1
        return f * (self.height // fp.spatial_ratio) * (self.width // fp.spatial_ratio)

    def audio_tokens(self, fp: Footprint) -> int:
        return round(self.num_frames / self.frame_rate * fp.audio_latents_per_second)


#: llama.cpp block types: (values per block, bytes per block) - gguf's `GGML_QUANT_SIZES`
GGUF_BLOCKS = {"Q8_0": (32, 34), "Q5_1": (32, 24), "Q5_0": (32, 22), "Q4_1": (32, 20), "Q4_0": (32, 18),
               "Q6_K": (256, 210), "Q5_K": (256, 176), "Q4_K": (256, 144), "Q3_K": (256, 110), "Q2_K": (256, 84),
               "BF16": (1, 2), "F16": (1, 2)}
#: ltx-core keeps blocks 0 and 43-47 in bf16 for fp8-scaled-mm (`quantization.fp8_scaled_mm`)
_SCALED_MM_KEPT_BLOCKS = (0, 43, 44, 45, 46, 47)


def _kept_blocks(fp: Footprint, quantization: str | None) -> int:
    """How many transformer blocks the format leaves in the compute dtype (fp8-scaled-mm's kept blocks)."""
    if quantization != "fp8-scaled-mm":
        return 0
    return sum(1 for b in _SCALED_MM_KEPT_BLOCKS if b < fp.num_layers)


def transformer_weight_bytes(fp: Footprint, quantization: str | None, dtype_bytes: int = 2) -> int:
    """Stored bytes of the transformer for a quantization mode (formats as in `diffusers_ltx2.quantization`;
    "gguf-<type>" for a GGUF file quantizing the policy's linears, the city96 convention). Exact for models whose
    linear widths are multiples of 128 (LTX-2's: NVFP4's swizzled scales pad rows to 128)."""
    q, rows, linears = fp.transformer_quantizable, fp.transformer_quantizable_rows, fp.transformer_quantizable_linears
    kept = fp.transformer_other * dtype_bytes
    if quantization == "fp8-scaled-mm":  # the kept blocks' linears stay in the compute dtype
        share = _kept_blocks(fp, quantization) / max(1, fp.num_layers)
        q_kept, rows_kept, lin_kept = int(q * share), int(rows * share), int(linears * share)
        return (kept + _linear_bytes(q_kept, rows_kept, lin_kept, None, dtype_bytes)
                + _linear_bytes(q - q_kept, rows - rows_kept, linears - lin_kept, quantization, dtype_bytes))
    return kept + _linear_bytes(q, rows, linears, quantization, dtype_bytes)


def block_weight_bytes(fp: Footprint, quantization: str | None, dtype_bytes: int = 2, *, kept: bool = False) -> int:
    """Stored bytes of one transformer block (what the block offload modes hold twice: computing + prefetched);
    `kept`: a block the format leaves in the compute dtype (fp8-scaled-mm's blocks 0 and 43-47)."""
    q, rows, linears = fp.block_quantizable, fp.block_quantizable_rows, fp.block_quantizable_linears
    return ((fp.transformer_block - q - rows) * dtype_bytes
            + _linear_bytes(q, rows, linears, None if kept else quantization, dtype_bytes))


def _linear_bytes(q: int, rows: int, linears: int, quantization: str | None, d: int) -> int:
    """Stored bytes of `linears` quantized linears holding `q` weights and `rows` output features (= bias values)."""
    bias = rows * d
    if quantization is None:
        return (q + rows) * d
    if quantization == "fp8-cast":  # float8 weights and biases, a float32 scalar weight_scale
        return q + rows + 4 * linears
    if quantization == "fp8-scaled-mm":  # float8 weights, bias kept, float32 weight_scale + input_scale scalars
        return q + bias + 8 * linears
    quanto_scalars = 2 * d * linears  # QLinear's input_scale / output_scale buffers
    if quantization in ("fp8", "int8"):  # quanto: 1 byte per weight, a per-row scale, bias kept
        return q + 2 * rows * d + quanto_scalars
    if quantization == "int4":  # quanto: 4 bits per weight, scale + shift per group of 128, bias kept
        return q // 2 + 2 * d * q // QUANTO_INT4_GROUP + bias + quanto_scalars
    if quantization == "torchao-int8":  # int8 + float32 scale and int8 zero point per row
        return q + 5 * rows + bias
    if quantization == "torchao-fp8-weight":  # e4m3 + float32 scale per row
        return q + 4 * rows + bias
    if quantization in ("torchao-nvfp4-weight", "torchao-nvfp4"):  # e2m1 pairs, e4m3 scale per 16, fp32 scalar
        return q // 2 + q // 16 + 4 * linears + bias
    if quantization == "torchao-int4":  # tinygemm: 4 bits, bf16 scale + zero per group of 128
        return q // 2 + 4 * q // 128 + bias
    if quantization == "torchao-fp8":  # e4m3 + one float32 scale per tensor (format spec, not measured: no GPU)
        return q + 4 * linears + bias
    if quantization == "torchao-mxfp8":  # e4m3 + e8m0 scale per 32 (format spec, not measured: no GPU)
        return q + q // 32 + bias
    if quantization.startswith("gguf-") and quantization[5:] in GGUF_BLOCKS:
        values, size = GGUF_BLOCKS[quantization[5:]]
        return q // values * size + bias
    raise ValueError(f"unknown quantization {quantization!r}")


def lora_bytes(parameters: int, dtype_bytes: int = 2) -> int:
    """Bytes of LoRA factors with `parameters` values, held in the compute dtype (PEFT; also on quantized bases,
    `diffusers_ltx2.quantization.lora`)."""
    return parameters * dtype_bytes


def text_encoder_weight_bytes(fp: Footprint, quantization: str | None, dtype_bytes: int = 2) -> int:
    """Gemma bytes; quanto modes quantize the decoder layers' linears (~all of a layer)."""
    layers = fp.text_encoder_layer * fp.text_encoder_layers
    rest = (fp.text_encoder - layers) * dtype_bytes
    per_weight = {None: dtype_bytes, "fp8": 1, "int8": 1, "int4": 0.5 + 2 * dtype_bytes / QUANTO_INT4_GROUP}
    return rest + int(layers * per_weight[quantization])


def activation_bytes(fp: Footprint, clip: Clip, passes: int, dtype_bytes: int = 2) -> int:
    """Estimated peak activation bytes of one transformer call on `passes` batched guidance passes."""
    tv, ta = clip.video_tokens(fp), clip.audio_tokens(fp)
    values = (ACTIVATION_VALUES_PER_TOKEN_WIDTH * (tv * fp.video_dim + ta * fp.audio_dim)
              + TEXT_VALUES_PER_TOKEN_WIDTH * clip.text_tokens * (fp.video_dim + fp.audio_dim))
    return passes * clip.batch_size * values * dtype_bytes


@dataclass(frozen=True)
class MemoryPlan:
    """A configuration and its estimated peak, with the parts (bytes)."""

    quantization: str | None
    text_encoder_quantization: str | None
    offload: str | None
    vae_tiling: VaeTiling | None
    parts: dict = field(default_factory=dict)
    peak: int = 0
    budget: int | None = None
    decode_resident: int = 0  # weights resident while the VAE decodes

    @property
    def fits(self) -> bool:
        return self.budget is None or self.peak <= self.budget

    @property
    def vae_budget(self) -> int | None:
        """Bytes left to the VAE decode under the budget (`pipe.vae_memory_budget`; `None` without a budget)."""
        return None if self.budget is None else max(1, self.budget - self.decode_resident)

    def describe(self) -> str:
        """Human-readable plan (printed by `ltx2 generate --vram-budget`)."""
        gb = format_bytes
        lines = [f"quantization: {self.quantization or 'none'}; text encoder: "
                 f"{self.text_encoder_quantization or 'none'}; offload: {self.offload or 'none'}; VAE: "
                 + (self.vae_tiling.describe() if self.vae_tiling else "untiled"),
                 f"estimated peak {gb(self.peak)}" + (f" of a {gb(self.budget)} budget"
                                                       + ("" if self.fits else " - DOES NOT FIT")
                                                       if self.budget else "")]
        lines += [f"  {name}: {gb(value)}" for name, value in self.parts.items()]
        return "\n".join(lines)


def estimate(fp: Footprint, clip: Clip, *, passes: int = 1, quantization: str | None = None,
             text_encoder_quantization: str | None = None, offload: str | None = None,
             vae_tiling: VaeTiling | None = None, dtype_bytes: int = 2, budget: int | None = None,
             lora_parameters: int = 0) -> MemoryPlan:
    """Estimated peak device memory of a run in one configuration (see the module docstring). `lora_parameters`:
    values of the LoRA factors loaded into the transformer (they live in its blocks and stream with them)."""
    lora = lora_bytes(lora_parameters, dtype_bytes)
    transformer = transformer_weight_bytes(fp, quantization, dtype_bytes) + lora
    text = text_encoder_weight_bytes(fp, text_encoder_quantization, dtype_bytes)
    others = fp.others * dtype_bytes
    if offload is None:
        resident = dict(text=transformer + text + others, denoise=transformer + text + others,
                        decode=transformer + text + others)
    elif offload == "model":  # one component at a time (connectors / VAE are small: counted with others)
        resident = dict(text=text + others, denoise=transformer + others, decode=others)
    else:  # blocks / disk: two transformer blocks (one computing, one prefetched) + the rest of the transformer
        # (its top-level layers: one group); the text encoder moves whole (`memory.offload`: one group). The LoRA
        # factors live in the blocks' linears and stream with them; fp8-scaled-mm's kept blocks are the largest.
        kept = _kept_blocks(fp, quantization)
        block = block_weight_bytes(fp, quantization, dtype_bytes)
        kept_block = block_weight_bytes(fp, quantization, dtype_bytes, kept=True)
        top = transformer - lora - block * (fp.num_layers - kept) - kept_block * kept
        largest = (kept_block if kept else block) + lora // max(1, fp.num_layers)
        resident = dict(text=text + others, denoise=max(0, top) + 2 * largest + others, decode=others)
    acts = activation_bytes(fp, clip, passes, dtype_bytes)
    dec = decode_phase_bytes(fp, clip, vae_tiling, dtype_bytes)
    phases = dict(text=resident["text"], denoise=resident["denoise"] + acts, decode=resident["decode"] + dec)
    parts = {"transformer weights (stored)": transformer - lora, "LoRA weights": lora,
             "text encoder weights (stored)": text,
             "other weights": others, "resident during denoising": resident["denoise"],
             f"activations ({passes} guidance pass{'es' if passes > 1 else ''} batched)": acts,
             "VAE decode (" + ("tiled, streamed" if vae_tiling else "untiled") + ") or post-processing": dec}
    return MemoryPlan(quantization, text_encoder_quantization, offload, vae_tiling, parts, max(phases.values()),
                      budget, resident["decode"])


def decode_phase_bytes(fp: Footprint, clip: Clip, vae_tiling: VaeTiling | None, dtype_bytes: int = 2) -> int:
    """Upper bound of the bytes allocated while the pipeline decodes and post-processes the video
    (`decode_video`): the (tiled) VAE decode or the post-processing of its output, whichever is larger."""
    dec = tiled_decode_bytes(clip.num_frames, clip.height, clip.width, vae_tiling,
                             decoder_channels=fp.vae_decoder_channels, patch_size=fp.vae_patch_size,
                             dtype_bytes=dtype_bytes, batch_size=clip.batch_size, spatial_ratio=fp.spatial_ratio)
    out = 3 * clip.batch_size * clip.num_frames * clip.height * clip.width * dtype_bytes
    return max(dec, POSTPROCESS_OUTPUTS * out)


# cheapest first: quality and speed lost by each step grow down the list
CANDIDATES = (
    (None, None, None), ("fp8-cast", None, None), ("fp8-cast", "int8", None), (None, None, "model"),
    ("fp8-cast", None, "model"), ("fp8-cast", "int8", "model"), ("int4", "int8", "model"),
    ("fp8-cast", "int8", "blocks"), ("int4", "int4", "blocks"),
)


def plan(fp: Footprint, clip: Clip, budget: int, *, passes: int = 1, dtype_bytes: int = 2,
         lora_parameters: int = 0, fixed_quantization: str | None = None) -> MemoryPlan:
    """The first configuration of `CANDIDATES` whose estimated peak fits `budget` bytes (VAE tiling chosen for
    what is left of the budget after the resident weights); the last one, marked not fitting, if none does.
    `fixed_quantization`: the transformer's format is given (e.g. "gguf-Q8_0" for a GGUF file): only the text
    encoder quantization, offload and tiling are chosen."""
    if budget <= 0:
        raise ValueError(f"budget must be positive, got {budget}")
    best, tried = None, set()
    candidates = CANDIDATES if fixed_quantization is None else tuple(
        (fixed_quantization, te, off) for _, te, off in CANDIDATES)
    for quantization, te_quantization, offload in candidates:
        if fp.text_encoder == 0:  # no local Gemma (prompt embeddings / API): nothing to quantize there
            te_quantization = None
        if (quantization, te_quantization, offload) in tried:
            continue
        tried.add((quantization, te_quantization, offload))
        base = estimate(fp, clip, passes=passes, quantization=quantization,
                        text_encoder_quantization=te_quantization, offload=offload, dtype_bytes=dtype_bytes,
                        lora_parameters=lora_parameters)
        left = max(1, budget - base.decode_resident)
        tiling = plan_vae_tiling(clip.num_frames, clip.height, clip.width, decoder_channels=fp.vae_decoder_channels,
                                 patch_size=fp.vae_patch_size, dtype_bytes=dtype_bytes, budget_bytes=left,
                                 batch_size=clip.batch_size, spatial_ratio=fp.spatial_ratio)
        best = estimate(fp, clip, passes=passes, quantization=quantization, text_encoder_quantization=te_quantization,
                        offload=offload, vae_tiling=tiling, dtype_bytes=dtype_bytes, budget=budget,
                        lora_parameters=lora_parameters)
        if best.fits:
            return best
    return best
