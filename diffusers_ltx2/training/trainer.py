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
from .checkpoints import (LEGACY_STATE_FILE, STATE_FILE, CheckpointError, TrainingState, check_finite, checkpoint_name,
                          find_checkpoint, list_checkpoints, load_state, prune_checkpoints, save_state,
                          write_checkpoint)
from .config import TrainingConfig, VideoToVideoConfig
from .data import DataSpec, PrecomputedDataset, collate
from .lora import add_lora, load_lora_into, resolve_target_modules, save_lora
from .models import check_runtime_options, load_transformer, quantize_frozen_base, transformer_config

logger = logging.getLogger(__name__)

__all__ = ["Trainer", "TrainResult", "NonFiniteLossError", "CheckpointError"]


class NonFiniteLossError(ValueError):
    """Training stopped on a NaN / inf loss or gradient norm (`optimization.on_nonfinite_loss: stop`) or on weights
    an update made non-finite; the message names the step and the last checkpoint, which is kept."""


@dataclass
class TrainResult:
    """What `Trainer.train` produced: per-step mean losses (NaN for a skipped step), the final LoRA (or full
    weights) file, checkpoints, and the optimizer steps dropped for a non-finite loss (`on_nonfinite_loss: skip`)."""

    losses: list[float] = field(default_factory=list)
    skipped_steps: list[int] = field(default_factory=list)
    output: Path | None = None
    checkpoints: list[Path] = field(default_factory=list)
    step: int = 0
    seconds: float = 0.0


class Trainer:
    """Train an LTX-2 LoRA / IC-LoRA from a validated `TrainingConfig`.

    Construction checks the runtime options (8-bit AdamW needs bitsandbytes and a GPU, ...) and indexes and checks
    the dataset (every file, against the model's widths when its config is readable without loading it;
    `DatasetError` names the bad files) before any model is built; `setup()` builds the model, adapter, optimizer
    and accelerator.

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
        model_config = transformer.config if transformer is not None else transformer_config(config.model.model_path)
        v2v = isinstance(strategy, VideoToVideoConfig)
        self.dataset = PrecomputedDataset(
            config.data.preprocessed_data_root,
            with_audio=config.trains_audio,
            with_reference=v2v,
            control_types=strategy.control_types if v2v else None,
            reference_downscale_factor=strategy.reference_downscale_factor if v2v else None,
            spec=DataSpec.from_config(model_config) if model_config is not None else None,
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
        self.dataset.check_spec(DataSpec.from_config(transformer.config))  # a single file's config is known only now
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
        every `checkpoints.interval` steps and the final LoRA. `resume_from`: a checkpoint folder or `"latest"`.

        A NaN / inf loss or gradient norm follows `optimization.on_nonfinite_loss`: `stop` raises
        `NonFiniteLossError` before the update (checkpoints kept, no final LoRA written), `skip` drops that
        optimizer step with a warning (listed in `TrainResult.skipped_steps`). Raises `CheckpointError` for a
        checkpoint this run cannot resume, `OSError` when a checkpoint or the LoRA cannot be written (nothing
        half-written is left)."""
        from tqdm.auto import tqdm

        if not self.ready:
            self.setup()
        cfg, acc = self.config, self.accelerator
        if resume_from is not None:
            self.load_state(find_checkpoint(resume_from, self.checkpoint_root))
        out = Path(cfg.output_dir)
        if acc.is_main_process:
            out.mkdir(parents=True, exist_ok=True)
        result = TrainResult()
        target = cfg.optimization.steps if max_steps is None else min(cfg.optimization.steps, self.step + max_steps)
        accum = cfg.optimization.gradient_accumulation_steps
        bar = tqdm(total=target, initial=self.step, desc="training", disable=not (progress and acc.is_main_process))
        start = time.perf_counter()
        window: list[torch.Tensor] = []
        dropped: str | None = None  # why the optimizer step being accumulated is skipped (on_nonfinite_loss: skip)
        try:
            while self.step < target:
                indices = self.local_sample_indices(self.micro_step)
                with acc.accumulate(self.transformer):
                    loss = self.compute_loss(self.batch_for(indices), indices)
                    if not self._finite_everywhere(loss.detach()):
                        dropped = dropped or self._nonfinite(f"a NaN / inf loss at micro step {self.micro_step} "
                                                             f"(clips {self._clip_names(indices)})")
                    acc.backward(loss.mean())
                    if acc.sync_gradients:
                        if dropped is None:
                            norm = self._gradient_norm()
                            if norm is not None and not bool(torch.isfinite(norm)):
                                dropped = self._nonfinite("a NaN / inf gradient norm")
                        if dropped is None:
                            self.optimizer.step()
                            self.scheduler.step()
                            self._check_weights()
                        self.optimizer.zero_grad(set_to_none=True)
                self.micro_step += 1
                window.append(loss.detach().mean())
                if self.micro_step % accum:
                    continue
                self.step += 1
                mean = acc.gather(torch.stack(window).mean().reshape(1)).mean().item()
                window = []
                result.losses.append(mean)
                if dropped is not None:
                    logger.warning("step %d skipped (optimization.on_nonfinite_loss: skip): %s", self.step, dropped)
                    result.skipped_steps.append(self.step)
                    dropped = None
                elif acc.is_main_process:
                    self._log_loss(out, mean)
                bar.update(1)
                bar.set_postfix(loss=f"{mean:.4f}")
                if self.validation is not None and self.step % cfg.validation.interval == 0:
                    self.render_validation(out)
                if cfg.checkpoints.interval and self.step % cfg.checkpoints.interval == 0:
                    result.checkpoints.append(self.save_checkpoint())
        finally:
            bar.close()
        result.seconds = time.perf_counter() - start
        result.step = self.step
        result.output = self.save_weights(out / "lora_weights.safetensors" if self.adapted else out / "model_weights.safetensors")
        if acc.is_main_process:
            from .plot import write_loss_plot

            write_loss_plot(out / "loss.csv", out / "loss.png")
        acc.wait_for_everyone()
        return result

    # -- non-finite values ------------------------------------------------------------------------------------
    def _finite_everywhere(self, values: torch.Tensor) -> bool:
        """Whether `values` are finite on every process (all processes take the same branch)."""
        ok = torch.isfinite(values).all().float().reshape(1)
        if self.accelerator.num_processes > 1:
            ok = self.accelerator.gather(ok).min()
        return bool(ok > 0)

    def _clip_names(self, indices: list[int]) -> list[str]:
        return [self.dataset.names[self._dataset_index(k)] for k in indices]

    def _nonfinite(self, what: str) -> str:
        """`stop`: raise `NonFiniteLossError`; `skip`: return the reason the current optimizer step is dropped."""
        step = self.step + 1
        if self.config.optimization.on_nonfinite_loss == "skip":
            return what
        found = list_checkpoints(self.checkpoint_root)
        last = f"the last checkpoint, {found[-1][1]}," if found else "no checkpoint (none was written yet)"
        raise NonFiniteLossError(
            f"training stopped at step {step}: {what}; the update was not applied and no LoRA was written "
            f"({last} is kept). Lower optimization.learning_rate (and resume with --resume latest), or set "
            "optimization.on_nonfinite_loss: skip to drop such steps")

    def _gradient_norm(self) -> torch.Tensor | None:
        """The total gradient norm of the step (clipping at `max_grad_norm` when set). `None` with fp16's
        GradScaler and no clipping: the scaler skips overflowing steps itself."""
        acc, max_norm = self.accelerator, self.config.optimization.max_grad_norm
        if max_norm > 0:
            norm = acc.clip_grad_norm_(self.params, max_norm)
            return None if acc.scaler is not None else torch.as_tensor(norm)
        if acc.scaler is not None:
            return None
        grads = [p.grad for p in self.params if p.grad is not None]
        return torch.nn.utils.get_total_norm(grads) if grads else None

    def _check_weights(self) -> None:
        """Stop when an update made a trainable weight overflow (whatever `on_nonfinite_loss` says)."""
        finite = torch.stack([torch.isfinite(p).all() for p in self.params]).all()
        if not bool(finite):
            bad = next(n for n, p in self.unwrapped.named_parameters()
                       if p.requires_grad and not torch.isfinite(p).all())
            raise NonFiniteLossError(
                f"training stopped at step {self.step + 1}: the update made {bad} non-finite (the learning rate is "
                "far too high); no LoRA was written and the checkpoints are kept")

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
        """The LoRA in the official format (or, for `full`, the transformer's state dict), written by the main
        process (returns `None` on the others). Raises `ValueError` for non-finite weights (nothing written) and
        `OSError` when the file cannot be written (no temporary file left), on every process."""
        acc = self.accelerator
        acc.wait_for_everyone()
        error = None
        if acc.is_main_process:
            try:
                self._write_weights(Path(path))
            except Exception as err:
                error = err
        self._raise_together(error, f"writing {path}")
        return Path(path) if acc.is_main_process else None

    def _write_weights(self, path: Path) -> Path:
        dtype = torch.bfloat16 if self.config.checkpoints.precision == "bfloat16" else torch.float32
        if self.adapted:
            return save_lora(self.unwrapped, path, self.lora_metadata(), dtype=dtype)
        from .data import write_entry

        weights = {k: v.to(dtype) for k, v in self.unwrapped.state_dict().items()}
        check_finite(weights, f"the weights {path}")
        return write_entry(path, weights, self.lora_metadata())

    def _raise_together(self, error: BaseException | None, what: str) -> None:
        """Re-raise the main process's error on every process (a lone failure would leave the others waiting)."""
        acc = self.accelerator
        if acc.num_processes > 1:
            failed = acc.gather(torch.tensor([0.0 if error is None else 1.0], device=acc.device)).max() > 0
            if bool(failed) and error is None:
                raise OSError(f"the main process failed {what} (its error is reported there)")
        if error is not None:
            raise error

    def _trainable_state(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in self.unwrapped.named_parameters() if p.requires_grad}

    @property
    def checkpoint_root(self) -> Path:
        return Path(self.config.output_dir) / "checkpoints"

    def run_settings(self) -> dict:
        """What a checkpoint must share with the run resuming it: the data order's (`num_processes`, `batch_size`,
        `gradient_accumulation_steps`, `seed`) and the trained weights' layout (`training_mode`, LoRA settings)."""
        cfg = self.config
        o = cfg.optimization
        run = {"num_processes": self.accelerator.num_processes, "batch_size": o.batch_size,
               "gradient_accumulation_steps": o.gradient_accumulation_steps, "seed": cfg.seed,
               "training_mode": cfg.model.training_mode}
        if self.adapted:
            alpha = cfg.lora.alpha if cfg.lora.alpha is not None else cfg.lora.rank
            run["lora"] = {"rank": cfg.lora.rank, "alpha": alpha,
                           "target_modules": resolve_target_modules(cfg.lora_target_modules())}
        return run

    def save_checkpoint(self) -> Path:
        """`checkpoints/step_NNNNN/`: the LoRA file and `training_state.safetensors` (trainable weights, optimizer,
        scheduler, step counters, run settings), written atomically by the main process; then all but the
        `keep_last_n` newest checkpoints (by step number) are removed. Raises `ValueError` for non-finite state
        and `OSError` (e.g. ENOSPC) with nothing half-written left and no checkpoint removed."""
        acc = self.accelerator
        folder = self.checkpoint_root / checkpoint_name(self.step)
        acc.wait_for_everyone()
        error = None
        if acc.is_main_process:
            try:
                state = TrainingState(self._trainable_state(), self.optimizer.state_dict(), self.scheduler.state_dict(),
                                      {"step": self.step, "micro_step": self.micro_step}, self.run_settings())
                weights = "lora_weights.safetensors" if self.adapted else "model_weights.safetensors"

                def write(tmp: Path) -> None:
                    self._write_weights(tmp / weights)
                    save_state(tmp / STATE_FILE, state)

                write_checkpoint(folder, write)
                prune_checkpoints(self.checkpoint_root, self.config.checkpoints.keep_last_n, protect=folder)
            except Exception as err:
                error = err
        self._raise_together(error, f"writing the checkpoint {folder}")
        return folder

    def load_state(self, folder: Path) -> None:
        """Restore weights, optimizer, scheduler and counters saved by `save_checkpoint` (no code in the file is
        run). Raises `CheckpointError` naming the file when it is unreadable, truncated, unsafe, or was written by
        a run with other settings (processes, batch size, accumulation, seed, LoRA rank / alpha / targets)."""
        folder = Path(folder)
        state = load_state(folder)
        path = folder / STATE_FILE if (folder / STATE_FILE).is_file() else folder / LEGACY_STATE_FILE
        mine, problems = self.run_settings(), []
        for key, theirs in state.run.items():
            if key in mine and theirs != mine[key]:
                problems.append(f"{key} {theirs} in the checkpoint, {mine[key]} in this run")
        named = {n: p for n, p in self.unwrapped.named_parameters() if p.requires_grad}
        names = set(state.weights)
        if names != set(named):
            extra, lacking = sorted(names - set(named)), sorted(set(named) - names)
            problems.append(f"trainable weights differ ({len(extra)} only in the checkpoint, e.g. {extra[:2]}; "
                            f"{len(lacking)} only in this run, e.g. {lacking[:2]})")
        else:
            shapes = [f"{n} {tuple(state.weights[n].shape)} in the checkpoint, {tuple(named[n].shape)} in this run"
                      for n in sorted(named) if tuple(state.weights[n].shape) != tuple(named[n].shape)]
            if shapes:
                problems.append(f"{len(shapes)} weight shapes differ (e.g. {shapes[0]})")
        if problems:
            raise CheckpointError(f"{path} cannot be resumed by this run: " + "; ".join(problems))
        try:
            with torch.no_grad():
                for n, v in state.weights.items():
                    named[n].copy_(v)
            self.optimizer.load_state_dict(state.optimizer)
            self.scheduler.load_state_dict(state.scheduler)
            self.step, self.micro_step = int(state.counters["step"]), int(state.counters["micro_step"])
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            raise CheckpointError(f"{path}: the optimizer / scheduler state does not fit this run ({err})") from None
        # accelerate counts micro steps itself to decide when gradients sync: continue its phase
        self.accelerator.step = self.micro_step % self.config.optimization.gradient_accumulation_steps
