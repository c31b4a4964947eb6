"""The HDF5 latent store: one file per shard, readable with plain h5py (layout in docs/formats.md).

    /latents            float16 (total_frames, latent_dim), items concatenated time-major  [continuous]
    /latents_scale      float16, same shape: the VAE posterior scale                        [optional]
    /codes              int16/int32 (total_frames, n_codebooks)                             [discrete]
    /index/key          utf-8 strings, one row per item (all /index datasets have one row per item)
    /index/offset       int64: first frame of the item
    /index/length       int64: frames of the item
    /index/seconds_start, /index/seconds_total   float64: where the item sits in its source file
    /index/metadata_json  utf-8 strings: the shard sample's JSON (fields + sidecar metadata)
    /stats/mean, /stats/std   float64 (latent_dim,) over every frame  [continuous]
    /stats/frames       int64 scalar: frames counted
    root attributes     provenance (see ROOT_ATTRIBUTES)

A store is written to a temporary name and renamed when complete (`StoreWriter`)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from pipeline.utils.atomic import atomic_path

FORMAT = "pipeline-latent-store"
INDEX_FORMAT = "pipeline-latent-index"
VERSION = 1
INDEX_FIELDS = ("key", "offset", "length", "seconds_start", "seconds_total", "metadata_json")
ROOT_ATTRIBUTES = (
    "format", "format_version", "sample_rate", "latent_rate", "downsampling_ratio", "latent_dim", "is_discrete",
    "n_codebooks", "codebook_size", "dtype", "autoencoder_config", "autoencoder_weights_sha256", "stage_hash",
    "package_version", "torch_version", "h5py_version", "created", "items", "frames", "seconds",
)  # fmt: skip
SHARD_ATTRIBUTES = ("source_shard", "source_shard_sha256")
STRING = h5py.string_dtype("utf-8")
CHUNK_FRAMES = 4096


@dataclass
class ItemRecord:
    key: str
    length: int
    seconds_start: float
    seconds_total: float
    metadata_json: str


@dataclass
class RunningStats:
    """Per-channel sums in float64: exact enough for mean/std over millions of frames."""

    total: np.ndarray | None = None
    squares: np.ndarray | None = None
    frames: int = 0

    def add(self, latents: np.ndarray) -> None:
        values = latents.astype(np.float64)
        if self.total is None:
            self.total, self.squares = np.zeros(values.shape[1]), np.zeros(values.shape[1])
        self.total += values.sum(axis=0)
        self.squares += (values * values).sum(axis=0)
        self.frames += len(values)

    def add_summary(self, mean: np.ndarray, std: np.ndarray, frames: int) -> None:
        """Fold in another set's mean/std over `frames` frames (exact: the sums are recovered)."""
        if frames == 0:
            return
        if self.total is None:
            self.total, self.squares = np.zeros(len(mean)), np.zeros(len(mean))
        self.total += mean * frames
        self.squares += (std * std + mean * mean) * frames
        self.frames += frames

    def mean_std(self) -> tuple[np.ndarray, np.ndarray]:
        if self.total is None or self.frames == 0:
            return np.zeros(0), np.zeros(0)
        mean = self.total / self.frames
        variance = np.maximum(self.squares / self.frames - mean * mean, 0.0)
        return mean, np.sqrt(variance)


@dataclass
class StoreWriter:
    """Append items (in order) to a store that appears at `path` only when `close()` succeeds."""

    path: Path
    attributes: dict[str, Any]
    width: int  # latent_dim, or n_codebooks for codes
    discrete: bool
    with_scale: bool = False
    compression: str | None = None
    items: list[ItemRecord] = field(default_factory=list)
    frames: int = 0
    stats: RunningStats = field(default_factory=RunningStats)

    def __enter__(self) -> "StoreWriter":
        self._atomic = atomic_path(self.path)
        temporary = self._atomic.__enter__()
        self._file = h5py.File(temporary, "w")
        data_name = "codes" if self.discrete else "latents"
        self._datasets = {data_name: self._create(data_name, self._data_dtype())}
        if self.with_scale:
            self._datasets["latents_scale"] = self._create("latents_scale", np.float16)
        return self

    def _data_dtype(self) -> Any:
        if not self.discrete:
            return np.float16
        return np.int16 if self.attributes["codebook_size"] <= np.iinfo(np.int16).max + 1 else np.int32

    def _create(self, name: str, dtype: Any) -> h5py.Dataset:
        return self._file.create_dataset(
            name, shape=(0, self.width), maxshape=(None, self.width), dtype=dtype,
            chunks=(CHUNK_FRAMES, self.width), compression=self.compression,
        )  # fmt: skip

    def append(self, record: ItemRecord, values: np.ndarray, scale: np.ndarray | None = None) -> None:
        """`values`: (frames, width) latents (any float dtype, stored as float16) or integer codes."""
        if values.shape != (record.length, self.width):
            raise ValueError(f"item {record.key}: values shaped {values.shape}, expected ({record.length}, {self.width})")
        name = "codes" if self.discrete else "latents"
        stored = values.astype(self._datasets[name].dtype)
        self._extend(name, stored)
        if self.with_scale:
            assert scale is not None
            self._extend("latents_scale", scale.astype(np.float16))
        if not self.discrete:
            self.stats.add(stored)  # the statistics of what readers get back
        else:
            self.stats.frames += len(stored)
        self.items.append(record)
        self.frames += record.length

    def _extend(self, name: str, values: np.ndarray) -> None:
        dataset = self._datasets[name]
        start = dataset.shape[0]
        dataset.resize(start + len(values), axis=0)
        dataset[start:] = values

    def __exit__(self, kind, error, traceback) -> None:
        if kind is None:
            try:
                self._finish()
            except BaseException as failure:  # nothing may reach the final path
                kind, error, traceback = type(failure), failure, failure.__traceback__
        self._file.close()
        self._atomic.__exit__(kind, error, traceback)  # renames on success, deletes the temp file otherwise
        if error is not None:
            raise error

    def _finish(self) -> None:
        write_index(self._file, self.items)
        write_stats(self._file, self.stats)
        seconds = self.frames / self.attributes["latent_rate"]
        attributes = {**self.attributes, "items": len(self.items), "frames": self.frames, "seconds": seconds}
        self._file.attrs.update({key: str(value) if isinstance(value, str) else value for key, value in attributes.items()})


def write_index(file: h5py.File, items: list[ItemRecord]) -> None:
    offsets = np.cumsum([0] + [item.length for item in items])[:-1]
    group = file.create_group("index")
    group.create_dataset("key", data=[item.key for item in items], dtype=STRING)
    group.create_dataset("offset", data=np.asarray(offsets, dtype=np.int64))
    group.create_dataset("length", data=np.asarray([item.length for item in items], dtype=np.int64))
    group.create_dataset("seconds_start", data=np.asarray([item.seconds_start for item in items], dtype=np.float64))
    group.create_dataset("seconds_total", data=np.asarray([item.seconds_total for item in items], dtype=np.float64))
    group.create_dataset("metadata_json", data=[item.metadata_json for item in items], dtype=STRING)


def write_stats(file: h5py.File, stats: RunningStats) -> None:
    group = file.create_group("stats")
    mean, std = stats.mean_std()
    if mean.size:
        group.create_dataset("mean", data=mean)
        group.create_dataset("std", data=std)
    group.create_dataset("frames", data=np.int64(stats.frames))


def read_attributes(path: str | Path) -> dict[str, Any]:
    """Root attributes as plain Python values."""
    with h5py.File(path, "r") as file:
        return file_attributes(file)


def file_attributes(file: h5py.File) -> dict[str, Any]:
    return {key: _plain(value) for key, value in file.attrs.items()}


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def read_index(file: h5py.File) -> dict[str, np.ndarray | list[str]]:
    """The /index columns; strings decoded."""
    group = file["index"]
    columns: dict[str, Any] = {}
    for name in group:
        dataset = group[name]
        columns[name] = list(dataset.asstr()[()]) if dataset.dtype.kind == "O" else dataset[()]
    return columns


def autoencoder_attributes(model: Any, weights_sha256: str) -> dict[str, Any]:
    """Root attributes that describe the autoencoder (shared by shard stores and the index)."""
    return {
        "sample_rate": model.sample_rate,
        "latent_rate": model.latent_rate,
        "downsampling_ratio": model.downsampling_ratio,
        "latent_dim": model.latent_dim,
        "is_discrete": bool(model.is_discrete),
        "n_codebooks": model.n_codebooks or 0,
        "codebook_size": model.codebook_size or 0,
        "autoencoder_config": json.dumps(model.config.model_dump(mode="json"), sort_keys=True),
        "autoencoder_weights_sha256": weights_sha256,
    }
