"""What every family trained on random crops of the stores shares (`train/diffusion.py` on /latents,
`train/lm.py` on /codes): the store checks, the held-out split, this rank's batches from a step on,
the held-out loss, the export and run.json. A family adds its model, its per-item draws (a collate
function run in the DataLoader workers) and its step module.

Every random number of a training example (its crop, posterior sample, the family's draws such as
noise, timestep and CFG dropout) is drawn per (seed, epoch, item), in the DataLoader workers: a batch
is the same whether one process or eight draw it, so a DDP run equals one process with the same
global batch, and a resumed run draws what an uninterrupted one would. Exported:
`<work_dir>/train/model.safetensors` (the EMA weights) and `model.json` (the model config, what the
model was built with, the autoencoder's rate, the sha256 of the autoencoder weights that made the
stores, and the stage hash)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from pipeline.config.experiment import Experiment
from pipeline.config.hashing import stage_hash
from pipeline.errors import UserFacingError
from pipeline.latents.dataset import ItemTable, LatentCrops, RankBatches, eval_batches, make_loader, split_holdout
from pipeline.latents.provenance import check_training_stores
from pipeline.layout import layout_of
from pipeline.models.t5 import TextEmbeddings
from pipeline.train.distributed import DistEnv
from pipeline.train.prompts import embedding_keys
from pipeline.utils.atomic import atomic_path, write_json_atomic

EVAL_SEED_OFFSET = 0x6576616C  # "eval": held-out draws never coincide with training draws
CROP_FIELDS = ("seconds_start", "seconds_total")  # conditioning values that come from the crop, not metadata
Collate = Callable[[list[dict[str, Any]]], dict[str, Any]]


class CropsFamily:
    """The loop's `Family` for a model trained on crops of `latents/index.h5`; subclasses set `name` and
    `discrete` (trains on /codes) and implement `build`, `step_module`, `collate` and `model_facts`."""

    name = "crops"
    discrete = False

    def __init__(self, experiment: Experiment, env: DistEnv, device: torch.device):
        assert experiment.train is not None
        self.experiment, self.env, self.device = experiment, env, device
        self.train_config = experiment.train
        self.config = experiment.train.model
        index = layout_of(experiment).index
        wanted = metadata_fields(self.config)
        self.stores = check_training_stores(experiment, index, want_discrete=self.discrete, fields=wanted)
        table = self.stores.table
        self.training_items, self.holdout_items = split_holdout(table, self.train_config.data.holdout_items)
        if len(self.training_items) == 0:
            raise UserFacingError(
                f"{index}: all {len(table)} items are held out (train.data.holdout_items = "
                f"{self.train_config.data.holdout_items}); lower it"
            )
        self.fields = tuple(wanted)
        self.micro_batch = self.train_config.micro_batch(env.world_size)
        self._warn_short_items()

    def _warn_short_items(self) -> None:
        crop, longest = self.train_config.data.crop_frames, self.stores.longest_frames
        if longest < crop and self.env.is_main:
            print(
                f"train: every item is shorter than train.data.crop_frames ({crop}); the longest has {longest} "
                "frames: crops are zero-padded and the padding is masked out of the loss and attention"
            )

    # --- what a family supplies ----------------------------------------------------------------------
    def build(self) -> nn.Module:
        raise NotImplementedError

    def step_module(self, model: nn.Module) -> nn.Module:
        """A module whose forward(batch) returns (loss, {name: float}); DDP wraps it."""
        raise NotImplementedError

    def collate(self, seed: int, training: bool) -> Collate:
        """The DataLoader's collate_fn: `dataset.collate` plus the family's per-item draws from
        (seed, epoch, item); `training=False` for the held-out loss (no CFG dropout). Picklable."""
        raise NotImplementedError

    def model_facts(self) -> dict[str, Any]:
        """What model.json records beside the common facts: the model's build arguments and the data
        conventions sampling must undo."""
        raise NotImplementedError

    # --- data ----------------------------------------------------------------------------------------
    def dataset(self, table: ItemTable, random_crops: bool, seed: int) -> LatentCrops:
        """Crops of latents (posterior-sampled and normalised as configured) or of codes (neither)."""
        data = self.train_config.data
        return LatentCrops(
            table,
            data.crop_frames,
            seed,
            normalise="none" if self.discrete else data.normalise,
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
            collate_fn=self.collate(seed, True),
        )
        for batch in loader:
            yield to_device(batch, device)

    def evaluate(self, model: nn.Module, device: torch.device) -> float | None:
        """Mean loss over the held-out items: first crops, fixed draws, no CFG dropout."""
        if len(self.holdout_items) == 0:
            return None
        seed = self.experiment.seed + EVAL_SEED_OFFSET
        dataset = self.dataset(self.holdout_items, False, seed)
        collate = self.collate(seed, False)
        step = self.step_module(model)
        total = 0.0
        for index_batch in eval_batches(len(self.holdout_items), self.micro_batch):
            batch = to_device(collate([dataset[index] for index in index_batch]), device)
            total += float(step(batch)[0]) * len(index_batch)
        dataset.close()
        return total / len(self.holdout_items)

    # --- export --------------------------------------------------------------------------------------
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
        return {
            "family": self.name,
            "stage_hash": stage_hash(self.experiment, "train"),
            "model": self.config.model_dump(mode="json"),
            **self.model_facts(),
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


def conditioning_values(model: Any, batch: dict[str, Any]) -> dict[str, Any]:
    """The conditioners' raw values for the batch, by conditioner id (by field, a conditioner whose id
    is another's field would read that field): crop timing for seconds_*, else item metadata."""
    values: dict[str, Any] = {}
    for conditioner in model.config.conditioners:
        field = conditioner.source_field
        tokens_key, mask_key = embedding_keys(conditioner.id)
        if tokens_key in batch:  # pre-computed prompt embeddings (train/prompts.py)
            values[conditioner.id] = TextEmbeddings(batch[tokens_key], batch[mask_key])
        else:
            values[conditioner.id] = batch[field].tolist() if field in CROP_FIELDS else batch["metadata"][field]
    return values


# Each tensor a worker returns crosses to the trainer as its own shared-memory segment (~0.7 ms each on
# a busy CPU); the per-item scalars travel as numpy arrays inside the pickle instead (bench/train.py).
SMALL_TENSORS = ("mask", "seconds_start", "seconds_total", "item", "epoch", "t", "keep")


def as_numpy(batch: dict[str, Any], names: tuple[str, ...] = SMALL_TENSORS) -> dict[str, Any]:
    return {name: value.numpy() if name in names else value for name, value in batch.items()}


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Tensors (and the numpy arrays the workers sent instead of small tensors) on `device`."""
    moved = {}
    for name, value in batch.items():
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(value)
        moved[name] = value.to(device, non_blocking=True) if isinstance(value, torch.Tensor) else value
    return moved
