"""What the training loop reads: fixed-length crops of the latent stores, split by rank on one global stream.

Planning reads `/index` only (`ItemTable`); no latent is read before a crop is asked for.

The stream: epoch e's order is a permutation of the training items drawn from `default_rng([seed, e])`;
the stream is the endless concatenation of the epoch orders. Optimizer step s with global batch
G = B * world_size * accum takes stream positions [s*G, (s+1)*G), and micro-step m of rank r takes
[s*G + (m*world_size + r)*B, +B) (`RankBatches`). So every item is used once per epoch over all ranks,
every rank always has a full batch (no DDP hang at an epoch's end, no sampler padding), the union of
one step's rank batches is the single-process global batch, and the data position is the step number.

Crops are deterministic per (seed, epoch, item): `crop_window` places them, `LatentCrops` reads them
(float16 rows cast to float32 before any arithmetic), optionally draws a VAE posterior sample and
normalises with the stores' statistics. Codes (discrete stores) go through the same table, stream,
crop and padding code, under their own name (`store.data_name`), without sampling or normalisation.

HDF5 files are opened lazily in the process that reads (a DataLoader worker), never before a fork."""

from __future__ import annotations

import json
import math
import multiprocessing.util
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np
import torch
import torch.utils.data

from pipeline.errors import UserFacingError
from pipeline.latents.store import RunningStats, data_name, file_attributes, read_index

Normalise = Literal["none", "global", "per_channel"]
NORMALISE_MODES = ("none", "global", "per_channel")
# Last words of the per-item seeds: the crop offset and the posterior noise draw independent numbers.
CROP_TAG = 0x63726F70  # "crop"
NOISE_TAG = 0x6E6F6973  # "nois"
STD_FLOOR = 1e-5  # a channel whose std is below this (a collapsed VAE channel) is centred, not scaled


# --- statistics and normalisation -----------------------------------------------------------------
@dataclass(frozen=True, eq=False)  # numpy fields: no field-wise ==
class LatentStats:
    """Per-channel mean/std over every frame of the stores (float64, (latent_dim,) each)."""

    mean: np.ndarray
    std: np.ndarray
    frames: int

    def centre_and_scale(self, mode: Normalise) -> tuple[np.ndarray, np.ndarray]:
        """(latent_dim,) arrays to subtract and divide by. `global`: one mean and std over all channels
        and frames, exact from the per-channel ones (every channel counts the same frames)."""
        if mode not in NORMALISE_MODES:
            raise ValueError(f"normalise must be one of {NORMALISE_MODES}, not {mode!r}")
        channels = len(self.mean)
        if mode == "none":
            return np.zeros(channels), np.ones(channels)
        if mode == "global":
            mean = float(self.mean.mean())
            variance = max(float(np.mean(self.std**2 + self.mean**2)) - mean * mean, 0.0)
            centre, scale = np.full(channels, mean), np.full(channels, math.sqrt(variance))
        else:
            centre, scale = self.mean.astype(np.float64), self.std.astype(np.float64)
        return centre, np.where(scale > STD_FLOOR, scale, 1.0)


def _column(values: np.ndarray, like: Any) -> Any:
    """(C,) statistics as a (C, 1) column of `like`'s type, dtype and device (channels-first data)."""
    if isinstance(like, torch.Tensor):
        return torch.as_tensor(values.reshape(-1, 1), dtype=like.dtype, device=like.device)
    return values.reshape(-1, 1).astype(like.dtype)


def normalise(latents: Any, stats: LatentStats, mode: Normalise) -> Any:
    """Channels-first latents (..., C, T), numpy or torch: (x - centre) / scale."""
    centre, scale = stats.centre_and_scale(mode)
    return (latents - _column(centre, latents)) / _column(scale, latents)


def denormalise(latents: Any, stats: LatentStats, mode: Normalise) -> Any:
    """The inverse of `normalise`: what the sample stage hands the autoencoder's decoder."""
    centre, scale = stats.centre_and_scale(mode)
    return latents * _column(scale, latents) + _column(centre, latents)


# --- the item table -------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)  # numpy fields: no field-wise ==
class ItemTable:
    """Every item of an index (or of a list of stores), from /index alone.

    `files[file[i]]` holds item i's frames at rows [offsets[i], offsets[i] + lengths[i]); `shard[i]`
    is the store it was encoded into (the index's /index/shard, or the position in the list)."""

    files: tuple[Path, ...]
    file: np.ndarray
    shard: np.ndarray
    keys: tuple[str, ...]
    offsets: np.ndarray
    lengths: np.ndarray
    seconds_start: np.ndarray
    seconds_total: np.ndarray
    metadata_json: tuple[str, ...]
    attributes: dict[str, Any] = field(repr=False)
    stats: LatentStats | None = field(repr=False)
    has_scale: bool = False

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def data_name(self) -> str:
        return data_name(self.attributes)

    @property
    def is_discrete(self) -> bool:
        return bool(self.attributes.get("is_discrete"))

    @property
    def latent_rate(self) -> float:
        return float(self.attributes["latent_rate"])

    @property
    def channels(self) -> int:
        """Latent channels, or codebooks for codes."""
        return int(self.attributes["n_codebooks"] if self.is_discrete else self.attributes["latent_dim"])

    def metadata(self, item: int, fields: Sequence[str]) -> dict[str, Any]:
        """The item's values of `fields` (None where it has none), parsed from its metadata JSON now."""
        values = json.loads(self.metadata_json[item] or "{}")
        return {name: values.get(name) for name in fields}

    def subset(self, items: Sequence[int] | np.ndarray) -> ItemTable:
        """The table of `items` (table indices), in that order."""
        rows = np.asarray(items, dtype=np.int64)
        return ItemTable(
            files=self.files,
            file=self.file[rows],
            shard=self.shard[rows],
            keys=tuple(self.keys[row] for row in rows),
            offsets=self.offsets[rows],
            lengths=self.lengths[rows],
            seconds_start=self.seconds_start[rows],
            seconds_total=self.seconds_total[rows],
            metadata_json=tuple(self.metadata_json[row] for row in rows),
            attributes=self.attributes,
            stats=self.stats,
            has_scale=self.has_scale,
        )


def read_item_table(source: str | Path | Sequence[str | Path]) -> ItemTable:
    """The items of `latents/index.h5`, or of an explicit list of shard stores (read the same way)."""
    paths = [Path(source)] if isinstance(source, (str, Path)) else [Path(path) for path in source]
    if not paths:
        raise ValueError("read_item_table needs an index or at least one store")
    parts = [_read_one(number, path) for number, path in enumerate(paths)]
    first = parts[0]
    for part in parts[1:]:
        if data_name(part["attributes"]) != first["data_name"] or part["width"] != first["width"]:
            raise UserFacingError(f"{part['path']} holds other frames than {first['path']}: not one dataset")
    return ItemTable(
        files=tuple(paths),
        file=np.concatenate([np.full(len(part["key"]), number, np.int32) for number, part in enumerate(parts)]),
        shard=np.concatenate([part["shard"] for part in parts]),
        keys=tuple(key for part in parts for key in part["key"]),
        offsets=np.concatenate([part["offset"] for part in parts]).astype(np.int64),
        lengths=np.concatenate([part["length"] for part in parts]).astype(np.int64),
        seconds_start=np.concatenate([part["seconds_start"] for part in parts]).astype(np.float64),
        seconds_total=np.concatenate([part["seconds_total"] for part in parts]).astype(np.float64),
        metadata_json=tuple(text for part in parts for text in part["metadata_json"]),
        attributes=first["attributes"],
        stats=_combined_stats([part["stats"] for part in parts]),
        has_scale=all(part["has_scale"] for part in parts),
    )


def _read_one(number: int, path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UserFacingError(f"{path}: no such latent store or index")
    with h5py.File(path, "r") as file:
        attributes = file_attributes(file)
        columns = read_index(file)
        name = data_name(attributes)
        stats = {key: file["stats"][key][()] for key in ("mean", "std", "frames") if key in file.get("stats", {})}
        width = file[name].shape[1] if name in file else None
        has_scale = "latents_scale" in file
    shard = columns.get("shard", np.full(len(columns["key"]), number, np.int32))  # a store is its own shard
    columns.update(shard=np.asarray(shard, np.int32), path=path, attributes=attributes, stats=stats)
    return {**columns, "data_name": name, "width": width, "has_scale": has_scale}


def _combined_stats(parts: list[dict[str, Any]]) -> LatentStats | None:
    if len(parts) == 1:
        stats = parts[0]
        if "mean" not in stats:
            return None
        return LatentStats(
            np.asarray(stats["mean"], np.float64), np.asarray(stats["std"], np.float64), int(stats["frames"])
        )
    combined = RunningStats()
    for stats in parts:
        if "mean" in stats:
            combined.add_summary(stats["mean"], stats["std"], int(stats["frames"]))
    mean, std = combined.mean_std()
    return LatentStats(mean, std, combined.frames) if mean.size else None


def split_holdout(table: ItemTable, count: int) -> tuple[ItemTable, ItemTable]:
    """(training, held out): the first `count` items of the last shard, then of the shard before it
    while more are needed, are never trained on. The held-out table is in key order."""
    held: list[int] = []
    for shard in sorted(set(table.shard.tolist()), reverse=True):
        if len(held) >= count:
            break
        held.extend(np.flatnonzero(table.shard == shard)[: count - len(held)].tolist())
    held_set = set(held)
    training = [item for item in range(len(table)) if item not in held_set]
    return table.subset(training), table.subset(sorted(held, key=lambda item: table.keys[item]))


# --- the global stream and its split by rank ------------------------------------------------------
def epoch_order(table_size: int, seed: int, epoch: int) -> np.ndarray:
    """Epoch `epoch`'s item order: a permutation of range(table_size) seeded from (seed, epoch) alone."""
    return np.random.default_rng([seed, epoch]).permutation(table_size)


@dataclass(frozen=True)
class StreamPosition:
    """Where stream position `position` falls: epoch `epoch`, `index`-th item of that epoch's order."""

    epoch: int
    index: int

    @classmethod
    def of(cls, position: int, table_size: int) -> StreamPosition:
        if table_size <= 0:
            raise ValueError("the stream of an empty table has no positions")
        epoch, index = divmod(position, table_size)
        return cls(epoch, index)


class EpochOrders:
    """Epoch orders, the last two computed kept (a batch straddles at most one epoch boundary)."""

    def __init__(self, table_size: int, seed: int):
        if table_size <= 0:
            raise ValueError("no items to draw batches from")
        self.table_size, self.seed = table_size, seed
        self._orders: dict[int, np.ndarray] = {}

    def order(self, epoch: int) -> np.ndarray:
        if epoch not in self._orders:
            if len(self._orders) >= 2:
                del self._orders[min(self._orders)]
            self._orders[epoch] = epoch_order(self.table_size, self.seed, epoch)
        return self._orders[epoch]

    def items(self, start: int, count: int) -> list[tuple[int, int]]:
        """(item, epoch) of stream positions [start, start + count)."""
        found = []
        for position in range(start, start + count):
            at = StreamPosition.of(position, self.table_size)
            found.append((int(self.order(at.epoch)[at.index]), at.epoch))
        return found


def stream_items(table_size: int, seed: int, start: int, count: int) -> list[tuple[int, int]]:
    """(item, epoch) of stream positions [start, start + count): step s's global batch is
    `stream_items(n, seed, s * G, G)`."""
    return EpochOrders(table_size, seed).items(start, count)


@dataclass
class RankBatches:
    """The batch sampler of one rank: from `start_step` on, endless, one list of (item, epoch) per micro-step."""

    table_size: int
    seed: int
    start_step: int
    batch_per_rank: int
    world_size: int = 1
    rank: int = 0
    accum: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} outside world size {self.world_size}")
        if min(self.batch_per_rank, self.accum, self.table_size) < 1 or self.start_step < 0:
            raise ValueError(f"no batches from {self}")

    @property
    def global_batch(self) -> int:
        return self.batch_per_rank * self.world_size * self.accum

    def micro_batch(self, step: int, micro: int, orders: EpochOrders | None = None) -> list[tuple[int, int]]:
        start = step * self.global_batch + (micro * self.world_size + self.rank) * self.batch_per_rank
        return (orders or EpochOrders(self.table_size, self.seed)).items(start, self.batch_per_rank)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        orders = EpochOrders(self.table_size, self.seed)
        step = self.start_step
        while True:
            for micro in range(self.accum):
                yield self.micro_batch(step, micro, orders)
            step += 1


def eval_batches(count: int, batch_size: int, world_size: int = 1, rank: int = 0) -> list[list[tuple[int, int]]]:
    """The held-out items in table (key) order as (item, 0) batches; batch j goes to rank j % world_size."""
    batches = [
        [(item, 0) for item in range(start, min(start + batch_size, count))] for start in range(0, count, batch_size)
    ]
    return batches[rank::world_size]


# --- crops ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CropWindow:
    """Frames [offset, offset + frames) of an item, followed by `pad` zero frames."""

    offset: int
    frames: int
    pad: int

    def mask(self) -> np.ndarray:
        """(frames + pad,) bool: True on the frames read."""
        return np.arange(self.frames + self.pad) < self.frames

    def seconds_start(self, item_seconds_start: float, latent_rate: float) -> float:
        """Where the crop starts in its source file: the item's own start plus the crop offset."""
        return float(item_seconds_start) + self.offset / latent_rate


def crop_window(length: int, crop_frames: int, offset_draw: float) -> CropWindow:
    """The crop of `crop_frames` frames of an item of `length` frames; `offset_draw` in [0, 1) picks the
    offset uniformly among the length - crop_frames + 1 possible ones. Shorter items: offset 0, padded."""
    if crop_frames < 1 or length < 0 or not 0.0 <= offset_draw < 1.0:
        raise ValueError(f"no crop of {crop_frames} frames from {length} with draw {offset_draw}")
    if length <= crop_frames:
        return CropWindow(0, length, crop_frames - length)
    choices = length - crop_frames + 1
    return CropWindow(min(int(offset_draw * choices), choices - 1), crop_frames, 0)


def item_rng(seed: int, epoch: int, item: int, tag: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, item, tag])


# --- the dataset ----------------------------------------------------------------------------------
class LatentCrops(torch.utils.data.Dataset):
    """Map-style dataset indexed by (item, epoch) from `RankBatches` (or `eval_batches`).

    An example: `latents` (C, crop_frames) float32, or `codes` (n_codebooks, crop_frames) int64 for a
    discrete table; `mask` (crop_frames,) bool, True on real frames (padding is zero, after
    normalisation); `seconds_start`, `seconds_total` floats; `key`; `item`, `epoch`; and `metadata`,
    the requested conditioning fields (None where the item has none).

    `random_crops=False`: every crop starts at frame 0 (evaluation). `posterior_sample`: x = mean +
    scale * eps from /latents_scale, eps drawn per (seed, epoch, item)."""

    def __init__(
        self,
        table: ItemTable,
        crop_frames: int,
        seed: int,
        normalise: Normalise = "none",
        posterior_sample: bool = False,
        random_crops: bool = True,
        fields: Sequence[str] = (),
    ):
        if crop_frames < 1:
            raise ValueError(f"crop_frames must be at least 1, not {crop_frames}")
        if normalise not in NORMALISE_MODES:
            raise ValueError(f"normalise must be one of {NORMALISE_MODES}, not {normalise!r}")
        stores = ", ".join(map(str, table.files))
        if table.is_discrete and (normalise != "none" or posterior_sample):
            raise ValueError(f"{stores} holds discrete codes: no normalisation or posterior sample")
        if posterior_sample and not table.has_scale:
            raise UserFacingError(
                f"{stores} has no /latents_scale, so train.data.posterior_sample cannot draw posterior samples: "
                f"set train.data.posterior_sample: false, or re-encode with pre_encode.store_scale: true"
            )
        if normalise != "none" and table.stats is None:
            raise UserFacingError(f"{stores} has no /stats/mean and /stats/std to normalise with ({normalise})")
        self.table, self.crop_frames, self.seed = table, crop_frames, seed
        self.normalise, self.posterior_sample, self.random_crops = normalise, posterior_sample, random_crops
        self.fields = tuple(fields)
        self._handles: dict[int, h5py.File] = {}
        self._datasets: dict[tuple[int, str], h5py.Dataset] = {}
        self._pid: int | None = None
        self._finalizer_pid: int | None = None

    def __len__(self) -> int:
        return len(self.table)

    # Files: opened by the process that reads, closed when it exits; never carried across a fork or pickle.
    def open(self) -> None:
        """Open every file now (the DataLoader's worker_init) and close them when this process exits."""
        for number in range(len(self.table.files)):
            self._file(number)
        if self._finalizer_pid != os.getpid():
            multiprocessing.util.Finalize(self, LatentCrops.close, args=(self,), exitpriority=10)
            self._finalizer_pid = os.getpid()

    def _file(self, number: int) -> h5py.File:
        if self._pid != os.getpid():  # inherited through fork: the parent's handles are not ours to use
            self._handles, self._datasets, self._pid = {}, {}, os.getpid()
        if number not in self._handles:
            self._handles[number] = h5py.File(self.table.files[number], "r")
        return self._handles[number]

    def _dataset(self, number: int, name: str) -> h5py.Dataset:
        """The open dataset `name` of file `number`, looked up once (a lookup per crop costs a fifth of a read)."""
        if self._pid != os.getpid() or (number, name) not in self._datasets:
            file = self._file(number)
            self._datasets[(number, name)] = file[name]
        return self._datasets[(number, name)]

    @property
    def is_open(self) -> bool:
        return self._pid == os.getpid() and bool(self._handles)

    def close(self) -> None:
        if self._pid == os.getpid():
            for handle in self._handles.values():
                handle.close()
        self._handles, self._datasets = {}, {}

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: h5py may already be gone
            pass

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_handles": {}, "_datasets": {}, "_pid": None, "_finalizer_pid": None}

    # Examples.
    def window(self, item: int, epoch: int) -> CropWindow:
        draw = item_rng(self.seed, epoch, item, CROP_TAG).random() if self.random_crops else 0.0
        return crop_window(int(self.table.lengths[item]), self.crop_frames, draw)

    def __getitem__(self, index: tuple[int, int]) -> dict[str, Any]:
        item, epoch = int(index[0]), int(index[1])
        window = self.window(item, epoch)
        values = self._read(item, epoch, window)  # (C, frames)
        padded = np.zeros((values.shape[0], self.crop_frames), dtype=values.dtype)
        padded[:, : window.frames] = values
        table = self.table
        return {
            table.data_name: torch.from_numpy(padded),
            "mask": torch.from_numpy(window.mask()),
            "seconds_start": window.seconds_start(table.seconds_start[item], table.latent_rate),
            "seconds_total": float(table.seconds_total[item]),
            "key": table.keys[item],
            "item": item,
            "epoch": epoch,
            "metadata": table.metadata(item, self.fields),
        }

    def _read(self, item: int, epoch: int, window: CropWindow) -> np.ndarray:
        """The window's frames, channels first: float32 latents (sampled, normalised) or int64 codes."""
        number = int(self.table.file[item])
        start = int(self.table.offsets[item]) + window.offset
        rows = slice(start, start + window.frames)
        if self.table.is_discrete:
            return self._dataset(number, self.table.data_name)[rows].astype(np.int64).T
        values = self._dataset(number, "latents")[rows].astype(np.float32)  # float16 on disk: widen first
        if self.posterior_sample:
            scale = self._dataset(number, "latents_scale")[rows].astype(np.float32)
            noise = item_rng(self.seed, epoch, item, NOISE_TAG).standard_normal(values.shape, dtype=np.float32)
            values = values + scale * noise
        values = np.ascontiguousarray(values.T)
        if self.normalise != "none":
            assert self.table.stats is not None  # checked at construction
            values = normalise(values, self.table.stats, self.normalise)
        return values


def collate(examples: list[dict[str, Any]]) -> dict[str, Any]:
    """A batch: frames (B, C, T) and mask (B, T) stacked; seconds as float64 (B,) tensors; item and
    epoch as int64 (B,) tensors; keys as a list; metadata as {field: [value per example]}."""
    first = examples[0]
    name = "codes" if "codes" in first else "latents"
    fields = first["metadata"].keys()
    return {
        name: torch.stack([example[name] for example in examples]),
        "mask": torch.stack([example["mask"] for example in examples]),
        "seconds_start": torch.tensor([example["seconds_start"] for example in examples], dtype=torch.float64),
        "seconds_total": torch.tensor([example["seconds_total"] for example in examples], dtype=torch.float64),
        "item": torch.tensor([example["item"] for example in examples], dtype=torch.int64),
        "epoch": torch.tensor([example["epoch"] for example in examples], dtype=torch.int64),
        "key": [example["key"] for example in examples],
        "metadata": {name: [example["metadata"][name] for example in examples] for name in fields},
    }


def open_in_worker(worker_id: int) -> None:
    """DataLoader worker_init_fn: the worker opens its own HDF5 handles."""
    info = torch.utils.data.get_worker_info()
    if info is not None:
        info.dataset.open()


def make_loader(
    dataset: LatentCrops,
    batches: RankBatches | Sequence[list[tuple[int, int]]],
    num_workers: int = 0,
    prefetch_factor: int = 2,
    pin_memory: bool = False,
    collate_fn: Callable[[list[dict[str, Any]]], Any] = collate,
) -> torch.utils.data.DataLoader:
    """A DataLoader over `batches` (whole index batches, in order: deterministic at any worker count).
    Workers persist across iterations and open the files themselves; the parent's handles are closed
    first so none crosses the fork. `collate_fn` (run in the workers) defaults to `collate`."""
    dataset.close()
    workers = num_workers > 0
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=batches,
        num_workers=num_workers,
        collate_fn=collate_fn,
        pin_memory=pin_memory,
        worker_init_fn=open_in_worker if workers else None,
        persistent_workers=workers,
        prefetch_factor=prefetch_factor if workers else None,
    )
