"""Reading shards back: WebDataset samples -> decoded audio, and endless random crops for training.

A sample is `<key>.<flac|wav>` + `<key>.json` (see writer.py). Audio comes back as float32
(channels, samples) at the experiment's sample rate, exactly as the shard stage stored it."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch

from pipeline.config.experiment import Experiment
from pipeline.errors import UserFacingError
from pipeline.layout import layout_of
from pipeline.shards.plan import load_plan

AUDIO_EXTENSIONS = ("flac", "wav")


@dataclass(frozen=True)
class ShardItem:
    key: str
    audio: np.ndarray  # float32 (channels, samples)
    metadata: dict[str, Any]


def shard_tars(experiment: Experiment) -> list[Path]:
    """Every planned shard tar, in plan order; an error names the missing ones."""
    layout = layout_of(experiment)
    tars = [layout.shard_tar(index) for index in load_plan(experiment).indices]
    missing = [str(path) for path in tars if not path.is_file()]
    if missing:
        raise UserFacingError(
            f"{len(missing)} planned shard(s) are missing, run the shard stage: {', '.join(missing[:5])}"
        )
    if not tars:
        raise UserFacingError(f"the plan of experiment '{experiment.name}' has no shards (is audio_dir empty?)")
    return tars


def tar_samples(tar: Path, keep: Callable[[str], bool] | None = None) -> Iterator[dict[str, Any]]:
    """The samples of one shard tar in member order, as WebDataset groups them (`__key__`, `__url__`,
    one bytes entry per extension). Members of keys that `keep` refuses are skipped unread (tarfile
    seeks past them), so deciding who reads an item costs no I/O or decoding."""
    sample: dict[str, Any] | None = None
    with tarfile.open(tar, "r:") as archive:
        for member in archive:
            if not member.isfile():
                continue
            key, _, extension = member.name.partition(".")  # keys contain no dots (docs/formats.md)
            if sample is None or sample["__key__"] != key:
                if sample is not None and sample["__keep__"]:
                    yield _finished(sample)
                sample = {"__key__": key, "__url__": str(tar), "__keep__": keep is None or keep(key)}
            if sample["__keep__"]:
                sample[extension] = archive.extractfile(member).read()
        if sample is not None and sample["__keep__"]:
            yield _finished(sample)


def _finished(sample: dict[str, Any]) -> dict[str, Any]:
    del sample["__keep__"]
    return sample


def read_items(tars: Sequence[Path], keep: Callable[[str], bool] | None = None) -> Iterator[ShardItem]:
    """Decode every sample of `tars` (those whose key `keep` accepts), in order."""
    for tar in tars:
        for sample in tar_samples(Path(tar), keep):
            yield decode_sample(sample)


def decode_sample(sample: dict[str, Any]) -> ShardItem:
    extension = next((ext for ext in AUDIO_EXTENSIONS if ext in sample), None)
    if extension is None:
        raise UserFacingError(f"shard sample {sample.get('__key__')} in {sample.get('__url__')} has no audio member")
    audio, _ = sf.read(io.BytesIO(sample[extension]), dtype="float32", always_2d=True)
    metadata = json.loads(sample["json"]) if "json" in sample else {}
    return ShardItem(sample["__key__"], np.ascontiguousarray(audio.T), metadata)


def fixed_crop(audio: np.ndarray, samples: int, start: int = 0) -> np.ndarray:
    """`samples` long from `start`, zero-padded at the end when the audio is shorter."""
    piece = audio[:, start : start + samples]
    if piece.shape[1] < samples:
        piece = np.pad(piece, ((0, 0), (0, samples - piece.shape[1])))
    return piece


@dataclass(frozen=True)
class Split:
    """Which items one reader handles: the `part`-th of `parts`, counting items (not shards) in
    reading order, so any worker and rank count works with any shard count and every item is
    decoded by exactly one reader. Decided by key before anything is decoded."""

    part: int = 0
    parts: int = 1

    @classmethod
    def current(cls, rank: int | None = None, world_size: int | None = None) -> Split:
        """This process's DataLoader worker of this DDP rank (rank/world from torch.distributed when
        it is initialised and they are not given, else 0/1)."""
        if rank is None or world_size is None:
            distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
            rank = rank if rank is not None else (torch.distributed.get_rank() if distributed else 0)
            world_size = (
                world_size if world_size is not None else (torch.distributed.get_world_size() if distributed else 1)
            )
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}")
        worker = torch.utils.data.get_worker_info()
        worker_id, workers = (worker.id, worker.num_workers) if worker else (0, 1)
        return cls(rank * workers + worker_id, world_size * workers)

    def keep(self, exclude: frozenset[str] = frozenset()) -> Callable[[str], bool]:
        """A stateful key filter over one pass: the n-th key not in `exclude` is kept when n % parts == part."""
        count = 0

        def keep(key: str) -> bool:
            nonlocal count
            if key in exclude:
                return False
            mine = count % self.parts == self.part
            count += 1
            return mine

        return keep


class SplitItems(torch.utils.data.IterableDataset):
    """One pass over the tars' items, split across DataLoader workers and DDP ranks before decoding."""

    def __init__(
        self,
        tars: Sequence[Path],
        rank: int | None = None,
        world_size: int | None = None,
        exclude: frozenset[str] = frozenset(),
    ):
        super().__init__()
        self.tars = list(tars)
        self.rank, self.world_size = rank, world_size
        self.exclude = exclude

    def __iter__(self) -> Iterator[ShardItem]:
        return read_items(self.tars, Split.current(self.rank, self.world_size).keep(self.exclude))


class RandomCrops(torch.utils.data.IterableDataset):
    """Endless random crops of `crop_samples` from the shards, reshuffled every pass.

    Every pass visits the tars in one order shared by all readers and splits the items among the
    DataLoader workers of every DDP rank by key before decoding (`Split`): each item is decoded once
    per pass, by one reader. `exclude` keys (held-out items) are never read."""

    def __init__(
        self,
        tars: Sequence[Path],
        crop_samples: int,
        seed: int,
        exclude: frozenset[str] = frozenset(),
        shuffle_buffer: int = 64,
        rank: int | None = None,
        world_size: int | None = None,
    ):
        super().__init__()
        self.tars = list(tars)
        self.crop_samples = crop_samples
        self.seed = seed
        self.exclude = exclude
        self.shuffle_buffer = shuffle_buffer
        self.rank, self.world_size = rank, world_size

    def __iter__(self) -> Iterator[torch.Tensor]:
        split = Split.current(self.rank, self.world_size)
        for epoch in range(2**62):
            tar_order = np.random.default_rng([self.seed, epoch]).permutation(len(self.tars))  # same in every reader
            rng = np.random.default_rng([self.seed, epoch, split.part])
            yielded = 0
            items = read_items([self.tars[i] for i in tar_order], split.keep(self.exclude))
            for item in self._shuffled(items, rng):
                start = int(rng.integers(0, max(1, item.audio.shape[1] - self.crop_samples + 1)))
                yielded += 1
                yield torch.from_numpy(fixed_crop(item.audio, self.crop_samples, start))
            if yielded == 0:
                raise UserFacingError(
                    f"no training items left in {len(self.tars)} shard(s) after holding out {len(self.exclude)}"
                    + (
                        f" (reader {split.part} of {split.parts}: DataLoader workers x DDP ranks)"
                        if split.parts > 1
                        else ""
                    )
                )

    def _shuffled(self, items: Iterator[ShardItem], rng: np.random.Generator) -> Iterator[ShardItem]:
        buffer: list[ShardItem] = []
        for item in items:
            buffer.append(item)
            if len(buffer) >= self.shuffle_buffer:
                yield buffer.pop(int(rng.integers(len(buffer))))
        while buffer:
            yield buffer.pop(int(rng.integers(len(buffer))))
