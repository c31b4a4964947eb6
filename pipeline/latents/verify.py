"""`pipeline verify PATH`: check a shard store or the index against its format; a list of problems.

Checks: provenance attributes, the /index columns (lengths, contiguous offsets), the frame data
(width, no NaN/Inf, codes in range; read in blocks), /stats, and where the data came from (the
source tar's sha256 for a shard store; the shard files and virtual datasets for the index)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import h5py
import numpy as np

from pipeline.errors import UserFacingError
from pipeline.latents.inspect import data_name, open_store
from pipeline.latents.store import INDEX_FIELDS, INDEX_FORMAT, ROOT_ATTRIBUTES, SHARD_ATTRIBUTES, VERSION, read_index
from pipeline.utils.atomic import sha256_file

BLOCK_ROWS = 65536
INDEX_ATTRIBUTES = (*ROOT_ATTRIBUTES, "shards")


@dataclass
class Store:
    """An open file under verification."""

    path: Path
    file: h5py.File
    attributes: dict[str, Any]
    check_source: bool
    index: dict[str, Any] = field(default_factory=dict)

    @property
    def is_index(self) -> bool:
        return self.attributes.get("format") == INDEX_FORMAT

    def item_at(self, row: int) -> str:
        """The key of the item that holds frame `row` (for messages)."""
        if "offset" not in self.index or not len(self.index["offset"]):
            return "?"
        number = int(np.searchsorted(self.index["offset"], row, side="right")) - 1
        return str(self.index["key"][max(number, 0)])


Check = Callable[[Store], Iterator[str]]


def verify(path: str | Path, check_source: bool = True) -> list[str]:
    """Every problem found in the store or index at `path` (empty: it is sound)."""
    try:
        file, attributes = open_store(path)
    except UserFacingError as error:
        return [str(error)]
    with file:
        store = Store(Path(path), file, attributes, check_source)
        problems: list[str] = []
        for check in CHECKS:
            try:
                problems.extend(check(store))
            except Exception as error:  # a damaged file: report it, never a traceback
                problems.append(f"{check.__name__.removeprefix('_check_')}: {type(error).__name__}: {error}")
    return problems


def _check_attributes(store: Store) -> Iterator[str]:
    required = INDEX_ATTRIBUTES if store.is_index else ROOT_ATTRIBUTES + SHARD_ATTRIBUTES
    missing = [name for name in required if name not in store.attributes]
    if missing:
        yield f"missing root attribute(s): {', '.join(missing)}"
    if store.attributes.get("format_version") != VERSION:
        yield f"unknown format_version {store.attributes.get('format_version')!r} (this version reads {VERSION})"


def _check_index(store: Store) -> Iterator[str]:
    if "index" not in store.file:
        yield "no /index group"
        return
    store.index = read_index(store.file)
    columns = INDEX_FIELDS + (("shard",) if store.is_index else ())
    missing = [name for name in columns if name not in store.index]
    if missing:
        yield f"missing /index column(s): {', '.join(missing)}"
        return
    lengths = {name: len(store.index[name]) for name in columns}
    items = store.attributes.get("items")
    if len(set(lengths.values())) > 1 or next(iter(lengths.values())) != items:
        yield f"/index columns have lengths {lengths}, attribute items is {items}"
        return
    yield from _check_offsets(np.asarray(store.index["offset"]), np.asarray(store.index["length"]), store)


def _check_offsets(offsets: np.ndarray, lengths: np.ndarray, store: Store) -> Iterator[str]:
    if len(lengths) and (lengths <= 0).any():
        row = int(np.argmax(lengths <= 0))
        yield f"/index/length: {int((lengths <= 0).sum())} item(s) without frames, first {store.index['key'][row]!r}"
    expected = np.concatenate([[0], np.cumsum(lengths)[:-1]]) if len(lengths) else lengths
    if not np.array_equal(offsets, expected):
        row = int(np.argmax(offsets != expected))
        yield (f"/index/offset not contiguous from 0: item {row} ({store.index['key'][row]!r}) starts at "
               f"{int(offsets[row])}, expected {int(expected[row])}")  # fmt: skip
    total, frames, name = int(lengths.sum()), store.attributes.get("frames"), data_name(store.attributes)
    rows = store.file[name].shape[0] if name in store.file else None
    if not total == rows == frames:
        yield f"frame counts disagree: sum of /index/length {total}, data rows {rows}, attribute frames {frames}"


def _check_data(store: Store) -> Iterator[str]:
    name = data_name(store.attributes)
    if name not in store.file:
        yield f"no /{name} dataset"
        return
    dataset = store.file[name]
    width = store.attributes.get("n_codebooks" if name == "codes" else "latent_dim")
    if dataset.ndim != 2 or dataset.shape[1] != width:
        yield f"/{name} shaped {dataset.shape}, expected (frames, {width})"
    if name == "codes":
        yield from _check_codes(store, dataset)
        return
    yield from _check_finite(store, dataset)
    if "latents_scale" in store.file:
        scale = store.file["latents_scale"]
        if scale.shape != dataset.shape:
            yield f"/latents_scale shaped {scale.shape}, /latents {dataset.shape}"
        yield from _check_finite(store, scale)


def _count_bad(dataset: h5py.Dataset, is_bad: Callable[[np.ndarray], np.ndarray]) -> tuple[int, int | None]:
    """(values where `is_bad`, first row with one), reading `BLOCK_ROWS` rows at a time."""
    count, first = 0, None
    for start in range(0, dataset.shape[0], BLOCK_ROWS):
        bad = is_bad(dataset[start : start + BLOCK_ROWS])
        if bad.any():
            count += int(bad.sum())
            first = first if first is not None else start + int(np.argmax(bad.any(axis=1)))
    return count, first


def _check_finite(store: Store, dataset: h5py.Dataset) -> Iterator[str]:
    count, first = _count_bad(dataset, lambda block: ~np.isfinite(block))
    if count:
        yield f"{dataset.name}: {count} NaN/Inf value(s), first at row {first} (item {store.item_at(first)!r})"


def _check_codes(store: Store, dataset: h5py.Dataset) -> Iterator[str]:
    size = store.attributes.get("codebook_size")
    count, first = _count_bad(dataset, lambda block: (block < 0) | (block >= size))
    if count:
        yield f"/codes: {count} code(s) outside [0, {size}), first at row {first} (item {store.item_at(first)!r})"


def _check_stats(store: Store) -> Iterator[str]:
    if "stats" not in store.file:
        yield "no /stats group"
        return
    group = store.file["stats"]
    frames = int(group["frames"][()]) if "frames" in group else None
    if frames != store.attributes.get("frames"):
        yield f"/stats/frames is {frames}, attribute frames {store.attributes.get('frames')}"
    if store.attributes.get("is_discrete") or not frames:
        return
    for name in ("mean", "std"):
        if name not in group:
            yield f"no /stats/{name}"
            continue
        values = group[name][()]
        if values.shape != (store.attributes.get("latent_dim"),) or not np.isfinite(values).all():
            yield f"/stats/{name} shaped {values.shape} with {int((~np.isfinite(values)).sum())} NaN/Inf value(s)"


def _check_source(store: Store) -> Iterator[str]:
    if store.is_index or not store.check_source or "source_shard" not in store.attributes:
        return
    tar = store.path.parent.parent / "shards" / store.attributes["source_shard"]
    if not tar.is_file():
        yield f"source shard {tar} not found"
    elif sha256_file(tar) != store.attributes.get("source_shard_sha256"):
        yield f"source shard {tar} changed since the store was built (sha256 differs): re-run pre-encode"


def _check_shards(store: Store) -> Iterator[str]:
    if not store.is_index:
        return
    shards = json.loads(store.attributes.get("shards") or "[]")
    missing = [name for name in shards if not (store.path.parent / name).is_file()]
    if missing:
        yield f"shard store(s) listed in the index not found: {', '.join(missing)}"
    numbers = np.asarray(store.index.get("shard", []))
    if len(numbers) and (numbers.min() < 0 or numbers.max() >= len(shards)):
        yield f"/index/shard values outside [0, {len(shards)})"
    for name in ("latents", "latents_scale", "codes"):
        if name in store.file and store.file[name].is_virtual:
            yield from _check_virtual(store, store.file[name])


def _check_virtual(store: Store, dataset: h5py.Dataset) -> Iterator[str]:
    """Each mapped source exists and the rows at both ends of its slot read back as the source's."""
    for source in dataset.virtual_sources():
        file_name = store.path.parent / source.file_name
        if not file_name.is_file():
            continue  # reported with the shard list
        (first, _), (last, _) = source.vspace.get_select_bounds()
        with h5py.File(file_name, "r") as shard:
            data = shard[source.dset_name]
            ends = [(first, data[0]), (last, data[-1])] if len(data) else []
        for row, expected in ends:
            if not np.array_equal(dataset[row], expected, equal_nan=True):
                yield f"{dataset.name} row {row} does not read back from {source.file_name}:{source.dset_name}"


CHECKS: tuple[Check, ...] = (_check_attributes, _check_index, _check_data, _check_stats, _check_source, _check_shards)
