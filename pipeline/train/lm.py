"""The LM family: a `LanguageModel` on random crops of the code stores (/codes of an rvq or fsq
autoencoder), through the same crops, batches, held-out loss and export as diffusion (`crops.py`).

The per-item draw of this family is the CFG dropout flag, from (seed, epoch, item) in the DataLoader
workers (`DropDrawer`). model.json records the codebook count and size the model was built for."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from pipeline.config.registry import build
from pipeline.latents.dataset import collate, item_rng
from pipeline.models.lm.model import LanguageModel
from pipeline.train.crops import SMALL_TENSORS, CropsFamily, as_numpy, conditioning_values

DROP_TAG = 0x64726F70  # "drop": the per-item CFG dropout draw


class LMFamily(CropsFamily):
    name = "lm"
    discrete = True

    def build(self) -> LanguageModel:
        return build("model", self.config, **self.build_arguments())

    def build_arguments(self) -> dict[str, int]:
        return {"n_codebooks": self.stores.n_codebooks, "codebook_size": self.stores.codebook_size}

    def step_module(self, model: nn.Module) -> nn.Module:
        return LMStep(model)

    def collate(self, seed: int, training: bool) -> DropDrawer:
        return DropDrawer(seed, self.config.cfg_dropout if training else 0.0)

    def model_facts(self) -> dict[str, Any]:
        return self.build_arguments()


class LMStep(nn.Module):
    """forward(batch) -> (loss, parts): what DDP wraps, so gradients synchronise through its hooks."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        values = conditioning_values(self.model, batch)
        return self.model.loss(batch["codes"], batch["mask"], values, keep=batch["keep"])


class DropDrawer:
    """A collate_fn: the dataset's batch plus each item's CFG keep flag, drawn from (seed, epoch, item)
    alone. Picklable, so it runs in the DataLoader workers."""

    def __init__(self, seed: int, cfg_dropout: float):
        self.seed, self.cfg_dropout = seed, cfg_dropout

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = collate(examples)
        draws = [
            item_rng(self.seed, epoch, item, DROP_TAG).random()
            for item, epoch in zip(batch["item"].tolist(), batch["epoch"].tolist())
        ]
        batch["keep"] = torch.tensor(draws, dtype=torch.float64) >= self.cfg_dropout
        return as_numpy(batch, SMALL_TENSORS)
