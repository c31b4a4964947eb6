"""Strict weight loading: stable-audio-tools checkpoints and our own safetensors files.

Loading never falls back to random weights: any missing, unexpected or mis-shaped key is an error
that lists them all. stable-audio-tools' legacy weight norm (`weight_g` / `weight_v`, from
`torch.nn.utils.weight_norm`) is renamed to the parametrization keys torch uses now
(`parametrizations.weight.original0` / `original1`); prefixes such as `pretransform.model.` are only
stripped when the caller names them."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping

import torch
from torch import nn

LEGACY_WEIGHT_NORM = {"weight_g": "parametrizations.weight.original0", "weight_v": "parametrizations.weight.original1"}
KNOWN_PREFIXES = ("pretransform.model.", "autoencoder.", "model.")


class CheckpointMismatch(Exception):
    """The checkpoint does not fit the model; the message lists every difference."""


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a `.safetensors` file or a torch `.ckpt`/`.pt` (its `state_dict` entry if present)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    loaded = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(loaded, Mapping) and "state_dict" in loaded:
        loaded = loaded["state_dict"]
    if not isinstance(loaded, Mapping):
        raise CheckpointMismatch(f"{path}: expected a state dict (mapping of tensors), got {type(loaded).__name__}")
    return dict(loaded)


def normalise_keys(state_dict: Mapping[str, torch.Tensor], strip_prefixes: Iterable[str] = ()) -> dict[str, torch.Tensor]:
    """Strip the named prefixes (only keys that carry one are kept) and rename legacy weight-norm keys."""
    prefixes = tuple(strip_prefixes)
    renamed: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        if prefixes:
            prefix = next((p for p in prefixes if key.startswith(p)), None)
            if prefix is None:
                continue
            key = key[len(prefix) :]
        head, _, leaf = key.rpartition(".")
        if leaf in LEGACY_WEIGHT_NORM:
            key = f"{head}.{LEGACY_WEIGHT_NORM[leaf]}" if head else LEGACY_WEIGHT_NORM[leaf]
        renamed[key] = tensor
    return renamed


def load_strict(module: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Load `state_dict` into `module` or raise CheckpointMismatch listing every difference."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    misshaped = sorted(
        f"{key}: checkpoint {tuple(state_dict[key].shape)}, model {tuple(expected[key].shape)}"
        for key in set(expected) & set(state_dict)
        if tuple(state_dict[key].shape) != tuple(expected[key].shape)
    )
    if missing or unexpected or misshaped:
        lines = [f"{source} does not fit the model:"]
        for title, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshaped)):
            if keys:
                shown = keys[:20] + ([f"... and {len(keys) - 20} more"] if len(keys) > 20 else [])
                lines.append(f"  {title} ({len(keys)}): " + ", ".join(shown))
        raise CheckpointMismatch("\n".join(lines))
    module.load_state_dict(dict(state_dict), strict=True)
