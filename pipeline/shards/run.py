"""Every pending shard with K worker processes and a progress bar; the rejects ledger and summary."""

from __future__ import annotations

import collections
import contextlib
import functools
import itertools
import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from tqdm import tqdm

from pipeline.config.experiment import Experiment
from pipeline.layout import layout_of
from pipeline.shard_jobs import run_job
from pipeline.shards.plan import load_manifest, load_plan
from pipeline.shards.records import Plan
from pipeline.shards.writer import (
    ShardResult,
    encode_source,
    existing_result,
    is_up_to_date,
    source_tasks,
    write_shard_from,
)
from pipeline.utils.atomic import write_bytes_atomic, write_json_atomic

T = TypeVar("T")
R = TypeVar("R")


def write_all_shards(experiment: Experiment, workers: int = 1, force: bool = False, progress: bool = True) -> Summary:
    """Write every shard that is not up to date, then the rejects ledger and summary."""
    plan = load_plan(experiment)
    started = time.perf_counter()
    results = write_shards(experiment, plan, plan.indices, workers=workers, force=force, progress=progress)
    written = [result for result in results if not result.skipped]
    summary = summarise(experiment, plan)
    summary.written = len(written)
    summary.wall_seconds = time.perf_counter() - started
    summary.written_seconds = sum(result.seconds for result in written)
    return summary


def write_shards(
    experiment: Experiment,
    plan: Plan,
    indices: Sequence[int],
    workers: int = 1,
    force: bool = False,
    progress: bool = True,
) -> list[ShardResult]:
    """Write the shards `indices` of `plan` that are not up to date; one result per shard, in order.

    With workers > 1, source files (not whole shards) are encoded in worker processes, a bounded
    window ahead, and this process writes the tars in plan order: the load stays balanced whatever the
    shard count, and the output is byte-identical to a single-process run."""
    shards = [plan.shard(index) for index in indices]
    pending = [shard for shard in shards if force or not is_up_to_date(experiment, shard)]
    tasks = {shard.index: source_tasks(experiment, plan, shard) for shard in pending}
    results = {index: existing_result(experiment, index) for index in indices if index not in tasks}
    audio_seconds = 0.0
    with contextlib.ExitStack() as stack:
        bar = stack.enter_context(
            tqdm(total=len(pending), unit="shard", disable=not progress, file=sys.stderr, desc="shards")
        )
        if workers > 1 and pending:
            pool = stack.enter_context(ProcessPoolExecutor(max_workers=workers))
            every_task = [task for shard in pending for task in tasks[shard.index]]
            encoded = _ordered_map(pool, encode_source, every_task, window=4 * workers)
        else:
            encoded = (encode_source(task) for shard in pending for task in tasks[shard.index])
        for shard in pending:
            shard_sources = itertools.islice(encoded, len(tasks[shard.index]))
            results[shard.index] = write_shard_from(experiment, shard, shard_sources)
            audio_seconds += results[shard.index].seconds
            bar.update()
            bar.set_postfix(audio_h=f"{audio_seconds / 3600:.2f}")
    return [results[index] for index in indices]


def write_shard_job(
    experiment: Experiment, job: int, workers: int = 1, progress: bool = True
) -> tuple[Path, list[ShardResult]]:
    """Job `job` of the shard stage (pipeline.shard_jobs): its shards, then its record."""
    return run_job(
        experiment, "shard", job, functools.partial(write_shards, experiment, workers=workers, progress=progress)
    )


def _ordered_map(pool: Executor, function: Callable[[T], R], tasks: list[T], window: int) -> Iterator[R]:
    """pool.map that keeps at most `window` tasks in flight (results can be large) and yields in order."""
    pending: collections.deque[Future[R]] = collections.deque()
    feed = iter(tasks)
    for task in itertools.islice(feed, window):
        pending.append(pool.submit(function, task))
    while pending:
        result = pending.popleft().result()
        for task in itertools.islice(feed, 1):
            pending.append(pool.submit(function, task))
        yield result


@dataclass
class Summary:
    files: int
    items: int
    seconds: float
    rejected: int
    ignored: int
    shards: int
    missing_shards: list[int]
    written: int = 0
    written_seconds: float = 0.0
    wall_seconds: float = 0.0

    def line(self) -> str:
        text = (
            f"{self.files} files, {self.items} items, {self.seconds / 3600:.2f} h of audio in {self.shards} shards; "
            f"{self.rejected} rejected, {self.ignored} ignored"
        )
        if self.written and self.wall_seconds > 0:
            text += (
                f"; wrote {self.written} shards in {self.wall_seconds:.1f} s "
                f"({self.written_seconds / self.wall_seconds:.1f} audio-s/s)"
            )
        if self.missing_shards:
            text += f"; NOT YET WRITTEN: shards {self.missing_shards}"
        return text


def summarise(experiment: Experiment, plan: Plan | None = None) -> Summary:
    """Gather plan and manifest rejects into `rejected.jsonl` and write `summary.json`."""
    plan = plan or load_plan(experiment)
    layout = layout_of(experiment)
    rejected = list(plan.rejected)
    items = 0
    seconds = 0.0
    missing = []
    for shard in plan.shards:
        if not layout.manifest(shard.index).is_file():
            missing.append(shard.index)
            continue
        manifest = load_manifest(layout, shard.index)
        items += len(manifest.items)
        seconds += manifest.seconds
        rejected.extend(manifest.rejected)
    rejected = _one_per_source(rejected)
    ledger = "".join(ledger_line(entry) for entry in rejected)
    write_bytes_atomic(layout.rejected, ledger.encode("utf-8"))
    sources_in_shards = {relpath for shard in plan.shards for relpath in shard.relpaths}
    rejected_files = {entry["relpath"] for entry in rejected if "segment" not in entry}
    summary = Summary(
        files=len(sources_in_shards - rejected_files),
        items=items,
        seconds=seconds,
        rejected=len(rejected),
        ignored=len(plan.ignored),
        shards=len(plan.shards),
        missing_shards=missing,
    )
    write_json_atomic(
        layout.shard_summary,
        {
            "files": summary.files,
            "items": summary.items,
            "seconds": summary.seconds,
            "rejected": summary.rejected,
            "ignored": summary.ignored,
            "shards": summary.shards,
            "missing_shards": missing,
        },
    )
    return summary


_LINE_BREAKS = {"\u0085": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def ledger_line(entry: dict[str, Any]) -> str:
    """One JSON line; the characters `str.splitlines` also breaks at (possible in file names) are escaped."""
    text = json.dumps(entry, sort_keys=True, ensure_ascii=False)
    for character, escape in _LINE_BREAKS.items():
        text = text.replace(character, escape)
    return text + "\n"


def _one_per_source(rejected: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A source split over two shards is rejected by both: keep one entry per (file, segment)."""
    unique = {(entry["relpath"], entry.get("segment")): entry for entry in rejected}
    return [unique[key] for key in sorted(unique, key=lambda k: (k[0], -1 if k[1] is None else k[1]))]
