"""Before training reads a latent: are these the experiment's stores, and are they all still there?

`check_training_stores` reads attributes and /index only. Each problem is a `UserFacingError` that
names the file (or field) and says what rebuilds it. HDF5 virtual datasets read zeros, silently, for a
source file that is missing, so every store the index lists is checked beside it first."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py

from pipeline.autoencoder import current_weights_sha256
from pipeline.config.experiment import Experiment
from pipeline.config.hashing import stage_hash
from pipeline.errors import UserFacingError
from pipeline.latents.dataset import ItemTable, LatentStats, read_item_table
from pipeline.latents.store import (
    INDEX_FORMAT,
    SHARD_IDENTITY_COUNTS,
    SHARD_IDENTITY_STRINGS,
    file_attributes,
    plain_value,
    read_attributes,
)

REBUILD = "rebuild them with `snakemake pre_encode` (or `pipeline pre-encode EXP` then `pipeline index EXP`)"


class ProvenanceError(UserFacingError):
    """The stores cannot be trained on as they are."""


class MissingIndex(ProvenanceError):
    """No latents/index.h5 (or not an index)."""


class MissingStore(ProvenanceError):
    """A store the index reads through is gone (its frames would read as zeros)."""


class ChangedStore(ProvenanceError):
    """A store differs from what the index recorded of it."""


class ForeignStore(ProvenanceError):
    """Stores made by another autoencoder (weights or configuration) or another pre_encode configuration."""


class WrongKind(ProvenanceError):
    """Discrete codes for a continuous model, or continuous latents for a model of codes."""


class NoItems(ProvenanceError):
    """The stores hold no item."""


class MissingField(ProvenanceError):
    """A conditioning field that no item's metadata has."""


@dataclass(frozen=True)
class StoreInfo:
    """What the training stage needs to know of its stores (nothing read from /latents)."""

    index: Path
    latent_dim: int
    latent_rate: float
    sample_rate: int
    is_discrete: bool
    n_codebooks: int
    codebook_size: int
    stats: LatentStats | None
    items: int
    longest_frames: int  # a crop longer than this pads every item: allowed, worth a warning
    has_scale: bool
    table: ItemTable  # the items, for `LatentCrops` (read once here)


def check_training_stores(
    experiment: Experiment, index_path: str | Path, want_discrete: bool, fields: Mapping[str, str] | None = None
) -> StoreInfo:
    """The index's description after every check; `fields` maps each conditioning metadata field to
    the YAML path that asks for it (`train.model.conditioners[1].field`), for the error message."""
    index = Path(index_path)
    attributes = _index_attributes(index)
    stores = _check_stores_present(index)
    _check_kind(index, attributes, want_discrete)
    _check_autoencoder(experiment, index, attributes, stores)
    table = read_item_table(index)
    if len(table) == 0:
        raise NoItems(f"{index} lists no items (every shard store is empty): nothing to train on")
    _check_fields(index, table, fields or {})
    return StoreInfo(
        index=index,
        latent_dim=int(attributes["latent_dim"]),
        latent_rate=float(attributes["latent_rate"]),
        sample_rate=int(attributes["sample_rate"]),
        is_discrete=bool(attributes["is_discrete"]),
        n_codebooks=int(attributes.get("n_codebooks") or 0),
        codebook_size=int(attributes.get("codebook_size") or 0),
        stats=table.stats,
        items=len(table),
        longest_frames=int(table.lengths.max()),
        has_scale=table.has_scale,
        table=table,
    )


def _index_attributes(index: Path) -> dict[str, Any]:
    if not index.is_file():
        raise MissingIndex(
            f"{index}: no latent index; build it with `pipeline index EXP` (or `snakemake pre_encode`, "
            f"which encodes the shards first)"
        )
    try:
        attributes = read_attributes(index)
    except OSError as error:
        raise MissingIndex(
            f"{index} cannot be opened as HDF5 ({error}): rebuild it with `pipeline index EXP`"
        ) from None
    if attributes.get("format") != INDEX_FORMAT:
        raise MissingIndex(
            f"{index} is not a latent index (format {attributes.get('format')!r}, expected {INDEX_FORMAT!r}); "
            f"build latents/index.h5 with `pipeline index EXP`"
        )
    return attributes


def _check_stores_present(index: Path) -> dict[Path, dict[str, Any]]:
    """Each listed store's attributes, after checking it exists and is the store the index recorded."""
    with h5py.File(index, "r") as file:
        recorded = {
            name: [plain_value(value) for value in file["shards"][name][()]]
            for name in ("name", *SHARD_IDENTITY_STRINGS, *SHARD_IDENTITY_COUNTS)
        }
    stores: dict[Path, dict[str, Any]] = {}
    for row, name in enumerate(recorded["name"]):
        store = index.parent / name
        if not store.is_file():
            raise MissingStore(
                f"{store} is missing, but {index} reads its frames (a missing store reads as zeros): {REBUILD}"
            )
        try:
            with h5py.File(store, "r") as handle:
                attributes = file_attributes(handle)
        except OSError as error:
            raise ChangedStore(f"{store} cannot be opened as HDF5 ({error}): {REBUILD}") from None
        changed = [
            f"{column} {attributes.get(column)!r} (index recorded {recorded[column][row]!r})"
            for column in (*SHARD_IDENTITY_STRINGS, *SHARD_IDENTITY_COUNTS)
            if str(attributes.get(column)) != str(recorded[column][row])
        ]
        if changed:
            raise ChangedStore(f"{store} changed after {index} was built: {'; '.join(changed)}; {REBUILD}")
        stores[store] = attributes
    return stores


def _kind(discrete: bool) -> str:
    return "discrete codes (/codes)" if discrete else "continuous latents (/latents)"


def _check_kind(index: Path, attributes: dict[str, Any], want_discrete: bool) -> None:
    discrete = bool(attributes.get("is_discrete"))
    if discrete != want_discrete:
        wanted = "a discrete (rvq/fsq)" if want_discrete else "a continuous (vae)"
        raise WrongKind(
            f"{index} holds {_kind(discrete)}, but the model trains on {_kind(want_discrete)}: "
            f"encode with {wanted} autoencoder, or pick a model family for {_kind(discrete)}"
        )


def _check_autoencoder(
    experiment: Experiment, index: Path, attributes: dict[str, Any], stores: dict[Path, dict[str, Any]]
) -> None:
    """Every store (and the index) made with the experiment's autoencoder weights, configuration and
    pre_encode settings."""
    assert experiment.autoencoder is not None  # current_weights_sha256 raises first
    weights = current_weights_sha256(experiment)
    config = experiment.autoencoder.model.model_dump(mode="json")
    wanted_stage = stage_hash(experiment, "pre_encode")
    for path, found in [*stores.items(), (index, attributes)]:  # name the store itself where one differs
        if found.get("autoencoder_weights_sha256") != weights:
            raise ForeignStore(
                f"{path} was encoded with other autoencoder weights (sha256 {found.get('autoencoder_weights_sha256')}), "
                f"the experiment's weights are {weights}: {REBUILD}"
            )
        stored = _parsed(found.get("autoencoder_config"))
        if stored != config:
            raise ForeignStore(
                f"{path} was encoded by another autoencoder configuration ({_difference(stored, config)}): {REBUILD}"
            )
        if found.get("stage_hash") != wanted_stage:
            raise ForeignStore(
                f"{path} was built for another configuration (pre_encode stage hash {found.get('stage_hash')}, "
                f"the experiment's is {wanted_stage}): {REBUILD}"
            )


def _parsed(text: Any) -> Any:
    try:
        return json.loads(text) if isinstance(text, str) else None
    except json.JSONDecodeError:
        return None


def _difference(stored: Any, wanted: Any, where: str = "autoencoder.model") -> str:
    """The first place two JSON values differ, as `path: stored X, experiment Y`."""
    if isinstance(stored, dict) and isinstance(wanted, dict):
        for key in sorted(set(stored) | set(wanted)):
            if stored.get(key) != wanted.get(key):
                return _difference(stored.get(key), wanted.get(key), f"{where}.{key}")
    return f"{where}: store {json.dumps(stored)}, experiment {json.dumps(wanted)}"


def _check_fields(index: Path, table: ItemTable, fields: Mapping[str, str]) -> None:
    if not fields:
        return
    present: set[str] = set()
    for text in table.metadata_json:
        present.update(json.loads(text or "{}"))
    for name, where in fields.items():
        if name not in present:
            raise MissingField(
                f"{where}: no item of {index} has metadata field {name!r}; "
                f"the items have: {', '.join(sorted(present)) or '(no fields)'}"
            )
