"""`pipeline verify PATH`: check a shard store or the index against its format; a list of problems.

Checks: provenance attributes, the /index columns (lengths, contiguous offsets), the frame data
(width, no NaN/Inf, codes in range, every HDF5 chunk checksum; read in blocks), the content digests
(every dataset's `sha256` and the root `content_sha256`, recomputed), /stats (recomputed from the data
and compared), and where the data came from (the source tar's sha256 for a shard store; for the
index, that every store it lists still has the identity recorded when the index was built). With
`expected` (from an experiment), the autoencoder weights hash and stage hash must be the experiment's."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from pipeline.errors import UserFacingError
from pipeline.latents.store import (
    CHUNK_FRAMES,
    DIGEST_ATTRIBUTE,
    FRAME_DATASETS,
    INDEX_FIELDS,
    INDEX_FORMAT,
    ROOT_ATTRIBUTES,
    SHARD_ATTRIBUTES,
    SHARD_IDENTITY_COUNTS,
    SHARD_IDENTITY_STRINGS,
    VERSION,
    ContentDigest,
    RunningStats,
    combined_digest,
    data_name,
    dataset_digests,
    open_store,
    plain_value,
    read_attributes,
    read_index,
    recompute_digest,
    stored_datasets,
)
from pipeline.layout import Layout
from pipeline.utils.atomic import sha256_file

BLOCK_ROWS = 65536
INDEX_ATTRIBUTES = (*ROOT_ATTRIBUTES, "shards")
IDENTITY = SHARD_IDENTITY_STRINGS + SHARD_IDENTITY_COUNTS  # /shards/* of an index
EXPECTED = ("autoencoder_weights_sha256", "stage_hash")  # what an experiment can demand
STATS_RTOL, STATS_ATOL = 1e-6, 1e-6  # recomputed mean/std differ from the stored ones only by summation order


@dataclass
class Scan:
    """One pass over a frame dataset: bad values, unreadable chunks, its digest and statistics."""

    bad: int = 0
    first_bad: int | None = None
    unreadable: list[tuple[int, int, str]] = field(default_factory=list)  # (first row, end row, error)
    digest: ContentDigest = field(default_factory=ContentDigest)
    stats: RunningStats = field(default_factory=RunningStats)


@dataclass
class Store:
    """An open file under verification."""

    path: Path
    file: h5py.File
    attributes: dict[str, Any]
    check_source: bool
    expected: dict[str, str] | None = None
    index: dict[str, Any] = field(default_factory=dict)
    scans: dict[str, Scan] = field(default_factory=dict)

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


def verify(path: str | Path, check_source: bool = True, expected: dict[str, str] | None = None) -> list[str]:
    """Every problem found in the store or index at `path` (empty: it is sound). `expected`: attribute
    values (weights hash, stage hash) the file must record, e.g. from `pipeline verify --experiment`."""
    try:
        file, attributes = open_store(path)
    except UserFacingError as error:
        return [str(error)]
    with file:
        store = Store(Path(path), file, attributes, check_source, expected)
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
        yield (
            f"/index/offset not contiguous from 0: item {row} ({store.index['key'][row]!r}) starts at "
            f"{int(offsets[row])}, expected {int(expected[row])}"
        )
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
        return
    if name == "codes":
        size = store.attributes.get("codebook_size")
        yield from _report_scan(
            store, dataset, lambda block: (block < 0) | (block >= size), f"code(s) outside [0, {size})"
        )
        return
    yield from _report_scan(store, dataset, lambda block: ~np.isfinite(block), "NaN/Inf value(s)", with_stats=True)
    if "latents_scale" in store.file:
        scale = store.file["latents_scale"]
        if scale.shape != dataset.shape:
            yield f"/latents_scale shaped {scale.shape}, /latents {dataset.shape}"
        yield from _report_scan(store, scale, lambda block: ~np.isfinite(block), "NaN/Inf value(s)")


def _report_scan(
    store: Store, dataset: h5py.Dataset, is_bad: Callable[[np.ndarray], np.ndarray], what: str, with_stats: bool = False
) -> Iterator[str]:
    scan = _scan(dataset, is_bad, with_stats)
    store.scans[dataset.name] = scan
    if scan.unreadable:
        first, end, error = scan.unreadable[0]
        yield (
            f"{dataset.name}: {len(scan.unreadable)} chunk(s) fail to read (HDF5 chunk checksum or damaged file), "
            f"first rows {first}-{end - 1} (item {store.item_at(first)!r}): {error}"
        )
    if scan.bad:
        yield f"{dataset.name}: {scan.bad} {what}, first at row {scan.first_bad} (item {store.item_at(scan.first_bad)!r})"


def _scan(dataset: h5py.Dataset, is_bad: Callable[[np.ndarray], np.ndarray], with_stats: bool) -> Scan:
    """Read `dataset` in blocks; a block that fails is retried chunk by chunk, so one bad chunk is located."""
    scan = Scan()
    for start in range(0, dataset.shape[0], BLOCK_ROWS):
        for first, block in _read_rows(dataset, start, min(start + BLOCK_ROWS, dataset.shape[0]), scan):
            scan.digest.update(block)
            bad = is_bad(block)
            if bad.any():
                scan.bad += int(bad.sum())
                scan.first_bad = (
                    scan.first_bad if scan.first_bad is not None else first + int(np.argmax(bad.any(axis=1)))
                )
            if with_stats:
                scan.stats.add(block)
    return scan


def _read_rows(dataset: h5py.Dataset, start: int, end: int, scan: Scan) -> Iterator[tuple[int, np.ndarray]]:
    try:
        yield start, dataset[start:end]
        return
    except OSError:
        pass
    for first in range(start, end, CHUNK_FRAMES):
        last = min(first + CHUNK_FRAMES, end)
        try:
            yield first, dataset[first:last]
        except OSError as error:
            scan.unreadable.append((first, last, str(error).splitlines()[0]))


def _check_digests(store: Store) -> Iterator[str]:
    """Every dataset's recorded sha256 against its values now, and the root content_sha256."""
    recorded = dataset_digests(store.file)
    unhashed = [name for name, dataset in stored_datasets(store.file).items() if DIGEST_ATTRIBUTE not in dataset.attrs]
    if unhashed:
        yield f"dataset(s) without a {DIGEST_ATTRIBUTE} attribute: {', '.join(unhashed)}"
    for name, digest in recorded.items():
        scan = store.scans.get(name)
        if scan is not None and scan.unreadable:
            continue  # reported by the data check
        now = scan.digest.hexdigest() if scan is not None else recompute_digest(store.file[name], BLOCK_ROWS)
        if now != digest:
            yield (
                f"{name}: content differs from its recorded sha256 (the values were changed after the store was "
                f"written): rebuild it"
            )
    if store.attributes.get("content_sha256") != combined_digest(recorded):
        yield "content_sha256 does not match the datasets' digests (a dataset was added, removed or re-hashed)"


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
    yield from _check_recomputed_stats(store, group)


def _check_recomputed_stats(store: Store, group: h5py.Group) -> Iterator[str]:
    scan = store.scans.get("/latents")
    if scan is None or scan.unreadable or scan.bad or not all(name in group for name in ("mean", "std")):
        return  # nothing sound to compare with (reported elsewhere)
    for name, recomputed in zip(("mean", "std"), scan.stats.mean_std()):
        stored = group[name][()]
        if stored.shape != recomputed.shape or not np.allclose(stored, recomputed, rtol=STATS_RTOL, atol=STATS_ATOL):
            channel = int(np.argmax(np.abs(stored - recomputed))) if stored.shape == recomputed.shape else 0
            yield (
                f"/stats/{name} differs from the statistics of /latents (channel {channel}: stored "
                f"{stored.flat[channel]:.6g}, recomputed {recomputed.flat[channel]:.6g})"
            )


def _check_source(store: Store) -> Iterator[str]:
    if store.is_index or not store.check_source or "source_shard" not in store.attributes:
        return
    tar = Layout.of_store(store.path).shards_dir / store.attributes["source_shard"]
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
    yield from _check_identities(store, [name for name in shards if name not in missing])
    for name in FRAME_DATASETS:
        if name in store.file and store.file[name].is_virtual:
            yield from _check_virtual(store, store.file[name])


def _check_identities(store: Store, present: list[str]) -> Iterator[str]:
    """Each store the index reads through still is the one the index was built over."""
    if "shards" not in store.file:
        yield "no /shards identity records (index built by an older version): re-run index"
        return
    group = store.file["shards"]
    names = list(group["name"].asstr()[()])
    for row, name in enumerate(names):
        if name not in present:
            continue
        recorded = {column: plain_value(group[column][row]) for column in IDENTITY}
        now = read_attributes(store.path.parent / name)
        changed = [
            f"{column}: recorded {recorded[column]}, now {now.get(column)}"
            for column in IDENTITY
            if now.get(column) != recorded[column]
        ]
        if changed:
            yield f"{name} changed since the index was built ({'; '.join(changed)}): re-run index"


def _check_expected(store: Store) -> Iterator[str]:
    """The attributes the experiment demands (its current weights hash and stage hash)."""
    if not store.expected:
        return
    for name, wanted in store.expected.items():
        if store.attributes.get(name) != wanted:
            yield f"{name} is {store.attributes.get(name)}, the experiment's is {wanted}: re-run pre-encode and index"
    if store.is_index and "shards" in store.file:
        group = store.file["shards"]
        for name in (column for column in EXPECTED if column in store.expected and column in group):
            foreign = [
                shard
                for shard, value in zip(group["name"].asstr()[()], group[name].asstr()[()])
                if value != store.expected[name]
            ]
            if foreign:
                yield f"{len(foreign)} store(s) recorded with another {name}, first {foreign[0]}: re-run pre-encode and index"


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


CHECKS: tuple[Check, ...] = (
    _check_attributes,
    _check_index,
    _check_data,
    _check_digests,
    _check_stats,
    _check_source,
    _check_shards,
    _check_expected,
)
