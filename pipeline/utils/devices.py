"""Picking the torch device a stage runs on."""

from __future__ import annotations

import torch

from pipeline.errors import UserFacingError


def pick_device(wanted: str) -> torch.device:
    """`auto`: CUDA when available, else CPU; `cuda` without a GPU is an error, not a silent CPU run."""
    if wanted == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if wanted == "cuda" and not torch.cuda.is_available():
        raise UserFacingError("device 'cuda' was requested but torch sees no CUDA GPU (use 'auto' or 'cpu')")
    return torch.device(wanted)
