"""The diffusion family: a `DiffusionModel` on random crops of the latent stores (`crops.py` holds
what it shares with the other families trained on crops: stores, batches, held-out loss, export).

The per-item draws of this family are the noise, the timestep and the CFG dropout, drawn from
(seed, epoch, item) in the DataLoader workers (`Drawer`). model.json records the latent statistics
the model was normalised with and the latent width it was built for (`io_channels`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.config.registry import build
from pipeline.latents.dataset import collate, item_rng
from pipeline.latents.prompts import PromptLookup
from pipeline.models.diffusion.checkpoints import load_diffusion_weights
from pipeline.models.diffusion.model import DiffusionModel, LossDraws
from pipeline.models.diffusion.objectives import timesteps_from
from pipeline.train.crops import (
    CROP_FIELDS,
    EVAL_SEED_OFFSET,
    SMALL_TENSORS,
    CropsFamily,
    as_numpy,
    conditioning_values,
    metadata_fields,
    to_device,
)
from pipeline.train.prompts import embedding_keys, prompt_lookups

__all__ = [  # the shared helpers tests and benchmarks reach through this module
    "CROP_FIELDS",
    "DRAW_TAG",
    "EVAL_SEED_OFFSET",
    "DiffusionFamily",
    "DiffusionStep",
    "Drawer",
    "conditioning_values",
    "metadata_fields",
    "to_device",
]

DRAW_TAG = 0x64726177  # "draw": the per-item noise / timestep / dropout numbers


class DiffusionFamily(CropsFamily):
    name = "diffusion"
    discrete = False

    def __init__(self, experiment: Any, env: Any, device: torch.device):
        super().__init__(experiment, env, device)
        # Text conditioners with `precompute: true` read their prompts' embeddings from a store.
        self.prompt_lookups = prompt_lookups(experiment, self.stores.table, env.is_main, device)

    def build(self) -> DiffusionModel:
        """The model, with `train.init_from`'s weights when set (a fine-tune: the loop starts a fresh
        optimizer at step 0; a resumed run then replaces them with its checkpoint's)."""
        model = build("model", self.config, io_channels=self.stores.latent_dim)
        init_from = self.train_config.init_from
        if init_from is not None:
            layout = load_diffusion_weights(model, init_from)
            if self.env.is_main:
                print(f"train diffusion: initial weights from {init_from} ({layout} layout, loaded strictly)")
        return model

    def step_module(self, model: nn.Module) -> nn.Module:
        return DiffusionStep(model)

    def collate(self, seed: int, training: bool) -> Drawer:
        dropout = self.config.cfg_dropout if training else 0.0
        return Drawer(seed, self.config.timestep_sampler, dropout, self.prompt_lookups)

    def model_facts(self) -> dict[str, Any]:
        stats = self.stores.stats
        return {
            "io_channels": self.stores.latent_dim,
            "normalise": self.train_config.data.normalise,
            "latent_mean": np.asarray(stats.mean).tolist() if stats is not None else None,
            "latent_std": np.asarray(stats.std).tolist() if stats is not None else None,
        }


class DiffusionStep(nn.Module):
    """forward(batch) -> (loss, parts): what DDP wraps, so gradients synchronise through its hooks."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        draws = LossDraws(noise=batch["noise"], t=batch["t"], keep=batch["keep"])
        return self.model.loss(batch["latents"], batch["mask"], conditioning_values(self.model, batch), draws)


class Drawer:
    """A collate_fn: the dataset's batch plus each item's noise, timestep and CFG keep flag, drawn from
    (seed, epoch, item) alone, and the pre-computed prompt embeddings of the conditioners in
    `prompts` ({id: (metadata field, PromptLookup)}). Picklable, so it runs in the DataLoader workers."""

    def __init__(
        self,
        seed: int,
        timestep_sampler: str,
        cfg_dropout: float,
        prompts: dict[str, tuple[str, PromptLookup]] | None = None,
    ):
        self.seed, self.timestep_sampler, self.cfg_dropout = seed, timestep_sampler, cfg_dropout
        self.prompts = dict(prompts or {})

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
        for conditioner_id, (field, lookup) in self.prompts.items():
            tokens, mask = lookup(batch["metadata"][field])
            tokens_key, mask_key = embedding_keys(conditioner_id)
            batch[tokens_key], batch[mask_key] = torch.from_numpy(tokens), torch.from_numpy(mask)
        return as_numpy(batch, SMALL_TENSORS)
