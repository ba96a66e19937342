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


def transformer_weight_bytes(fp: Footprint, quantization: str | None, dtype_bytes: int = 2) -> int:
    """Stored bytes of the transformer for a quantization mode (formats as in `diffusers_ltx2.quantization`)."""
    return _stored_bytes(fp.transformer_quantizable, fp.transformer_quantizable_rows, fp.transformer_other,
                         quantization, dtype_bytes)


def block_weight_bytes(fp: Footprint, quantization: str | None, dtype_bytes: int = 2) -> int:
    """Stored bytes of one transformer block (what the block offload modes hold twice: computing + prefetched)."""
    q, rows = fp.block_quantizable, fp.block_quantizable_rows
    return _stored_bytes(q, rows, fp.transformer_block - q - rows, quantization, dtype_bytes)


def _stored_bytes(q: int, rows: int, other: int, quantization: str | None, dtype_bytes: int) -> int:
    """Bytes of `q` policy-linear weights with `rows` output rows (biases), and `other` parameters kept."""
    kept = other * dtype_bytes
    if quantization is None:
        return kept + (q + rows) * dtype_bytes
    if quantization == "fp8-cast":  # float8 weights and biases
        return kept + q + rows
    if quantization in ("fp8", "int8"):  # 1 byte per weight, a per-row scale, bias kept
        return kept + q + 2 * rows * dtype_bytes
    if quantization == "int4":  # 4 bits per weight, scale + shift per group of 128, bias kept
        return kept + q // 2 + 2 * dtype_bytes * q // QUANTO_INT4_GROUP + rows * dtype_bytes
    raise ValueError(f"unknown quantization {quantization!r}")


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
             vae_tiling: VaeTiling | None = None, dtype_bytes: int = 2, budget: int | None = None) -> MemoryPlan:
    """Estimated peak device memory of a run in one configuration (see the module docstring)."""
    transformer = transformer_weight_bytes(fp, quantization, dtype_bytes)
    text = text_encoder_weight_bytes(fp, text_encoder_quantization, dtype_bytes)
    others = fp.others * dtype_bytes
    if offload is None:
        resident = dict(text=transformer + text + others, denoise=transformer + text + others,
                        decode=transformer + text + others)
    elif offload == "model":  # one component at a time (connectors / VAE are small: counted with others)
        resident = dict(text=text + others, denoise=transformer + others, decode=others)
    else:  # blocks / disk: two transformer blocks (one computing, one prefetched) + the rest of the transformer
        # (its top-level layers: one group); the text encoder moves whole (`memory.offload`: one group)
        block = block_weight_bytes(fp, quantization, dtype_bytes)
        top = transformer - block * fp.num_layers
        resident = dict(text=text + others, denoise=max(0, top) + 2 * block + others, decode=others)
    acts = activation_bytes(fp, clip, passes, dtype_bytes)
    dec = decode_phase_bytes(fp, clip, vae_tiling, dtype_bytes)
    phases = dict(text=resident["text"], denoise=resident["denoise"] + acts, decode=resident["decode"] + dec)
    parts = {"transformer weights (stored)": transformer, "text encoder weights (stored)": text,
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


def plan(fp: Footprint, clip: Clip, budget: int, *, passes: int = 1, dtype_bytes: int = 2) -> MemoryPlan:
    """The first configuration of `CANDIDATES` whose estimated peak fits `budget` bytes (VAE tiling chosen for
    what is left of the budget after the resident weights); the last one, marked not fitting, if none does."""
    if budget <= 0:
        raise ValueError(f"budget must be positive, got {budget}")
    best, tried = None, set()
    for quantization, te_quantization, offload in CANDIDATES:
        if fp.text_encoder == 0:  # no local Gemma (prompt embeddings / API): nothing to quantize there
            te_quantization = None
        if (quantization, te_quantization, offload) in tried:
            continue
        tried.add((quantization, te_quantization, offload))
        base = estimate(fp, clip, passes=passes, quantization=quantization,
                        text_encoder_quantization=te_quantization, offload=offload, dtype_bytes=dtype_bytes)
        left = max(1, budget - base.decode_resident)
        tiling = plan_vae_tiling(clip.num_frames, clip.height, clip.width, decoder_channels=fp.vae_decoder_channels,
                                 patch_size=fp.vae_patch_size, dtype_bytes=dtype_bytes, budget_bytes=left,
                                 batch_size=clip.batch_size, spatial_ratio=fp.spatial_ratio)
        best = estimate(fp, clip, passes=passes, quantization=quantization, text_encoder_quantization=te_quantization,
                        offload=offload, vae_tiling=tiling, dtype_bytes=dtype_bytes, budget=budget)
        if best.fits:
            return best
    return best
