"""Sections of the experiment: paths, data, resources."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from pipeline.config.base import StrictModel
from pipeline.config.registry import component_union, discover
from pipeline.config.types import ByteSize, ResolvedPath

discover()  # registered components must exist before the unions below are built

STAGES = ("plan", "shard", "train_autoencoder", "pre_encode", "index", "train", "sample")


class PathsConfig(StrictModel):
    audio_dir: ResolvedPath = Field(description="folder of input audio, searched recursively")
    work_dir: ResolvedPath | None = Field(
        None, description="where every stage writes its outputs; default results/<name>"
    )


class ShardBudget(StrictModel):
    """A shard closes when either budget would be exceeded (measured on the encoded output audio)."""

    max_items: int = Field(1000, ge=1, le=10_000_000, description="items per shard")
    max_bytes: ByteSize = Field(1_000_000_000, ge=1024, le=2**50, description="encoded audio bytes per shard")


class DataConfig(StrictModel):
    sample_rate: int = Field(44100, ge=1000, le=768_000, description="Hz; every item is resampled to it")
    channels: Literal[1, 2] = Field(2, description="output channels: mono is duplicated / stereo downmixed to fit")
    multichannel: Literal["downmix", "reject"] = Field(
        "downmix", description="what to do with sources of more than 2 channels"
    )
    extensions: tuple[str, ...] = Field(
        (".wav", ".flac", ".ogg", ".mp3", ".aif", ".aiff"),
        min_length=1,
        description="file extensions treated as audio (case-insensitive)",
    )
    min_item_seconds: float = Field(0.5, ge=0.0, le=86_400.0, description="shorter items (and tails) are rejected")
    max_item_seconds: float | None = Field(
        None, gt=0.0, le=86_400.0, description="longer items are handled per `long_items`; null: no limit"
    )
    long_items: Literal["split", "truncate", "reject"] = Field(
        "split", description="items over max_item_seconds: split into segments, keep the start, or reject"
    )
    segment_overlap_seconds: float = Field(0.0, ge=0.0, le=86_400.0, description="overlap of consecutive segments")
    shard: ShardBudget = Field(default_factory=ShardBudget)
    codec: component_union("codec") = Field(  # type: ignore[valid-type]
        default_factory=lambda: {"type": "flac"}, validate_default=True, description="how shard audio is stored"
    )

    @field_validator("extensions")
    @classmethod
    def _normalise_extensions(cls, extensions: tuple[str, ...]) -> tuple[str, ...]:
        cleaned = []
        for extension in extensions:
            extension = extension.strip().lower()
            if not extension.lstrip("."):
                raise ValueError(f"empty file extension in {list(extensions)}")
            cleaned.append(extension if extension.startswith(".") else "." + extension)
        return tuple(sorted(set(cleaned)))

    @model_validator(mode="after")
    def _check_lengths(self) -> "DataConfig":
        if self.max_item_seconds is not None:
            if self.min_item_seconds > self.max_item_seconds:
                raise ValueError(
                    f"min_item_seconds ({self.min_item_seconds}) must not exceed max_item_seconds "
                    f"({self.max_item_seconds})"
                )
            if self.segment_overlap_seconds >= self.max_item_seconds:
                raise ValueError(
                    f"segment_overlap_seconds ({self.segment_overlap_seconds}) must be below max_item_seconds "
                    f"({self.max_item_seconds})"
                )
        return self


class StageResources(StrictModel):
    """What one job of a stage asks the scheduler for (Snakemake resources / SLURM request)."""

    cpus: int = Field(1, ge=1, le=1024)
    mem_mb: int = Field(4000, ge=1, le=100_000_000)
    runtime: int = Field(60, ge=1, le=525_600, description="minutes")
    gpus: int = Field(0, ge=0, le=64, description="GPUs per node")
    nodes: int = Field(1, ge=1, le=4096)


def _stage(**defaults: int) -> StageResources:
    return Field(default_factory=lambda: StageResources(**defaults))  # type: ignore[return-value]


class ResourcesConfig(StrictModel):
    plan: StageResources = _stage(mem_mb=2000, runtime=30)
    shard: StageResources = _stage(cpus=1, mem_mb=4000, runtime=120)
    train_autoencoder: StageResources = _stage(cpus=4, mem_mb=32000, runtime=1440, gpus=1)
    pre_encode: StageResources = _stage(cpus=4, mem_mb=16000, runtime=120, gpus=1)
    index: StageResources = _stage(mem_mb=4000, runtime=30)
    train: StageResources = _stage(cpus=8, mem_mb=64000, runtime=1440, gpus=1)
    sample: StageResources = _stage(cpus=4, mem_mb=16000, runtime=60, gpus=1)
