"""`pipeline shard --shard N`: decode, convert and encode one shard's items into a WebDataset tar.

A sample is `<key>.<codec ext>` + `<key>.json`. The tar is deterministic (member order from the plan,
mtime 0, uid/gid 0, no owner names, PAX format) and appears at its final path only when complete;
its manifest is written after it and marks the shard as done."""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from pipeline.audio.convert import AudioRejected, prepare
from pipeline.config.experiment import Experiment
from pipeline.config.hashing import stage_hash
from pipeline.config.registry import build
from pipeline.shards.plan import shard_name, shards_dir
from pipeline.utils.atomic import atomic_path, canonical_json, remove_stale_temps, sha256_file, write_json_atomic

MANIFEST_FORMAT = "pipeline-shard-manifest"
MANIFEST_VERSION = 1
# Fields this stage writes into each sample's JSON; sidecar metadata cannot override them.
RESERVED_FIELDS = ("key", "relpath", "segment", "segments", "seconds_start", "seconds", "seconds_total",
                   "sample_rate", "channels", "frames", "original_sample_rate", "original_channels", "original_format")  # fmt: skip


def tar_path(experiment: Experiment, index: int) -> Path:
    return shards_dir(experiment) / f"{shard_name(index)}.tar"


def manifest_path(experiment: Experiment, index: int) -> Path:
    return shards_dir(experiment) / f"{shard_name(index)}.json"


def is_up_to_date(experiment: Experiment, shard: dict[str, Any]) -> bool:
    """A complete shard for this plan entry and stage hash exists (manifest present, tar size matches)."""
    manifest_file = manifest_path(experiment, shard["index"])
    tar_file = tar_path(experiment, shard["index"])
    if not (manifest_file.is_file() and tar_file.is_file()):
        return False
    try:
        manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (
        manifest.get("stage_hash") == stage_hash(experiment, "shard")
        and manifest.get("plan_digest") == shard["digest"]
        and manifest.get("tar_bytes") == tar_file.stat().st_size
    )


@dataclass
class ShardResult:
    index: int
    items: int = 0
    seconds: float = 0.0
    rejected: list[dict[str, Any]] = field(default_factory=list)
    skipped: bool = False


def write_shard(experiment: Experiment, plan: dict[str, Any], index: int, force: bool = False) -> ShardResult:
    """Write shard `index` of `plan` unless an up-to-date one exists."""
    if not 0 <= index < len(plan["shards"]):
        raise IndexError(f"shard {index} does not exist: the plan has {len(plan['shards'])} shards (0..{len(plan['shards']) - 1})")
    shard = plan["shards"][index]
    if not force and is_up_to_date(experiment, shard):
        manifest = json.loads(manifest_path(experiment, index).read_text(encoding="utf-8"))
        return ShardResult(index, len(manifest["items"]), manifest["seconds"], manifest["rejected"], skipped=True)

    tar_file, manifest_file = tar_path(experiment, index), manifest_path(experiment, index)
    manifest_file.unlink(missing_ok=True)  # the old manifest must not vouch for the tar being rewritten
    for stale in (tar_file, manifest_file):
        remove_stale_temps(stale.parent, stale.name)

    builder = _SampleBuilder(experiment, plan)
    entries: list[dict[str, Any]] = []
    with atomic_path(tar_file) as temp_tar:
        with tarfile.open(temp_tar, "w", format=tarfile.PAX_FORMAT) as archive:
            for entry, members in builder.samples(shard["items"]):
                for name, payload in members:
                    archive.addfile(_member(name, len(payload)), io.BytesIO(payload))
                entries.append(entry)
    manifest = {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "shard": index,
        "tar": tar_file.name,
        "tar_sha256": sha256_file(tar_file),
        "tar_bytes": tar_file.stat().st_size,
        "stage_hash": stage_hash(experiment, "shard"),
        "plan_digest": shard["digest"],
        "sample_rate": experiment.data.sample_rate,
        "channels": experiment.data.channels,
        "codec": experiment.data.codec.model_dump(mode="json"),
        "seconds": sum(entry["seconds"] for entry in entries),
        "items": entries,
        "rejected": builder.rejected,
    }
    write_json_atomic(manifest_file, manifest)
    return ShardResult(index, len(entries), manifest["seconds"], builder.rejected)


def _member(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


class _SampleBuilder:
    """Turns plan items into tar members, decoding each source file once for all its segments."""

    def __init__(self, experiment: Experiment, plan: dict[str, Any]):
        self.data = experiment.data
        self.audio_dir = Path(plan["audio_dir"])
        self.files = {entry["relpath"]: entry for entry in plan["files"]}
        self.codec = build("codec", self.data.codec)
        self.rejected: list[dict[str, Any]] = []
        self._cached: tuple[str, np.ndarray | AudioRejected] | None = None

    def samples(self, items: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], list[tuple[str, bytes]]]]:
        for item in items:
            audio = self._audio(item["relpath"])
            if isinstance(audio, AudioRejected):
                continue
            segment = self._cut(audio, item)
            if segment is None:
                continue
            source = self.files[item["relpath"]]
            entry = {
                **{name: item[name] for name in ("key", "relpath", "segment", "segments", "seconds_start", "seconds_total")},
                "seconds": len(segment) / self.data.sample_rate,
                "frames": len(segment),
                "sample_rate": self.data.sample_rate,
                "channels": self.data.channels,
                "original_sample_rate": source["sample_rate"],
                "original_channels": source["channels"],
                "original_format": source["format"],
            }
            metadata, problem = self._sidecar_metadata(source)
            if problem:
                entry["metadata_error"] = problem
            sample_json = {**{k: v for k, v in metadata.items() if k not in RESERVED_FIELDS}, **entry}
            sample_json.pop("metadata_error", None)
            members = [
                (f"{item['key']}.{self.codec.extension}", self.codec.encode(segment, self.data.sample_rate)),
                (f"{item['key']}.json", canonical_json(sample_json).encode("utf-8")),
            ]
            yield entry, members

    def _audio(self, relpath: str) -> np.ndarray | AudioRejected:
        if self._cached is None or self._cached[0] != relpath:
            source = self.files[relpath]
            try:
                audio: np.ndarray | AudioRejected = prepare(
                    self.audio_dir / relpath, self.data.sample_rate, self.data.channels, self.data.multichannel,
                    expected_frames=source["frames"],
                )  # fmt: skip
            except AudioRejected as rejection:
                audio = rejection
                self.rejected.append({"relpath": relpath, "stage": "shard", "reason": str(rejection)})
            self._cached = (relpath, audio)
        return self._cached[1]

    def _cut(self, audio: np.ndarray, item: dict[str, Any]) -> np.ndarray | None:
        rate = self.data.sample_rate
        start = round(item["seconds_start"] * rate)
        segment = audio[start : start + round(item["seconds"] * rate)]
        if len(segment) < max(1, round(self.data.min_item_seconds * rate)):
            self.rejected.append({"relpath": item["relpath"], "stage": "shard", "segment": item["segment"],
                                  "reason": f"too short after decoding: {len(segment)} frames at {rate} Hz"})  # fmt: skip
            return None
        return segment

    def _sidecar_metadata(self, source: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
        """`<stem>.json` fields and `<stem>.txt` as `prompt`, the way stable-audio-tools reads captions."""
        metadata: dict[str, Any] = {}
        problems = []
        sidecars = source.get("sidecars", {})
        if "json" in sidecars:
            path = self.audio_dir / sidecars["json"]["relpath"]
            try:
                loaded = json.loads(path.read_text(encoding="utf-8"))
                if isinstance(loaded, dict):
                    metadata.update(loaded)
                else:
                    problems.append(f"{sidecars['json']['relpath']}: expected a JSON object, got {type(loaded).__name__}")
            except (OSError, ValueError) as error:
                problems.append(f"{sidecars['json']['relpath']}: {error}")
        if "txt" in sidecars:
            path = self.audio_dir / sidecars["txt"]["relpath"]
            try:
                metadata["prompt"] = path.read_text(encoding="utf-8").strip()
            except (OSError, ValueError) as error:
                problems.append(f"{sidecars['txt']['relpath']}: {error}")
        return metadata, "; ".join(problems) or None
