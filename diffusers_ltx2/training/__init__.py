"""LoRA / IC-LoRA training for LTX-2 (`ltx2 train`, `ltx2 preprocess`) on accelerate + peft.

Modules: `config` (YAML schema), `timesteps` (official sigma samplers), `objective` (flow-matching loss),
`strategies` (text-to-video(+audio), IC-LoRA video-to-video), `lora` (presets, official-format export),
`data` (precomputed dataset and its checks), `preprocess`, `checkpoints` (resume state without pickle, atomic
checkpoint folders), `trainer` (the accelerate loop), `models`, `plot`.
"""

from .config import ConfigError, TrainingConfig, load_config, parse_config
from .lora import TARGET_MODULE_PRESETS, export_lora_state_dict, save_lora

__all__ = ["ConfigError", "TrainingConfig", "load_config", "parse_config", "TARGET_MODULE_PRESETS",
           "export_lora_state_dict", "save_lora", "Trainer"]


def __getattr__(name):
    if name == "Trainer":
        from .trainer import Trainer

        return Trainer
    raise AttributeError(name)
