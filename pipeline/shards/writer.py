"""`pipeline shard --shard N`: decode, convert and encode one shard's items into a WebDataset tar.

A sample is `<key>.<codec ext>` + `<key>.json`. The tar is deterministic (member order from the plan,
mtime 0, uid/gid 0, no owner names, PAX format) and appears at its final path only when complete;
its manifest is written after it and marks the shard as done."""

from __future__ import annotations

import io
import itertools
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.audio.convert import AudioRejected, prepare
from pipeline.config.experiment import Experiment
from pipeline.config.hashing import stage_hash
from pipeline.config.registry import build
from pipeline.config.sections import DataConfig
from pipeline.errors import UserFacingError
from pipeline.layout import layout_of
from pipeline.shards.plan import load_manifest, write_manifest
from pipeline.shards.records import Manifest, ManifestItem, Plan, PlanItem, ShardEntry, SourceFile
from pipeline.shards.sidecars import load_sidecars
from pipeline.utils.atomic import atomic_path, canonical_json, remove_stale_temps, sha256_file

MANIFEST_FORMAT = "pipeline-shard-manifest"
MANIFEST_VERSION = 1


def is_up_to_date(experiment: Experiment, shard: ShardEntry) -> bool:
    """A complete shard for this plan entry and stage hash exists (manifest present, tar size matches)."""
    tar_file = layout_of(experiment).shard_tar(shard.index)
    if not tar_file.is_file():
        return False
    try:
        manifest = load_manifest(experiment, shard.index)
    except UserFacingError:  # missing or damaged: the shard is rewritten
        return False
    return (
        manifest.stage_hash == stage_hash(experiment, "shard")
        and manifest.plan_digest == shard.digest
        and manifest.tar_bytes == tar_file.stat().st_size
    )


@dataclass
class ShardResult:
    index: int
    items: int = 0
    seconds: float = 0.0
    rejected: list[dict[str, Any]] = field(default_factory=list)
    skipped: bool = False


def write_shard(experiment: Experiment, plan: Plan, index: int, force: bool = False) -> ShardResult:
    """Write shard `index` of `plan` in this process unless an up-to-date one exists."""
    shard = plan.shard(index)  # a user error naming the plan's range
    if not force and is_up_to_date(experiment, shard):
        return existing_result(experiment, index)
    return write_shard_from(experiment, shard, map(encode_source, source_tasks(experiment, plan, shard)))


def existing_result(experiment: Experiment, index: int) -> ShardResult:
    manifest = load_manifest(experiment, index)
    return ShardResult(index, len(manifest.items), manifest.seconds, list(manifest.rejected), skipped=True)


def write_shard_from(experiment: Experiment, shard: ShardEntry, encoded: Iterable[EncodedSource]) -> ShardResult:
    """Write the tar, then the manifest, from the shard's encoded sources in plan order."""
    index = shard.index
    layout = layout_of(experiment)
    tar_file, manifest_file = layout.shard_tar(index), layout.manifest(index)
    manifest_file.unlink(missing_ok=True)  # the old manifest must not vouch for the tar being rewritten
    for stale in (tar_file, manifest_file):
        remove_stale_temps(stale.parent, stale.name)

    entries: list[ManifestItem] = []
    rejected: list[dict[str, Any]] = []
    with atomic_path(tar_file) as temp_tar:
        with tarfile.open(temp_tar, "w", format=tarfile.PAX_FORMAT) as archive:
            for source in encoded:
                rejected.extend(source.rejected)
                for entry, members in source.samples:
                    for name, payload in members:
                        archive.addfile(_member(name, len(payload)), io.BytesIO(payload))
                    entries.append(entry)
    manifest = Manifest(
        format=MANIFEST_FORMAT,
        version=MANIFEST_VERSION,
        shard=index,
        tar=tar_file.name,
        tar_sha256=sha256_file(tar_file),
        tar_bytes=tar_file.stat().st_size,
        stage_hash=stage_hash(experiment, "shard"),
        plan_digest=shard.digest,
        sample_rate=experiment.data.sample_rate,
        channels=experiment.data.channels,
        codec=experiment.data.codec.model_dump(mode="json"),
        seconds=sum(entry.seconds for entry in entries),
        items=tuple(entries),
        rejected=tuple(rejected),
    )
    write_manifest(layout, manifest)
    return ShardResult(index, len(entries), manifest.seconds, rejected)


def _member(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


@dataclass(frozen=True)
class SourceTask:
    """One source file's items in a shard: the unit of work a worker process encodes."""

    data: DataConfig
    audio_dir: str
    source: SourceFile
    items: tuple[PlanItem, ...]


@dataclass
class EncodedSource:
    samples: list[tuple[ManifestItem, list[tuple[str, bytes]]]]  # (manifest entry, tar members)
    rejected: list[dict[str, Any]]


def source_tasks(experiment: Experiment, plan: Plan, shard: ShardEntry) -> list[SourceTask]:
    """The shard's items grouped by source file, in plan order (a file is decoded once per shard)."""
    files = plan.files_by_relpath()
    tasks: list[SourceTask] = []
    for relpath, items in itertools.groupby(shard.items, key=lambda item: item.relpath):
        tasks.append(SourceTask(experiment.data, plan.audio_dir, files[relpath], tuple(items)))
    return tasks


def encode_source(task: SourceTask) -> EncodedSource:
    """Decode, convert and encode one source's items; a bad source becomes a reject, not an error."""
    data, source = task.data, task.source
    relpath = source.relpath
    audio_dir = Path(task.audio_dir)
    try:
        audio = prepare(audio_dir / relpath, data.sample_rate, data.channels, data.multichannel, source.frames)
    except AudioRejected as rejection:
        return EncodedSource([], [{"relpath": relpath, "stage": "shard", "reason": str(rejection)}])
    codec = build("codec", data.codec)
    metadata, metadata_error, rejected = _sidecar_metadata(audio_dir, source)
    samples = []
    for item in task.items:
        start = round(item.seconds_start * data.sample_rate)
        segment = audio[start : start + round(item.seconds * data.sample_rate)]
        if len(segment) < max(1, round(data.min_item_seconds * data.sample_rate)):
            rejected.append(
                {
                    "relpath": relpath,
                    "stage": "shard",
                    "segment": item.segment,
                    "reason": f"too short after decoding: {len(segment)} frames at {data.sample_rate} Hz",
                }
            )
            continue
        entry = ManifestItem(
            key=item.key,
            relpath=item.relpath,
            segment=item.segment,
            segments=item.segments,
            seconds_start=item.seconds_start,
            seconds_total=item.seconds_total,
            seconds=len(segment) / data.sample_rate,
            frames=len(segment),
            sample_rate=data.sample_rate,
            channels=data.channels,
            original_sample_rate=source.sample_rate,
            original_channels=source.channels,
            original_format=source.format,
            metadata_error=metadata_error or None,
        )
        sample_json = {**metadata, **entry.sample_fields()}  # the stage's own fields win over sidecar metadata
        members = [
            (f"{item.key}.{codec.extension}", codec.encode(segment, data.sample_rate)),
            (f"{item.key}.json", canonical_json(sample_json).encode("utf-8")),
        ]
        samples.append((entry, members))
    return EncodedSource(samples, rejected)


def _sidecar_metadata(audio_dir: Path, source: SourceFile) -> tuple[dict[str, Any], str | None, list[dict]]:
    """Sidecar fields for the sample JSON, the items' `metadata_error`, and ledger entries for sidecars
    that became unusable after the plan checked them (the plan already lists the ones it found)."""
    metadata, problems = load_sidecars(audio_dir, source.sidecars)
    error = "; ".join(f"{relpath}: {reason}" for relpath, reason in problems) or None
    known = {entry["relpath"] for entry in source.sidecars.values() if "error" in entry}
    rejected = [
        {"relpath": relpath, "stage": "shard", "reason": f"metadata sidecar not used: {reason}"}
        for relpath, reason in problems
        if relpath not in known
    ]
    return metadata, error, rejected
