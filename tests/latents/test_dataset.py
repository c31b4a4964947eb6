"""The training dataset on real HDF5 stores: crop arithmetic, the rank split of the global stream,
DataLoader workers, normalisation, posterior samples, holdout and codes."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from pipeline.errors import UserFacingError
from pipeline.latents.dataset import (
    CROP_TAG,
    NOISE_TAG,
    LatentCrops,
    LatentStats,
    RankBatches,
    StreamPosition,
    collate,
    crop_window,
    denormalise,
    epoch_order,
    eval_batches,
    make_loader,
    normalise,
    read_item_table,
    split_holdout,
    stream_items,
)
from tests.latents.stores import LATENT_DIM, write_test_index, write_test_store

SHARD_LENGTHS = ([5, 9, 3, 14, 1], [12, 7, 20], [6, 2, 11, 8])


@pytest.fixture
def stores(tmp_path: Path) -> list[Path]:
    metadata = [{"title": "a", "bpm": 120}, {"title": "b"}, {"title": "c", "bpm": 90}, {"title": "d"}, {}]
    return [
        write_test_store(tmp_path / "latents" / f"shard-{number:06d}.h5", lengths, seed=number, metadata=metadata)
        for number, lengths in enumerate(SHARD_LENGTHS)
    ]


@pytest.fixture
def index(stores: list[Path]) -> Path:
    return write_test_index(stores[0].parent, stores)


def raw_rows(table, item: int, name: str = "latents") -> np.ndarray:
    """Item `item`'s stored rows, read from its own shard store by key (not through the index)."""
    key = table.keys[item]
    store = Path(table.files[0]).parent / f"{key.split('/')[0]}.h5"
    with h5py.File(store, "r") as file:
        row = list(file["index/key"].asstr()[()]).index(key)
        offset, length = int(file["index/offset"][row]), int(file["index/length"][row])
        return file[name][offset : offset + length]


def open_files(under: Path) -> list[str]:
    """HDF5 files this process holds open below `under`."""
    ids = h5py.h5f.get_obj_ids(h5py.h5f.OBJ_ALL, h5py.h5f.OBJ_FILE)
    names = [file_id.name.decode() if isinstance(file_id.name, bytes) else file_id.name for file_id in ids]
    return [name for name in names if name.startswith(str(under))]


# --- 1. crop arithmetic -----------------------------------------------------------------------------
def expected_crop(length: int, crop: int, draw: float, seconds_start: float, rate: float):
    """The crop written differently: enumerate the possible starts and index them by the draw."""
    starts = list(range(0, max(length - crop, 0) + 1))
    start = starts[math.floor(draw * len(starts))]
    real = min(length, crop)
    mask = [True] * real + [False] * (crop - real)
    return start, real, mask, (seconds_start * rate + start) / rate


def test_crop_window_over_1000_random_cases():
    rng = np.random.default_rng(7)
    for _ in range(1000):
        length, crop = int(rng.integers(0, 400)), int(rng.integers(1, 300))
        draw, seconds_start, rate = float(rng.random()), float(rng.uniform(0, 5000)), float(rng.uniform(5, 200))
        window = crop_window(length, crop, draw)
        start, real, mask, seconds = expected_crop(length, crop, draw, seconds_start, rate)
        assert (window.offset, window.frames, window.pad) == (start, real, crop - real)
        assert 0 <= window.offset and window.offset + window.frames <= length
        assert window.mask().tolist() == mask
        assert window.seconds_start(seconds_start, rate) == pytest.approx(seconds, rel=1e-12, abs=1e-9)
    assert crop_window(10, 4, 0.999999).offset == 6 and crop_window(10, 4, 0.0).offset == 0
    with pytest.raises(ValueError):
        crop_window(10, 4, 1.0)


def test_dataset_crops_over_1000_items_and_epochs(tmp_path: Path):
    """4 stores (latent rates and crops differ) x 25 items x 10 epochs: rows, mask and timing from the store."""
    rng = np.random.default_rng(3)
    seed = 11
    for number, (rate, crop) in enumerate([(21.5, 1), (25.0, 7), (43.07, 32), (125.0, 100)]):
        lengths = rng.integers(1, 150, 25).tolist()
        starts = rng.uniform(0, 3000, 25).tolist()
        store = write_test_store(
            tmp_path / f"s{number}" / "shard-000000.h5",
            lengths,
            seed=number,
            seconds_start=starts,
            attributes={"latent_rate": rate},
        )
        dataset = LatentCrops(read_item_table([store]), crop, seed)
        for item, epoch in itertools.product(range(25), range(10)):
            example = dataset[(item, epoch)]
            draw = np.random.default_rng([seed, epoch, item, CROP_TAG]).random()
            start, real, mask, seconds = expected_crop(lengths[item], crop, draw, starts[item], rate)
            rows = raw_rows(dataset.table, item)[start : start + real].astype(np.float32).T
            assert example["latents"].shape == (LATENT_DIM, crop) and example["latents"].dtype == torch.float32
            assert np.array_equal(example["latents"][:, :real].numpy(), rows)
            assert not example["latents"][:, real:].any()
            assert example["mask"].tolist() == mask
            assert example["seconds_start"] == pytest.approx(seconds, rel=1e-12)
            assert example["seconds_total"] == 100.0
        dataset.close()


# --- 2. the stream split by rank --------------------------------------------------------------------
@pytest.mark.parametrize("world_size", [1, 2, 3])
@pytest.mark.parametrize("accum", [1, 2])
@pytest.mark.parametrize("batch", [1, 3, 4])
def test_rank_batches_cover_every_item_once_per_epoch(world_size: int, accum: int, batch: int):
    items, seed, epochs = 11, 5, 3
    global_batch = batch * world_size * accum
    steps = math.ceil(epochs * items / global_batch) + 1
    per_rank = [
        list(itertools.islice(RankBatches(items, seed, 0, batch, world_size, rank, accum), steps * accum))
        for rank in range(world_size)
    ]
    assert all(len(micro) == batch for batches in per_rank for micro in batches)  # every batch full
    single = list(itertools.islice(RankBatches(items, seed, 0, global_batch), steps))
    for step in range(steps):
        union = [
            pair
            for micro in range(accum)
            for rank in range(world_size)
            for pair in per_rank[rank][step * accum + micro]
        ]
        assert union == single[step] == stream_items(items, seed, step * global_batch, global_batch)
    everything = [pair for batches in per_rank for micro in batches for pair in micro]
    assert len(set(everything)) == len(everything)  # no (item, epoch) twice
    for epoch in range(epochs):
        assert sorted(item for item, seen in everything if seen == epoch) == list(range(items))
    for rank in range(world_size):  # resuming at step k is the tail of the uninterrupted sequence
        for start_step in (1, steps // 2):
            resumed = itertools.islice(RankBatches(items, seed, start_step, batch, world_size, rank, accum), accum * 2)
            assert list(resumed) == per_rank[rank][start_step * accum : (start_step + 2) * accum]


def test_epoch_orders_and_stream_positions():
    assert sorted(epoch_order(9, 1, 0)) == list(range(9))
    assert not np.array_equal(epoch_order(9, 1, 0), epoch_order(9, 1, 1))
    assert np.array_equal(epoch_order(9, 1, 4), np.random.default_rng([1, 4]).permutation(9))
    assert StreamPosition.of(23, 9) == StreamPosition(epoch=2, index=5)
    assert stream_items(9, 1, 23, 1) == [(int(epoch_order(9, 1, 2)[5]), 2)]
    with pytest.raises(ValueError):
        RankBatches(9, 1, 0, 2, world_size=2, rank=2)


# --- 3. DataLoader workers --------------------------------------------------------------------------
def test_loader_with_workers_equals_inline_and_opens_files_in_workers(index: Path, tmp_path: Path):
    table, _ = split_holdout(read_item_table(index), 2)
    dataset = LatentCrops(table, 8, seed=3, normalise="per_channel", posterior_sample=True, fields=("bpm",))
    batches = RankBatches(len(table), 3, 0, 3, world_size=2, rank=1, accum=2)
    assert open_files(tmp_path) == [] and not dataset.is_open  # nothing opened to plan
    loader = make_loader(dataset, batches, num_workers=2, prefetch_factor=2)
    from_workers = list(itertools.islice(loader, 7))
    assert open_files(tmp_path) == [] and not dataset.is_open  # the workers read, not the parent
    del loader
    inline = list(itertools.islice(make_loader(dataset, batches, num_workers=0), 7))
    assert dataset.is_open  # num_workers=0 reads in this process
    for mine, theirs in zip(from_workers, inline):
        assert torch.equal(mine["latents"], theirs["latents"]) and torch.equal(mine["mask"], theirs["mask"])
        assert mine["key"] == theirs["key"] and mine["metadata"] == theirs["metadata"]
        assert torch.equal(mine["seconds_start"], theirs["seconds_start"])
    expected = [pair for micro in itertools.islice(batches, 7) for pair in micro]
    assert [(int(i), int(e)) for batch in inline for i, e in zip(batch["item"], batch["epoch"])] == expected
    keys_only = make_loader(dataset, batches, num_workers=1, collate_fn=lambda examples: [e["key"] for e in examples])
    assert next(iter(keys_only)) == inline[0]["key"]  # a caller's collate_fn, run in the worker
    assert open_files(tmp_path) == [] and not dataset.is_open  # make_loader closed the parent's handles
    assert open_files(tmp_path) == [] and not dataset.is_open


def test_collate_stacks_and_lists(index: Path):
    dataset = LatentCrops(read_item_table(index), 6, seed=0, fields=("title", "bpm"))
    batch = collate([dataset[(0, 0)], dataset[(1, 0)], dataset[(4, 2)]])
    assert batch["latents"].shape == (3, LATENT_DIM, 6) and batch["mask"].shape == (3, 6)
    assert batch["seconds_total"].tolist() == [100.0] * 3 and batch["seconds_start"].dtype == torch.float64
    assert batch["metadata"] == {"title": ["a", "b", None], "bpm": [120, None, None]}
    assert batch["key"] == ["shard-000000/item-000", "shard-000000/item-001", "shard-000000/item-004"]
    assert batch["mask"][2].tolist() == [True] + [False] * 5  # a 1-frame item, padded


def test_index_reads_the_same_as_the_list_of_stores(index: Path, stores: list[Path]):
    through_index, direct = read_item_table(index), read_item_table(stores)
    assert through_index.keys == direct.keys and np.array_equal(through_index.shard, direct.shard)
    assert np.allclose(through_index.stats.mean, direct.stats.mean) and np.allclose(
        through_index.stats.std, direct.stats.std
    )
    one, other = LatentCrops(through_index, 10, seed=2), LatentCrops(direct, 10, seed=2)
    for item in range(len(direct)):
        assert torch.equal(one[(item, 1)]["latents"], other[(item, 1)]["latents"])


# --- 4. normalisation, posterior samples, float16 -> float32 ----------------------------------------
def all_latents(stores: list[Path]) -> np.ndarray:
    return np.concatenate([h5py.File(store, "r")["latents"][()] for store in stores]).astype(np.float64)


def test_normalisation_modes_against_numpy(index: Path, stores: list[Path]):
    table = read_item_table(index)
    values = all_latents(stores)  # (frames, C)
    assert np.allclose(table.stats.mean, values.mean(axis=0)) and np.allclose(table.stats.std, values.std(axis=0))
    expected_centre = {"none": (0.0, 1.0), "global": (values.mean(), values.std())}
    expected_centre["per_channel"] = (values.mean(axis=0)[:, None], values.std(axis=0)[:, None])
    item = 3  # 14 frames
    raw = raw_rows(table, item).astype(np.float64).T  # (C, frames)
    for mode, (centre, scale) in expected_centre.items():
        example = LatentCrops(table, 14, seed=0, normalise=mode, random_crops=False)[(item, 0)]
        assert np.allclose(example["latents"].numpy(), (raw - centre) / scale, atol=1e-5)
        back = denormalise(example["latents"], table.stats, mode)
        assert torch.allclose(back, torch.from_numpy(raw).float(), atol=1e-4)
        as_numpy = normalise(raw, table.stats, mode)
        assert as_numpy.dtype == np.float64 and np.allclose(as_numpy, (raw - centre) / scale)


def test_global_statistics_are_exact_from_per_channel_ones():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(500, 6)) * rng.uniform(0.1, 3, 6) + rng.normal(size=6)
    stats = LatentStats(values.mean(axis=0), values.std(axis=0), 500)
    centre, scale = stats.centre_and_scale("global")
    assert np.allclose(centre, values.mean()) and np.allclose(scale, values.std())
    collapsed = LatentStats(np.array([1.0, 2.0]), np.array([0.0, 2.0]), 10)
    assert collapsed.centre_and_scale("per_channel")[1].tolist() == [1.0, 2.0]  # a dead channel is not blown up


def test_posterior_sample_reproducible_per_epoch_and_computed_in_float32(index: Path):
    table = read_item_table(index)
    dataset = LatentCrops(table, 25, seed=9, posterior_sample=True, random_crops=False)
    item = 7  # 20 frames
    first, again, later = dataset[(item, 0)], dataset[(item, 0)], dataset[(item, 1)]
    assert torch.equal(first["latents"], again["latents"])
    assert not torch.equal(first["latents"][:, :20], later["latents"][:, :20])
    mean = raw_rows(table, item).astype(np.float32)
    scale = raw_rows(table, item, "latents_scale").astype(np.float32)
    noise = np.random.default_rng([9, 0, item, NOISE_TAG]).standard_normal(mean.shape, dtype=np.float32)
    assert np.array_equal(first["latents"][:, :20].numpy(), (mean + scale * noise).T)  # float32 arithmetic
    assert not first["latents"][:, 20:].any() and first["mask"].sum() == 20
    plain = LatentCrops(table, 25, seed=9, random_crops=False)[(item, 0)]["latents"]
    assert plain.dtype == torch.float32 and np.array_equal(plain[:, :20].numpy(), mean.T)  # float16 values exactly


def test_posterior_sample_needs_the_scale(tmp_path: Path):
    store = write_test_store(tmp_path / "latents" / "shard-000000.h5", [4, 5], with_scale=False)
    with pytest.raises(UserFacingError, match=r"shard-000000.h5 has no /latents_scale.*train.data.posterior_sample"):
        LatentCrops(read_item_table([store]), 4, seed=0, posterior_sample=True)


# --- holdout and codes ------------------------------------------------------------------------------
def test_holdout_takes_the_first_items_of_the_last_shards(index: Path):
    table = read_item_table(index)
    training, held = split_holdout(table, 6)
    assert held.keys == tuple(
        sorted(
            ["shard-000002/item-000", "shard-000002/item-001", "shard-000002/item-002", "shard-000002/item-003"]
            + ["shard-000001/item-000", "shard-000001/item-001"]
        )
    )
    assert set(training.keys).isdisjoint(held.keys) and len(training) + len(held) == len(table)
    assert len(split_holdout(table, 0)[1]) == 0 and split_holdout(table, 0)[0].keys == table.keys
    evaluation = LatentCrops(held, 5, seed=1, random_crops=False)
    for batch in eval_batches(len(held), 4):
        for item, epoch in batch:
            example = evaluation[(item, epoch)]
            rows = raw_rows(held, item)[:5].astype(np.float32).T
            assert np.array_equal(example["latents"][:, : rows.shape[1]].numpy(), rows)
            assert example["seconds_start"] == held.seconds_start[item]  # offset 0
    assert eval_batches(10, 3, world_size=2, rank=1) == [[(3, 0), (4, 0), (5, 0)], [(9, 0)]]


def test_codes_use_the_same_crops(tmp_path: Path):
    store = write_test_store(tmp_path / "latents" / "shard-000000.h5", [9, 3, 30], discrete=True)
    table = read_item_table([store])
    assert table.data_name == "codes" and table.channels == 2 and table.stats is None
    dataset = LatentCrops(table, 8, seed=4)
    example = dataset[(2, 5)]
    window = dataset.window(2, 5)
    rows = raw_rows(table, 2, "codes")[window.offset : window.offset + 8].astype(np.int64).T
    assert example["codes"].dtype == torch.int64 and np.array_equal(example["codes"].numpy(), rows)
    assert collate([example, dataset[(1, 0)]])["codes"].shape == (2, 2, 8)
    with pytest.raises(ValueError, match="discrete codes"):
        LatentCrops(table, 8, seed=4, normalise="global")
