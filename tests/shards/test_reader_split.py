"""Readers split items by key before decoding: across K DataLoader workers (and DDP ranks), every
item is decoded exactly once per pass, and together the readers see every item.

Decodes are counted by wrapping `decode_sample`: each process appends the keys it decodes to its own
file (`decodes-<pid>.txt`), so the count covers DataLoader worker processes too."""

from __future__ import annotations

import collections
import os
from pathlib import Path

import pytest
import torch

from pipeline.config import load_experiment
from pipeline.layout import layout_of
from pipeline.shards import reader
from pipeline.shards.plan import load_manifest, load_plan, write_plan
from pipeline.shards.run import write_all_shards
from tests.shards.conftest import _write, experiment_file, tone


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> tuple[list[Path], list[str]]:
    """Three shards of 11 short items (4 + 4 + 3): tars and every key in plan order."""
    directory = tmp_path_factory.mktemp("split")
    for number in range(11):
        _write(
            directory / "audio", f"item{number:02d}.wav", tone(0.2, 16000, 2, 300 + 20 * number), 16000, "WAV", "PCM_16"
        )
    experiment = load_experiment(experiment_file(directory, directory / "audio", directory / "work"))
    write_plan(experiment)
    write_all_shards(experiment, progress=False)
    plan = load_plan(experiment)
    assert len(plan.shards) == 3
    keys = [key for index in plan.indices for key in load_manifest(experiment, index).keys]
    return [layout_of(experiment).shard_tar(index) for index in plan.indices], keys


class Decodes:
    """The keys `decode_sample` was called with, over every process, one file per process."""

    def __init__(self, folder: Path):
        self.folder = folder

    def __call__(self) -> collections.Counter:
        return collections.Counter(line for path in self.folder.iterdir() for line in path.read_text().splitlines())

    def processes(self) -> set[str]:
        return {path.name for path in self.folder.iterdir()}


@pytest.fixture
def decodes(tmp_path, monkeypatch) -> Decodes:
    folder = tmp_path / "decodes"
    folder.mkdir()
    original = reader.decode_sample

    def counting(sample):
        with open(folder / f"decodes-{os.getpid()}.txt", "a", encoding="utf-8") as handle:
            handle.write(sample["__key__"] + "\n")
        return original(sample)

    monkeypatch.setattr(reader, "decode_sample", counting)  # forked DataLoader workers inherit the wrapper
    return Decodes(folder)


def test_two_workers_decode_each_item_exactly_once(shards, decodes):
    tars, keys = shards
    loader = torch.utils.data.DataLoader(
        reader.SplitItems(tars),
        batch_size=None,
        num_workers=2,
        collate_fn=lambda item: item,
        multiprocessing_context="fork",
    )
    seen = [item.key for item in loader]
    assert sorted(seen) == sorted(keys)  # every item, once
    counts = decodes()
    assert counts == collections.Counter(keys)  # each decoded exactly once over both workers
    assert len(decodes.processes()) == 2  # both workers decoded a share
    assert f"decodes-{os.getpid()}.txt" not in decodes.processes()  # and nothing was decoded in this process


def test_ranks_and_workers_partition_the_items(shards, decodes):
    tars, keys = shards
    parts = {}
    for rank in range(2):
        loader = torch.utils.data.DataLoader(
            reader.SplitItems(tars, rank=rank, world_size=2),
            batch_size=None,
            num_workers=2,
            collate_fn=lambda item: item,
            multiprocessing_context="fork",
        )
        parts[rank] = [item.key for item in loader]
    assert not set(parts[0]) & set(parts[1])
    assert sorted(parts[0] + parts[1]) == sorted(keys)
    assert decodes() == collections.Counter(keys)


def test_random_crops_decode_each_item_once_per_pass(shards, decodes):
    """One pass of RandomCrops on each of two ranks: the ranks share the items, held-out ones never decoded."""
    tars, keys = shards
    held_out = frozenset(keys[-2:])
    per_rank = {}
    for rank in range(2):
        crops = reader.RandomCrops(tars, crop_samples=800, seed=3, exclude=held_out, rank=rank, world_size=2)
        before = decodes()
        expected_items = len(keys) - len(held_out)
        mine = expected_items // 2 + (rank < expected_items % 2)
        stream = iter(crops)
        assert all(next(stream).shape == (2, 800) for _ in range(mine))
        per_rank[rank] = decodes() - before
    assert not set(per_rank[0]) & set(per_rank[1])
    assert per_rank[0] + per_rank[1] == collections.Counter(key for key in keys if key not in held_out)


def test_split_defaults_to_one_reader_without_distributed():
    assert reader.Split.current() == reader.Split(0, 1)
    assert reader.Split.current(rank=1, world_size=3) == reader.Split(1, 3)
    with pytest.raises(ValueError, match="rank 3 is outside world_size 2"):
        reader.Split.current(rank=3, world_size=2)
