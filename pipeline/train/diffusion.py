"""The diffusion family: a `DiffusionModel` on random crops of the latent stores.

Every random number of a training example (its crop, posterior sample, noise, timestep and CFG
dropout) is drawn per (seed, epoch, item), in the DataLoader workers: a batch is the same whether one
process or eight draw it, so a DDP run equals one process with the same global batch, and a resumed
run draws what an uninterrupted one would. Exported: `<work_dir>/train/model.safetensors` (the EMA
weights) and `model.json` (the model config, the latent statistics it was normalised with, the
autoencoder's rate and geometry, the sha256 of the autoencoder weights that made the latents, and the
stage hash)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from pipeline.config.experiment import Experiment
from pipeline.config.hashing import stage_hash
from pipeline.config.registry import build
from pipeline.errors import UserFacingError
from pipeline.latents.dataset import (
    ItemTable,
    LatentCrops,
    RankBatches,
    collate,
    eval_batches,
    item_rng,
    make_loader,
    split_holdout,
)
from pipeline.latents.provenance import check_training_stores
from pipeline.layout import layout_of
from pipeline.models.diffusion.model import DiffusionModel, LossDraws
from pipeline.models.diffusion.objectives import timesteps_from
from pipeline.train.distributed import DistEnv
from pipeline.utils.atomic import atomic_path, write_json_atomic

DRAW_TAG = 0x64726177  # "draw": the per-item noise / timestep / dropout numbers
EVAL_SEED_OFFSET = 0x6576616C  # "eval": held-out draws never coincide with training draws
CROP_FIELDS = ("seconds_start", "seconds_total")  # conditioning values that come from the crop, not metadata


class DiffusionFamily:
    name = "diffusion"

    def __init__(self, experiment: Experiment, env: DistEnv, device: torch.device):
        assert experiment.train is not None
        self.experiment, self.env, self.device = experiment, env, device
        self.train_config = experiment.train
        self.config = experiment.train.model
        index = layout_of(experiment).index
        self.stores = check_training_stores(experiment, index, want_discrete=False, fields=metadata_fields(self.config))
        table = self.stores.table
        self.training_items, self.holdout_items = split_holdout(table, self.train_config.data.holdout_items)
        if len(self.training_items) == 0:
            raise UserFacingError(
                f"{index}: all {len(table)} items are held out (train.data.holdout_items = "
                f"{self.train_config.data.holdout_items}); lower it"
            )
        self.fields = tuple(metadata_fields(self.config))
        self.micro_batch = self.train_config.micro_batch(env.world_size)
        self._warn_short_items()

    def _warn_short_items(self) -> None:
        crop, longest = self.train_config.data.crop_frames, self.stores.longest_frames
        if longest < crop and self.env.is_main:
            print(
                f"train: every item is shorter than train.data.crop_frames ({crop}); the longest has {longest} "
                "frames: crops are zero-padded and the padding is masked out of the loss and attention"
            )

    # --- the model ---------------------------------------------------------------------------------
    def build(self) -> DiffusionModel:
        return build("model", self.config, io_channels=self.stores.latent_dim)

    def step_module(self, model: nn.Module) -> nn.Module:
        return DiffusionStep(model)

    # --- data --------------------------------------------------------------------------------------
    def dataset(self, table: ItemTable, random_crops: bool, seed: int) -> LatentCrops:
        data = self.train_config.data
        return LatentCrops(
            table,
            data.crop_frames,
            seed,
            normalise=data.normalise,
            posterior_sample=data.posterior_sample and random_crops,
            random_crops=random_crops,
            fields=self.fields,
        )

    def batches(self, start_step: int, device: torch.device) -> Iterator[dict[str, Any]]:
        seed, data = self.experiment.seed, self.train_config.data
        sampler = RankBatches(
            len(self.training_items),
            seed,
            start_step,
            self.micro_batch,
            self.env.world_size,
            self.env.rank,
            self.train_config.grad_accum,
        )
        loader = make_loader(
            self.dataset(self.training_items, True, seed),
            sampler,
            data.num_workers,
            data.prefetch_factor,
            pin_memory=device.type == "cuda",
            collate_fn=Drawer(seed, self.config.timestep_sampler, self.config.cfg_dropout),
        )
        for batch in loader:
            yield to_device(batch, device)

    def evaluate(self, model: nn.Module, device: torch.device) -> float | None:
        """Mean loss over the held-out items: first crops, fixed draws, no CFG dropout."""
        if len(self.holdout_items) == 0:
            return None
        seed = self.experiment.seed + EVAL_SEED_OFFSET
        dataset = self.dataset(self.holdout_items, False, seed)
        drawer = Drawer(seed, self.config.timestep_sampler, 0.0)
        total = 0.0
        for index_batch in eval_batches(len(self.holdout_items), self.micro_batch):
            batch = to_device(drawer([dataset[index] for index in index_batch]), device)
            total += float(DiffusionStep(model)(batch)[0]) * len(index_batch)
        dataset.close()
        return total / len(self.holdout_items)

    # --- export ------------------------------------------------------------------------------------
    def export(self, model: nn.Module, step: int) -> Path:
        layout = layout_of(self.experiment)
        weights = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
        for name, tensor in weights.items():
            if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                raise UserFacingError(f"train: exported weight {name} is not finite; nothing is exported")
        with atomic_path(layout.exported_model) as temporary:
            save_file(weights, str(temporary), metadata={"stage_hash": stage_hash(self.experiment, "train")})
        kind = "ema" if self.train_config.ema is not None else "model"  # what the loop hands over
        write_json_atomic(layout.exported_description, {**self.describe(), "step": step, "weights": kind})
        return layout.exported_model

    def describe(self) -> dict[str, Any]:
        stores = self.stores
        stats = stores.stats
        return {
            "family": self.name,
            "stage_hash": stage_hash(self.experiment, "train"),
            "model": self.config.model_dump(mode="json"),
            "io_channels": stores.latent_dim,
            "normalise": self.train_config.data.normalise,
            "latent_mean": np.asarray(stats.mean).tolist() if stats is not None else None,
            "latent_std": np.asarray(stats.std).tolist() if stats is not None else None,
            "latent_rate": stores.latent_rate,
            "sample_rate": stores.sample_rate,
            "autoencoder_weights_sha256": stores.table.attributes.get("autoencoder_weights_sha256"),
            "crop_frames": self.train_config.data.crop_frames,
            "seed": self.experiment.seed,
        }


def metadata_fields(config: Any) -> dict[str, str]:
    """The item metadata fields the conditioners read, each with the YAML path that names it."""
    fields = {}
    for number, conditioner in enumerate(config.conditioners):
        field = conditioner.source_field
        if field not in CROP_FIELDS:
            where = "field" if conditioner.field else "id"
            fields.setdefault(field, f"train.model.conditioners[{number}].{where}")
    return fields


class DiffusionStep(nn.Module):
    """forward(batch) -> (loss, parts): what DDP wraps, so gradients synchronise through its hooks."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        draws = LossDraws(noise=batch["noise"], t=batch["t"], keep=batch["keep"])
        return self.model.loss(batch["latents"], batch["mask"], conditioning_values(self.model, batch), draws)


def conditioning_values(model: DiffusionModel, batch: dict[str, Any]) -> dict[str, list]:
    """The conditioners' raw values for the batch, by conditioner id (by field, a conditioner whose id
    is another's field would read that field): crop timing for seconds_*, else item metadata."""
    values = {}
    for conditioner in model.config.conditioners:
        field = conditioner.source_field
        values[conditioner.id] = batch[field].tolist() if field in CROP_FIELDS else batch["metadata"][field]
    return values


class Drawer:
    """A collate_fn: the dataset's batch plus each item's noise, timestep and CFG keep flag, drawn from
    (seed, epoch, item) alone. Picklable, so it runs in the DataLoader workers."""

    def __init__(self, seed: int, timestep_sampler: str, cfg_dropout: float):
        self.seed, self.timestep_sampler, self.cfg_dropout = seed, timestep_sampler, cfg_dropout

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = collate(examples)
        noise, uniform, normal, dropout = [], [], [], []
        channels, frames = batch["latents"].shape[1:]
        for item, epoch in zip(batch["item"].tolist(), batch["epoch"].tolist()):
            rng = item_rng(self.seed, epoch, item, DRAW_TAG)
            noise.append(rng.standard_normal((channels, frames), dtype=np.float32))
            uniform.append(rng.random())
            normal.append(rng.standard_normal())
            dropout.append(rng.random())
        as64 = torch.float64  # the drawn doubles; t is rounded to float32 once, at the end
        t = timesteps_from(self.timestep_sampler, torch.tensor(uniform, dtype=as64), torch.tensor(normal, dtype=as64))
        batch["noise"] = torch.from_numpy(np.stack(noise))
        batch["t"] = t.to(torch.float32)
        batch["keep"] = torch.tensor(dropout, dtype=as64) >= self.cfg_dropout
        return as_numpy(batch, SMALL_TENSORS)


# Each tensor a worker returns crosses to the trainer as its own shared-memory segment (~0.7 ms each on
# a busy CPU); the per-item scalars travel as numpy arrays inside the pickle instead (bench/train.py).
SMALL_TENSORS = ("mask", "seconds_start", "seconds_total", "item", "epoch", "t", "keep")


def as_numpy(batch: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    return {name: value.numpy() if name in names else value for name, value in batch.items()}


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Tensors (and the numpy arrays the workers sent instead of small tensors) on `device`."""
    moved = {}
    for name, value in batch.items():
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(value)
        moved[name] = value.to(device, non_blocking=True) if isinstance(value, torch.Tensor) else value
    return moved
