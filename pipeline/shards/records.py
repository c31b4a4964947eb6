"""Typed records of the plan (`shards/plan.json`) and the per-shard manifests (`shard-NNNNNN.json`).

Frozen dataclasses whose `to_json()` is exactly the documented JSON (docs/formats.md) and whose
`from_json()` reads it back; the one reader/writer of the files is `pipeline.shards.plan`. Ledger
entries (`ignored[]`, `rejected[]`), sidecar entries and the codec stay plain JSON objects: they are
passed through, never interpreted field by field. No torch, no experiment import."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.errors import UserFacingError

JsonObject = dict[str, Any]


def _flat(cls, data: Mapping[str, Any]):
    """A record of only scalar fields; a missing or unknown field is a ValueError naming it."""
    names = {field.name for field in dataclasses.fields(cls)}
    required = {
        field.name
        for field in dataclasses.fields(cls)
        if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
    }
    unknown, missing = set(data) - names, required - set(data)
    if unknown or missing:
        raise ValueError(f"{cls.__name__}: missing {sorted(missing)}, unknown {sorted(unknown)}")
    return cls(**data)


@dataclass(frozen=True)
class PlanItem:
    """One item of a shard: a source file or one segment of it."""

    key: str
    relpath: str
    segment: int
    segments: int
    seconds_start: float
    seconds: float
    seconds_total: float

    def to_json(self) -> JsonObject:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PlanItem:
        return _flat(cls, data)


@dataclass(frozen=True)
class SourceFile:
    """An accepted source: its size, header and metadata sidecars (`{kind: {relpath, sha256[, error]}}`)."""

    relpath: str
    size: int
    format: str
    subtype: str
    sample_rate: int
    channels: int
    frames: int
    seconds: float
    sidecars: Mapping[str, JsonObject]

    def to_json(self) -> JsonObject:
        return {**dataclasses.asdict(self), "sidecars": {kind: dict(entry) for kind, entry in self.sidecars.items()}}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SourceFile:
        return _flat(cls, data)


@dataclass(frozen=True)
class ShardEntry:
    index: int
    name: str
    items: tuple[PlanItem, ...]
    seconds: float
    pcm_bytes: int
    digest: str  # what the shard's content depends on in the plan

    @property
    def relpaths(self) -> set[str]:
        return {item.relpath for item in self.items}

    def to_json(self) -> JsonObject:
        return {**dataclasses.asdict(self), "items": [item.to_json() for item in self.items]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ShardEntry:
        return _flat(cls, {**data, "items": tuple(PlanItem.from_json(item) for item in data.get("items", ()))})


@dataclass(frozen=True)
class Budget:
    max_items: int
    max_bytes: int
    pcm_bytes_per_second: int

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Budget:
        return _flat(cls, data)


@dataclass(frozen=True)
class Totals:
    files: int
    items: int
    seconds: float
    rejected: int
    ignored: int
    shards: int

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Totals:
        return _flat(cls, data)


@dataclass(frozen=True)
class Plan:
    format: str
    version: int
    stage_hash: str  # the `shard` stage hash
    audio_dir: str
    budget: Budget
    totals: Totals
    files: tuple[SourceFile, ...]
    shards: tuple[ShardEntry, ...]
    ignored: tuple[JsonObject, ...]  # {relpath, reason}
    rejected: tuple[JsonObject, ...]  # {relpath, stage: "plan", reason}

    @property
    def indices(self) -> list[int]:
        return [shard.index for shard in self.shards]

    def shard(self, index: int) -> ShardEntry:
        """Shard `index`; one that is not in the plan is a user error naming the valid range."""
        count = len(self.shards)
        if not (isinstance(index, int) and 0 <= index < count):
            valid = f"0..{count - 1}" if count else "none: is audio_dir empty?"
            raise UserFacingError(f"shard {index} is not in the plan: it has {count} shard(s) ({valid})")
        return self.shards[index]

    def files_by_relpath(self) -> dict[str, SourceFile]:
        return {source.relpath: source for source in self.files}

    def to_json(self) -> JsonObject:
        return {
            "format": self.format,
            "version": self.version,
            "stage_hash": self.stage_hash,
            "audio_dir": self.audio_dir,
            "budget": dataclasses.asdict(self.budget),
            "totals": dataclasses.asdict(self.totals),
            "files": [source.to_json() for source in self.files],
            "shards": [shard.to_json() for shard in self.shards],
            "ignored": [dict(entry) for entry in self.ignored],
            "rejected": [dict(entry) for entry in self.rejected],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Plan:
        return _flat(
            cls,
            {
                **data,
                "budget": Budget.from_json(data.get("budget", {})),
                "totals": Totals.from_json(data.get("totals", {})),
                "files": tuple(SourceFile.from_json(entry) for entry in data.get("files", ())),
                "shards": tuple(ShardEntry.from_json(entry) for entry in data.get("shards", ())),
                "ignored": tuple(data.get("ignored", ())),
                "rejected": tuple(data.get("rejected", ())),
            },
        )


@dataclass(frozen=True)
class ManifestItem:
    """One sample of a written shard (the fields of its sample JSON that the stage sets)."""

    key: str
    relpath: str
    segment: int
    segments: int
    seconds_start: float
    seconds_total: float
    seconds: float
    frames: int
    sample_rate: int
    channels: int
    original_sample_rate: int
    original_channels: int
    original_format: str
    metadata_error: str | None = None  # a sidecar that could not be used (absent from the JSON when None)

    def sample_fields(self) -> JsonObject:
        """The fields the stage writes into the sample's JSON (everything but `metadata_error`)."""
        fields = dataclasses.asdict(self)
        del fields["metadata_error"]
        return fields

    def to_json(self) -> JsonObject:
        fields = self.sample_fields()
        if self.metadata_error is not None:
            fields["metadata_error"] = self.metadata_error
        return fields

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ManifestItem:
        return _flat(cls, data)


@dataclass(frozen=True)
class Manifest:
    """A written shard: its tar's identity, what it was made from, its items and its rejects."""

    format: str
    version: int
    shard: int
    tar: str  # the tar's file name
    tar_sha256: str
    tar_bytes: int
    stage_hash: str
    plan_digest: str
    sample_rate: int
    channels: int
    codec: JsonObject
    seconds: float
    items: tuple[ManifestItem, ...]
    rejected: tuple[JsonObject, ...]  # ledger entries {relpath, stage: "shard", reason[, segment]}

    @property
    def keys(self) -> list[str]:
        return [item.key for item in self.items]

    def to_json(self) -> JsonObject:
        return {
            **{field.name: getattr(self, field.name) for field in dataclasses.fields(self)},
            "codec": dict(self.codec),
            "items": [item.to_json() for item in self.items],
            "rejected": [dict(entry) for entry in self.rejected],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Manifest:
        return _flat(
            cls,
            {
                **data,
                "items": tuple(ManifestItem.from_json(item) for item in data.get("items", ())),
                "rejected": tuple(data.get("rejected", ())),
            },
        )
