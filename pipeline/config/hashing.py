"""Stage hashes: a stable digest of the config each stage depends on, chained with its upstream stage.

Hashes are computed on the validated model dumped with every default written out, as canonical
JSON (sorted keys), so key order and explicitly written defaults never change them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from pipeline.config.experiment import Experiment


@dataclass(frozen=True)
class StageInputs:
    upstream: str | None  # stage whose hash is chained into this one
    fields: tuple[str, ...]  # dotted experiment fields this stage reads
    version: int = 1  # bump when a stage's output format changes, to invalidate old outputs


# Resources, names and the work_dir never enter a hash: they change where and how fast, not what.
STAGE_INPUTS: dict[str, StageInputs] = {
    "shard": StageInputs(None, ("paths.audio_dir", "data")),
    "train_autoencoder": StageInputs("shard", ("autoencoder", "seed")),
    "pre_encode": StageInputs("shard", ("autoencoder", "pre_encode")),
    "train": StageInputs("pre_encode", ("train", "seed")),
    "sample": StageInputs("train", ("sample", "seed")),
}


# Settings that change how a stage runs but not what it produces: never part of a hash, so changing
# them neither reruns the stage nor stops a training run from resuming.
RUNTIME_ONLY = (
    "pre_encode.num_workers",
    "autoencoder.training.num_workers",
    "autoencoder.training.log_every",
    "autoencoder.training.eval_every",
    "autoencoder.training.checkpoint_every",
)


def _without_runtime_only(plain: dict[str, Any], also: tuple[str, ...] = ()) -> dict[str, Any]:
    pruned = json.loads(json.dumps(plain))  # deep copy of plain JSON data
    for dotted_name in RUNTIME_ONLY + also:
        *parents, leaf = dotted_name.split(".")
        section = _field(pruned, ".".join(parents))
        if isinstance(section, dict):
            section.pop(leaf, None)
    return pruned


def _field(plain: dict[str, Any], dotted_name: str) -> Any:
    """A (possibly not yet existing) section of the dumped experiment; absent sections are null."""
    value: Any = plain
    for part in dotted_name.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def canonical_digest(data: Any) -> str:
    encoded = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(encoded.encode("utf-8")).hexdigest()


def stage_hash(experiment: Experiment, stage: str, ignoring: tuple[str, ...] = ()) -> str:
    """Hex digest (16 chars) of `stage`'s config subset and its upstream chain; the dotted fields in
    `ignoring` are left out (a training run's identity ignores its step count: raising it continues)."""
    if stage not in STAGE_INPUTS:
        raise KeyError(f"unknown stage {stage!r}; stages with hashes: {sorted(STAGE_INPUTS)}")
    return _chained_hash(_without_runtime_only(experiment.model_dump(mode="json"), ignoring), stage)


def _chained_hash(plain: dict[str, Any], stage: str) -> str:
    inputs = STAGE_INPUTS[stage]
    payload = {
        "stage": stage,
        "version": inputs.version,
        "upstream": _chained_hash(plain, inputs.upstream) if inputs.upstream else None,
        "fields": {name: _field(plain, name) for name in inputs.fields},
    }
    return canonical_digest(payload)[:16]


def stage_hashes(experiment: Experiment) -> dict[str, str]:
    plain = _without_runtime_only(experiment.model_dump(mode="json"))
    return {stage: _chained_hash(plain, stage) for stage in STAGE_INPUTS}
