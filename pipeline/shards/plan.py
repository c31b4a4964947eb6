"""`pipeline plan`: list audio_dir, read headers (no decoding), cut long items into segments, assign
items to shards by the item and byte budget, and write `<work_dir>/shards/plan.json`.

Every file under audio_dir is accounted for: audio files become items or plan-stage rejects (hidden,
unreadable, not a regular file, not audio, ...); sidecars are merged or rejected; other files are listed
as ignored with the reason. Only regular files are ever opened."""

from __future__ import annotations

import json
import math
import os
import posixpath
import stat
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipeline.audio.convert import AudioRejected, Header, check_channel_layout, read_header
from pipeline.audio.files import stat_regular_file
from pipeline.config.experiment import Experiment
from pipeline.config.hashing import canonical_digest, stage_hash
from pipeline.errors import UserFacingError
from pipeline.layout import Layout, layout_of, shard_name
from pipeline.shards.keys import item_key
from pipeline.shards.records import Budget, Manifest, Plan, PlanItem, ShardEntry, SourceFile, Totals
from pipeline.shards.sidecars import check_sidecar, sidecar_kind
from pipeline.utils.atomic import write_json_atomic, write_json_if_changed

PLAN_FORMAT = "pipeline-shard-plan"
PLAN_VERSION = 1
MAX_SEGMENTS_PER_SOURCE = 100_000


@dataclass
class Listing:
    audio: list[str] = field(default_factory=list)  # relative POSIX paths with an audio extension
    sidecars: dict[str, dict[str, str]] = field(default_factory=dict)  # audio stem -> {"json"|"txt": relpath}
    ignored: list[dict[str, str]] = field(default_factory=list)
    rejected: list[dict[str, str]] = field(default_factory=list)


def list_audio_dir(audio_dir: Path, extensions: tuple[str, ...]) -> Listing:
    """Walk `audio_dir` (following symlinks, each real directory once), sorted relative paths.

    Nothing is opened here; unlistable directories are plan-stage rejects."""
    _check_listable(audio_dir)
    listing = Listing()
    candidates = _walk(audio_dir, listing)
    audio_stems = {_stem(path) for path in candidates if _audio_name(path, extensions)}
    found_sidecars: dict[tuple[str, str], list[str]] = {}
    for relpath in sorted(candidates):
        name = posixpath.basename(relpath)
        suffix = posixpath.splitext(name)[1].lower()
        kind = sidecar_kind(relpath)
        if not _is_utf8(relpath):
            listing.rejected.append(_plan_reject(_printable(relpath), "file name is not valid UTF-8"))
        elif name.startswith("."):
            _hidden(listing, relpath, suffix in extensions)
        elif suffix in extensions:
            listing.audio.append(relpath)
        elif kind and _stem(relpath) in audio_stems:
            found_sidecars.setdefault((_stem(relpath), kind), []).append(relpath)
        else:
            listing.ignored.append({"relpath": relpath, "reason": f"not an audio extension ({', '.join(extensions)})"})
    _choose_sidecars(listing, found_sidecars)
    return listing


def _check_listable(audio_dir: Path) -> None:
    try:
        is_dir = stat.S_ISDIR(os.stat(audio_dir).st_mode)
    except FileNotFoundError:
        is_dir = False
    except OSError as error:
        raise UserFacingError(f"cannot read paths.audio_dir {audio_dir}: {error.strerror}") from None
    if not is_dir:
        raise UserFacingError(f"paths.audio_dir does not exist or is not a directory: {audio_dir}")
    try:
        os.scandir(audio_dir).close()
    except OSError as error:
        raise UserFacingError(f"cannot list paths.audio_dir {audio_dir}: {error.strerror}") from None


def _walk(audio_dir: Path, listing: Listing) -> list[str]:
    """Relative paths of every non-directory entry; hidden, unlistable and repeated directories noted."""
    seen_dirs: set[tuple[int, int]] = set()
    candidates: list[str] = []

    def unlistable(error: OSError) -> None:
        reason = f"unreadable directory: {(error.strerror or str(error)).lower()} (its files cannot be listed)"
        listing.rejected.append(_plan_reject(_relative(audio_dir, error.filename), reason))

    for root, dirnames, filenames in os.walk(audio_dir, followlinks=True, onerror=unlistable):
        try:
            stat_result = os.stat(root)
        except OSError as error:
            unlistable(error)
            dirnames[:] = []
            continue
        if (stat_result.st_dev, stat_result.st_ino) in seen_dirs:
            listing.ignored.append(
                {
                    "relpath": _relative(audio_dir, root),
                    "reason": "directory already listed: a symbolic link leads to it again (symlink loop or second link)",
                }
            )
            dirnames[:] = []
            continue
        seen_dirs.add((stat_result.st_dev, stat_result.st_ino))
        for name in sorted(dirnames):
            if name.startswith("."):
                listing.ignored.append(
                    {
                        "relpath": _relative(audio_dir, os.path.join(root, name)),
                        "reason": "hidden directory (not listed)",
                    }
                )
        dirnames[:] = sorted(name for name in dirnames if not name.startswith("."))
        candidates.extend(_relative(audio_dir, os.path.join(root, name)) for name in filenames)
    return candidates


def _audio_name(relpath: str, extensions: tuple[str, ...]) -> bool:
    name = posixpath.basename(relpath)
    return not name.startswith(".") and posixpath.splitext(name)[1].lower() in extensions


def _hidden(listing: Listing, relpath: str, is_audio: bool) -> None:
    """Dot-files are never read: an audio one is a reject (every audio file is accounted for), others ignored."""
    if is_audio:
        listing.rejected.append(_plan_reject(relpath, "hidden file: names starting with '.' are not read"))
    else:
        listing.ignored.append({"relpath": relpath, "reason": "hidden file"})


def _choose_sidecars(listing: Listing, found: dict[tuple[str, str], list[str]]) -> None:
    """One sidecar per stem and kind: the lower-case extension if there are several (`X.json` over `X.JSON`)."""
    for (stem, kind), relpaths in sorted(found.items()):
        chosen = min(relpaths, key=lambda path: (not path.endswith("." + kind), path))
        listing.sidecars.setdefault(stem, {})[kind] = chosen
        for other in relpaths:
            if other != chosen:
                listing.ignored.append({"relpath": other, "reason": f"duplicate metadata sidecar: {chosen} is used"})


def _plan_reject(relpath: str, reason: str) -> dict[str, str]:
    return {"relpath": relpath, "stage": "plan", "reason": reason}


def _relative(base: Path, path: str | os.PathLike) -> str:
    return Path(os.path.relpath(path, base)).as_posix()


def _stem(relpath: str) -> str:
    return posixpath.splitext(relpath)[0]


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _printable(text: str) -> str:
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def segments_of(seconds: float, experiment: Experiment) -> tuple[list[tuple[float, float]], str | None]:
    """(start, length) of each item cut from a source of `seconds`, and a reject reason if none."""
    data = experiment.data
    if seconds < data.min_item_seconds:
        return [], f"too short: {seconds:.3f} s < data.min_item_seconds {data.min_item_seconds}"
    limit = data.max_item_seconds
    if limit is None or seconds <= limit:
        return [(0.0, seconds)], None
    if data.long_items == "reject":
        return [], f"too long: {seconds:.3f} s > data.max_item_seconds {limit} (data.long_items is 'reject')"
    if data.long_items == "truncate":
        return [(0.0, limit)], None
    hop = limit - data.segment_overlap_seconds
    count = _segment_count(seconds, limit, hop)
    if count > MAX_SEGMENTS_PER_SOURCE:
        return [], (
            f"too many segments: {seconds:.3f} s cut every {hop:.6g} s would make {count:.3g} items "
            f"(at most {MAX_SEGMENTS_PER_SOURCE} per file; raise data.max_item_seconds)"
        )
    segments = []
    start = 0.0
    for _ in range(count + 1):  # bounded however the float steps round
        if start >= seconds:
            break
        length = min(limit, seconds - start)
        if segments and length < data.min_item_seconds:
            break  # a tail shorter than an item may be is dropped
        segments.append((round(start, 6), round(length, 6)))
        if start + length >= seconds:
            break
        start += hop
    return segments, None


def _segment_count(seconds: float, limit: float, hop: float) -> float:
    """Segments of `limit` every `hop` needed to cover `seconds` (an upper bound; may be huge or inf)."""
    if hop <= 0:
        return math.inf
    return 1 + max(0, math.ceil((seconds - limit) / hop))


def bytes_per_second(experiment: Experiment) -> int:
    """Uncompressed output PCM bytes per second: the budget's measure (an upper bound for FLAC)."""
    data = experiment.data
    return data.sample_rate * data.channels * data.codec.bits // 8


def assign_shards(sizes: list[int], max_items: int, max_bytes: int) -> list[list[int]]:
    """Split item indices, in order, into the fewest shards within both budgets, balanced by bytes.

    An item larger than max_bytes gets a shard of its own."""
    total = sum(sizes)
    count = len(sizes)
    if count == 0:
        return []
    shards_needed = max(math.ceil(count / max_items), math.ceil(total / max_bytes), 1)
    for shards in range(shards_needed, min(count, shards_needed + 64) + 1):
        groups = _split_by_cumulative_bytes(sizes, shards, total)
        if all(_fits(group, sizes, max_items, max_bytes) for group in groups):
            return groups
    return _greedy(sizes, max_items, max_bytes)


def _split_by_cumulative_bytes(sizes: list[int], shards: int, total: int) -> list[list[int]]:
    target = max(total / shards, 1e-9)
    groups: list[list[int]] = [[] for _ in range(shards)]
    cumulative = 0
    for index, size in enumerate(sizes):
        groups[min(int((cumulative + size / 2) // target), shards - 1)].append(index)
        cumulative += size
    return [group for group in groups if group]


def _fits(group: list[int], sizes: list[int], max_items: int, max_bytes: int) -> bool:
    return len(group) <= max_items and (len(group) == 1 or sum(sizes[i] for i in group) <= max_bytes)


def _greedy(sizes: list[int], max_items: int, max_bytes: int) -> list[list[int]]:
    groups: list[list[int]] = [[]]
    used = 0
    for index, size in enumerate(sizes):
        if groups[-1] and (len(groups[-1]) >= max_items or used + size > max_bytes):
            groups.append([])
            used = 0
        groups[-1].append(index)
        used += size
    return groups


def build_plan(experiment: Experiment) -> Plan:
    """The plan (see docs/formats.md)."""
    audio_dir = experiment.paths.audio_dir
    listing = list_audio_dir(audio_dir, experiment.data.extensions)
    rejected = list(listing.rejected)
    sidecars = SidecarChecks(audio_dir, listing)
    files: list[SourceFile] = []
    items: list[PlanItem] = []
    sizes: list[int] = []
    rate = bytes_per_second(experiment)
    for relpath in listing.audio:
        try:
            size, header, segments = _accept_source(audio_dir / relpath, experiment)
        except AudioRejected as rejection:
            rejected.append(_plan_reject(relpath, str(rejection)))
            continue
        files.append(
            SourceFile(
                relpath=relpath, size=size, **asdict(header), seconds=header.seconds, sidecars=sidecars.of(relpath)
            )
        )
        for segment, (start, length) in enumerate(segments):
            items.append(
                PlanItem(
                    key=item_key(relpath, segment),
                    relpath=relpath,
                    segment=segment,
                    segments=len(segments),
                    seconds_start=start,
                    seconds=length,
                    seconds_total=header.seconds,
                )
            )
            sizes.append(math.ceil(length * rate))
    ignored = sorted(listing.ignored + sidecars.ignored(), key=lambda entry: entry["relpath"])
    rejected = sorted(rejected + sidecars.rejected(), key=lambda entry: entry["relpath"])
    _check_unique_keys(items)
    budget = experiment.data.shard
    files_by_relpath = {source.relpath: source for source in files}
    shards = []
    for index, group in enumerate(assign_shards(sizes, budget.max_items, budget.max_bytes)):
        shard_items = tuple(items[i] for i in group)
        shards.append(
            ShardEntry(
                index=index,
                name=shard_name(index),
                items=shard_items,
                seconds=sum(item.seconds for item in shard_items),
                pcm_bytes=sum(sizes[i] for i in group),
                digest=shard_digest(shard_items, files_by_relpath),
            )
        )
    return Plan(
        format=PLAN_FORMAT,
        version=PLAN_VERSION,
        stage_hash=stage_hash(experiment, "shard"),
        audio_dir=str(audio_dir),
        budget=Budget(budget.max_items, budget.max_bytes, rate),
        totals=Totals(
            files=len(files),
            items=len(items),
            seconds=sum(source.seconds for source in files),
            rejected=len(rejected),
            ignored=len(ignored),
            shards=len(shards),
        ),
        files=tuple(files),
        shards=tuple(shards),
        ignored=tuple(ignored),
        rejected=tuple(rejected),
    )


def _accept_source(source: Path, experiment: Experiment) -> tuple[int, Header, list[tuple[float, float]]]:
    """Size, header and segments of an audio file the plan accepts; AudioRejected with the reason otherwise."""
    size = stat_regular_file(source).st_size
    header = read_header(source)
    segments, reason = segments_of(header.seconds, experiment)
    if reason:
        raise AudioRejected(reason)
    check_channel_layout(header.channels, experiment.data.multichannel)
    return size, header, segments


class SidecarChecks:
    """Each sidecar of an accepted audio file is read and checked once (several audio files may share one)."""

    def __init__(self, audio_dir: Path, listing: Listing):
        self.audio_dir = audio_dir
        self.listing = listing
        self.checked: dict[str, dict[str, Any]] = {}

    def of(self, audio_relpath: str) -> dict[str, dict[str, Any]]:
        """The plan entry's `sidecars`: `{kind: {relpath, sha256[, error]}}`."""
        found = {}
        for kind, relpath in sorted(self.listing.sidecars.get(_stem(audio_relpath), {}).items()):
            if relpath not in self.checked:
                self.checked[relpath] = check_sidecar(self.audio_dir, relpath, kind)
            found[kind] = self.checked[relpath]
        return found

    def _all(self) -> list[str]:
        return sorted(path for kinds in self.listing.sidecars.values() for path in kinds.values())

    def ignored(self) -> list[dict[str, str]]:
        entries = []
        for relpath in self._all():
            if relpath not in self.checked:
                entries.append({"relpath": relpath, "reason": "metadata sidecar of a rejected audio file (not read)"})
            elif "error" not in self.checked[relpath]:
                entries.append({"relpath": relpath, "reason": "metadata sidecar (merged into its audio's samples)"})
        return entries

    def rejected(self) -> list[dict[str, str]]:
        return [
            _plan_reject(relpath, f"metadata sidecar not used: {self.checked[relpath]['error']}")
            for relpath in self._all()
            if "error" in self.checked.get(relpath, {})
        ]


def _check_unique_keys(items: list[PlanItem]) -> None:
    seen: dict[str, str] = {}
    for item in items:
        other = seen.setdefault(item.key, item.relpath)
        if other != item.relpath:
            raise RuntimeError(f"key collision between {other!r} and {item.relpath!r}: {item.key}")


def shard_digest(items: tuple[PlanItem, ...], files_by_relpath: dict[str, SourceFile]) -> str:
    """What a shard's content depends on in the plan: its items and their source files' headers."""
    sources = [files_by_relpath[relpath].to_json() for relpath in sorted({item.relpath for item in items})]
    return canonical_digest({"items": [item.to_json() for item in items], "sources": sources})


# --- the one reader and writer of plan.json and the manifests -------------------------------------
def _layout(where: Layout | Experiment) -> Layout:
    return where if isinstance(where, Layout) else layout_of(where)


def write_plan(experiment: Experiment) -> Plan:
    """Build and write the plan (only if it changed, so Snakemake sees an unchanged plan as such)."""
    plan = build_plan(experiment)
    write_json_if_changed(layout_of(experiment).plan, plan.to_json())
    return plan


def load_plan(where: Layout | Experiment) -> Plan:
    """The plan of an experiment (or layout); none yet, or an unreadable one, is a user error naming it."""
    path = _layout(where).plan
    if not path.is_file():
        raise UserFacingError(f"no plan at {path}: run `pipeline plan` first")
    try:
        return Plan.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError, AttributeError) as error:
        raise UserFacingError(f"{path} is not a readable shard plan ({error}): rerun `pipeline plan`") from None


def write_manifest(where: Layout | Experiment, manifest: Manifest) -> Path:
    path = _layout(where).manifest(manifest.shard)
    write_json_atomic(path, manifest.to_json())
    return path


def load_manifest(where: Layout | Experiment, index: int) -> Manifest:
    """Shard `index`'s manifest; a shard not written yet, or a damaged manifest, is a user error naming it."""
    path = _layout(where).manifest(index)
    if not path.is_file():
        raise UserFacingError(f"shard {index} is not written ({path} missing): run the shard stage first")
    try:
        return Manifest.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError, AttributeError) as error:
        raise UserFacingError(f"{path} is not a readable shard manifest ({error}): rerun the shard stage") from None
