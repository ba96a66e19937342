"""The `ltx2 train` YAML configuration: a pydantic schema close to the official `ltx-trainer`'s.

Sections and names follow the official trainer (`ltx_trainer/config.py`, LTX-2 repository) so a user can move a
config over: `model`, `lora`, `training_strategy` (`text_to_video` / `video_to_video`), `optimization`,
`acceleration`, `data`, `validation`, `checkpoints`, `flow_matching`, plus `seed` and `output_dir`. Differences,
by choice: `video_to_video` carries the `reference_downscale_factor` (default 2) and the union `control_types`
explicitly instead of inferring the factor from the first batch; the defaults of `lora.target_modules` are our
presets (see `training.lora.TARGET_MODULE_PRESETS`); `model.model_path` also accepts `factory:tiny[:SEED]` /
`factory:small[:SEED]` (the package's random-weight test models) for tests and benchmarks.

Every field is validated when the file is read (`load_config`), before any model is built: an unknown key,
a wrong type or an out-of-range value raises `ConfigError` naming the dotted path of the field. Types are checked
strictly where YAML would otherwise be coerced silently: integers must be YAML integers (`steps: true` or
`steps: 3.5` are refused), flags must be YAML booleans, numbers must be finite (`.inf` / `.nan` are refused;
`1e-4` written without a dot, which YAML reads as text, is accepted as a number), seeds lie in [0, 2**32).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal, Union

import yaml
from pydantic import (BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, Strict, Tag, ValidationError,
                      field_validator, model_validator)

__all__ = ["ConfigError", "TrainingConfig", "load_config", "parse_config"]


class ConfigError(ValueError):
    """A training configuration that cannot be used; the message lists every problem with its field path."""


def _no_bool(v):
    if isinstance(v, bool):
        raise ValueError("a number is needed, not a boolean")
    return v


Int = Annotated[int, Strict()]
"""A YAML integer (booleans, floats and strings refused)."""
Float = Annotated[float, BeforeValidator(_no_bool)]
"""A finite number (with `allow_inf_nan=False` on every section); a YAML int or a numeric string is accepted."""
Bool = Annotated[bool, Strict()]
Seed = Annotated[int, Strict(), Field(ge=0, lt=2**32)]
"""A random seed in [0, 2**32): the per-sample generators are seeded with `seed * 1_000_003 + sample index`."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class ModelConfig(_Section):
    """`model_path`: a diffusers-format LTX-2 pipeline folder (`save_pretrained` / `ltx2 convert` output), an
    official single-file `.safetensors` checkpoint, or `factory:tiny[:SEED]` / `factory:small[:SEED]`.
    `training_mode`: `lora` (default) or `full` (every transformer weight trained). `load_checkpoint`: a LoRA
    file (official format) to start from."""

    model_path: str
    training_mode: Literal["lora", "full"] = "lora"
    load_checkpoint: str | None = None

    @field_validator("model_path")
    @classmethod
    def _exists(cls, v: str) -> str:
        if v.startswith("factory:"):
            parts = v.split(":")
            if parts[1] not in ("tiny", "small") or len(parts) > 3 or (len(parts) == 3 and not parts[2].isdigit()):
                raise ValueError("factory models are 'factory:tiny[:SEED]' or 'factory:small[:SEED]'")
            return v
        if not os.path.exists(v):
            raise ValueError(f"model path does not exist: {v}")
        return v

    @field_validator("load_checkpoint")
    @classmethod
    def _checkpoint(cls, v: str | None) -> str | None:
        if v is not None and not os.path.isfile(v):
            raise ValueError(f"load_checkpoint is not a file: {v!r}")
        return v


class LoraSection(_Section):
    """peft LoRA: `rank` (default 32, the IC-LoRA rank of the official workflow), `alpha` (default = rank, as the
    official trainer; the exported file folds `alpha / rank` into `lora_B`), `dropout`, and `target_modules`:
    a preset name (`video`, `audio`, `audio_video`, `av_full`, see `training.lora`) or a list of module-name
    patterns (peft semantics: a name matches when it equals a module path or is its suffix). Default (`None`):
    `audio_video` when the strategy trains audio, else `video` (the official IC-LoRA layout)."""

    rank: Int = Field(32, ge=1)
    alpha: Float | None = Field(None, gt=0)
    dropout: Float = Field(0.0, ge=0.0, lt=1.0)
    target_modules: str | list[str] | None = None

    @field_validator("target_modules")
    @classmethod
    def _targets(cls, v):
        from .lora import TARGET_MODULE_PRESETS

        if v is None:
            return v
        if isinstance(v, str) and v not in TARGET_MODULE_PRESETS:
            raise ValueError(f"unknown target_modules preset {v!r}; presets: {sorted(TARGET_MODULE_PRESETS)}")
        if isinstance(v, list) and (not v or any(not isinstance(m, str) or not m for m in v)):
            raise ValueError("target_modules must be a non-empty list of module-name patterns")
        return v


class TextToVideoConfig(_Section):
    """Text-to-video(+audio) LoRA. `first_frame_conditioning_p`: probability (per sample) that the first latent
    frame is given clean (timestep 0, no loss), as the official strategy. `with_audio`: joint audio loss on
    `audio_latents/` (required then)."""

    name: Literal["text_to_video"] = "text_to_video"
    first_frame_conditioning_p: Float = Field(0.1, ge=0.0, le=1.0)
    with_audio: Bool = False


CONTROL_TYPES = ("canny", "depth", "pose")


class VideoToVideoConfig(_Section):
    """IC-LoRA video-to-video. References (`reference_latents/`) are appended clean after the target tokens with
    positions scaled by `reference_downscale_factor` (default 2: references preprocessed at half size);
    `control_types`: the control(s) the references were made with; more than one makes a union LoRA (each
    sample's type is recorded at preprocessing and mixed in one run). Video only, as the official strategy."""

    name: Literal["video_to_video"] = "video_to_video"
    first_frame_conditioning_p: Float = Field(0.1, ge=0.0, le=1.0)
    reference_downscale_factor: Int = Field(2, ge=1)
    control_types: list[str] = Field(default_factory=lambda: ["canny"])

    @field_validator("control_types")
    @classmethod
    def _types(cls, v):
        bad = [t for t in v if t not in CONTROL_TYPES]
        if not v or bad:
            raise ValueError(f"control_types must be a non-empty subset of {list(CONTROL_TYPES)}, got {v}")
        if len(set(v)) != len(v):
            raise ValueError(f"control_types has duplicates: {v}")
        return v


def _strategy_name(v) -> str:
    """The strategy's `name`, `text_to_video` when omitted (as the official trainer)."""
    return v.get("name", "text_to_video") if isinstance(v, dict) else getattr(v, "name", "text_to_video")


StrategyConfig = Annotated[
    Union[Annotated[TextToVideoConfig, Tag("text_to_video")], Annotated[VideoToVideoConfig, Tag("video_to_video")]],
    Discriminator(_strategy_name),
]


class OptimizationConfig(_Section):
    """`learning_rate` (5e-4), `steps` (optimizer steps), `batch_size` (per process), `gradient_accumulation_steps`,
    `max_grad_norm` (0 disables clipping), `optimizer_type` (`adamw`, or `adamw8bit` = bitsandbytes, GPU only),
    `scheduler_type` (`constant` or `linear` decay to 0), `enable_gradient_checkpointing`.

    `on_nonfinite_loss` (not in the official trainer): what a step whose loss or gradient norm is NaN / inf does.
    `stop` (default) ends the run with an error before the update, keeping every checkpoint and writing no final
    LoRA; `skip` drops that optimizer step (no update, the LR scheduler does not advance) with a warning and goes
    on. Either way no non-finite weight is ever applied or saved, and weights that overflow stop the run."""

    learning_rate: Float = Field(5e-4, gt=0)
    steps: Int = Field(3000, ge=1)
    batch_size: Int = Field(1, ge=1)
    gradient_accumulation_steps: Int = Field(1, ge=1)
    max_grad_norm: Float = Field(1.0, ge=0)
    optimizer_type: Literal["adamw", "adamw8bit"] = "adamw"
    weight_decay: Float = Field(0.0, ge=0)
    scheduler_type: Literal["constant", "linear"] = "constant"
    enable_gradient_checkpointing: Bool = False
    on_nonfinite_loss: Literal["stop", "skip"] = "stop"


class AccelerationConfig(_Section):
    """`mixed_precision_mode`: accelerate's `no` / `fp16` / `bf16` (autocast; LoRA weights stay fp32);
    `quantization`: `int8-quanto` or `fp8-quanto` freezes the base transformer's linear weights quantized with
    optimum-quanto (all linears of the blocks, as the official trainer); `fp8-cast` (official float8 cast),
    `int8-torchao` / `fp8-torchao` (torchao int8 / float8 weight-only) quantize the layers of
    `diffusers_ltx2.quantization.policy` (LoRA mode only; the LoRA trains in full precision beside them)."""

    mixed_precision_mode: Literal["no", "fp16", "bf16"] = "no"
    quantization: Literal["int8-quanto", "fp8-quanto", "fp8-cast", "int8-torchao", "fp8-torchao"] | None = None

    @field_validator("mixed_precision_mode", mode="before")
    @classmethod
    def _yaml_no(cls, v):
        # YAML 1.1 reads a bare `no` (accelerate's name for "no mixed precision") as False
        return "no" if v is False else v


class DataConfig(_Section):
    """`preprocessed_data_root`: the `ltx2 preprocess` output (latents/, conditions/, audio_latents/,
    reference_latents/)."""

    preprocessed_data_root: str

    @field_validator("preprocessed_data_root")
    @classmethod
    def _exists(cls, v: str) -> str:
        if not os.path.isdir(v):
            raise ValueError(f"preprocessed data folder does not exist: {v}")
        if not os.path.isdir(os.path.join(v, "latents")):
            raise ValueError(f"{v} has no latents/ folder (run `ltx2 preprocess` first)")
        return v


class ValidationConfig(_Section):
    """Validation clips rendered with the package's pipeline (unguided, `inference_steps` steps) on the model being
    trained every `interval` steps (`None`: never) into `output_dir/validation/`: `conditions` are clip names
    whose stored prompt embeddings (conditions/) are used; IC-LoRA runs need one `reference_videos` entry (a
    control video file) per condition; `video_dims` is (width, height, frames)."""

    interval: Int | None = Field(None, ge=1)
    conditions: list[str] = Field(default_factory=list)
    reference_videos: list[str] = Field(default_factory=list)
    video_dims: tuple[Annotated[Int, Field(ge=32)], Annotated[Int, Field(ge=32)],
                      Annotated[Int, Field(ge=1)]] = (64, 64, 9)
    frame_rate: Float = Field(24.0, gt=0)
    inference_steps: Int = Field(8, ge=2)
    seed: Seed = 42

    @model_validator(mode="after")
    def _check(self):
        if self.interval is not None and not self.conditions:
            raise ValueError("validation.interval needs at least one entry in validation.conditions")
        missing = [p for p in self.reference_videos if not os.path.isfile(p)]
        if missing:
            raise ValueError(f"validation reference videos not found: {missing}")
        w, h, f = self.video_dims
        if w % 32 or h % 32 or (f - 1) % 8:
            raise ValueError(f"video_dims (width, height, frames) must be multiples of 32 and 8k + 1 frames, got {self.video_dims}")
        return self


class CheckpointsConfig(_Section):
    """`interval`: save the LoRA (official format) and the full training state every N steps (`None`: only at
    the end); `keep_last_n` checkpoints (the newest by step number; -1 keeps all; 0 is refused, as it would delete
    the checkpoint just written); `precision` of the saved LoRA."""

    interval: Int | None = Field(None, ge=1)
    keep_last_n: Int = Field(2, ge=-1)
    precision: Literal["bfloat16", "float32"] = "float32"

    @field_validator("keep_last_n")
    @classmethod
    def _keep(cls, v: int) -> int:
        if v == 0:
            raise ValueError("keep_last_n 0 would delete every checkpoint, the one just written included: "
                             "use -1 to keep all, or N >= 1")
        return v


class FlowMatchingConfig(_Section):
    """Timestep sampling (official `timestep_samplers.py`): `shifted_logit_normal` (default; params `std` > 0,
    `eps` in [0, 1), `uniform_prob` in [0, 1]) or `uniform` (params 0 <= `min_value` <= `max_value` <= 1)."""

    timestep_sampling_mode: Literal["uniform", "shifted_logit_normal"] = "shifted_logit_normal"
    timestep_sampling_params: dict[str, Float] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _params(self):
        mode, params = self.timestep_sampling_mode, self.timestep_sampling_params
        allowed = {"uniform": {"min_value", "max_value"},
                   "shifted_logit_normal": {"std", "eps", "uniform_prob"}}[mode]
        bad = set(params) - allowed
        if bad:
            raise ValueError(f"unknown {mode} parameters {sorted(bad)}; allowed {sorted(allowed)}")
        problems = []
        if mode == "uniform":
            lo, hi = params.get("min_value", 0.0), params.get("max_value", 1.0)
            if not 0.0 <= lo <= hi <= 1.0:
                problems.append(f"uniform needs 0 <= min_value <= max_value <= 1, got min_value {lo}, max_value {hi}")
        else:
            if params.get("std", 1.0) <= 0:
                problems.append(f"std must be > 0, got {params['std']}")
            if not 0.0 <= params.get("eps", 1e-3) < 1.0:
                problems.append(f"eps must lie in [0, 1), got {params['eps']}")
            if not 0.0 <= params.get("uniform_prob", 0.1) <= 1.0:
                problems.append(f"uniform_prob must lie in [0, 1], got {params['uniform_prob']}")
        if problems:
            raise ValueError("timestep_sampling_params: " + "; ".join(problems))
        return self


class TrainingConfig(_Section):
    """The whole `ltx2 train` configuration (see the sections' docstrings for every default)."""

    model: ModelConfig
    lora: LoraSection | None = Field(default_factory=LoraSection)
    training_strategy: StrategyConfig = Field(default_factory=TextToVideoConfig)
    optimization: OptimizationConfig = Field(default_factory=OptimizationConfig)
    acceleration: AccelerationConfig = Field(default_factory=AccelerationConfig)
    data: DataConfig
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    checkpoints: CheckpointsConfig = Field(default_factory=CheckpointsConfig)
    flow_matching: FlowMatchingConfig = Field(default_factory=FlowMatchingConfig)
    seed: Seed = 42
    output_dir: str = "outputs/ltx2_lora"

    @field_validator("output_dir")
    @classmethod
    def _output_dir(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("output_dir must name a folder (it is empty)")
        if os.path.exists(v) and not os.path.isdir(v):
            raise ValueError(f"output_dir {v} is a file, not a folder")
        return v

    @property
    def trains_audio(self) -> bool:
        """Whether the strategy trains the audio modality (text_to_video with `with_audio`)."""
        s = self.training_strategy
        return isinstance(s, TextToVideoConfig) and s.with_audio

    def lora_target_modules(self) -> str | list[str]:
        """The LoRA target modules in effect (the strategy-dependent default when none are configured)."""
        if self.lora is not None and self.lora.target_modules is not None:
            return self.lora.target_modules
        return "audio_video" if self.trains_audio else "video"

    @model_validator(mode="after")
    def _cross(self):
        if self.model.training_mode == "lora" and self.lora is None:
            raise ValueError("training_mode 'lora' needs a lora section")
        if self.model.training_mode == "full" and self.acceleration.quantization is not None:
            raise ValueError("a quantized base can only be trained with training_mode 'lora'")
        root = Path(self.data.preprocessed_data_root)
        strategy = self.training_strategy
        needed = ["latents", "conditions"]
        if self.trains_audio:
            needed.append("audio_latents")
        if isinstance(strategy, VideoToVideoConfig):
            needed.append("reference_latents")
        missing = [d for d in needed if not (root / d).is_dir()]
        if missing:
            raise ValueError(f"{root} lacks {missing} needed by the {strategy.name} strategy (see `ltx2 preprocess`)")
        return self


def _format(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"] if not (isinstance(p, str) and p in ("text_to_video", "video_to_video")))
        msg = "unknown key (not in the schema)" if e["type"] == "extra_forbidden" else e["msg"]
        lines.append(f"  {where or '<top>'}: {msg}")
    return "invalid training config:\n" + "\n".join(lines)


def parse_config(data: dict) -> TrainingConfig:
    """Validate a config mapping; raises `ConfigError` listing every bad field."""
    if not isinstance(data, dict):
        raise ConfigError(f"a training config must be a mapping, got {type(data).__name__}")
    try:
        return TrainingConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format(err)) from None


def load_config(path: str | os.PathLike) -> TrainingConfig:
    """Read and validate a YAML training config (no model is touched). Raises `FileNotFoundError` or
    `ConfigError` (a `ValueError`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training config not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from None
    return parse_config(data or {})
