"""Shard-stage throughput in audio-seconds per wall-second, measured side by side in one run.

    .venv/bin/python bench/shard.py [--seconds 900] [--repeats 3]

Prints, on the same generated corpus and config:
  limit     decode + channel conversion + resample + FLAC encode alone (one process, no tar, no I/O of results)
  full x1   `pipeline shard --all --workers 1` (everything: plan lookup, metadata, tar, sha256, manifest)
  full x2   the same with 2 workers
and the ratios full x1 / limit (goal >= 0.8) and full x2 / full x1 (goal >= 1.7).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import yaml

from pipeline.audio.convert import prepare
from pipeline.audio.demo import write_demo_data
from pipeline.config import load_experiment
from pipeline.config.registry import build
from pipeline.shards.plan import write_plan
from pipeline.shards.run import write_all_shards


def limit_pass(experiment, plan) -> float:
    """The per-item audio work of the stage and nothing else; returns audio seconds processed."""
    data = experiment.data
    codec = build("codec", data.codec)
    files = plan.files_by_relpath()
    audio_dir = Path(plan.audio_dir)
    seconds = 0.0
    cached_path, cached = None, None
    for shard in plan.shards:
        for item in shard.items:
            if item.relpath != cached_path:
                cached_path = item.relpath
                cached = prepare(
                    audio_dir / cached_path,
                    data.sample_rate,
                    data.channels,
                    data.multichannel,
                    files[cached_path].frames,
                )
            start = round(item.seconds_start * data.sample_rate)
            segment = cached[start : start + round(item.seconds * data.sample_rate)]
            codec.encode(segment, data.sample_rate)
            seconds += len(segment) / data.sample_rate
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=900.0, help="audio in the generated corpus")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        write_demo_data(scratch / "audio", seed=7, total_seconds=args.seconds)
        experiment_file = scratch / "bench.yaml"
        experiment_file.write_text(
            yaml.safe_dump(
                {
                    "name": "bench",
                    "paths": {"audio_dir": str(scratch / "audio"), "work_dir": str(scratch / "work")},
                    "data": {
                        "sample_rate": 44100,
                        "channels": 2,
                        "max_item_seconds": 30,
                        "shard": {"max_items": 1000, "max_bytes": "20MB"},
                        "codec": {"type": "flac", "bits": 16},
                    },
                }
            )
        )
        experiment = load_experiment(experiment_file)
        plan = write_plan(experiment)
        print(
            f"corpus: {plan.totals.files} files, {plan.totals.seconds:.0f} s of audio, "
            f"{len(plan.shards)} shards (44.1 kHz stereo FLAC-16 output)"
        )

        rates: dict[str, list[float]] = {"limit": [], "full x1": [], "full x2": []}
        for _ in range(args.repeats):  # interleaved, so drift on a shared machine hits all three alike
            started = time.perf_counter()
            seconds = limit_pass(experiment, plan)
            rates["limit"].append(seconds / (time.perf_counter() - started))
            for workers in (1, 2):
                summary = write_all_shards(experiment, workers=workers, force=True, progress=False)
                rates[f"full x{workers}"].append(summary.written_seconds / summary.wall_seconds)

    median = {name: statistics.median(values) for name, values in rates.items()}
    for name, value in median.items():
        print(f"{name:8s} {value:8.1f} audio-s/s   (runs: {', '.join(f'{v:.1f}' for v in rates[name])})")
    print(f"full x1 / limit   = {median['full x1'] / median['limit']:.2f}   (goal >= 0.80)")
    print(f"full x2 / full x1 = {median['full x2'] / median['full x1']:.2f}   (goal >= 1.70)")


if __name__ == "__main__":
    main()
