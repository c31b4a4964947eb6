"""The stages, written once: their names and order, what each stage's hash covers, and the resources
one job of it asks for by default. `ResourcesConfig`, the stage hashes and `stage_resources` in the
Snakemake rules are derived from `STAGES`; a new stage is one entry here.

Settings that change how a stage runs but not what it produces (workers, log/eval/checkpoint
intervals) are marked where they are defined, `Annotated[int, RUNTIME_ONLY]`, and never enter a
hash: changing them neither reruns the stage nor stops a training run from resuming."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Stage:
    name: str
    resources: dict[str, int]  # StageResources defaults of one job
    upstream: str | None = None  # stage whose hash is chained into this one's
    fields: tuple[str, ...] | None = None  # dotted experiment fields the hash covers; None: no hash of its own
    version: int = 1  # bump when the stage's output format changes, to invalidate old outputs
    per_shard: bool = False  # one unit of work per shard, several shards per job (resources.<stage>.shards_per_job)


# Resources, names and the work_dir never enter a hash: they change where and how fast, not what.
# Runtimes of per-shard stages are minutes per shard (a job of K shards asks for K x runtime).
STAGES: tuple[Stage, ...] = (
    Stage("plan", dict(mem_mb=2000, runtime=30)),  # the plan records the shard hash
    Stage("shard", dict(cpus=1, mem_mb=4000, runtime=20), None, ("paths.audio_dir", "data"), per_shard=True),
    Stage(
        "train_autoencoder",
        dict(cpus=4, mem_mb=32000, runtime=1440, gpus=1, signal_seconds=300),
        "shard",
        ("autoencoder", "seed"),
    ),
    Stage(
        "pre_encode",
        dict(cpus=4, mem_mb=16000, runtime=30, gpus=1),
        "shard",
        ("autoencoder", "pre_encode"),
        per_shard=True,
    ),
    Stage("index", dict(mem_mb=4000, runtime=30)),  # the index records the pre_encode hash
    Stage(
        "train", dict(cpus=8, mem_mb=64000, runtime=1440, gpus=1, signal_seconds=300), "pre_encode", ("train", "seed")
    ),
    Stage("sample", dict(cpus=4, mem_mb=16000, runtime=60, gpus=1), "train", ("sample", "seed")),
)
STAGE_NAMES = tuple(stage.name for stage in STAGES)
PER_SHARD_STAGES = tuple(stage.name for stage in STAGES if stage.per_shard)
HASHED_STAGES = {stage.name: stage for stage in STAGES if stage.fields is not None}


RUNTIME_ONLY_KEY = "x-runtime-only"  # JSON Schema annotation of a RUNTIME_ONLY field (the reference shows it)


class _RuntimeOnly:
    def __repr__(self) -> str:
        return "RUNTIME_ONLY"

    def __get_pydantic_json_schema__(self, core_schema: Any, handler: Any) -> dict[str, Any]:
        """The field's schema with `"x-runtime-only": true`, so the schema and the reference say it."""
        return {**handler(core_schema), RUNTIME_ONLY_KEY: True}


RUNTIME_ONLY = _RuntimeOnly()  # `Annotated` metadata of a field that never enters a stage hash
