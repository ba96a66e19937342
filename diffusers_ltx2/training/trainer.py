"""The `ltx2 train` loop on accelerate: LoRA (peft) or full fine-tuning of the LTX-2 transformer on precomputed
latents, with gradient accumulation, mixed precision, data-parallel processes and bit-exact resume.

Determinism: every sample's draws (sigma, first-frame coin, noise) come from a generator seeded by
`(seed, global sample index)` and the data order is a per-epoch permutation seeded by `(seed, epoch)`, sliced
into global batches of `batch_size * num_processes`, each process taking its contiguous share. So a run on N
processes draws exactly what one process with the N-times batch draws, and a run resumed from a checkpoint
continues with the same batches and noise as the uninterrupted run (checkpoints hold the trainable weights,
optimizer and LR-scheduler state and the step, saved exactly).

Official source followed for the loop: `ltx_trainer/trainer.py` (accelerate `accumulate`, backward of the batch
mean loss, gradient clipping at `max_grad_norm`, LoRA written with `diffusion_model.` keys and the strategy's
metadata).
"""

from __future__ import annotations

import csv
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import strategies as S
from .config import TrainingConfig, VideoToVideoConfig
from .data import PrecomputedDataset, collate
from .lora import add_lora, load_lora_into, resolve_target_modules, save_lora
from .models import check_runtime_options, load_transformer, quantize_frozen_base

logger = logging.getLogger(__name__)

__all__ = ["Trainer", "TrainResult"]

STATE_FILE = "training_state.pt"


@dataclass
class TrainResult:
    """What `Trainer.train` produced: per-step mean losses, the final LoRA (or full weights) file, checkpoints."""

    losses: list[float] = field(default_factory=list)
    output: Path | None = None
    checkpoints: list[Path] = field(default_factory=list)
    step: int = 0
    seconds: float = 0.0


class Trainer:
    """Train an LTX-2 LoRA / IC-LoRA from a validated `TrainingConfig`.

    Construction checks the runtime options (8-bit AdamW needs bitsandbytes and a GPU, ...) and reads the
    dataset index before any model is built; `setup()` builds the model, adapter, optimizer and accelerator.

    Args:
        config: the validated configuration (`training.config.load_config`).
        transformer: optional pre-built `LTX2VideoTransformer3DModel` (tests, notebooks); default: loaded from
            `config.model.model_path`.
        accelerator: optional `accelerate.Accelerator`; default: one built from the config (mixed precision,
            gradient accumulation), which picks up `accelerate launch` settings.
    """

    def __init__(self, config: TrainingConfig, *, transformer=None, accelerator=None):
        check_runtime_options(config)
        self.config = config
        strategy = config.training_strategy
        self.dataset = PrecomputedDataset(
            config.data.preprocessed_data_root,
            with_audio=config.trains_audio,
            with_reference=isinstance(strategy, VideoToVideoConfig),
            control_types=strategy.control_types if isinstance(strategy, VideoToVideoConfig) else None,
        )
        for msg in self.dataset.skipped:
            logger.warning("skipping clip %s", msg)
        self.validation = None
        if config.validation.interval:
            from .validation import ValidationRenderer

            self.validation = ValidationRenderer(config)  # checks its inputs now, loads models on first use
        self._transformer = transformer
        self._accelerator = accelerator
        self.step = 0
        self.micro_step = 0
        self.ready = False

    # -- setup ------------------------------------------------------------------------------------------------
    def setup(self) -> "Trainer":
        from accelerate import Accelerator

        cfg = self.config
        if self._accelerator is None:
            from accelerate.utils import DistributedDataParallelKwargs

            # video-only strategies leave audio-stream LoRA weights without gradients
            ddp = DistributedDataParallelKwargs(find_unused_parameters=not cfg.trains_audio)
            # `accelerate launch --multi_gpu` on a machine without GPUs: data-parallel on CPU (gloo)
            distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
            cpu_ddp = not torch.cuda.is_available() and distributed
            if not distributed:  # several trainers in one process (notebooks, benchmarks) may differ in precision
                from accelerate.state import AcceleratorState

                AcceleratorState._reset_state(reset_partial_state=True)
            self._accelerator = Accelerator(
                cpu=cpu_ddp,
                mixed_precision=cfg.acceleration.mixed_precision_mode,
                gradient_accumulation_steps=cfg.optimization.gradient_accumulation_steps,
                kwargs_handlers=[ddp],
            )
        acc = self.accelerator
        transformer, self.model_identity = (
            (self._transformer, getattr(self._transformer, "_ltx2_model_identity", None))
            if self._transformer is not None else load_transformer(cfg.model.model_path)
        )
        if cfg.acceleration.quantization:
            quantize_frozen_base(transformer, cfg.acceleration.quantization)
        if cfg.model.training_mode == "lora":
            self.adapted = add_lora(transformer, cfg.lora.rank, cfg.lora.alpha, cfg.lora.dropout,
                                    cfg.lora_target_modules(), seed=cfg.seed)
            if cfg.model.load_checkpoint:
                load_lora_into(transformer, cfg.model.load_checkpoint)
        else:
            transformer.requires_grad_(True)
            self.adapted = []
            if cfg.model.load_checkpoint:
                from safetensors.torch import load_file

                transformer.load_state_dict(load_file(cfg.model.load_checkpoint))
        if cfg.optimization.enable_gradient_checkpointing:
            transformer.enable_gradient_checkpointing()
        transformer.train()
        params = [p for p in transformer.parameters() if p.requires_grad]
        for p in params:  # trainable weights in fp32 (the frozen base may be bf16 / quantized)
            p.data = p.data.float()
        optimizer = self._optimizer(params)
        total = cfg.optimization.steps
        if cfg.optimization.scheduler_type == "linear":
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: max(0.0, 1.0 - s / total))
        else:
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
        # the LR scheduler is stepped by hand once per optimizer step (accelerate's wrapper steps it once per
        # process, which would make N processes differ from one process with the N-times batch)
        self.transformer, self.optimizer = acc.prepare(transformer, optimizer)
        self.scheduler = scheduler
        self.params = params
        self.ready = True
        return self

    def _optimizer(self, params):
        o = self.config.optimization
        if o.optimizer_type == "adamw8bit":
            import bitsandbytes as bnb  # checked by check_runtime_options

            return bnb.optim.AdamW8bit(params, lr=o.learning_rate, weight_decay=o.weight_decay)
        return torch.optim.AdamW(params, lr=o.learning_rate, weight_decay=o.weight_decay)

    @property
    def accelerator(self):
        return self._accelerator

    @property
    def unwrapped(self):
        return self.accelerator.unwrap_model(self.transformer)

    # -- data order -------------------------------------------------------------------------------------------
    def _dataset_index(self, k: int) -> int:
        n = len(self.dataset)
        epoch = k // n
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.config.seed * 7919 + epoch))
        return int(perm[k % n])

    def local_sample_indices(self, micro_step: int) -> list[int]:
        """Global sample indices this process trains on at a micro step."""
        bs = self.config.optimization.batch_size
        start = micro_step * bs * self.accelerator.num_processes + self.accelerator.process_index * bs
        return list(range(start, start + bs))

    def batch_for(self, sample_indices: list[int]) -> dict:
        return collate([self.dataset[self._dataset_index(k)] for k in sample_indices])

    # -- one step ---------------------------------------------------------------------------------------------
    def compute_loss(self, batch: dict, sample_indices: list[int], noise: S.StepNoise | None = None) -> torch.Tensor:
        """Per-sample losses `(B,)` of a batch (differentiable w.r.t. the trainable weights)."""
        device = self.accelerator.device
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        if noise is None:
            noise = S.draw_step_noise(self.config, batch, S.sample_generators(self.config.seed, sample_indices))
        inputs = S.build_inputs(self.config, self.unwrapped, batch, noise)
        with self.accelerator.autocast():
            video_pred, audio_pred = S.predict_velocity(self.transformer, inputs, self.unwrapped.dtype)
        return S.compute_loss(inputs, video_pred, audio_pred)

    def train(self, max_steps: int | None = None, resume_from: str | os.PathLike | None = None,
              progress: bool = True) -> TrainResult:
        """Run until `optimization.steps` optimizer steps (or `max_steps` more, for tests), saving checkpoints
        every `checkpoints.interval` steps and the final LoRA. `resume_from`: a checkpoint folder or `"latest"`."""
        from tqdm.auto import tqdm

        if not self.ready:
            self.setup()
        cfg, acc = self.config, self.accelerator
        if resume_from is not None:
            self.load_state(self._find_checkpoint(resume_from))
        out = Path(cfg.output_dir)
        if acc.is_main_process:
            out.mkdir(parents=True, exist_ok=True)
        result = TrainResult()
        target = cfg.optimization.steps if max_steps is None else min(cfg.optimization.steps, self.step + max_steps)
        accum = cfg.optimization.gradient_accumulation_steps
        bar = tqdm(total=target, initial=self.step, desc="training", disable=not (progress and acc.is_main_process))
        start = time.perf_counter()
        window: list[torch.Tensor] = []
        while self.step < target:
            indices = self.local_sample_indices(self.micro_step)
            with acc.accumulate(self.transformer):
                loss = self.compute_loss(self.batch_for(indices), indices)
                acc.backward(loss.mean())
                if acc.sync_gradients and cfg.optimization.max_grad_norm > 0:
                    acc.clip_grad_norm_(self.params, cfg.optimization.max_grad_norm)
                self.optimizer.step()
                if acc.sync_gradients:
                    self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
            self.micro_step += 1
            window.append(loss.detach().mean())
            if self.micro_step % accum:
                continue
            self.step += 1
            mean = acc.gather(torch.stack(window).mean().reshape(1)).mean().item()
            window = []
            result.losses.append(mean)
            if acc.is_main_process:
                self._log_loss(out, mean)
            bar.update(1)
            bar.set_postfix(loss=f"{mean:.4f}")
            if self.validation is not None and self.step % cfg.validation.interval == 0:
                self.render_validation(out)
            if cfg.checkpoints.interval and self.step % cfg.checkpoints.interval == 0:
                result.checkpoints.append(self.save_checkpoint())
        bar.close()
        result.seconds = time.perf_counter() - start
        result.step = self.step
        result.output = self.save_weights(out / "lora_weights.safetensors" if self.adapted else out / "model_weights.safetensors")
        if acc.is_main_process:
            from .plot import write_loss_plot

            write_loss_plot(out / "loss.csv", out / "loss.png")
        acc.wait_for_everyone()
        return result

    def render_validation(self, out: Path) -> list[Path]:
        """Validation clips of the current weights (main process; the others wait)."""
        paths = []
        if self.accelerator.is_main_process:
            paths = self.validation.render(self.unwrapped, self.step, out / "validation")
            self.validation_paths = getattr(self, "validation_paths", []) + paths
        self.accelerator.wait_for_everyone()
        return paths

    # -- outputs ----------------------------------------------------------------------------------------------
    def _log_loss(self, out: Path, loss: float) -> None:
        path = out / "loss.csv"
        new = not path.exists() or self.step == 1
        with open(path, "w" if new else "a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(["step", "loss", "learning_rate"])
            w.writerow([self.step, f"{loss:.8g}", f"{self.scheduler.get_last_lr()[0]:.8g}"])

    def lora_metadata(self) -> dict:
        """The metadata written into the LoRA file (strings): the IC-LoRA factor, the LoRA hyper-parameters,
        the base model's identity and the number of training steps."""
        cfg = self.config
        s = cfg.training_strategy
        meta = {
            "training_strategy": s.name, "training_steps": str(self.step), "base_model": cfg.model.model_path,
            "base_model_identity": self.model_identity, "ltx2_lora_alpha_folded": "true",
        }
        if cfg.lora is not None and cfg.model.training_mode == "lora":
            meta.update(rank=str(cfg.lora.rank), alpha=f"{cfg.lora.alpha if cfg.lora.alpha is not None else cfg.lora.rank:g}",
                        target_modules=json.dumps(resolve_target_modules(cfg.lora_target_modules())))
        if isinstance(s, VideoToVideoConfig):
            meta["reference_downscale_factor"] = str(s.reference_downscale_factor)
            meta["control_types"] = json.dumps(s.control_types)
        return meta

    def save_weights(self, path: Path) -> Path | None:
        """The LoRA in the official format (or, for `full`, the transformer's state dict) - main process only."""
        acc = self.accelerator
        acc.wait_for_everyone()
        if not acc.is_main_process:
            return None
        dtype = torch.bfloat16 if self.config.checkpoints.precision == "bfloat16" else torch.float32
        if self.adapted:
            return save_lora(self.unwrapped, path, self.lora_metadata(), dtype=dtype)
        from .data import write_entry

        return write_entry(path, {k: v.to(dtype) for k, v in self.unwrapped.state_dict().items()}, self.lora_metadata())

    def _trainable_state(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in self.unwrapped.named_parameters() if p.requires_grad}

    def save_checkpoint(self) -> Path:
        """`checkpoints/step_NNNNN/`: the LoRA file and `training_state.pt` (trainable weights, optimizer,
        scheduler, step counters); older states beyond `keep_last_n` are removed."""
        acc = self.accelerator
        folder = Path(self.config.output_dir) / "checkpoints" / f"step_{self.step:05d}"
        if acc.is_main_process:
            folder.mkdir(parents=True, exist_ok=True)
        self.save_weights(folder / ("lora_weights.safetensors" if self.adapted else "model_weights.safetensors"))
        if acc.is_main_process:
            state = {"weights": self._trainable_state(), "optimizer": self.optimizer.state_dict(),
                     "scheduler": self.scheduler.state_dict(), "step": self.step, "micro_step": self.micro_step,
                     "num_processes": acc.num_processes}
            tmp = folder / (STATE_FILE + ".tmp")
            torch.save(state, tmp)
            os.replace(tmp, folder / STATE_FILE)
            self._prune_checkpoints()
        acc.wait_for_everyone()
        return folder

    def _prune_checkpoints(self) -> None:
        keep = self.config.checkpoints.keep_last_n
        if keep < 0:
            return
        import shutil

        folders = sorted((Path(self.config.output_dir) / "checkpoints").glob("step_*"))
        for old in folders[: max(0, len(folders) - keep)]:
            shutil.rmtree(old, ignore_errors=True)

    def _find_checkpoint(self, where) -> Path:
        if str(where) == "latest":
            found = sorted((Path(self.config.output_dir) / "checkpoints").glob(f"step_*/{STATE_FILE}"))
            if not found:
                raise FileNotFoundError(f"no checkpoint under {self.config.output_dir}/checkpoints to resume from")
            return found[-1].parent
        path = Path(where)
        if not (path / STATE_FILE).is_file():
            raise FileNotFoundError(f"{path} holds no {STATE_FILE}")
        return path

    def load_state(self, folder: Path) -> None:
        """Restore weights, optimizer, scheduler and counters saved by `save_checkpoint`."""
        state = torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=False)
        if state["num_processes"] != self.accelerator.num_processes:
            raise ValueError(f"checkpoint was written by {state['num_processes']} processes, this run has "
                             f"{self.accelerator.num_processes}: the data order would differ")
        named = dict(self.unwrapped.named_parameters())
        missing = set(state["weights"]) ^ {n for n, p in named.items() if p.requires_grad}
        if missing:
            raise ValueError(f"checkpoint weights do not match this run's trainable parameters: {sorted(missing)[:5]}")
        with torch.no_grad():
            for n, v in state["weights"].items():
                named[n].copy_(v)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.micro_step = state["step"], state["micro_step"]
