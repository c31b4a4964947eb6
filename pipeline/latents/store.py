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

Integrity: the frame datasets carry HDF5 fletcher32 chunk checksums (a flipped byte fails the read);
every dataset carries a `sha256` attribute of its stored values (see `content_digest`), and the root
attribute `content_sha256` combines them, so a consistent rewrite through h5py (a zeroed chunk) is
caught too. Values must be finite (and fit float16) or the writer refuses the item.

A store is written to a temporary name and renamed when complete (`StoreWriter`)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from pipeline.errors import UserFacingError
from pipeline.utils.atomic import atomic_path

FORMAT = "pipeline-latent-store"
INDEX_FORMAT = "pipeline-latent-index"
VERSION = 2  # 2: fletcher32 chunk checksums, per-dataset sha256, content_sha256
INDEX_FIELDS = ("key", "offset", "length", "seconds_start", "seconds_total", "metadata_json")
FRAME_DATASETS = ("latents", "latents_scale", "codes")  # the per-frame datasets a store may hold
# What an index records of each store it reads through (/shards/<column>), compared by `verify`.
SHARD_IDENTITY_STRINGS = ("content_sha256", "autoencoder_weights_sha256", "stage_hash")
SHARD_IDENTITY_COUNTS = ("items", "frames")
# What every store under one index must share: the autoencoder's geometry and identity, the stage hash.
SHARED_ATTRIBUTES = (
    "sample_rate",
    "latent_rate",
    "downsampling_ratio",
    "latent_dim",
    "is_discrete",
    "n_codebooks",
    "codebook_size",
    "dtype",
    "autoencoder_config",
    "autoencoder_weights_sha256",
    "stage_hash",
)
ROOT_ATTRIBUTES = (
    "format",
    "format_version",
    *SHARED_ATTRIBUTES,
    "package_version",
    "torch_version",
    "h5py_version",
    "items",
    "frames",
    "seconds",
    "content_sha256",
)
# A store's only: the index has no creation time, so that rebuilding it from the same stores gives the same bytes.
SHARD_ATTRIBUTES = ("source_shard", "source_shard_sha256", "created")
STRING = h5py.string_dtype("utf-8")
CHUNK_FRAMES = 4096
DIGEST_ATTRIBUTE = "sha256"  # on every dataset: sha256 of its values (content_digest)
FLOAT16_MAX = float(np.finfo(np.float16).max)


class StoreContentError(UserFacingError):
    """Values that must never reach a store: NaN/Inf, float16 overflow, codes out of range."""


class ContentDigest:
    """sha256 of a dataset's values in row order: numbers as their stored little-endian bytes,
    strings as UTF-8 with an 8-byte length prefix each (so updating block by block equals hashing once)."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()

    def update(self, values: np.ndarray | Iterable[str]) -> None:
        if isinstance(values, np.ndarray) and values.dtype.kind != "O":
            self._hash.update(np.ascontiguousarray(values, dtype=values.dtype.newbyteorder("<")).tobytes())
            return
        for text in values:
            encoded = text.encode("utf-8") if isinstance(text, str) else bytes(text)
            self._hash.update(len(encoded).to_bytes(8, "little") + encoded)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def content_digest(values: np.ndarray | Iterable[str]) -> str:
    digest = ContentDigest()
    digest.update(values)
    return digest.hexdigest()


def combined_digest(dataset_digests: dict[str, str]) -> str:
    """The root `content_sha256`: one line `<dataset name> <sha256>` per dataset, sorted by name."""
    lines = "".join(f"{name} {digest}\n" for name, digest in sorted(dataset_digests.items()))
    return hashlib.sha256(lines.encode("utf-8")).hexdigest()


def stored_datasets(file: h5py.File) -> dict[str, h5py.Dataset]:
    """Every dataset the file itself holds (virtual ones read other files), by full name."""
    found: dict[str, h5py.Dataset] = {}

    def visit(name: str, node: Any) -> None:
        if isinstance(node, h5py.Dataset) and not node.is_virtual:
            found["/" + name] = node

    file.visititems(visit)
    return found


def dataset_digests(file: h5py.File) -> dict[str, str]:
    """The recorded `sha256` attribute of every stored dataset that has one, by full name."""
    return {
        name: plain_value(dataset.attrs[DIGEST_ATTRIBUTE])
        for name, dataset in stored_datasets(file).items()
        if DIGEST_ATTRIBUTE in dataset.attrs
    }


def create_hashed(group: h5py.Group, name: str, data: Any, dtype: Any = None) -> h5py.Dataset:
    """A small dataset written at once, with its content digest attribute."""
    dataset = group.create_dataset(name, data=data, dtype=dtype)
    dataset.attrs[DIGEST_ATTRIBUTE] = recompute_digest(dataset)
    return dataset


def recompute_digest(dataset: h5py.Dataset, block_rows: int = 65536) -> str:
    """The content digest of what `dataset` holds now, read `block_rows` rows at a time."""
    digest = ContentDigest()
    if dataset.dtype.kind == "O":
        digest.update(list(np.atleast_1d(dataset.asstr()[()])))
    elif dataset.ndim == 0:
        digest.update(np.atleast_1d(dataset[()]))
    else:
        for start in range(0, dataset.shape[0], block_rows):
            digest.update(dataset[start : start + block_rows])
    return digest.hexdigest()


def check_finite(values: np.ndarray, what: str) -> None:
    """StoreContentError unless every value is finite and within float16's range."""
    finite = np.isfinite(values)
    if not finite.all():
        raise StoreContentError(f"{what}: {int((~finite).sum())} NaN/Inf value(s) of {values.size}")
    largest = float(np.abs(values).max()) if values.size else 0.0
    if largest > FLOAT16_MAX:
        raise StoreContentError(f"{what}: value {largest:g} overflows float16 (max {FLOAT16_MAX:g})")


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

    def __enter__(self) -> StoreWriter:
        self._atomic = atomic_path(self.path)
        temporary = self._atomic.__enter__()
        self._file = h5py.File(temporary, "w")
        data_name = "codes" if self.discrete else "latents"
        self._datasets = {data_name: self._create(data_name, self._data_dtype())}
        if self.with_scale:
            self._datasets["latents_scale"] = self._create("latents_scale", np.float16)
        self._digests = {name: ContentDigest() for name in self._datasets}
        return self

    def _data_dtype(self) -> Any:
        if not self.discrete:
            return np.float16
        return np.int16 if self.attributes["codebook_size"] <= np.iinfo(np.int16).max + 1 else np.int32

    def _create(self, name: str, dtype: Any) -> h5py.Dataset:
        return self._file.create_dataset(
            name,
            shape=(0, self.width),
            maxshape=(None, self.width),
            dtype=dtype,
            chunks=(CHUNK_FRAMES, self.width),
            compression=self.compression,
            fletcher32=True,
        )

    def append(self, record: ItemRecord, values: np.ndarray, scale: np.ndarray | None = None) -> None:
        """`values`: (frames, width) latents (any float dtype, stored as float16) or integer codes.
        StoreContentError (nothing appended) when they are not finite, overflow float16 or are out of range."""
        if values.shape != (record.length, self.width):
            raise ValueError(
                f"item {record.key}: values shaped {values.shape}, expected ({record.length}, {self.width})"
            )
        name = "codes" if self.discrete else "latents"
        stored = self._checked(record.key, name, values)
        stored_scale = self._checked(record.key, "latents_scale", scale) if self.with_scale else None
        self._extend(name, stored)
        if stored_scale is not None:
            self._extend("latents_scale", stored_scale)
        if not self.discrete:
            self.stats.add(stored)  # the statistics of what readers get back
        else:
            self.stats.frames += len(stored)
        self.items.append(record)
        self.frames += record.length

    def _checked(self, key: str, name: str, values: np.ndarray | None) -> np.ndarray:
        """`values` as stored (cast to the dataset's dtype), after the content checks."""
        what = f"item {key!r} /{name}"
        if values is None:
            raise ValueError(f"{what}: missing (the store has /{name})")
        if name != "codes":
            check_finite(np.asarray(values, dtype=np.float64), what)
        elif values.size and (values.min() < 0 or values.max() >= self.attributes["codebook_size"]):
            raise StoreContentError(
                f"{what}: codes in [{values.min()}, {values.max()}], outside [0, {self.attributes['codebook_size']})"
            )
        return values.astype(self._datasets[name].dtype)

    def _extend(self, name: str, values: np.ndarray) -> None:
        dataset = self._datasets[name]
        start = dataset.shape[0]
        dataset.resize(start + len(values), axis=0)
        dataset[start:] = values
        self._digests[name].update(values)

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
        for name, digest in self._digests.items():
            self._datasets[name].attrs[DIGEST_ATTRIBUTE] = digest.hexdigest()
        write_index(self._file, self.items)
        write_stats(self._file, self.stats)
        seconds = self.frames / self.attributes["latent_rate"]
        attributes = {**self.attributes, "items": len(self.items), "frames": self.frames, "seconds": seconds}
        attributes["content_sha256"] = combined_digest(dataset_digests(self._file))
        self._file.attrs.update(
            {key: str(value) if isinstance(value, str) else value for key, value in attributes.items()}
        )


def write_index(file: h5py.File, items: list[ItemRecord]) -> None:
    offsets = np.cumsum([0] + [item.length for item in items])[:-1]
    group = file.create_group("index")
    create_hashed(group, "key", [item.key for item in items], STRING)
    create_hashed(group, "offset", np.asarray(offsets, dtype=np.int64))
    create_hashed(group, "length", np.asarray([item.length for item in items], dtype=np.int64))
    create_hashed(group, "seconds_start", np.asarray([item.seconds_start for item in items], dtype=np.float64))
    create_hashed(group, "seconds_total", np.asarray([item.seconds_total for item in items], dtype=np.float64))
    create_hashed(group, "metadata_json", [item.metadata_json for item in items], STRING)


def write_stats(file: h5py.File, stats: RunningStats) -> None:
    group = file.create_group("stats")
    mean, std = stats.mean_std()
    if mean.size:
        if not (np.isfinite(mean).all() and np.isfinite(std).all()):
            raise StoreContentError(f"{file.filename}: /stats would hold NaN/Inf values")
        create_hashed(group, "mean", mean)
        create_hashed(group, "std", std)
    create_hashed(group, "frames", np.int64(stats.frames))


def read_attributes(path: str | Path) -> dict[str, Any]:
    """Root attributes as plain Python values."""
    with h5py.File(path, "r") as file:
        return file_attributes(file)


def file_attributes(file: h5py.File) -> dict[str, Any]:
    return {key: plain_value(value) for key, value in file.attrs.items()}


def plain_value(value: Any) -> Any:
    """An HDF5 attribute or element as plain Python: bytes decoded, numpy scalars and arrays unwrapped."""
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


KINDS = {FORMAT: "shard store", INDEX_FORMAT: "index"}


def open_store(path: str | Path) -> tuple[h5py.File, dict[str, Any]]:
    """The open file and its root attributes; UserFacingError naming the file when it is not a store or index."""
    path = Path(path)
    if path.is_dir():
        raise UserFacingError(
            f"{path} is a directory, not a latent store (expected latents/shard-NNNNNN.h5 or latents/index.h5)"
        )
    if not path.is_file():
        raise UserFacingError(f"{path}: no such file")
    try:
        attributes = read_attributes(path)
        file = h5py.File(path, "r")
    except OSError as error:
        raise UserFacingError(f"{path} cannot be opened as HDF5 (truncated or not a latent store): {error}") from None
    if attributes.get("format") not in KINDS:
        file.close()
        raise UserFacingError(
            f"{path} is not a latent store or index (format attribute {attributes.get('format')!r}, "
            f"expected {FORMAT!r} or {INDEX_FORMAT!r})"
        )
    return file, attributes


def data_name(attributes: dict[str, Any]) -> str:
    """The dataset holding the frames: /codes for discrete autoencoders, /latents otherwise."""
    return "codes" if attributes.get("is_discrete") else "latents"
