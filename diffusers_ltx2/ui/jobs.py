"""The job queue of `ltx2 ui`: jobs run one at a time on a worker thread, through the `ltx2` commands' own
argument layer and pipeline calls (`cli.resolve(command, values, call=True)`, `Command.load`, `Command.generate`),
with progress per denoising step and stage, cancel at the next step, and each output written with its settings
JSON beside it (`ltx2 <command> --from-settings FILE` runs it again).

A job is submitted with the argument values of one `ltx2` command (`{"prompt": ..., "num_frames": ...}`); the
checks that need no import run at once (`JobQueue.submit` raises their `ValueError` / `OSError`), the rest when
the job starts (its error is then the job's, shown in the page). The last loaded pipeline is kept for the next job
when it needs the same model, dtype, device, memory settings and LoRAs (`PipelineCache`).

Cancel: a queued job is dropped; a running one stops at the end of the denoising step it is in (the step callback
raises `JobCancelled`, so nothing is decoded or written), its tensors are released and the next job starts.
"""

from __future__ import annotations

import contextlib
import gc
import io
import itertools
import os
import queue
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field

from .. import cli
from ..cli.media_args import write_output
from ..cli.settings import settings_values, write_settings
from ..cli.timing import StageTimer

#: job states
QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"


class JobCancelled(Exception):
    """Raised from the step callback of a job whose cancel was asked (stops the pipeline call)."""


@dataclass
class Job:
    """One queued generation.

    Attributes:
        id: 1, 2, ... in submission order.
        mode: the page's mode ("text/image to video", "retake", ...); `command`: the `ltx2` command it runs.
        values: the command's argument values (`--output` included).
        state: queued / running / done / failed / cancelled; `stage`: what it does now, in words.
        step, steps: denoising steps done / in the current stage; `stage_index`, `stages`: 1-based stage, count.
        events: every progress update `(stage_index, step, steps)`, one per denoising step.
        log: the command's printed lines (plans, notices) and the stages' timings.
        output, settings: the written files (done); `error`: one line (failed).
        saved: the checked values the settings file will hold (`cli.settings.settings_values`).
        cancel_step: steps done in the stage when cancel was asked; `stopped_step`: when the job stopped.
    """

    id: int
    mode: str
    command: str
    values: dict
    label: str = ""
    state: str = QUEUED
    stage: str = "queued"
    step: int = 0
    steps: int = 0
    stage_index: int = 0
    stages: int = 1
    events: list = field(default_factory=list)
    log: list = field(default_factory=list)
    output: str | None = None
    settings: str | None = None
    error: str | None = None
    cancel_requested: bool = False
    cancel_step: int | None = None
    stopped_step: int | None = None
    saved: dict = field(default_factory=dict)
    encode: list = field(default_factory=list)
    submitted: float = field(default_factory=time.time)
    finished: float | None = None

    @property
    def finished_ok(self) -> bool:
        return self.state == DONE

    def progress_text(self) -> str:
        """`"stage 1/2: denoising step 3/8"`, or the stage in words."""
        if self.state == RUNNING and self.steps and self.stage.startswith("denoising"):
            where = f"stage {self.stage_index}/{self.stages}: " if self.stages > 1 else ""
            return f"{where}denoising step {self.step}/{self.steps}"
        return self.stage


class _JobStream(io.TextIOBase):
    """stdout while a job runs: each line goes to the job's log and on to the server's console."""

    def __init__(self, job: Job, console):
        self.job, self.console, self.pending = job, console, ""

    def write(self, text: str) -> int:
        if self.console is not None:
            self.console.write(text)
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        self.job.log.extend(line for line in lines if line.strip())
        return len(text)

    def flush(self):
        if self.console is not None:
            self.console.flush()


def _release_memory() -> None:
    gc.collect()
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class PipelineCache:
    """The last loaded pipeline, reused while the next job loads the same thing (see `load_key`)."""

    def __init__(self):
        self.key, self.pipe = None, None

    @staticmethod
    def load_key(command, args) -> tuple:
        """What `command.load(args)` depends on: which loader, the model, dtype, device, memory settings, LoRAs,
        whether the text encoder loads, and the two-stage / IC-LoRA extras."""
        loras = tuple((spec.path, spec.strength) for spec in getattr(args, "lora", []) or [])
        distilled = getattr(args, "distilled_lora", None)
        return (command.load.__module__, command.load.__qualname__, os.path.abspath(args.model), args.dtype,
                args.device, repr(getattr(args, "memory", None)), loras, getattr(args, "text_encoder_needed", True),
                getattr(args, "two_stage", False), getattr(args, "upsampler", None),
                None if distilled is None else (distilled.path, distilled.strength),
                getattr(args, "reference_downscale_factor", None))

    def get(self, command, args, timer):
        key = self.load_key(command, args)
        if key != self.key:
            self.clear()
            self.pipe = command.load(args, timer)
            self.pipe.set_progress_bar_config(disable=True)  # progress goes to the page
            self.key = key
        else:
            print(f"reusing the loaded {args.model}")
        return self.pipe

    def clear(self) -> None:
        self.key, self.pipe = None, None
        _release_memory()


class JobQueue:
    """Jobs run in submission order on one worker thread; outputs go to `output_dir`.

    Args:
        output_dir: existing folder for the outputs and their settings files.
        console: where the jobs' printed lines also go (the server's log; default `sys.__stdout__`).
    """

    def __init__(self, output_dir: str, *, console=None):
        if not os.path.isdir(output_dir):
            raise FileNotFoundError(f"output folder does not exist: {output_dir}")
        self.output_dir = os.path.abspath(output_dir)
        self.console = console if console is not None else sys.__stdout__
        self.pipelines = PipelineCache()
        self._jobs: list[Job] = []
        self._ids = itertools.count(1)
        self._queue: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._worker = threading.Thread(target=self._work, name="ltx2-ui-jobs", daemon=True)
        self._worker.start()

    # -- submitting ---------------------------------------------------------------------------------------------
    def output_path(self, job_id: int, mode: str, suffix: str) -> str:
        """`<output_dir>/<YYYYmmdd-HHMMSS>-<id>-<mode>.<suffix>` (a new name per job)."""
        slug = "".join(c if c.isalnum() else "-" for c in mode.lower()).strip("-")
        stamp = time.strftime("%Y%m%d-%H%M%S")
        return os.path.join(self.output_dir, f"{stamp}-{job_id:03d}-{slug}.{suffix}")

    def submit(self, mode: str, command: str, values: dict, *, label: str = "", encode=()) -> Job:
        """Check `values` as `ltx2 <command>` does (no import), give the job its output path and queue it.
        `values["output"]`, when given, only names the suffix (`.wav` / `.flac` for audio-only). `encode`:
        `ltx2 encode` values (with `dest`: "conditioning" / "negative_conditioning") run first, whose files then
        replace `--prompt` / `--negative-prompt` (LTX API prompts). Raises the checks' `ValueError` / `OSError`."""
        values = dict(values)
        suffix = os.path.splitext(values.get("output") or "out.mp4")[1].lstrip(".") or "mp4"
        with self._lock:
            job_id = next(self._ids)
        values["output"] = self.output_path(job_id, mode, suffix)
        args = cli.resolve(command, values).args  # the command line's checks; raise before anything is queued
        encodes = []
        for entry in encode:
            entry = dict(entry)
            dest = entry.pop("dest")
            entry["output"] = f"{os.path.splitext(values['output'])[0]}-{dest.replace('_', '-')}.safetensors"
            cli.resolve("encode", entry)
            encodes.append((dest, entry))
        job = Job(job_id, mode, command, values, label=label, encode=encodes,
                  saved=settings_values(cli.commands()[command].options, args))
        with self._changed:
            self._jobs.append(job)
            self._changed.notify_all()
        self._queue.put(job)
        return job

    def cancel(self, job_id: int) -> bool:
        """Ask a queued or running job to stop; False when it has already finished or does not exist."""
        with self._changed:
            job = self.get(job_id)
            if job is None or job.state not in (QUEUED, RUNNING):
                return False
            job.cancel_requested = True
            job.cancel_step = job.step
            if job.state == QUEUED:
                self._finish(job, CANCELLED, stage="cancelled before it started")
            return True

    def get(self, job_id: int) -> Job | None:
        return next((j for j in self._jobs if j.id == job_id), None)

    def jobs(self) -> list[Job]:
        """Every job, oldest first."""
        with self._lock:
            return list(self._jobs)

    def wait(self, job_id: int, timeout: float | None = None) -> Job:
        """Block until the job has finished (any final state); raises `TimeoutError` after `timeout` s."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            while True:
                job = self.get(job_id)
                if job is None:
                    raise KeyError(job_id)
                if job.state not in (QUEUED, RUNNING):
                    return job
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(f"job {job_id} still {job.state} ({job.progress_text()})")
                self._changed.wait(left)

    # -- running ------------------------------------------------------------------------------------------------
    def _finish(self, job: Job, state: str, *, stage: str | None = None, error: str | None = None) -> None:
        job.state, job.stage = state, stage or state
        job.error, job.finished = error, time.time()
        if state == CANCELLED:
            job.stopped_step = job.step
        self._changed.notify_all()

    def _update(self, job: Job, **fields) -> None:
        with self._changed:
            for name, value in fields.items():
                setattr(job, name, value)
            self._changed.notify_all()

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            with self._changed:
                if job.state != QUEUED:  # cancelled while queued
                    continue
                job.state, job.stage = RUNNING, "checking"
                self._changed.notify_all()
            outcome = None
            try:
                self._run(job)
            except JobCancelled:
                outcome = dict(state=CANCELLED, stage=f"cancelled after {job.step} of {job.steps} steps")
            except Exception as err:  # shown in the page as one line; unexpected ones logged in full
                user = isinstance(err, cli._user_errors())
                if not user:
                    traceback.print_exc(file=self.console)
                message = cli.describe_error(err) if user else f"internal error ({type(err).__name__}): {err}"
                outcome = dict(state=FAILED, error=message)
            # the failed / cancelled call's tensors, released once its exception (whose traceback holds the call's
            # frames) is gone, and before the job is reported stopped: a waiter then finds nothing held
            _release_memory()
            if outcome is not None:
                with self._changed:
                    self._finish(job, **outcome)

    def _step_callback(self, job: Job):
        def on_step_end(pipe, step, sigma, tensors):
            with self._changed:
                if step == 0 and job.events:  # the step index restarts: the next stage (two-stage recipes)
                    job.stage_index += 1
                job.stage_index = max(job.stage_index, 1)
                job.step, job.steps = step + 1, pipe.num_timesteps or step + 1
                job.stage = "denoising"
                job.events.append((job.stage_index, job.step, job.steps))
                if job.step == job.steps and job.stage_index == job.stages:
                    job.stage = "decoding"
                self._changed.notify_all()
                if job.cancel_requested:
                    raise JobCancelled()
            return {}

        return on_step_end

    def _run(self, job: Job) -> None:
        stream = _JobStream(job, self.console)
        timer = StageTimer(stream=stream)
        with contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
            print(f"job {job.id} ({job.mode}): ltx2 {job.command}")
            if job.encode:
                self._encode_prompts(job, timer)
            resolved = cli.resolve(job.command, job.values, call=True)
            command, args, call = cli.commands()[job.command], resolved.args, resolved.call
            self._update(job, stages=2 if getattr(args, "two_stage", False) else 1, stage="loading model")
            pipe = self.pipelines.get(command, args, timer)
            if job.cancel_requested:
                raise JobCancelled()
            self._update(job, stage="denoising")
            with timer.stage("generate"):
                out = command.generate(pipe, args, dict(call, callback_on_step_end=self._step_callback(job)))
            del call
            self._update(job, stage="writing")
            with timer.stage("write"):
                write_output(out, args)
                del out
                settings = os.path.splitext(args.output)[0] + ".json"
                try:
                    write_settings(settings, job.command, job.saved)
                except BaseException:
                    os.remove(args.output)
                    raise
            print(f"wrote {args.output} ({timer.summary()})")
        with self._changed:
            job.output, job.settings = args.output, settings
            self._finish(job, DONE, stage="done")

    def _encode_prompts(self, job: Job, timer) -> None:
        """Run `ltx2 encode` for each prompt the job encodes remotely; its files replace the prompts."""
        self._update(job, stage="encoding the prompt (LTX API)")
        encode = cli.commands()["encode"]
        for dest, values in job.encode:
            if encode.run(cli.resolve("encode", values).args, timer) != 0:
                raise ValueError(f"prompt encoding failed: {job.log[-1] if job.log else 'see the server log'}")
            job.values[dest] = values["output"]
            job.values["prompt" if dest == "conditioning" else "negative_prompt"] = None
        job.saved = settings_values(cli.commands()[job.command].options, cli.resolve(job.command, job.values).args)

    def close(self, timeout: float | None = None) -> None:
        """Cancel what is queued or running and stop the worker."""
        for job in self.jobs():
            self.cancel(job.id)
        self._queue.put(None)
        self._worker.join(timeout)
        self.pipelines.clear()
