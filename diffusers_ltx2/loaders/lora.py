"""Pipeline-side LoRA loading: LTX-2 LoRAs of every layout straight into diffusers' LoRA machinery.

`LTX2OfficialLoraLoaderMixin.load_lora_weights` accepts what `diffusers.loaders.LTX2LoraLoaderMixin` accepts
(diffusers-format files, hub ids, folders, state dicts) and, in addition, official-format files
(`diffusion_model.*` / `text_embedding_projection.*`), kohya files (`lora_unet_*`, `lora_down`/`lora_up`,
`alpha`), bare module paths (with or without PEFT's `.default`) and both connector namings. One step,
`diffusers_ltx2.conversion.lora.normalize_lora`, maps every tensor to a layer of *this* pipeline's transformer /
connectors and checks it (shapes, both factors, finite values): if any tensor has no target the load fails with a
`ValueError` naming the keys and the probable cause, before the model is touched. After PEFT has injected the
adapter, the layers it created are checked to be exactly those of the file (else the adapter is removed again).
The adapters then live in PEFT as usual: adapter names, `set_adapters` strengths, `fuse_lora` / `unfuse_lora`,
`delete_adapters`. On a quantized transformer (fp8-cast / FP8 keep / fp8-scaled-mm, quanto, torchao, GGUF) the
LoRA is an unmerged low-rank side path over the untouched quantized weights; fusing re-quantizes in the base's
format and says what precision it costs (`diffusers_ltx2.quantization.lora`).

Scaling: the official fusion is `W + strength * B @ A` (no alpha scaling): official files load with PEFT's
`alpha / r` = 1; a kohya `alpha` is folded into `B` (`alpha / rank`); a diffusers file's PEFT adapter metadata
(`lora_adapter_metadata`: `r`, `lora_alpha`, patterns, as written by `save_lora_weights(...,
transformer_lora_adapter_metadata=...)`) is handed to PEFT, so `lora_alpha != r` keeps its scale.

IC-LoRA metadata: the file's `reference_downscale_factor` (kohya trainers: `ss_reference_downscale_factor`; a
file where the two differ is refused) and `reference_temporal_scale_factor` are recorded per adapter;
`pipe.reference_downscale_factor` is the factor of the loaded adapters. A factor passed to `load_lora_weights`
overrides the file; two adapters with different factors (other than 1) are refused, as ltx-pipelines does; a
file without the key counts as 1 (with a warning).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
from diffusers.loaders import LTX2LoraLoaderMixin

from ..conversion.lora import NormalizedLora, normalize_lora, read_reference_factors
from ..conversion.lora_targets import LoraTargets

logger = logging.getLogger(__name__)

__all__ = ["LTX2OfficialLoraLoaderMixin", "ICLoraInfo", "read_reference_factors", "check_adapter_name"]

#: `load_lora_weights` keyword arguments that say where the file is (diffusers' `lora_state_dict` ones).
_FETCH_KEYS = ("weight_name", "cache_dir", "force_download", "proxies", "local_files_only", "token", "revision",
               "subfolder")

#: File suffixes that make a string a file path rather than a hub id.
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")


@dataclass(frozen=True)
class ICLoraInfo:
    """What the pipeline recorded about one loaded adapter."""

    adapter_name: str
    reference_downscale_factor: int
    reference_temporal_scale_factor: int
    from_metadata: bool
    strength: float = 1.0


def _check_factor(name: str, value) -> int | None:
    from ..conversion.lora import check_reference_factor

    return check_reference_factor(name, value)


def check_adapter_name(name) -> str:
    """An adapter name PEFT can hold: a non-empty string without `.` (PEFT stores adapters as submodule names).

    Raises:
        ValueError: otherwise.
    """
    if not isinstance(name, str) or not name.strip() or "." in name:
        raise ValueError(f"adapter_name must be a non-empty string without '.', got {name!r}")
    return name


def _check_local_source(source, weight_name: str | None) -> None:
    """A path that names a local file (or a local folder + `weight_name`) and does not exist: FileNotFoundError
    here rather than a hub lookup (diffusers treats any other string as a hub id). Local-looking: a weights
    suffix, an absolute / `./` / `~` path, or more than one `/` (a hub id is `owner/name`)."""
    if not isinstance(source, (str, os.PathLike)):
        return
    text = os.path.expanduser(os.fspath(source))
    if os.path.isdir(text):
        if weight_name is not None and not os.path.isfile(os.path.join(text, weight_name)):
            raise FileNotFoundError(f"LoRA file not found: {os.path.join(text, weight_name)}")
        return
    looks_local = (text.lower().endswith(_WEIGHT_SUFFIXES) or os.path.isabs(text)
                   or text.startswith(("./", "../", ".\\", "..\\", "~")) or text.count("/") >= 2 or "\\" in text)
    if looks_local and not os.path.isfile(text):
        raise FileNotFoundError(f"LoRA file not found: {text}")


class LTX2OfficialLoraLoaderMixin(LTX2LoraLoaderMixin):
    """`LTX2LoraLoaderMixin` that also loads official-format LTX-2 LoRAs and records IC-LoRA metadata."""

    #: whether the pipeline reads `reference_downscale_factor` (IC-LoRA pipelines): only those note a LoRA without it
    uses_reference_factor = False

    @property
    def ic_lora_adapters(self) -> dict[str, ICLoraInfo]:
        """Recorded information per loaded adapter name. Kept on the transformer (where the adapters live), so
        pipelines sharing it through `from_pipe` see the same factors."""
        holder = getattr(self, "transformer", None) or self
        records = getattr(holder, "_ltx2_lora_adapters", None)
        if records is None:
            records = {}
            object.__setattr__(holder, "_ltx2_lora_adapters", records)
        return records

    @property
    def reference_downscale_factor(self) -> int:
        """Reference downscale factor of the loaded LoRAs (1 when none sets one)."""
        return self._common_factor("reference_downscale_factor")

    @property
    def reference_temporal_scale_factor(self) -> int:
        """Reference temporal scale factor of the loaded LoRAs (1 when none sets one)."""
        return self._common_factor("reference_temporal_scale_factor")

    def _common_factor(self, field: str, extra: ICLoraInfo | None = None) -> int:
        factor, owner = 1, None
        infos = list(self.ic_lora_adapters.values()) + ([extra] if extra is not None else [])
        for info in infos:
            value = getattr(info, field)
            if value == 1:
                continue
            if factor not in (1, value):
                raise ValueError(
                    f"LoRA {info.adapter_name!r} has {field}={value} but the loaded LoRA {owner!r} has {factor}: "
                    "LoRAs with different reference scales cannot be combined (delete_adapters one of them, or "
                    f"pass {field}= explicitly)"
                )
            factor, owner = value, info.adapter_name
        return factor

    def load_lora_weights(
        self,
        pretrained_model_name_or_path_or_dict,
        adapter_name: str | None = None,
        hotswap: bool = False,
        *,
        strength: float = 1.0,
        reference_downscale_factor: int | None = None,
        reference_temporal_scale_factor: int | None = None,
        **kwargs,
    ):
        """Load a LoRA (any supported layout, see the module doc) into the transformer (and connectors).

        Every tensor of the file must land on a linear layer of this pipeline's transformer / connectors: the
        file is normalised and checked completely before anything is injected, and the layers PEFT created are
        checked after (the adapter is removed again if they differ).

        Args:
            pretrained_model_name_or_path_or_dict: a `.safetensors` file, a folder / hub id (with `weight_name=`),
                or a state dict (no metadata then: pass `reference_downscale_factor=` for an IC-LoRA).
            adapter_name: PEFT adapter name (default: `default_<n>`); a non-empty string without `.`.
            hotswap: replace an existing adapter's weights in place (diffusers semantics).
            strength: the adapter's weight (`W + strength * B @ A`); change later with `set_adapters`.
            reference_downscale_factor: IC-LoRA reference downscale factor; overrides the file's metadata.
            reference_temporal_scale_factor: IC-LoRA temporal factor; overrides the file's metadata.
            **kwargs: forwarded to diffusers (`weight_name`, `subfolder`, `low_cpu_mem_usage`, ...).

        Returns:
            The adapter name.

        Raises:
            FileNotFoundError: a local file path (or folder + `weight_name`) that does not exist.
            TypeError: an unknown keyword argument (checked before anything is read).
            ValueError: a bad adapter name / strength / factor; a LoRA whose tensors do not all fit this model
                (`conversion.lora.LoraKeyError`, listing the keys and the probable cause); NaN/inf factors;
                contradictory IC-LoRA metadata; a LoRA that created no layer.
        """
        _check_factor("reference_downscale_factor", reference_downscale_factor)
        _check_factor("reference_temporal_scale_factor", reference_temporal_scale_factor)
        if not isinstance(strength, (int, float)) or isinstance(strength, bool) or not torch.isfinite(
            torch.tensor(float(strength))
        ):
            raise ValueError(f"strength must be a finite number, got {strength!r}")
        if adapter_name is not None:
            check_adapter_name(adapter_name)
        unknown = set(kwargs) - set(_FETCH_KEYS) - {"use_safetensors", "low_cpu_mem_usage"}
        if unknown:
            raise TypeError(f"load_lora_weights() got unexpected keyword arguments {sorted(unknown)}")
        _check_local_source(pretrained_model_name_or_path_or_dict, kwargs.get("weight_name"))
        state_dict, file_metadata = self._fetch_lora(pretrained_model_name_or_path_or_dict, kwargs)
        if adapter_name is None:
            from diffusers.utils.peft_utils import get_adapter_name

            adapter_name = get_adapter_name(self.transformer)
        # messages name the file when there is one (the adapter name is ours, not the user's)
        source = pretrained_model_name_or_path_or_dict
        label = os.fspath(source) if isinstance(source, (str, os.PathLike)) else adapter_name
        lora = normalize_lora(state_dict, file_metadata, self.lora_targets(), name=label)
        spatial, temporal = read_reference_factors(file_metadata)
        if spatial is None and reference_downscale_factor is None and self.uses_reference_factor:
            logger.warning(
                "LoRA %r has no reference_downscale_factor in its metadata: using 1 (a reference at the target "
                "resolution); pass reference_downscale_factor= if it is an IC-LoRA trained otherwise", adapter_name
            )
        info = ICLoraInfo(
            adapter_name=adapter_name,
            reference_downscale_factor=reference_downscale_factor or spatial or 1,
            reference_temporal_scale_factor=reference_temporal_scale_factor or temporal or 1,
            from_metadata=reference_downscale_factor is None and spatial is not None,
            strength=float(strength),
        )
        if not hotswap:
            if adapter_name in self.ic_lora_adapters or any(
                adapter_name in (getattr(getattr(self, c, None), "peft_config", None) or {})
                for c in self._lora_loadable_modules
            ):
                raise ValueError(f"an adapter named {adapter_name!r} is already loaded; pass another adapter_name")
            self._common_factor("reference_downscale_factor", info)  # refuse before touching the model
            self._common_factor("reference_temporal_scale_factor", info)
        with _weights_changing(self):  # disk-offload files follow the new parameters
            self._inject(lora, adapter_name, hotswap, kwargs.get("low_cpu_mem_usage"))
        self.ic_lora_adapters[adapter_name] = info
        if strength != 1.0:
            self._apply_strengths()
        return adapter_name

    def lora_targets(self) -> LoraTargets:
        """The LoRA-able layers of this pipeline's transformer and connectors (what a LoRA is checked against)."""
        return LoraTargets.from_models({c: getattr(self, c, None) for c in self._lora_loadable_modules})

    def _inject(self, lora: NormalizedLora, adapter_name: str, hotswap: bool, low_cpu_mem_usage) -> None:
        """Hand the checked factors to PEFT per component; verify the created layers; undo on any failure."""
        from diffusers.loaders.lora_pipeline import _LOW_CPU_MEM_USAGE_DEFAULT_LORA
        from peft.tuners.tuners_utils import BaseTunerLayer

        from ..quantization.lora import adopt_quantized_lora_layers

        if low_cpu_mem_usage is None:
            low_cpu_mem_usage = _LOW_CPU_MEM_USAGE_DEFAULT_LORA
        done: list[str] = []
        try:
            for component in lora.components():
                model = getattr(self, component)
                config = None
                if lora.adapter_config.get(component):
                    # diffusers' own adapter metadata (alpha, rank, patterns), with the exact layers as targets
                    config = {f"{component}.{k}": v for k, v in lora.adapter_config[component].items()}
                    config[f"{component}.target_modules"] = lora.modules(component)
                self.load_lora_into_transformer(
                    lora.state_dict(component), transformer=model, adapter_name=adapter_name, metadata=config,
                    _pipeline=self, low_cpu_mem_usage=low_cpu_mem_usage, hotswap=hotswap, prefix=component,
                )
                done.append(component)
                adopt_quantized_lora_layers(model)  # fusion into quantized bases re-quantizes (quantization.lora)
                created = sorted(
                    name for name, mod in model.named_modules()
                    if isinstance(mod, BaseTunerLayer) and adapter_name in getattr(mod, "lora_A", {})
                )
                if created != lora.modules(component):
                    extra = sorted(set(created) - set(lora.modules(component)))[:5]
                    absent = sorted(set(lora.modules(component)) - set(created))[:5]
                    raise ValueError(
                        f"LoRA {adapter_name!r} created {len(created)} layers in the {component} for "
                        f"{len(lora.modules(component))} modules of the file (not created: {absent}, unexpected: "
                        f"{extra}); it was removed again"
                    )
        except BaseException:
            if not hotswap:
                for component in lora.components():
                    model = getattr(self, component)
                    if adapter_name in (getattr(model, "peft_config", None) or {}):
                        model.delete_adapters(adapter_name)
            raise
        if not done:
            raise ValueError(f"LoRA {adapter_name!r} created no layer")

    def _fetch_lora(self, source, kwargs) -> tuple[dict[str, torch.Tensor], dict | None]:
        """The raw state dict and the file's full safetensors metadata (None for in-memory dicts)."""
        opts = {k: kwargs.pop(k, None) for k in _FETCH_KEYS}
        if isinstance(source, dict):
            return dict(source), None
        from diffusers.loaders.lora_base import _fetch_state_dict

        use_safetensors = kwargs.pop("use_safetensors", None)
        if isinstance(source, os.PathLike):
            source = os.fspath(source)
        if isinstance(source, str):
            source = os.path.expanduser(source)
            _check_metadata_json(source)
        state_dict, _, file_metadata = _fetch_state_dict(
            pretrained_model_name_or_path_or_dict=source, use_safetensors=use_safetensors in (None, True),
            allow_pickle=use_safetensors is None, user_agent={"file_type": "attn_procs_weights",
                                                              "framework": "pytorch"},
            force_download=bool(opts.pop("force_download")), return_file_metadata=True, **opts,
        )
        return dict(state_dict), dict(file_metadata) if file_metadata else None

    def _apply_strengths(self) -> None:
        """Activate every recorded adapter with its recorded strength on the components that hold it."""
        for name in self._lora_loadable_modules:
            model = getattr(self, name, None)
            present = set(getattr(model, "peft_config", {}) or {})
            adapters = [a for a in self.ic_lora_adapters if a in present]
            if adapters:
                model.set_adapters(adapters, [self.ic_lora_adapters[a].strength for a in adapters])

    def set_adapters(self, adapter_names, adapter_weights=None):
        """diffusers' `set_adapters`; also records scalar strengths."""
        super().set_adapters(adapter_names, adapter_weights)
        names = [adapter_names] if isinstance(adapter_names, str) else list(adapter_names)
        weights = adapter_weights if isinstance(adapter_weights, list) else [adapter_weights] * len(names)
        for n, w in zip(names, weights):
            if n in self.ic_lora_adapters and isinstance(w, (int, float)):
                old = self.ic_lora_adapters[n]
                self.ic_lora_adapters[n] = ICLoraInfo(old.adapter_name, old.reference_downscale_factor,
                                                      old.reference_temporal_scale_factor, old.from_metadata, float(w))

    def delete_adapters(self, adapter_names):
        """diffusers' `delete_adapters`; also forgets their recorded IC-LoRA factors."""
        with _weights_changing(self):
            super().delete_adapters(adapter_names)
        for name in [adapter_names] if isinstance(adapter_names, str) else adapter_names:
            self.ic_lora_adapters.pop(name, None)

    def unload_lora_weights(self, *args, **kwargs):
        """diffusers' `unload_lora_weights`; also forgets every recorded IC-LoRA factor."""
        with _weights_changing(self):
            super().unload_lora_weights(*args, **kwargs)
        self.ic_lora_adapters.clear()

    def fuse_lora(self, components: list[str] | None = None, lora_scale: float = 1.0, safe_fusing: bool = False,
                  adapter_names: list[str] | None = None, **kwargs):
        """Fuse the LoRAs into the weights (`W += lora_scale * strength * B @ A`); by default into every component
        that holds LoRA layers (transformer and, for connector-block LoRAs, connectors)."""
        if components is None:
            components = self._components_with_lora() or ["transformer"]
        with _weights_changing(self, materialize=True):  # the base weights change in place
            super().fuse_lora(components=components, lora_scale=lora_scale, safe_fusing=safe_fusing,
                              adapter_names=adapter_names, **kwargs)

    def unfuse_lora(self, components: list[str] | None = None, **kwargs):
        """Undo `fuse_lora` (by default on every component holding LoRA layers)."""
        if components is None:
            components = self._components_with_lora() or ["transformer"]
        with _weights_changing(self, materialize=True):
            super().unfuse_lora(components=components, **kwargs)

    def _components_with_lora(self) -> list[str]:
        return [n for n in self._lora_loadable_modules if getattr(getattr(self, n, None), "peft_config", None)]


def _check_metadata_json(path: str) -> None:
    """A local LoRA file's adapter metadata (JSON that diffusers' `_fetch_state_dict` parses with a bare
    `json.loads`) must be readable: nesting 100000 deep is a `ValueError` naming the file, not a RecursionError."""
    from ..conversion.lora import ADAPTER_METADATA_KEY
    from ..json_files import parse_json
    from .identity import read_safetensors_metadata

    if not (path.endswith(".safetensors") and os.path.isfile(path)):
        return  # a folder or a Hub id: diffusers resolves the file itself
    raw = read_safetensors_metadata(path).get(ADAPTER_METADATA_KEY)
    if raw:
        parse_json(raw, f"{path}: LoRA metadata {ADAPTER_METADATA_KEY}")


def _weights_changing(pipe, materialize: bool = False):
    """`memory.offload.weights_changing`: disk-offload files kept in step with a LoRA change."""
    from ..memory.offload import weights_changing

    return weights_changing(pipe, materialize=materialize)
