"""`pipeline index EXP`: `<work_dir>/latents/index.h5` over every shard store.

`/latents` (and `/latents_scale`, `/codes`) are HDF5 virtual datasets that map onto the shard files
(by relative name, so the latents folder can move as a whole): plain h5py sees one array.
`/index/*` is the combined item index with offsets into that array plus `/index/shard`; `/stats`
holds the global per-channel mean/std, combined exactly from the per-shard statistics. `/shards/*`
records each store's identity (name, content_sha256, autoencoder weights sha256, stage hash, items,
frames) when the index was built, so `verify` notices a store replaced under the index."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from pipeline import __version__
from pipeline.autoencoder import current_weights_sha256
from pipeline.config.experiment import Experiment
from pipeline.config.hashing import stage_hash
from pipeline.errors import UserFacingError
from pipeline.latents.store import (
    FRAME_DATASETS,
    INDEX_FIELDS,
    INDEX_FORMAT,
    SHARD_IDENTITY_COUNTS,
    SHARD_IDENTITY_STRINGS,
    SHARED_ATTRIBUTES,
    STRING,
    VERSION,
    RunningStats,
    combined_digest,
    create_hashed,
    dataset_digests,
    file_attributes,
    read_index,
    write_stats,
)
from pipeline.layout import layout_of
from pipeline.utils.atomic import atomic_path


def build_index(experiment: Experiment) -> Path:
    from pipeline.shards.plan import load_plan

    layout = layout_of(experiment)
    stores = [layout.store(index) for index in load_plan(experiment).indices]
    missing = [str(store) for store in stores if not store.is_file()]
    if missing:
        raise UserFacingError(f"{len(missing)} shard store(s) missing, run pre-encode first: {', '.join(missing[:5])}")
    if not stores:
        raise UserFacingError("the plan has no shards: nothing to index")
    target = layout.index
    with atomic_path(target) as temporary:
        write_index_file(temporary, stores, stage_hash(experiment, "pre_encode"), current_weights_sha256(experiment))
    return target


def write_index_file(
    path: Path, stores: list[Path], expected_stage_hash: str, expected_weights_sha256: str | None = None
) -> None:
    shards = [_describe(store) for store in stores]
    reference = shards[0]["attributes"]
    for shard in shards:
        _check_belongs(shard, shards[0], expected_stage_hash, expected_weights_sha256)
    with h5py.File(path, "w") as file:
        for name in FRAME_DATASETS:
            if all(name in shard["shapes"] for shard in shards):
                _virtual_dataset(file, name, shards, path.parent)
        _combined_index(file, shards)
        _combined_stats(file, shards)
        _identities(file, shards)
        frames = sum(shard["frames"] for shard in shards)
        file.attrs.update(
            {
                **{name: reference[name] for name in SHARED_ATTRIBUTES},
                "format": INDEX_FORMAT,
                "format_version": VERSION,
                "package_version": __version__,
                "torch_version": reference["torch_version"],
                "h5py_version": h5py.__version__,
                "shards": json.dumps([shard["path"].name for shard in shards]),
                "items": sum(len(shard["index"]["key"]) for shard in shards),
                "frames": frames,
                "seconds": frames / reference["latent_rate"],
            }
        )
        file.attrs["content_sha256"] = combined_digest(dataset_digests(file))


def _check_belongs(shard: dict[str, Any], first: dict[str, Any], stage: str, weights_sha256: str | None) -> None:
    """UserFacingError unless the store has this format version, matches the first store and the experiment."""
    attributes, where = shard["attributes"], shard["path"]
    if attributes.get("format_version") != VERSION or "content_sha256" not in attributes:
        raise UserFacingError(
            f"{where} has store format version {attributes.get('format_version')!r}, "
            f"this version writes {VERSION}: re-run pre-encode"
        )
    different = [name for name in SHARED_ATTRIBUTES if attributes.get(name) != first["attributes"].get(name)]
    if different:
        raise UserFacingError(f"{where} differs from {first['path']} in {different}: re-run pre-encode")
    if attributes.get("stage_hash") != stage:
        raise UserFacingError(
            f"{where} was built for another configuration (stage hash {attributes.get('stage_hash')}, "
            f"experiment {stage}): re-run pre-encode"
        )
    if weights_sha256 is not None and attributes.get("autoencoder_weights_sha256") != weights_sha256:
        raise UserFacingError(
            f"{where} was encoded with other autoencoder weights (sha256 {attributes.get('autoencoder_weights_sha256')}, "
            f"the experiment's weights are {weights_sha256}): re-run pre-encode"
        )


def _identities(file: h5py.File, shards: list[dict[str, Any]]) -> None:
    group = file.create_group("shards")
    create_hashed(group, "name", [shard["path"].name for shard in shards], STRING)
    for name in SHARD_IDENTITY_STRINGS:
        create_hashed(group, name, [str(shard["attributes"][name]) for shard in shards], STRING)
    for name in SHARD_IDENTITY_COUNTS:
        create_hashed(group, name, np.asarray([shard["attributes"][name] for shard in shards], dtype=np.int64))


def _describe(store: Path) -> dict[str, Any]:
    with h5py.File(store, "r") as file:
        attributes = file_attributes(file)
        shapes = {name: (file[name].shape, file[name].dtype) for name in FRAME_DATASETS if name in file}
        stats = {name: file["stats"][name][()] for name in ("mean", "std", "frames") if name in file["stats"]}
        return {
            "path": store,
            "attributes": attributes,
            "shapes": shapes,
            "index": read_index(file),
            "stats": stats,
            "frames": int(file.attrs["frames"]),
        }


def _virtual_dataset(file: h5py.File, name: str, shards: list[dict[str, Any]], directory: Path) -> None:
    """`/name` mapping onto each store's `/name`, in order. Built with h5py's low-level API because its
    VirtualLayout records the creation time in the dataset, and a rebuilt index must be the same bytes
    (Snakemake compares checksums: an index rebuilt from the same stores must not rerun training)."""
    shape, dtype = shards[0]["shapes"][name]
    total = sum(shard["shapes"][name][0][0] for shard in shards)
    width = shape[1]
    creation = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    creation.set_obj_track_times(False)
    creation.set_fill_value(np.zeros(1, dtype=dtype))
    offset = 0
    for shard in shards:
        frames = shard["shapes"][name][0][0]
        relative = Path(shard["path"]).resolve().relative_to(directory.resolve())
        target = h5py.h5s.create_simple((total, width))
        target.select_hyperslab((offset, 0), (frames, width))
        source = h5py.h5s.create_simple((frames, width))
        creation.set_virtual(target, f"./{relative}".encode(), name.encode(), source)
        offset += frames
    space = h5py.h5s.create_simple((total, width))
    h5py.h5d.create(file.id, name.encode(), h5py.h5t.py_create(np.dtype(dtype), logical=True), space, dcpl=creation)


def _combined_index(file: h5py.File, shards: list[dict[str, Any]]) -> None:
    columns: dict[str, list] = {name: [] for name in INDEX_FIELDS}
    shard_column: list[int] = []
    base = 0
    for number, shard in enumerate(shards):
        for name in INDEX_FIELDS:
            values = shard["index"][name]
            columns[name].extend(np.asarray(values) + base if name == "offset" else values)
        shard_column.extend([number] * len(shard["index"]["key"]))
        base += shard["frames"]
    group = file.create_group("index")
    for name in INDEX_FIELDS:
        if name in ("key", "metadata_json"):
            create_hashed(group, name, columns[name], STRING)
        else:
            dtype = np.int64 if name in ("offset", "length") else np.float64
            create_hashed(group, name, np.asarray(columns[name], dtype=dtype))
    create_hashed(group, "shard", np.asarray(shard_column, dtype=np.int32))


def _combined_stats(file: h5py.File, shards: list[dict[str, Any]]) -> None:
    combined = RunningStats()
    for shard in shards:
        stats = shard["stats"]
        if "mean" in stats:
            combined.add_summary(stats["mean"], stats["std"], int(stats["frames"]))
        else:  # discrete stores count frames only
            combined.frames += int(stats.get("frames", 0))
    write_stats(file, combined)
