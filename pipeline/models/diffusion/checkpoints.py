"""Strict loading of diffusion weights (`train.init_from`): a stable-audio-tools diffusion checkpoint
or a model this pipeline exported.

stable-audio-tools' `ConditionedDiffusionModelWrapper` nests the DiT one level deeper than we do
(`model.model.*`, ours `model.*`: its `DiTWrapper` holds the `DiffusionTransformer`), keeps the
conditioners as we do (`conditioner.conditioners.<id>.*`) and the autoencoder beside them
(`pretransform.model.*`, which the autoencoder section loads from the same file with
`checkpoint_prefix`). A training checkpoint adds an outer prefix (`diffusion.`): it is recognised
when every DiT key carries it. Everything else in the file is unexpected. As for the autoencoder
(`autoencoder/checkpoints.py`), every missing, unexpected or mis-shaped key is listed at once, named
as the file names it; nothing is ever left at its random initialisation."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from pipeline.models.autoencoder.checkpoints import (
    CheckpointMismatch,
    NormalisedState,
    check_finite_weights,
    load_strict,
    read_state_dict,
)

SAT_BACKBONE, OUR_BACKBONE = "model.model.", "model."  # the DiT inside DiTWrapper inside the model wrapper
CONDITIONERS = "conditioner.conditioners."  # the same in both layouts
AUTOENCODER = "pretransform."  # the autoencoder's part: not the diffusion model's
UNEXPECTED = "\0unexpected:"  # keeps a stray file key from ever matching one of the model's keys
EXPORT_METADATA = "stage_hash"  # what `train/crops.py` writes into an exported model.safetensors


class SatDiffusionState(NormalisedState):
    """Tensors under the model's names that name each key as the checkpoint does (`model.model.*`)."""

    def __init__(self, tensors: dict[str, torch.Tensor], file_names: dict[str, str], outer: str):
        super().__init__(tensors, file_names, "", legacy=False)
        self.outer = outer

    def file_name(self, key: str) -> str:
        if key in self.file_names:
            return self.file_names[key]
        return self.outer + (SAT_BACKBONE + key[len(OUR_BACKBONE) :] if key.startswith(OUR_BACKBONE) else key)


def outer_prefix(keys: list[str]) -> str:
    """'' for an unwrapped checkpoint, else the prefix in front of its `model.model.` keys (`diffusion.`)."""
    if any(key.startswith((SAT_BACKBONE, CONDITIONERS, AUTOENCODER)) for key in keys):
        return ""
    found = sorted({key[: key.index(SAT_BACKBONE)] for key in keys if SAT_BACKBONE in key}, key=len)
    return found[0] if found else ""


def sat_diffusion_state(tensors: Mapping[str, torch.Tensor]) -> SatDiffusionState:
    """The diffusion model's part of a stable-audio-tools checkpoint under our names (the
    autoencoder's keys left out, everything else kept as unexpected)."""
    outer = outer_prefix(list(tensors))
    renamed: dict[str, torch.Tensor] = {}
    names: dict[str, str] = {}
    for original, tensor in tensors.items():
        inner = original[len(outer) :] if original.startswith(outer) else None
        if inner is not None and inner.startswith(AUTOENCODER):
            continue
        if inner is not None and inner.startswith(SAT_BACKBONE):
            key = OUR_BACKBONE + inner[len(SAT_BACKBONE) :]
        elif inner is not None and inner.startswith(CONDITIONERS):
            key = inner
        else:
            key = UNEXPECTED + original
        renamed[key], names[key] = tensor, original
    return SatDiffusionState(renamed, names, outer)


def is_exported(path: Path) -> bool:
    """True for a model.safetensors written by this pipeline's train stage (our key names)."""
    if path.suffix != ".safetensors":
        return False
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return EXPORT_METADATA in (handle.metadata() or {})


def load_diffusion_weights(model: nn.Module, path: str | Path) -> str:
    """Load `path` into `model` (a DiffusionModel) strictly; returns which layout it was ('exported' or
    'stable-audio-tools'). CheckpointMismatch lists every difference."""
    path = Path(path)
    tensors = read_state_dict(path)
    if is_exported(path):
        state: Mapping[str, torch.Tensor] = tensors
        layout = "exported"
    else:
        state = sat_diffusion_state(tensors)
        layout = "stable-audio-tools"
        if not state:
            raise CheckpointMismatch(
                f"{path}: no diffusion weights (no '{SAT_BACKBONE}' or '{CONDITIONERS}' keys): is it an autoencoder "
                "checkpoint? train.init_from takes a diffusion model's"
            )
    try:
        load_strict(model, state, source=str(path))
    except CheckpointMismatch as error:
        hint = ""
        if any(key.startswith(UNEXPECTED) for key in state):
            hint = "\n  (a training checkpoint? unwrap it first with stable-audio-tools' unwrap_model.py)"
        raise CheckpointMismatch(f"train.init_from: {error}{hint}") from None
    check_finite_weights(state, str(path))
    return layout
