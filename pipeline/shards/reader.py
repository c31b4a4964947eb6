"""Reading shards back: WebDataset samples -> decoded audio, and endless random crops for training.

A sample is `<key>.<flac|wav>` + `<key>.json` (see writer.py). Audio comes back as float32
(channels, samples) at the experiment's sample rate, exactly as the shard stage stored it."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import soundfile as sf
import torch
import webdataset as wds

from pipeline.config.experiment import Experiment
from pipeline.shards.run import load_plan
from pipeline.shards.writer import tar_path
from pipeline.errors import UserFacingError

AUDIO_EXTENSIONS = ("flac", "wav")


@dataclass(frozen=True)
class ShardItem:
    key: str
    audio: np.ndarray  # float32 (channels, samples)
    metadata: dict[str, Any]


def shard_tars(experiment: Experiment) -> list[Path]:
    """Every planned shard tar, in plan order; an error names the missing ones."""
    tars = [tar_path(experiment, shard["index"]) for shard in load_plan(experiment)["shards"]]
    missing = [str(path) for path in tars if not path.is_file()]
    if missing:
        raise UserFacingError(f"{len(missing)} planned shard(s) are missing, run the shard stage: {', '.join(missing[:5])}")
    if not tars:
        raise UserFacingError(f"the plan of experiment '{experiment.name}' has no shards (is audio_dir empty?)")
    return tars


def read_items(tars: Sequence[Path]) -> Iterator[ShardItem]:
    """Decode every sample of `tars`, in order."""
    dataset = wds.WebDataset([str(path) for path in tars], shardshuffle=False, nodesplitter=None,
                             workersplitter=None, empty_check=False)  # fmt: skip
    for sample in dataset:
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


class RandomCrops(torch.utils.data.IterableDataset):
    """Endless random crops of `crop_samples` from the shards, reshuffled every pass.

    Each DataLoader worker reads every shard and keeps every n-th item (so any worker count works with
    any shard count); `exclude` keys (held-out items) are never yielded."""

    def __init__(self, tars: Sequence[Path], crop_samples: int, seed: int, exclude: frozenset[str] = frozenset(),
                 shuffle_buffer: int = 64):  # fmt: skip
        super().__init__()
        self.tars = list(tars)
        self.crop_samples = crop_samples
        self.seed = seed
        self.exclude = exclude
        self.shuffle_buffer = shuffle_buffer

    def __iter__(self) -> Iterator[torch.Tensor]:
        worker = torch.utils.data.get_worker_info()
        worker_id, workers = (worker.id, worker.num_workers) if worker else (0, 1)
        for epoch in range(2**62):
            tar_order = np.random.default_rng([self.seed, epoch]).permutation(len(self.tars))  # same in every worker
            rng = np.random.default_rng([self.seed, epoch, worker_id])
            yielded = 0
            for item in self._shuffled(self._my_items(tar_order, worker_id, workers), rng):
                start = int(rng.integers(0, max(1, item.audio.shape[1] - self.crop_samples + 1)))
                yielded += 1
                yield torch.from_numpy(fixed_crop(item.audio, self.crop_samples, start))
            if yielded == 0:
                raise UserFacingError(
                    f"no training items left in {len(self.tars)} shard(s) after holding out {len(self.exclude)}"
                    + (f" (DataLoader worker {worker_id} of {workers})" if workers > 1 else "")
                )

    def _my_items(self, tar_order: np.ndarray, worker_id: int, workers: int) -> Iterator[ShardItem]:
        count = 0
        for tar in (self.tars[i] for i in tar_order):
            for item in read_items([tar]):
                if item.key in self.exclude:
                    continue
                if count % workers == worker_id:
                    yield item
                count += 1

    def _shuffled(self, items: Iterator[ShardItem], rng: np.random.Generator) -> Iterator[ShardItem]:
        buffer: list[ShardItem] = []
        for item in items:
            buffer.append(item)
            if len(buffer) >= self.shuffle_buffer:
                yield buffer.pop(int(rng.integers(len(buffer))))
        while buffer:
            yield buffer.pop(int(rng.integers(len(buffer))))
