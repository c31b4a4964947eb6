"""The one training loop every model family uses (`pipeline train EXP`); it knows no family.

Read top to bottom, as one optimizer step does: resume -> (eval) -> micro-batches under autocast,
gradients synchronised on the last -> finite check -> clip -> optimizer, scheduler, EMA -> log ->
checkpoint. A family (`train/diffusion.py`, ...) supplies the model, this rank's batches from a given
step, the loss of one batch, the held-out loss and the export (see `Family`).

Resume is exact: the checkpoint holds model, optimizer, scheduler, EMA, step and every RNG state,
and the family's batches are a function of (seed, step), so the data position is the step. SIGUSR1
/ SIGTERM set a flag; every rank sees it at the next step boundary, rank 0 saves, and the loop
returns `stopped_by` for the caller to exit with `EXIT_REQUEUE`."""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from pipeline.config.training import EmaConfig, OptimizerConfig, SchedulerConfig, TrainConfig
from pipeline.errors import UserFacingError
from pipeline.layout import RunFiles
from pipeline.train import distributed
from pipeline.train.checkpoints import StopSignals, latest_checkpoint, restore_rng_states, rng_states, save_checkpoint
from pipeline.train.distributed import DistEnv
from pipeline.train.time_limit import job_deadline

EXIT_REQUEUE = 75  # EX_TEMPFAIL: saved on a stop signal; run the same command again to continue


class TrainingDiverged(UserFacingError):
    """A non-finite loss: the run stops, its last good checkpoint is kept."""


class Family(Protocol):
    """What a model family gives the loop."""

    name: str

    def build(self) -> nn.Module:
        """The trainable model, freshly initialised (the loop seeds torch first: same on every rank)."""

    def step_module(self, model: nn.Module) -> nn.Module:
        """A module whose forward(batch) returns (loss, {name: float}); DDP wraps it."""

    def batches(self, start_step: int, device: torch.device) -> Iterator[Any]:
        """This rank's micro-batches from optimizer step `start_step` on, in order, on `device`."""

    def evaluate(self, model: nn.Module, device: torch.device) -> float | None:
        """The held-out loss (deterministic), or None without held-out data."""

    def export(self, model: nn.Module, step: int) -> Path:
        """Write the final weights (the EMA's when there is one); returns the path."""

    def describe(self) -> dict[str, Any]:
        """What run.json records about the run."""


@dataclass(frozen=True)
class LoopSettings:
    """How the loop runs, whichever section of the experiment it came from (`train`, or
    `autoencoder.training`); `section` is that section's YAML path, for messages."""

    steps: int
    optimizer: OptimizerConfig
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    ema: EmaConfig | None = None
    grad_accum: int = 1
    grad_clip: float | None = 1.0
    precision: str = "auto"
    log_every: int = 50
    eval_every: int = 1000
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2
    tensorboard: bool = True
    time_limit_margin_s: int = 0  # inside a SLURM job: save and stop this long before its end time (0: never)
    section: str = "train"
    divergence_hint: str = "Lower train.optimizer.lr, add warmup (train.scheduler.warmup_steps) or set train.grad_clip."

    @classmethod
    def of(cls, config: TrainConfig) -> LoopSettings:
        names = ("steps", "optimizer", "scheduler", "ema", "grad_accum", "grad_clip", "precision", "log_every")
        names += ("eval_every", "checkpoint_every", "keep_checkpoints", "tensorboard")
        return cls(**{name: getattr(config, name) for name in names})


@dataclass
class LoopResult:
    step: int
    steps: int
    eval_loss: float | None = None
    first_eval_loss: float | None = None
    exported: Path | None = None
    stopped_by: str | None = None  # the signal that stopped the run early
    resumed_from: int | None = None
    losses: list[float] = field(default_factory=list)

    def line(self, name: str) -> str:
        losses = ""
        if self.eval_loss is not None and self.first_eval_loss is not None:
            losses = f", held-out loss {self.first_eval_loss:.4f} -> {self.eval_loss:.4f}"
        if self.exported:
            where = f"; exported {self.exported}"
        elif self.stopped_by:
            where = f"; stopped by {self.stopped_by}, checkpoint saved: run the same command to continue"
        elif self.step >= self.steps:
            where = "; done (rank 0 exports)"  # what every other rank of a finished run prints
        else:
            where = "; rerun to continue"
        return f"{name}: step {self.step}/{self.steps}{losses}{where}"


@dataclass
class State:
    """The objects a checkpoint saves and restores together."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    ema: AveragedModel | None
    step: int = 0
    first_eval_loss: float | None = None

    def to_dict(self, run_hash: str, extra: dict[str, Any]) -> dict[str, Any]:
        return {
            "step": self.step,
            "run_hash": run_hash,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "rng": rng_states(),
            "first_eval_loss": self.first_eval_loss,
            **extra,
        }

    def load(self, saved: dict[str, Any]) -> None:
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        if self.ema is not None and saved["ema"] is not None:
            self.ema.load_state_dict(saved["ema"])
        self.step = int(saved["step"])
        self.first_eval_loss = saved.get("first_eval_loss")
        restore_rng_states(saved["rng"])


def train(
    family: Family,
    config: LoopSettings,
    seed: int,
    run: RunFiles,
    run_hash: str,
    env: DistEnv,
    device: torch.device,
    progress: bool = True,
    max_steps: int | None = None,
) -> LoopResult:
    """Train (or resume) `family` to `config.steps`, or to step `max_steps` of this call."""
    torch.manual_seed(seed)  # the same initial weights on every rank
    model = family.build().to(device)
    state = State(model, *make_optimizer_and_scheduler(model, config), make_ema(model, config))
    resumed = _resume(state, run, run_hash, config, env, family)
    step_module = family.step_module(model)
    if env.distributed:
        step_module = DistributedDataParallel(step_module, device_ids=[device.index] if device.type == "cuda" else None)
    log = MetricsLog(run, env.is_main, state.step, config.tensorboard)
    stop = config.steps if max_steps is None else min(config.steps, max_steps)
    result = LoopResult(state.step, config.steps, resumed_from=resumed)
    result.first_eval_loss = state.first_eval_loss
    if state.step == 0:
        state.first_eval_loss = result.first_eval_loss = _evaluate(family, state, device, log, env, run, config)
    batches = family.batches(state.step, device)
    bar = tqdm(
        total=stop, initial=state.step, desc=f"train {family.name}", unit="step", disable=not (progress and env.is_main)
    )
    started, timer_step = time.monotonic(), state.step
    deadline = _deadline(config, env)
    with StopSignals() as signals:
        while state.step < stop:
            reason = signals.requested or (TIME_LIMIT if deadline is not None and time.time() >= deadline else None)
            loss, parts, stopping = _optimizer_step(
                state, step_module, batches, config, device, env, reason is not None
            )
            if not math.isfinite(loss):
                _diverged(log, run, state.step + 1, f"the loss is {loss}", config)
            state.step += 1
            result.losses.append(loss)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}")
            if state.step % config.log_every == 0 or state.step == stop:
                rate = (state.step - timer_step) / max(time.monotonic() - started, 1e-9)
                lr = state.optimizer.param_groups[0]["lr"]
                log.write({"step": state.step, "loss": loss, **parts, "lr": lr, "steps_per_s": round(rate, 4)})
            if state.step % config.eval_every == 0 or state.step == config.steps:
                result.eval_loss = _evaluate(family, state, device, log, env, run, config)
            if stopping or state.step % config.checkpoint_every == 0 or state.step == stop:
                _save(state, run, run_hash, config, env, log)
            if stopping:
                result.stopped_by = reason or "a stop signal on another rank"
                break
    bar.close()
    log.close()
    result.step = state.step
    if state.step >= config.steps and env.is_main:
        result.exported = family.export(state.ema.module if state.ema is not None else model, state.step)
    distributed.barrier()
    return result


TIME_LIMIT = "the job's time limit"


def _deadline(config: LoopSettings, env: DistEnv) -> float | None:
    """When the main rank stops the run before its SLURM job's time limit (the stop flag it all-reduces
    with the loss reaches the other ranks at the same step)."""
    if not (env.is_main and config.time_limit_margin_s):
        return None
    deadline = job_deadline(config.time_limit_margin_s)
    if deadline is not None:
        print(
            f"train: stopping {config.time_limit_margin_s} s before the job's time limit, at "
            f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(deadline))}, to resume in the next job"
        )
    return deadline


def launch(
    make_family: Callable[[DistEnv, torch.device], Family],
    config: LoopSettings,
    seed: int,
    run: RunFiles,
    run_hash: str,
    device_wanted: str,
    progress: bool = True,
    max_steps: int | None = None,
    batch_split: Callable[[int], int] | None = None,
    cpu_threads: int | None = None,
) -> LoopResult:
    """`train` in the distributed environment this process was started in (torchrun, srun or neither):
    detect it, pick this rank's device, join the process group, build the family, train, leave.

    On CPU, torch computes with `cpu_threads` threads (the job's CPUs less its DataLoader workers):
    more threads than free cores make OpenMP spin against the workers, and small matmuls get an order
    of magnitude slower on a shared machine."""
    env = distributed.detect()
    device = distributed.device_for(env, device_wanted)
    if device.type == "cpu" and cpu_threads is not None:
        torch.set_num_threads(max(1, cpu_threads // env.world_size))
    if batch_split is not None and env.is_main:
        micro = batch_split(env.world_size)
        print(
            f"train: {env.world_size} process(es) ({env.launcher}) on {device.type}: global batch "
            f"{micro * env.world_size * config.grad_accum} = {micro} per micro-batch "
            f"x {config.grad_accum} accumulation step(s) x {env.world_size}"
        )
    distributed.initialise(env, device)
    try:
        return train(make_family(env, device), config, seed, run, run_hash, env, device, progress, max_steps)
    finally:
        distributed.shutdown()


def _optimizer_step(
    state: State,
    step_module: nn.Module,
    batches: Iterator[Any],
    config: LoopSettings,
    device: torch.device,
    env: DistEnv,
    stop_requested: bool = False,
) -> tuple[float, dict[str, float], bool]:
    """One optimizer step over `grad_accum` micro-batches; returns the loss averaged over them and the
    ranks, the parts, and whether any rank was asked to stop (both from one reduction)."""
    state.optimizer.zero_grad(set_to_none=True)
    total, parts = 0.0, {}
    for micro in range(config.grad_accum):
        last = micro == config.grad_accum - 1
        sync = contextlib.nullcontext() if last or not env.distributed else step_module.no_sync()
        with sync:
            with autocast(config.precision, device):
                loss, info = step_module(next(batches))
            (loss / config.grad_accum).backward()
        total += float(loss.detach()) / config.grad_accum
        for name, value in info.items():
            parts[name] = parts.get(name, 0.0) + value / config.grad_accum
    total, stopping = distributed.reduce_step(total, stop_requested, device)
    if not math.isfinite(total):
        return total, parts, stopping
    if config.grad_clip is not None:
        parts["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(state.model.parameters(), config.grad_clip))
        if not math.isfinite(parts["grad_norm"]):
            return parts["grad_norm"], parts, stopping  # an overflowing gradient diverges like a non-finite loss
    state.optimizer.step()
    state.scheduler.step()
    if state.ema is not None and state.step + 1 > config.ema.start_step:  # type: ignore[union-attr]
        state.ema.update_parameters(state.model)
    return total, parts, stopping


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on GPU (`auto` or `bf16`); fp32 on CPU, where bf16 matmuls are slow and inexact."""
    if device.type == "cuda" and precision in ("auto", "bf16"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def make_optimizer_and_scheduler(
    model: nn.Module, config: LoopSettings
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """The optimizer and its schedule (linear warmup, then the named scheduler), by name from torch.optim."""
    optimizer_class = getattr(torch.optim, config.optimizer.name)
    optimizer = _construct(
        optimizer_class,
        f"{config.section}.optimizer.options",
        [p for p in model.parameters() if p.requires_grad],
        lr=config.optimizer.lr,
        **config.optimizer.options,
    )
    return optimizer, make_scheduler(optimizer, config.scheduler, config.steps, config.section)


def make_scheduler(
    optimizer: torch.optim.Optimizer, config: SchedulerConfig, steps: int, section: str = "train"
) -> torch.optim.lr_scheduler.LRScheduler:
    schedulers = torch.optim.lr_scheduler
    options = dict(config.options)
    if config.name == "constant":
        main = schedulers.ConstantLR(optimizer, factor=1.0, total_iters=0)
    else:
        if config.name == "CosineAnnealingLR":
            options.setdefault("T_max", max(1, steps - config.warmup_steps))
        if config.name == "PolynomialLR":
            options.setdefault("total_iters", max(1, steps - config.warmup_steps))
        main = _construct(getattr(schedulers, config.name), f"{section}.scheduler.options", optimizer, **options)
    if config.warmup_steps == 0:
        return main
    warmup = schedulers.LinearLR(optimizer, start_factor=1e-3, end_factor=1.0, total_iters=config.warmup_steps)
    return schedulers.SequentialLR(optimizer, [warmup, main], milestones=[config.warmup_steps])


def _construct(cls: type, where: str, *args: Any, **options: Any) -> Any:
    """`cls(*args, **options)`, with a mistyped or missing option reported as the config field it came from."""
    try:
        return cls(*args, **options)
    except (TypeError, ValueError) as error:
        raise UserFacingError(f"{where}: {cls.__name__} refuses these options: {error}") from None


def make_ema(model: nn.Module, config: LoopSettings) -> AveragedModel | None:
    if config.ema is None:
        return None
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.ema.decay), use_buffers=True)


def _resume(
    state: State, run: RunFiles, run_hash: str, config: LoopSettings, env: DistEnv, family: Family
) -> int | None:
    """Restore the newest checkpoint of this run (every rank reads the same file); None when starting."""
    found = latest_checkpoint(run)
    if found is None:
        if env.is_main:
            _start_run(run, run_hash, family)
        distributed.barrier()
        return None
    saved, path = found
    steps = f"{config.section}.steps"
    if int(saved["step"]) > config.steps:
        raise UserFacingError(
            f"{path} is at step {saved['step']}, beyond {steps} ({config.steps}): raise {steps} to continue "
            f"that run, or move {run.directory} away to train this configuration from scratch"
        )
    state.load(saved)
    if env.is_main:
        print(f"train {family.name}: resuming run {run_hash} from step {state.step} ({path})")
        planned = saved.get("steps")
        if planned is not None and planned != config.steps and config.scheduler.name != "constant":
            print(
                f"train {family.name}: note: {config.section}.steps changed from {planned} to {config.steps}; the "
                f"{config.scheduler.name} schedule continues with the length it was built with ({planned} steps)"
            )
    return state.step


def _start_run(run: RunFiles, run_hash: str, family: Family) -> None:
    """A fresh run directory recording its configuration; other runs are left as they are."""
    from pipeline.utils.atomic import write_json_atomic

    others = sorted(path.name for path in run.directory.parent.glob("*/") if path.name != run_hash)
    kept = f"; other runs kept in {run.directory.parent}: {', '.join(others)}" if others else ""
    print(f"train {family.name}: starting run {run_hash} in {run.directory}{kept}")
    write_json_atomic(run.description, {"run_hash": run_hash, **family.describe()})


def _evaluate(
    family: Family,
    state: State,
    device: torch.device,
    log: MetricsLog,
    env: DistEnv,
    run: RunFiles,
    config: LoopSettings,
) -> float | None:
    """The held-out loss of the weights that get exported (the EMA's when there is one), on rank 0."""
    loss = None
    if env.is_main:
        model = state.ema.module if state.ema is not None else state.model
        was_training = model.training
        model.eval()
        with torch.no_grad():
            loss = family.evaluate(model, device)
        model.train(was_training)
        if loss is not None:
            log.write({"step": state.step, "eval_loss": loss})
    distributed.barrier()
    if loss is not None and not math.isfinite(loss):
        _diverged(log, run, state.step, f"the held-out loss is {loss}", config)
    return loss


def _save(state: State, run: RunFiles, run_hash: str, config: LoopSettings, env: DistEnv, log: MetricsLog) -> None:
    """Rank 0 writes the checkpoint; weights that are no longer finite stop the run instead."""
    bad = [
        name
        for name, tensor in state.model.state_dict().items()
        if tensor.is_floating_point() and not tensor.isfinite().all()
    ]
    if bad:
        _diverged(log, run, state.step, f"the weights are not finite ({', '.join(bad[:3])})", config)
    if env.is_main:
        path = save_checkpoint(
            run, state.step, state.to_dict(run_hash, {"steps": config.steps}), config.keep_checkpoints
        )
        log.write({"step": state.step, "checkpoint": str(path)})
    distributed.barrier()


def _diverged(log: MetricsLog, run: RunFiles, step: int, what: str, config: LoopSettings) -> None:
    kept = run.step_checkpoints()
    where = f"the last good checkpoint (step {kept[-1][0]}) is kept at {kept[-1][1]}" if kept else "no checkpoint yet"
    log.write({"step": step, "error": f"diverged: {what}"})
    log.close()
    raise TrainingDiverged(
        f"{what} at step {step}: training diverged and stops; {where}, no weights are exported. "
        + config.divergence_hint
    )


class MetricsLog:
    """metrics.jsonl of the run (rank 0 only), cut back to the resumed step so that a killed run's lines
    after its last checkpoint do not appear twice; TensorBoard too when it is installed."""

    def __init__(self, run: RunFiles, enabled: bool, step: int, tensorboard: bool):
        self.path, self.enabled, self.board = run.metrics, enabled, None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.is_file():
            lines = self.path.read_text(encoding="utf-8").splitlines()
            kept = [line for line in lines if step > 0 and json.loads(line)["step"] <= step]
            self.path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        if tensorboard:
            with contextlib.suppress(ImportError):
                from torch.utils.tensorboard import SummaryWriter

                self.board = SummaryWriter(str(run.directory / "tensorboard"), purge_step=step or None)

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.board is not None:
            for name, value in record.items():
                if name != "step" and isinstance(value, (int, float)):
                    self.board.add_scalar(name, value, record["step"])

    def close(self) -> None:
        if self.board is not None:
            self.board.close()
            self.board = None
