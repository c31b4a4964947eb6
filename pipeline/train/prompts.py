"""Before step 0: each `t5` conditioner with `precompute: true` gets its prompt store
(`pipeline/latents/prompts.py`) holding every prompt of the index's items, encoded once by the
frozen encoder on the training device. An up-to-date store (same encoder identity, every prompt in
it) is reused; new prompts are added; another encoder's store is rebuilt. Rank 0 writes, the
others wait at a barrier and then read the same file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.config.registry import build
from pipeline.latents.dataset import ItemTable
from pipeline.latents.prompts import (
    PromptLookup,
    encoder_identity,
    read_all,
    read_identity,
    text_key,
    write_prompt_store,
)
from pipeline.layout import layout_of
from pipeline.train import distributed

BATCH = 32  # prompts per encoder call


def embedding_keys(conditioner_id: str) -> tuple[str, str]:
    """The batch entries holding a conditioner's pre-computed tokens and mask."""
    return f"text_tokens.{conditioner_id}", f"text_mask.{conditioner_id}"


def precomputed_conditioners(model_config: Any) -> list[Any]:
    return [c for c in model_config.conditioners if c.type == "t5" and c.precompute]


def prompt_lookups(
    experiment: Any, table: ItemTable, is_main: bool, device: torch.device
) -> dict[str, tuple[str, PromptLookup]]:
    """{conditioner id: (metadata field, lookup)} for the conditioners that pre-compute, their stores
    brought up to date first (by rank 0)."""
    model_config = experiment.train.model
    lookups = {}
    for conditioner in precomputed_conditioners(model_config):
        path = layout_of(experiment).prompt_embeddings(conditioner.id)
        if is_main:
            update_store(path, conditioner, model_config.cond_dim, prompts_of(table, conditioner.source_field), device)
        lookups[conditioner.id] = (conditioner.source_field, PromptLookup(path))
    distributed.barrier()
    return lookups


def prompts_of(table: ItemTable, field: str) -> list[str]:
    """Every distinct prompt of the items, in first-seen order (items without one have none)."""
    texts = (table.metadata(item, [field])[field] for item in range(len(table)))
    return list(dict.fromkeys(text for text in texts if isinstance(text, str)))


def update_store(path: Path, conditioner: Any, cond_dim: int, texts: list[str], device: torch.device) -> int:
    """Encode the prompts the store lacks and rewrite it; returns how many were encoded."""
    identity = encoder_identity(conditioner)
    kept: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if path.exists():
        if read_identity(path) == identity:
            kept = read_all(path)
        else:
            print(f"train: {path} was computed by another encoder or settings; computing it again")
    missing = [text for text in texts if text_key(text) not in kept]
    if not missing:
        return 0
    module = build("conditioner", conditioner, output_dim=cond_dim).to(device)
    print(f"train: encoding {len(missing)} prompt(s) with the '{conditioner.id}' encoder into {path}")
    for start in range(0, len(missing), BATCH):
        chunk = missing[start : start + BATCH]
        embedded = module.encode(chunk)
        tokens, mask = embedded.tokens.cpu().numpy(), embedded.mask.cpu().numpy()
        for row, text in enumerate(chunk):
            kept[text_key(text)] = (tokens[row], mask[row])
    dtype = np.float16 if conditioner.dtype == "float16" else np.float32  # float16 holds a float16 encoder exactly
    write_prompt_store(path, conditioner.id, identity, kept, np.dtype(dtype))
    return len(missing)
