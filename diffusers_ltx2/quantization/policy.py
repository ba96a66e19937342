"""Which layers of the LTX-2 transformer are quantized, and which stay in high precision: the one place.

Followed: ltx-core 1.0.0 `quantization/fp8_cast.py` (`TRANSFORMER_LINEAR_DOWNCAST_MAP`: inside
`transformer_blocks.` only the attention projections `to_q`, `to_k`, `to_v`, `to_out.0` and the feed-forward
linears `ff.net.0.proj`, `ff.net.2` are cast, weights *and* biases) and `quantization/fp8_scaled_mm.py`
(`EXCLUDED_LAYER_SUBSTRINGS`: patchify, AdaLN/timestep embeddings, caption projections and output projections
stay high precision). Norms, RoPE, `scale_shift_table`s and every non-`nn.Linear` parameter are never touched.

The same policy serves every backend (official fp8-cast / fp8-scaled-mm, optimum-quanto, torchao), so their
outputs differ only by the number format (fp8-scaled-mm also keeps blocks 0 and 43-47, as ltx-core does). The
diffusers names of the kept top-level modules (ltx-core name in the comment):
"""

from __future__ import annotations

import re

import torch
from torch import nn

# diffusers LTX2VideoTransformer3DModel module -> what it is in ltx-core's EXCLUDED_LAYER_SUBSTRINGS
KEEP_HIGH_PRECISION: dict[str, str] = {
    "proj_in": "patchify_proj",
    "audio_proj_in": "audio_patchify_proj",
    "time_embed": "adaln_single",
    "audio_time_embed": "audio_adaln_single",
    "av_cross_attn_video_scale_shift": "av_ca_video_scale_shift_adaln_single",
    "av_cross_attn_audio_scale_shift": "av_ca_audio_scale_shift_adaln_single",
    "av_cross_attn_video_a2v_gate": "av_ca_a2v_gate_adaln_single",
    "av_cross_attn_audio_v2a_gate": "av_ca_v2a_gate_adaln_single",
    "caption_projection": "caption_projection",
    "audio_caption_projection": "audio_caption_projection",
    "proj_out": "proj_out",
    "audio_proj_out": "audio_proj_out",
}

# Linears quantized: inside a transformer block, an attention projection or a feed-forward linear (all six
# attentions of a block: attn1/2, audio_attn1/2, audio_to_video_attn, video_to_audio_attn; ff and audio_ff).
#: the quantized linears' names as one regular expression (also handed to torchao's `FqnToConfig` as `re:...`)
QUANTIZED_LINEAR_PATTERN = r"transformer_blocks\.\d+\.[\w.]*?(to_q|to_k|to_v|to_out\.0|ff\.net\.0\.proj|ff\.net\.2)"
_QUANTIZED = re.compile(f"^{QUANTIZED_LINEAR_PATTERN}$")

# For diffusers' `QuantoConfig(modules_to_not_convert=...)`, which matches *leaf* module names: the leaf names
# of every linear in the kept modules above. Checked against `quantized_linear_names` by the tests, so the
# quantize-at-load path (diffusers) and the in-memory path (optimum-quanto directly) quantize the same layers.
DIFFUSERS_KEEP_LEAF_NAMES: tuple[str, ...] = (
    "proj_in", "audio_proj_in", "proj_out", "audio_proj_out", "linear", "linear_1", "linear_2",
)


def is_quantized_linear(name: str) -> bool:
    """True when the transformer module called `name` (diffusers naming) is quantized by the policy."""
    return bool(_QUANTIZED.match(name))


_FLOAT8 = (torch.float8_e4m3fn, torch.float8_e5m2)


def quantized_linear_names(model: nn.Module) -> list[str]:
    """Names of the `nn.Linear` modules of an LTX-2 transformer the policy quantizes (model order). Linears that
    already hold float8 weights (an FP8 checkpoint's `FP8ScaledLinear`s, which are `nn.Linear`s so that PEFT
    adapts them) are not listed: casting them again would drop their scales."""
    return [n for n, m in model.named_modules()
            if isinstance(m, nn.Linear) and is_quantized_linear(n) and m.weight.dtype not in _FLOAT8]
