"""Pre-encode stage throughput and random-crop latent reads, measured side by side in one run.

    .venv/bin/python bench/pre_encode.py [--seconds 180] [--repeats 5] [--device cpu|cuda] [--autocast bf16]
        [--set KEY=VALUE ...] [--crop-frames 64] [--reads 2000] [--work DIR] [--json OUT]
        [--autoencoder demo|import|encodec]

`--autoencoder import` / `encodec`: a bring-your-own autoencoder instead of the demo's (bench/common.py
BYO_SPECTROGRAM: a 2-D spectrogram VAE of the tests' lab package through `type: import` and the stft
transform; or a tiny random EnCodec through transformers), on the same audio.

Sets up the demo experiment on generated audio (plan, shards, and random-init autoencoder weights:
good enough for throughput, meaningless latents), then measures, shard by shard alternating A/B and
B/A, medians over --repeats rounds:
  end-to-end     `pre_encode_shard(force=True)`, model loaded once and passed in
                 (tar sha256, decode worker, batching, encode, HDF5 write, stats)
  encoder alone  the stage's own `encode_items` on the same items, decoded into memory beforehand
and the ratio end-to-end / encoder alone (median of per-round ratios; goal >= 0.9); model load apart.
Then random crops of --crop-frames latent frames (same random (item, start) sequence for all):
  h5 shards      the shard stores, each opened once, one slice per read
  h5 index       index.h5 (virtual datasets over the shard stores), opened once
  npy+json       stable-audio-tools' pre_encode layout: per item one .npy (float16, (dim, frames)) and
                 one .json (metadata + padding_mask); every read loads both files, as SAT does
and reads/s, the ratio h5 / npy+json (goal >= 2), and bytes and files on disk for each layout.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
from common import sharded_byo, sharded_demo  # bench/ is the script's directory: on sys.path

from pipeline.autoencoder import experiment_autoencoder
from pipeline.config.experiment import Experiment
from pipeline.encode.pre_encode import encode_items, pre_encode_shard
from pipeline.latents.index import build_index
from pipeline.layout import layout_of
from pipeline.models.autoencoder.model import Autoencoder
from pipeline.shards.plan import load_plan
from pipeline.shards.reader import ShardItem, read_items
from pipeline.utils.devices import pick_device

Crop = tuple[int, int]  # (global item row, start frame)


def setup(work: Path, seconds: float, overrides: list[str], autoencoder: str = "demo") -> Experiment:
    """Demo audio, an experiment extending the demo (or with a bring-your-own autoencoder), its plan
    and shards, and random-init weights."""
    if autoencoder != "demo":
        return sharded_byo(work, seconds, autoencoder, overrides)
    return sharded_demo(work, seconds, "bench_pre_encode", overrides)


def timed(function: Callable[[], object]) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def encoder_alone(experiment: Experiment, items: list[ShardItem], model: Autoencoder) -> int:
    """The stage's own batching and encoding (`encode_items`) on items already decoded in memory."""
    device = pick_device(experiment.pre_encode.device)
    model = model.to(device)
    return sum(1 for _ in encode_items(iter(items), model, experiment.pre_encode, device))


# --- random-crop reads ----------------------------------------------------------------------------
def crop_plan(lengths: np.ndarray, frames: int, reads: int, seed: int) -> list[Crop]:
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, len(lengths), reads)
    return [(int(row), int(rng.integers(0, max(1, int(lengths[row]) - frames + 1)))) for row in rows]


def _values(file: h5py.File) -> h5py.Dataset:
    """/latents, or /codes for a discrete autoencoder (EnCodec)."""
    return file["codes"] if "codes" in file else file["latents"]


def read_h5(paths: list[Path], crops: list[Crop], frames: int) -> None:
    """Each file opened once; item rows numbered across the files in order (as index.h5 does)."""
    files = [h5py.File(path, "r") for path in paths]
    located = [(_values(file), int(offset)) for file in files for offset in file["index/offset"][()]]
    for row, start in crops:
        dataset, offset = located[row]
        dataset[offset + start : offset + start + frames]
    for file in files:
        file.close()


def read_npy(folder: Path, crops: list[Crop], frames: int) -> None:
    for row, start in crops:
        latents = np.load(folder / f"{row:08d}.npy", mmap_mode=None)
        json.loads((folder / f"{row:08d}.json").read_text(encoding="utf-8"))
        np.ascontiguousarray(latents[:, start : start + frames])


def write_npy_layout(stores: list[Path], folder: Path) -> None:
    """The stores' latents as stable-audio-tools' pre_encode writes them: <id>.npy + <id>.json."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    row = 0
    for store in stores:
        with h5py.File(store, "r") as file:
            index = {name: file["index"][name][()] for name in ("offset", "length", "seconds_start", "seconds_total")}
            for i, metadata in enumerate(file["index/metadata_json"].asstr()[()]):
                offset, length = int(index["offset"][i]), int(index["length"][i])
                np.save(folder / f"{row:08d}.npy", np.ascontiguousarray(_values(file)[offset : offset + length].T))
                info = {
                    **json.loads(metadata),
                    "seconds_start": float(index["seconds_start"][i]),
                    "seconds_total": float(index["seconds_total"][i]),
                    "padding_mask": [1] * length,
                }
                (folder / f"{row:08d}.json").write_text(json.dumps(info), encoding="utf-8")
                row += 1


def disk_usage(paths: list[Path]) -> dict[str, int]:
    stats = [path.stat() for path in paths]
    allocated = sum(s.st_blocks * 512 for s in stats)
    return {"files": len(paths), "bytes": sum(s.st_size for s in stats), "allocated": allocated}


# --- running --------------------------------------------------------------------------------------
def interleaved(runs: dict[str, Callable[[int], object]], keys: list[int], repeats: int) -> dict[str, list[float]]:
    """Seconds per round of each run over all keys, A/B then B/A per key: drift hits every run alike."""
    seconds = {name: [0.0] * repeats for name in runs}
    for round_ in range(repeats):
        for key in keys:
            for name in list(runs)[:: 1 if (round_ + key) % 2 == 0 else -1]:
                seconds[name][round_] += timed(lambda: runs[name](key))  # noqa: B023 (called at once)
    return seconds


def bench_encode(experiment: Experiment, repeats: int) -> dict[str, object]:
    started, model = time.perf_counter(), experiment_autoencoder(experiment)
    load_seconds = time.perf_counter() - started
    indices = load_plan(experiment).indices
    shards = {index: list(read_items([layout_of(experiment).shard_tar(index)])) for index in indices}
    runs: dict[str, Callable[[int], object]] = {
        "end-to-end": lambda i: pre_encode_shard(experiment, i, force=True, model=model),
        "encoder alone": lambda i: encoder_alone(experiment, shards[i], model),
    }
    interleaved(runs, indices[:1], 1)  # warm-up
    seconds = interleaved(runs, indices, repeats)  # shard by shard, so A and B see the same moment
    items = sum(len(items) for items in shards.values())
    overhead = [(a - b) / len(indices) for a, b in zip(seconds["end-to-end"], seconds["encoder alone"])]
    audio = sum(item.audio.shape[1] for items in shards.values() for item in items) / experiment.data.sample_rate
    return {
        "items": items,
        "shards": len(indices),
        "audio_seconds": audio,
        "model_load_seconds": load_seconds,
        "overhead_per_shard_seconds": statistics.median(overhead),
        "rates": {name: [items / s for s in values] for name, values in seconds.items()},
    }


def bench_reads(experiment: Experiment, scratch: Path, frames: int, reads: int, repeats: int) -> dict[str, object]:
    stores = [layout_of(experiment).store(index) for index in load_plan(experiment).indices]
    index = build_index(experiment)
    folder = scratch / "sat_latents"
    write_npy_layout(stores, folder)
    with h5py.File(index, "r") as file:
        lengths = file["index/length"][()]
    crops = crop_plan(lengths, frames, reads, seed=0)
    seconds = interleaved(
        {
            "h5 shards": lambda _: read_h5(stores, crops, frames),
            "h5 index": lambda _: read_h5([index], crops, frames),
            "npy+json": lambda _: read_npy(folder, crops, frames),
        },
        [0],
        repeats,
    )
    disk = {"h5 (stores + index.h5)": disk_usage([*stores, index]), "npy+json": disk_usage(sorted(folder.iterdir()))}
    return {
        "items": len(lengths),
        "crop_frames": frames,
        "reads": reads,
        "disk": disk,
        "rates": {name: [reads / s for s in values] for name, values in seconds.items()},
    }


def report(encode: dict, reads: dict, device: str) -> dict[str, float]:
    median = {name: statistics.median(values) for part in (encode, reads) for name, values in part["rates"].items()}
    seconds_per_item = encode["audio_seconds"] / encode["items"]
    print(
        f"corpus: {encode['items']} items, {encode['audio_seconds']:.0f} s of audio, {encode['shards']} shards; "
        f"device {device}; random-init weights\nmodel load {encode['model_load_seconds'] * 1000:.0f} ms (once); "
        f"end-to-end minus encoder alone {encode['overhead_per_shard_seconds'] * 1000:.0f} ms per shard"
    )
    print(f"\n{'measure':16s} {'items/s':>10s} {'audio-s/s':>10s}   runs (items/s)")
    for name in ("end-to-end", "encoder alone"):
        runs, audio_rate = ", ".join(f"{v:.1f}" for v in encode["rates"][name]), median[name] * seconds_per_item
        print(f"{name:16s} {median[name]:10.1f} {audio_rate:10.1f}   {runs}")
    rounds = [a / b for a, b in zip(encode["rates"]["end-to-end"], encode["rates"]["encoder alone"])]
    ratios = {"end_to_end_over_encoder": statistics.median(rounds)}  # paired: both saw the same moments
    print(
        f"end-to-end / encoder alone = {ratios['end_to_end_over_encoder']:.2f}   (goal >= 0.90; median of rounds "
        f"{', '.join(f'{r:.2f}' for r in rounds)})"
    )
    print(f"\nrandom crops of {reads['crop_frames']} frames, {reads['reads']} reads over {reads['items']} items")
    print(f"{'layout':16s} {'reads/s':>10s}   runs")
    for name in ("h5 shards", "h5 index", "npy+json"):
        print(f"{name:16s} {median[name]:10.0f}   {', '.join(f'{v:.0f}' for v in reads['rates'][name])}")
    for name in ("h5 shards", "h5 index"):
        ratios[f"{name.replace(' ', '_')}_over_npy"] = median[name] / median["npy+json"]
        print(f"{name} / npy+json = {median[name] / median['npy+json']:.2f}x   (goal >= 2)")
    print(f"\n{'on disk':24s} {'files':>6s} {'bytes':>12s} {'allocated':>12s}")
    for name, usage in reads["disk"].items():
        print(f"{name:24s} {usage['files']:6d} {usage['bytes']:12,d} {usage['allocated']:12,d}")
    return {**{f"median_{k}": v for k, v in median.items()}, **ratios}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=180.0, help="audio in the generated corpus")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu")
    parser.add_argument("--autocast", choices=("bf16", "fp16", "none"), default="bf16", help="on CUDA only")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra experiment override")
    parser.add_argument("--crop-frames", type=int, default=64)
    parser.add_argument("--reads", type=int, default=2000)
    parser.add_argument("--work", type=Path, help="work here instead of a temporary directory")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--autoencoder", choices=("demo", "import", "encodec"), default="demo", help="see above")
    args = parser.parse_args()

    overrides = [f"pre_encode.device={args.device}", f"pre_encode.autocast={args.autocast}", *args.set]
    with tempfile.TemporaryDirectory() as temporary:
        scratch = args.work or Path(temporary)
        experiment = setup(scratch, args.seconds, overrides, args.autoencoder)
        encode = bench_encode(experiment, args.repeats)
        reads = bench_reads(experiment, scratch, args.crop_frames, args.reads, args.repeats)
        summary = report(encode, reads, str(pick_device(args.device)))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "args": {k: str(v) for k, v in vars(args).items()},
                    "encode": encode,
                    "reads": reads,
                    "summary": summary,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
