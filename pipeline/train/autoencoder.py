"""`pipeline train-autoencoder EXP`: train the autoencoder on random crops of the shards, through the
one training loop (`train/loop.py`) as the autoencoder family.

Outputs in `<work_dir>/autoencoder/`: `model.safetensors` + `model.json` (written once, when the last
step is done: what Snakemake declares; they record the stage hash that made them, and pre-encode
refuses weights whose hash is not the experiment's) and one directory per run,
`runs/<run hash>/` with `step-NNNNNNNNN.pt` (the resumable state, the newest two kept),
`metrics.jsonl` (one JSON line per log/eval event) and `run.json` (the configuration of the run). The run hash is the stage hash without
`training.steps`: raising `steps` continues a finished or running run, any other change starts a new
run in its own directory and never touches another run's state. Checkpoints live outside
Snakemake's declared outputs, which it deletes before rerunning a job.

A non-finite loss (or non-finite weights at a checkpoint) stops training with an error; the last good
checkpoint is kept and no weights are exported.

The first `holdout_items` items of the last shards are never trained on; the held-out loss (the
reconstruction loss on their first crop) is logged at step 0, every `eval_every` steps and at the end.

Resume restores the model, optimizer and every RNG state; the crops are decoded from tar shards, which
cannot be entered at an arbitrary position, so a resumed run draws a fresh crop order seeded from
(seed, step): the same on every rerun, but not the order an uninterrupted run would have seen."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.config.experiment import Experiment
from pipeline.config.hashing import stage_hash
from pipeline.config.sections import AutoencoderTrainingConfig
from pipeline.config.training import OptimizerConfig
from pipeline.errors import UserFacingError
from pipeline.layout import RunFiles, layout_of
from pipeline.models.autoencoder.checkpoints import save_autoencoder
from pipeline.models.autoencoder.model import Autoencoder
from pipeline.shards.plan import load_manifest, load_plan
from pipeline.shards.reader import RandomCrops, fixed_crop, read_items, shard_tars
from pipeline.train.distributed import DistEnv
from pipeline.train.loop import LoopResult, LoopSettings, launch
from pipeline.train.losses import ReconstructionLoss

RUN_IGNORES = ("autoencoder.training.steps",)  # raising the step count continues the same run


def run_hash(experiment: Experiment) -> str:
    """The identity of a training run: the stage hash without the step count."""
    return stage_hash(experiment, "train_autoencoder", ignoring=RUN_IGNORES)


def run_files(experiment: Experiment) -> RunFiles:
    """This experiment's run: checkpoints, metrics and description files."""
    return layout_of(experiment).autoencoder_run(run_hash(experiment))


def train_autoencoder(experiment: Experiment, progress: bool = True, max_steps: int | None = None) -> LoopResult:
    """Train (or resume) until `training.steps`, or until step `max_steps` in this run."""
    training = _training_config(experiment)
    return launch(
        lambda env, device: AutoencoderFamily(experiment, training, env),
        dataclasses.replace(
            loop_settings(training), time_limit_margin_s=experiment.resources.train_autoencoder.signal_seconds
        ),
        experiment.seed,
        run_files(experiment),
        run_hash(experiment),
        training.device,
        progress,
        max_steps,
        cpu_threads=experiment.resources.train_autoencoder.cpus - training.num_workers,
    )


def loop_settings(training: AutoencoderTrainingConfig) -> LoopSettings:
    """The loop's settings from the autoencoder's training section (AdamW, constant rate, no EMA)."""
    optimizer = OptimizerConfig(
        name="AdamW",
        lr=training.learning_rate,
        options={"betas": training.betas, "weight_decay": training.weight_decay},
    )
    return LoopSettings(
        steps=training.steps,
        optimizer=optimizer,
        grad_clip=training.grad_clip,
        precision="fp32",
        log_every=training.log_every,
        eval_every=training.eval_every,
        checkpoint_every=training.checkpoint_every,
        tensorboard=False,
        section="autoencoder.training",
        divergence_hint="Lower autoencoder.training.learning_rate or set autoencoder.training.grad_clip.",
    )


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


class AutoencoderFamily:
    """The autoencoder as a family of the one loop: crops of shard audio, reconstruction + bottleneck loss."""

    name = "autoencoder"

    def __init__(self, experiment: Experiment, training: AutoencoderTrainingConfig, env: DistEnv):
        self.experiment, self.training, self.env = experiment, training, env
        self.rate = experiment.data.sample_rate
        self.crop_samples = round(training.crop_seconds * self.rate)
        self.tars = shard_tars(experiment)
        self.holdout_keys = held_out_keys(experiment, training.holdout_items)
        self.holdout = holdout_batch(self.tars, self.holdout_keys, self.crop_samples)
        self.criterion = ReconstructionLoss(
            self.rate,
            self.crop_samples,
            training.l1_weight,
            training.stft_weight,
            training.stft_fft_sizes,
            training.mel_weight,
            training.n_mels,
        )

    def build(self) -> Autoencoder:
        assert self.experiment.autoencoder is not None
        return Autoencoder(self.experiment.autoencoder.model, self.rate)

    def step_module(self, model: nn.Module) -> nn.Module:
        return AutoencoderStep(model, self.criterion, self.training)

    def batches(self, start_step: int, device: torch.device) -> Iterator[torch.Tensor]:
        """Endless batches of random crops; a resumed run draws a fresh order seeded from its start step."""
        crops = RandomCrops(
            self.tars,
            self.crop_samples,
            seed=self.experiment.seed * 1_000_003 + start_step,
            exclude=self.holdout_keys,
            rank=self.env.rank,
            world_size=self.env.world_size,
        )
        loader = torch.utils.data.DataLoader(
            crops,
            batch_size=self.training.batch_size // self.env.world_size or 1,
            num_workers=self.training.num_workers,
            persistent_workers=self.training.num_workers > 0,
        )
        for audio in loader:
            yield audio.to(device)

    def evaluate(self, model: nn.Module, device: torch.device) -> float:
        """Mean reconstruction loss of the deterministic (mean-latent) pass over the held-out crops."""
        criterion = self.criterion.to(device)
        total = 0.0
        for start in range(0, len(self.holdout), self.training.batch_size):
            batch = self.holdout[start : start + self.training.batch_size].to(device)
            reconstruction = model.decode(model.encode(batch))[..., : batch.shape[-1]]
            total += float(criterion(reconstruction, batch)[0]) * len(batch)
        return total / len(self.holdout)

    def export(self, model: nn.Module, step: int) -> Path:
        weights = layout_of(self.experiment).autoencoder_weights
        save_autoencoder(model.eval(), weights, stage_hash=stage_hash(self.experiment, "train_autoencoder"))
        return weights

    def describe(self) -> dict[str, Any]:
        assert self.experiment.autoencoder is not None
        return {
            "autoencoder": self.experiment.autoencoder.model_dump(mode="json"),
            "seed": self.experiment.seed,
            "shard_stage_hash": stage_hash(self.experiment, "shard"),
        }


class AutoencoderStep(nn.Module):
    """forward(audio) -> (reconstruction + bottleneck loss, parts), what DDP wraps."""

    def __init__(self, model: nn.Module, criterion: ReconstructionLoss, training: AutoencoderTrainingConfig):
        super().__init__()
        self.model, self.training = model, training
        self.criterion = [criterion]  # a list: the loss's spectral buffers are not the model's parameters

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        criterion = self.criterion[0].to(audio.device)
        reconstruction, info = self.model(audio)
        reconstruction_loss, parts = criterion(reconstruction, audio)
        loss = reconstruction_loss + _bottleneck_loss(info, self.training)
        return loss, {**parts, **_bottleneck_parts(info)}


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


def _bottleneck_loss(info: dict[str, Any], training: AutoencoderTrainingConfig) -> torch.Tensor | float:
    loss: torch.Tensor | float = 0.0
    if "kl" in info:
        loss = loss + training.kl_weight * info["kl"]
    if "commitment_loss" in info:  # already weighted by the quantiser's commitment_weight
        loss = loss + info["commitment_loss"]
    return loss


def _bottleneck_parts(info: dict[str, Any]) -> dict[str, float]:
    return {name: float(info[name].detach()) for name in ("kl", "commitment_loss") if name in info}
