"""`pipeline train-autoencoder EXP`: train the autoencoder on random crops of the shards.

Outputs in `<work_dir>/autoencoder/`: `model.safetensors` + `model.json` (written once, when the last
step is done: what Snakemake declares; they record the stage hash that made them, and pre-encode
refuses weights whose hash is not the experiment's) and one directory per run,
`runs/<run hash>/` with `checkpoint.pt` (the resumable state), `metrics.jsonl` (one JSON line per
log/eval event) and `run.json` (the configuration of the run). The run hash is the stage hash without
`training.steps`: raising `steps` continues a finished or running run, any other change starts a new
run in its own directory and never touches another run's state. Checkpoints live outside
Snakemake's declared outputs, which it deletes before rerunning a job.

A non-finite loss (or non-finite weights at a checkpoint) stops training with an error; the last good
checkpoint is kept and no weights are exported.

The first `holdout_items` items of the last shards are never trained on; the held-out loss (the
reconstruction loss on their first crop) is logged at step 0, every `eval_every` steps and at the end."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from pipeline.config.experiment import Experiment
from pipeline.config.hashing import stage_hash
from pipeline.config.sections import AutoencoderTrainingConfig
from pipeline.errors import UserFacingError
from pipeline.layout import RunFiles, layout_of
from pipeline.models.autoencoder.checkpoints import NonFiniteWeights, check_finite_weights, save_autoencoder
from pipeline.models.autoencoder.model import Autoencoder
from pipeline.shards.plan import load_manifest, load_plan
from pipeline.shards.reader import RandomCrops, fixed_crop, read_items, shard_tars
from pipeline.train.losses import ReconstructionLoss
from pipeline.utils.atomic import atomic_path, remove_stale_temps, write_json_atomic
from pipeline.utils.devices import pick_device

RUN_IGNORES = ("autoencoder.training.steps",)  # raising the step count continues the same run


class TrainingDiverged(UserFacingError):
    """A non-finite loss or weights: training stops, the last good checkpoint is kept."""


@dataclass
class TrainResult:
    step: int
    steps: int
    eval_loss: float | None
    first_eval_loss: float | None
    weights: Path | None  # set once the last step is done

    def line(self) -> str:
        losses = ""
        if self.eval_loss is not None and self.first_eval_loss is not None:
            losses = f", held-out loss {self.first_eval_loss:.4f} -> {self.eval_loss:.4f}"
        where = f"; weights {self.weights}" if self.weights else "; rerun to continue"
        return f"train-autoencoder: step {self.step}/{self.steps}{losses}{where}"


def run_hash(experiment: Experiment) -> str:
    """The identity of a training run: the stage hash without the step count."""
    return stage_hash(experiment, "train_autoencoder", ignoring=RUN_IGNORES)


def run_files(experiment: Experiment) -> RunFiles:
    """This experiment's run: checkpoint, metrics and description files."""
    return layout_of(experiment).autoencoder_run(run_hash(experiment))


def train_autoencoder(experiment: Experiment, progress: bool = True, max_steps: int | None = None) -> TrainResult:
    """Train (or resume) until `training.steps`, or until step `max_steps` in this run."""
    training = _training_config(experiment)
    assert experiment.autoencoder is not None  # _training_config checked
    rate = experiment.data.sample_rate
    crop_samples = round(training.crop_seconds * rate)
    device = pick_device(training.device)
    torch.manual_seed(experiment.seed)
    model = Autoencoder(experiment.autoencoder.model, rate).to(device)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=training.learning_rate, betas=training.betas, weight_decay=training.weight_decay
    )
    criterion = ReconstructionLoss(
        rate,
        crop_samples,
        training.l1_weight,
        training.stft_weight,
        training.stft_fft_sizes,
        training.mel_weight,
        training.n_mels,
    ).to(device)
    step, first_eval = _resume(experiment, model, optimizer)
    tars = shard_tars(experiment)
    holdout_keys = held_out_keys(experiment, training.holdout_items)
    holdout = holdout_batch(tars, holdout_keys, crop_samples)

    def evaluate() -> float:
        return _evaluate(model, criterion, holdout, training.batch_size, device)

    _drop_metrics_after(experiment, step)  # lines a killed run logged after its last checkpoint
    if step == 0:
        first_eval = evaluate()
        if not np.isfinite(first_eval):
            _diverged(experiment, 0, f"the held-out loss of the initial model is {first_eval}")
        _log(experiment, {"step": 0, "eval_loss": first_eval})
    stop = training.steps if max_steps is None else min(training.steps, max_steps)
    batches = _batches(tars, crop_samples, experiment.seed, step, holdout_keys, training)
    eval_loss = first_eval
    bar = tqdm(
        total=stop, initial=step, desc="train-autoencoder", unit="step", disable=not progress, dynamic_ncols=True
    )
    started = time.monotonic()
    model.train()
    while step < stop:
        audio = next(batches).to(device)
        reconstruction, info = model(audio)
        reconstruction_loss, parts = criterion(reconstruction, audio)
        loss = reconstruction_loss + _bottleneck_loss(info, training)
        loss_value = float(loss.detach())
        if not np.isfinite(loss_value):
            _diverged(experiment, step + 1, f"the loss is {loss_value}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if training.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), training.grad_clip)
        optimizer.step()
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss_value:.4f}")
        if step % training.log_every == 0 or step == stop:
            _log(
                experiment,
                {
                    "step": step,
                    "loss": loss_value,
                    **parts,
                    **_bottleneck_parts(info),
                    "seconds": round(time.monotonic() - started, 3),
                },
            )
        if step % training.eval_every == 0 or step == training.steps:
            eval_loss = evaluate()
            if not np.isfinite(eval_loss):
                _diverged(experiment, step, f"the held-out loss is {eval_loss}")
            _log(experiment, {"step": step, "eval_loss": eval_loss})
        if step % training.checkpoint_every == 0 or step == stop:
            _save_checkpoint(experiment, model, optimizer, step, first_eval)
    bar.close()
    weights = None
    if step >= training.steps:
        weights = layout_of(experiment).autoencoder_weights
        save_autoencoder(model.eval(), weights, stage_hash=stage_hash(experiment, "train_autoencoder"))
    return TrainResult(step, training.steps, eval_loss, first_eval, weights)


def _training_config(experiment: Experiment) -> AutoencoderTrainingConfig:
    configured = experiment.autoencoder
    if configured is None:
        raise UserFacingError(f"experiment '{experiment.name}' has no autoencoder section to train")
    if configured.checkpoint is not None:
        raise UserFacingError(
            f"autoencoder.checkpoint is set ({configured.checkpoint}): this experiment uses pretrained weights; "
            "remove it to train an autoencoder"
        )
    assert configured.training is not None  # the config requires one of checkpoint / training
    return configured.training


def held_out_keys(experiment: Experiment, count: int) -> frozenset[str]:
    """The first `count` items of the last planned shards (by the manifests, without decoding audio)."""
    keys: list[str] = []
    for index in reversed(load_plan(experiment).indices):
        keys.extend(load_manifest(experiment, index).keys[: count - len(keys)])
        if len(keys) >= count:
            break
    return frozenset(keys)


def holdout_batch(tars: list[Path], keys: frozenset[str], crop_samples: int) -> torch.Tensor:
    """The first crop of every held-out item, in key order: (items, channels, crop_samples)."""
    crops = {item.key: fixed_crop(item.audio, crop_samples) for item in read_items(tars, keep=keys.__contains__)}
    return torch.from_numpy(np.stack([crops[key] for key in sorted(crops)]))


@torch.no_grad()
def _evaluate(
    model: Autoencoder, criterion: ReconstructionLoss, audio: torch.Tensor, batch_size: int, device: torch.device
) -> float:
    """Mean reconstruction loss of the deterministic (mean-latent) pass over the held-out crops."""
    was_training = model.training
    model.eval()
    total = 0.0
    for start in range(0, len(audio), batch_size):
        batch = audio[start : start + batch_size].to(device)
        latents = model.encode(batch)
        reconstruction = model.decode(latents)[..., : batch.shape[-1]]
        total += float(criterion(reconstruction, batch)[0]) * len(batch)
    model.train(was_training)
    return total / len(audio)


def _bottleneck_loss(info: dict[str, Any], training: AutoencoderTrainingConfig) -> torch.Tensor | float:
    loss: torch.Tensor | float = 0.0
    if "kl" in info:
        loss = loss + training.kl_weight * info["kl"]
    if "commitment_loss" in info:  # already weighted by the quantiser's commitment_weight
        loss = loss + info["commitment_loss"]
    return loss


def _bottleneck_parts(info: dict[str, Any]) -> dict[str, float]:
    return {name: float(info[name].detach()) for name in ("kl", "commitment_loss") if name in info}


def _batches(
    tars: list[Path],
    crop_samples: int,
    seed: int,
    step: int,
    exclude: frozenset[str],
    training: AutoencoderTrainingConfig,
) -> Iterator[torch.Tensor]:
    """Endless training batches; a resumed run draws a fresh (still seeded) order from its start step."""
    crops = RandomCrops(tars, crop_samples, seed=seed * 1_000_003 + step, exclude=exclude)
    loader = torch.utils.data.DataLoader(
        crops,
        batch_size=training.batch_size,
        num_workers=training.num_workers,
        persistent_workers=training.num_workers > 0,
    )
    return iter(loader)


def _resume(experiment: Experiment, model: Autoencoder, optimizer: torch.optim.Optimizer) -> tuple[int, float | None]:
    """Load this run's checkpoint if there is one; returns (step, first eval loss)."""
    path = run_files(experiment).checkpoint
    remove_stale_temps(path.parent, path.name)
    if not path.is_file():
        _start_run(experiment)
        return 0, None
    state = torch.load(path, map_location="cpu", weights_only=True)
    steps = experiment.autoencoder.training.steps  # type: ignore[union-attr]
    if int(state["step"]) > steps:
        raise UserFacingError(
            f"{path} is at step {state['step']}, beyond autoencoder.training.steps ({steps}): raise steps to "
            f"continue that run, or move {path.parent} away to train this configuration from scratch"
        )
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    print(f"train-autoencoder: resuming from step {state['step']} (run {run_hash(experiment)}, {path})")
    return int(state["step"]), state.get("first_eval_loss")


def _start_run(experiment: Experiment) -> None:
    """A fresh run directory, recording its configuration; other runs are left as they are."""
    runs = layout_of(experiment).autoencoder_runs
    others = sorted(path.name for path in runs.glob("*/") if path.name != run_hash(experiment))
    kept = f"; other runs kept in {runs}: {', '.join(others)}" if others else ""
    print(f"train-autoencoder: starting run {run_hash(experiment)}{kept}")
    assert experiment.autoencoder is not None
    write_json_atomic(
        run_files(experiment).description,
        {
            "run_hash": run_hash(experiment),
            "autoencoder": experiment.autoencoder.model_dump(mode="json"),
            "seed": experiment.seed,
            "shard_stage_hash": stage_hash(experiment, "shard"),
        },
    )


def _diverged(experiment: Experiment, step: int, what: str) -> None:
    path = run_files(experiment).checkpoint
    kept = (
        f"the last good checkpoint (step {torch.load(path, weights_only=True)['step']}) is kept at {path}"
        if path.is_file()
        else "no checkpoint was written yet"
    )
    _log(experiment, {"step": step, "error": f"diverged: {what}"})
    raise TrainingDiverged(
        f"train-autoencoder: {what} at step {step}: training diverged and stops; {kept}, no weights are exported. "
        "Lower autoencoder.training.learning_rate or set autoencoder.training.grad_clip."
    )


def _save_checkpoint(
    experiment: Experiment, model: Autoencoder, optimizer: torch.optim.Optimizer, step: int, first_eval: float | None
) -> None:
    try:
        check_finite_weights(model.state_dict(), "the model")
    except NonFiniteWeights as error:
        _diverged(experiment, step, str(error))
    state = {
        "step": step,
        "stage_hash": stage_hash(experiment, "train_autoencoder"),
        "run_hash": run_hash(experiment),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "first_eval_loss": first_eval,
    }
    with atomic_path(run_files(experiment).checkpoint) as temporary:
        torch.save(state, temporary)
    _log(experiment, {"step": step, "checkpoint": str(run_files(experiment).checkpoint)})


def _log(experiment: Experiment, record: dict[str, Any]) -> None:
    path = run_files(experiment).metrics
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


def _drop_metrics_after(experiment: Experiment, step: int) -> None:
    """Keep the metrics lines up to `step` (none when starting at 0)."""
    path = run_files(experiment).metrics
    if path.is_file():
        lines = path.read_text(encoding="utf-8").splitlines()
        kept = [line for line in lines if step > 0 and json.loads(line)["step"] <= step]
        path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
