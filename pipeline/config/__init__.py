"""Experiment configuration: registry, loading (extends + overrides), validation, stage hashes, schema.

Exports are loaded lazily so that component modules can import `pipeline.config.registry` without
pulling in the experiment model (which imports them)."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ConfigError": "pipeline.config.errors",
    "ConfigProblem": "pipeline.config.errors",
    "Experiment": "pipeline.config.experiment",
    "load_experiment": "pipeline.config.experiment",
    "to_plain": "pipeline.config.experiment",
    "stage_hash": "pipeline.config.hashing",
    "stage_hashes": "pipeline.config.hashing",
    "experiment_schema": "pipeline.config.schema",
    "register": "pipeline.config.registry",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'pipeline.config' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
