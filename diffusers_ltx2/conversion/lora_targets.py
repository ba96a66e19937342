"""Where a LoRA module name lands: the catalogue of LoRA-able layers and the name resolution of every layout.

A LoRA file names the layer each factor pair adapts in one of several layouts (see `conversion.lora`). This
module turns such a name into `(component, module path)` in the diffusers models of this package
(`transformer` = `LTX2VideoTransformer3DModel`, `connectors` = `LTX2TextConnectors`) and checks it against a
`LoraTargets` catalogue:

* built from the real models (`LoraTargets.from_models`): every `nn.Linear` (or PEFT-wrapped linear) path with
  its `(out_features, in_features)`; used by `load_lora_weights`;
* or a *template* (`LoraTargets.template()`): the layer names LTX-2.0 and LTX-2.3 models have, block indices
  free, no shapes; used by `ltx2 convert-lora`, which has no model at hand.

`diagnose` names the probable cause of a name that has no target (a 2.3-only module on a 2.0 model, a block the
model does not have, a layer of another size, a layout no LTX-2 trainer writes).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field

from torch import nn

from .keymap import KeyMapper, map_transformer_key

__all__ = ["LoraTargets", "resolve_module", "KOHYA_PREFIXES"]

#: kohya-style module names: `lora_unet_<path with "_" for ".">`.
KOHYA_PREFIXES = ("lora_unet_", "lora_transformer_")

_BLOCK_RE = re.compile(r"(?:^|\.)(transformer_blocks|transformer_1d_blocks)\.(\d+)\.")
_KOHYA_BLOCK_RE = re.compile(r"(?:^|_)(transformer_blocks|transformer_1d_blocks)_(\d+)_")
_PEFT_INTERNALS = {"base_layer", "lora_A", "lora_B", "lora_dropout", "lora_embedding_A", "lora_embedding_B",
                   "lora_magnitude_vector"}

# official -> diffusers names of the top-level transformer layers (diffusers' converter), inverted for aliases;
# each alias is kept only if diffusers' own converter maps it back (checked in `_official_aliases`).
_TRANSFORMER_INVERSE = (
    ("audio_proj_in", "audio_patchify_proj"), ("proj_in", "patchify_proj"),
    ("av_cross_attn_video_scale_shift", "av_ca_video_scale_shift_adaln_single"),
    ("av_cross_attn_video_a2v_gate", "av_ca_a2v_gate_adaln_single"),
    ("av_cross_attn_audio_scale_shift", "av_ca_audio_scale_shift_adaln_single"),
    ("av_cross_attn_audio_v2a_gate", "av_ca_v2a_gate_adaln_single"),
    ("audio_time_embed", "audio_adaln_single"), ("time_embed", "adaln_single"),
    ("audio_prompt_adaln", "audio_prompt_adaln_single"), ("prompt_adaln", "prompt_adaln_single"),
)
_CONNECTOR_INVERSE = (
    ("video_connector.", "diffusion_model.video_embeddings_connector."),
    ("audio_connector.", "diffusion_model.audio_embeddings_connector."),
    ("text_proj_in", "text_embedding_projection.aggregate_embed"),
    ("video_text_proj_in", "text_embedding_projection.video_aggregate_embed"),
    ("audio_text_proj_in", "text_embedding_projection.audio_aggregate_embed"),
)


def canonical_path(path: str) -> str:
    """The path with its block index set to 0 (template lookups)."""
    return _BLOCK_RE.sub(lambda m: m.group(0).replace(f".{m.group(2)}.", ".0."), path, count=1)


def block_index(path: str) -> int | None:
    m = _BLOCK_RE.search(path)
    return int(m.group(2)) if m else None


def _official_map(key: str) -> tuple[str, str] | None:
    """`diffusion_model.<official path>` / `text_embedding_projection.<...>` -> (component, diffusers path)."""
    full = ("model." + key if key.startswith("diffusion_model.") else key) + ".weight"
    try:
        routed = KeyMapper({}).map(full)
    except KeyError:
        return None
    if routed is None:
        return None
    return routed[0], routed[1].removesuffix(".weight")


def _official_aliases(component: str, path: str) -> list[str]:
    """Official (ltx-core) names of a diffusers layer path, verified by mapping them forward again."""
    out = []
    if component == "transformer":
        for new, old in _TRANSFORMER_INVERSE:
            if path == new or path.startswith(new + "."):
                alias = old + path[len(new):]
                if map_transformer_key(alias + ".weight") == path + ".weight":
                    out.append(alias)
                break
        return out
    for new, old in _CONNECTOR_INVERSE:
        if path == new or (new.endswith(".") and path.startswith(new)):
            alias = old + path[len(new):]
            alias = alias.replace(".transformer_blocks.", ".transformer_1d_blocks.")
            if _official_map(alias) == (component, path):
                out.append(alias.removeprefix("diffusion_model."))
    return out


def resolve_module(module: str, targets: "LoraTargets") -> tuple[tuple[str, str], bool]:
    """A LoRA module name in any supported layout -> `((component, path), found)`.

    Layouts: diffusers `transformer.<path>` / `connectors.<path>`; official `diffusion_model.<official path>`
    (connector blocks `diffusion_model.{video,audio}_embeddings_connector.*`, `text_embedding_projection.*`);
    another trainer's `diffusion_model.connectors.{video,audio}_connector.*`; bare diffusers paths (PEFT
    `base_model.model.` stripped); kohya `lora_unet_<path_with_underscores>`. When nothing matches, the first
    candidate (the most likely reading) is returned with `found=False`, for the error message.
    """
    m = module.removeprefix("base_model.model.")
    if m.startswith("model.diffusion_model."):
        m = m.removeprefix("model.")
    candidates: list[tuple[str, str]] = []
    if m.startswith(KOHYA_PREFIXES):
        hit = targets.kohya_lookup(m)
        if hit is not None:
            return hit, targets.has(*hit)
        return ("?", module), False
    if m.startswith(("transformer.", "connectors.")):
        component, _, rest = m.partition(".")
        candidates.append((component, rest))
        # diffusers' own converter leaves official names (connector blocks included) under `transformer.`
        official = _official_map("diffusion_model." + rest)
        if official is not None:
            candidates.append(official)
    elif m.startswith("diffusion_model.connectors."):
        rest = m.removeprefix("diffusion_model.connectors.")
        candidates += [("connectors", rest), ("connectors", rest.replace(".transformer_1d_blocks.", ".transformer_blocks."))]
    elif m.startswith(("diffusion_model.", "text_embedding_projection.")):
        official = _official_map(m)
        if official is not None:
            candidates.append(official)
        if m.startswith("diffusion_model."):
            candidates.append(("transformer", m.removeprefix("diffusion_model.")))
    else:
        candidates += [("transformer", m), ("connectors", m)]
        official = _official_map("diffusion_model." + m)
        if official is not None:
            candidates.append(official)
    for cand in candidates:
        if targets.has(*cand):
            return cand, True
    return (candidates[0] if candidates else ("?", module)), False


@dataclass
class LoraTargets:
    """LoRA-able layers per component: `modules[component][path] = (out_features, in_features)` (None in a
    template). `template=True` accepts any block index; `version` is "2.0" / "2.3" (None for a template)."""

    modules: dict[str, dict[str, tuple[int, int] | None]]
    template: bool = False
    version: str | None = None
    others: dict[str, dict[str, str]] = field(default_factory=dict)  # existing non-linear layers: path -> type
    _kohya: dict[str, tuple[str, str] | None] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        for component, paths in self.modules.items():
            for path in paths:
                for alias in [path, *_official_aliases(component, path)]:
                    key = canonical_path(alias).replace(".", "_")
                    if key in self._kohya and self._kohya[key] != (component, canonical_path(path)):
                        self._kohya[key] = None  # ambiguous with "_" for "."
                    else:
                        self._kohya[key] = (component, canonical_path(path))

    # -- construction ---------------------------------------------------------------------------------------
    @classmethod
    def from_models(cls, models: dict[str, nn.Module | None]) -> "LoraTargets":
        """The real layers of the given components (`{"transformer": ..., "connectors": ...}`)."""
        from peft.tuners.tuners_utils import BaseTunerLayer

        modules: dict[str, dict] = {}
        others: dict[str, dict] = {}
        for component, model in models.items():
            if model is None:
                continue
            found, other = {}, {}
            for name, mod in model.named_modules():
                if not name or _PEFT_INTERNALS.intersection(name.split(".")):
                    continue
                base = mod.get_base_layer() if isinstance(mod, BaseTunerLayer) else mod
                if isinstance(base, nn.Linear):
                    found[name] = (base.out_features, base.in_features)
                elif isinstance(mod, BaseTunerLayer) or (hasattr(mod, "weight") and not list(mod.children())):
                    other[name] = type(base).__name__
            modules[component], others[component] = found, other
        names = set(modules.get("transformer", {})) | set(modules.get("connectors", {}))
        version = "2.3" if any("to_gate_logits" in n or n.startswith(("prompt_adaln.", "video_text_proj_in"))
                               for n in names) else "2.0"
        return cls(modules, template=False, version=version, others=others)

    @staticmethod
    @functools.lru_cache(maxsize=None)
    def template(version: str | None = None) -> "LoraTargets":
        """Layer names of LTX-2 models (both versions when `version` is None), built on the meta device."""
        if version is None:
            a, b = LoraTargets.template("2.0"), LoraTargets.template("2.3")
            merged = {c: {**a.modules.get(c, {}), **b.modules.get(c, {})} for c in ("transformer", "connectors")}
            return LoraTargets(merged, template=True)
        models = _template_models(version)
        built = LoraTargets.from_models(models)
        return LoraTargets({c: {canonical_path(p): None for p in paths} for c, paths in built.modules.items()},
                           template=True, version=version)

    # -- queries --------------------------------------------------------------------------------------------
    def has(self, component: str, path: str) -> bool:
        paths = self.modules.get(component, {})
        return (canonical_path(path) if self.template else path) in paths

    def shape(self, component: str, path: str) -> tuple[int, int] | None:
        return None if self.template else self.modules[component][path]

    def kohya_lookup(self, name: str) -> tuple[str, str] | None:
        """`lora_unet_transformer_blocks_3_attn1_to_q` -> `("transformer", "transformer_blocks.3.attn1.to_q")`."""
        for prefix in KOHYA_PREFIXES:
            name = name.removeprefix(prefix)
        name = name.removeprefix("diffusion_model_")
        m = _KOHYA_BLOCK_RE.search(name)
        canon = name if m is None else name[: m.start(2)] + "0" + name[m.end(2):]
        hit = self._kohya.get(canon)
        if hit is None:
            return None
        component, path = hit
        if m is not None:
            path = _BLOCK_RE.sub(lambda b: b.group(0).replace(".0.", f".{m.group(2)}."), path, count=1)
        return component, path

    def num_blocks(self, component: str, prefix: str = "") -> int:
        idx = [block_index(p) for p in self.modules.get(component, {}) if p.startswith(prefix)]
        idx = [i for i in idx if i is not None]
        return max(idx) + 1 if idx else 0

    def diagnose(self, component: str, path: str) -> str:
        """The probable reason `(component, path)` has no target in this catalogue (a short phrase)."""
        if component == "?":
            return "layout not recognised (not an LTX-2 LoRA key)"
        if component in self.others and path in self.others[component]:
            return f"not a linear layer ({self.others[component][path]}): LoRA cannot adapt it"
        canon = canonical_path(path)
        t20, t23 = LoraTargets.template("2.0"), LoraTargets.template("2.3")
        in20, in23 = t20.has(component, canon), t23.has(component, canon)
        if in23 and not in20 and self.version == "2.0":
            return "made for LTX-2.3: these modules exist only in LTX-2.3 (this model is LTX-2.0)"
        if in20 and not in23 and self.version == "2.3":
            return "made for LTX-2.0: these modules exist only in LTX-2.0 (this model is LTX-2.3)"
        index = block_index(path)
        if (in20 or in23) and index is not None and not self.template:
            prefix = path[: _BLOCK_RE.search(path).start(1)]
            blocks = self.num_blocks(component, prefix)
            if index >= blocks:
                return f"made for a deeper model: block {index} does not exist (this model has {blocks} blocks)"
        if in20 or in23:
            return "an LTX-2 module this model does not have"
        return "no such module in LTX-2 (wrong model family or unknown naming)"


def _template_models(version: str) -> dict[str, nn.Module]:
    from accelerate import init_empty_weights
    from diffusers import LTX2VideoTransformer3DModel
    from diffusers.pipelines.ltx2 import LTX2TextConnectors

    from .configs import connectors_config, transformer_config

    cfg = dict(num_layers=1, num_attention_heads=2, attention_head_dim=8, cross_attention_dim=16,
               audio_num_attention_heads=2, audio_attention_head_dim=4, audio_cross_attention_dim=8,
               caption_channels=16, in_channels=8, out_channels=8, audio_in_channels=8, audio_out_channels=8,
               connector_num_attention_heads=2, connector_attention_head_dim=8, connector_num_layers=1,
               rope_type="split")
    projection = "text_embedding_projection.aggregate_embed.weight"
    if version == "2.3":
        cfg.update(apply_gated_attention=True, connector_apply_gated_attention=True, cross_attention_adaln=True,
                   caption_proj_before_connector=True)
        projection = "text_embedding_projection.video_aggregate_embed.weight"
    with init_empty_weights():
        transformer = LTX2VideoTransformer3DModel.from_config(transformer_config({"transformer": cfg}, version))
        connectors = LTX2TextConnectors.from_config(connectors_config({"transformer": cfg}, {projection: (16, 48)}))
    return {"transformer": transformer, "connectors": connectors}
