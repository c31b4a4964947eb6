"""Autoencoder encoder throughput (audio-seconds per wall-second) and peak memory, by batch size.

    .venv/bin/python bench/autoencoder.py [--geometries demo,sao] [--batch-sizes 1,2,4,8]
        [--seconds S] [--repeats 3] [--threads N] [--device auto|cpu|cuda] [--dtype fp32|bf16|fp16] [--json OUT]

Two geometries, with random-init weights (good enough for throughput; no checkpoint needed):
  demo  the model of configs/experiments/demo.yaml (16 kHz mono), 4 s items by default
  sao   Stable Audio Open's VAE (44.1 kHz stereo, 156,112,514 parameters), 0.5 s items by default
        (under 1 audio-s/s on 2 CPU cores: short, so the CPU run takes minutes, not an hour)
Item length is rounded up to whole latent frames. Each (geometry, batch) runs in a fresh spawned
process: build the model (eval mode), take a memory baseline, one warm-up encode, then `--repeats`
timed encodes under torch.inference_mode(); the median is reported. Peak memory is the growth over
that baseline: ru_maxrss on CPU, torch.cuda.max_memory_allocated on CUDA (so model weights are
excluded in both). `--dtype` other than fp32 runs the encode under torch.autocast. `cores` is the
process's CPU time per wall second while timing: on a shared machine, well under --threads means
another process took a core (with OpenMP that can slow an encode ~10x); near --threads does not
rule contention out (waiting threads spin).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from pipeline.config import load_experiment
from pipeline.models.autoencoder.config import AutoencoderModelConfig
from pipeline.models.autoencoder.model import Autoencoder, frames_for

DEMO_EXPERIMENT = Path(__file__).resolve().parent.parent / "configs/experiments/demo.yaml"
SAO_OOBLECK = {
    "type": "oobleck",
    "channels": 128,
    "c_mults": [1, 2, 4, 8, 16],
    "strides": [2, 4, 4, 8, 8],
    "use_snake": True,
}
SAO_MODEL = {
    "encoder": {**SAO_OOBLECK, "in_channels": 2, "latent_dim": 128},
    "decoder": {**SAO_OOBLECK, "out_channels": 2, "latent_dim": 64, "final_tanh": False},
    "bottleneck": {"type": "vae"},
}
DEFAULT_SECONDS = {"demo": 4.0, "sao": 0.5}
DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Job:
    geometry: str
    batch: int
    seconds: float
    repeats: int
    device: str
    dtype: str
    threads: int | None


@dataclass
class Result:
    geometry: str
    batch: int
    item_seconds: float
    frames_per_item: int
    times_s: list[float]
    audio_s_per_s: float
    frames_per_s: float
    peak_mib: float
    parameters: int
    cores_used: float  # process CPU-s per wall-s over the timed encodes: below --threads means contention


def build_model(geometry: str) -> Autoencoder:
    if geometry == "demo":
        return Autoencoder(load_experiment(DEMO_EXPERIMENT).autoencoder.model, sample_rate=16000)
    if geometry == "sao":
        return Autoencoder(AutoencoderModelConfig.model_validate(SAO_MODEL), sample_rate=44100)
    raise ValueError(f"unknown geometry {geometry!r}")


def memory_mark(device: str) -> float:
    """MiB: on CPU the process's peak RSS so far; on CUDA the peak allocated since the last reset."""
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def timed_encode(model: Autoencoder, audio: torch.Tensor, job: Job) -> float:
    dtype = DTYPES[job.dtype]
    started = time.perf_counter()
    with torch.inference_mode(), torch.autocast(job.device, dtype=dtype, enabled=dtype is not None):
        model.encode(audio)
    if job.device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def measure(job: Job) -> Result:
    """One (geometry, batch) measurement; meant to run in a fresh process."""
    if job.threads:
        torch.set_num_threads(job.threads)
    torch.manual_seed(0)
    model = build_model(job.geometry).eval().to(job.device)
    frames = frames_for(round(job.seconds * model.sample_rate), model.downsampling_ratio)
    samples = frames * model.downsampling_ratio
    if job.device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        baseline = torch.cuda.memory_allocated() / 2**20
    else:
        baseline = memory_mark(job.device)
    audio = torch.randn(job.batch, model.io_channels, samples, device=job.device)
    timed_encode(model, audio, job)  # warm-up
    cpu_started = time.process_time()
    times = [timed_encode(model, audio, job) for _ in range(job.repeats)]
    cores_used = (time.process_time() - cpu_started) / sum(times)
    median = statistics.median(times)
    return Result(
        geometry=job.geometry,
        batch=job.batch,
        item_seconds=samples / model.sample_rate,
        frames_per_item=frames,
        times_s=times,
        audio_s_per_s=job.batch * samples / model.sample_rate / median,
        frames_per_s=job.batch * frames / median,
        peak_mib=memory_mark(job.device) - baseline,
        parameters=sum(p.numel() for p in model.parameters()),
        cores_used=cores_used,
    )


def measure_isolated(job: Job) -> Result:
    """`measure` in a freshly spawned process, so its peak memory is its own."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(measure, job).result()


def print_table(results: list[Result], device: str, dtype: str) -> None:
    first = results[0]
    print(
        f"\n{first.geometry}: {first.parameters:,} parameters, {first.item_seconds:.3f} s items "
        f"({first.frames_per_item} latent frames), {device} {dtype}"
    )
    print(
        f"{'batch':>5}  {'audio-s/s':>10}  {'vs batch 1':>10}  {'frames/s':>10}  {'peak MiB':>9}  {'cores':>5}  runs (s)"
    )
    base = next((r.audio_s_per_s for r in results if r.batch == 1), None)
    for r in results:
        ratio = f"{r.audio_s_per_s / base:.2f}x" if base else "-"
        runs = ", ".join(f"{t:.2f}" for t in r.times_s)
        print(
            f"{r.batch:>5}  {r.audio_s_per_s:>10.3f}  {ratio:>10}  {r.frames_per_s:>10.1f}  {r.peak_mib:>9.1f}  {r.cores_used:>5.2f}  {runs}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--geometries", default="demo,sao", help="comma-separated: demo, sao")
    parser.add_argument("--batch-sizes", default="1,2,4,8", help="comma-separated")
    parser.add_argument("--seconds", type=float, help="audio per item for every geometry (default: demo 4, sao 0.5)")
    parser.add_argument("--repeats", type=int, default=3, help="timed encodes per configuration (median reported)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--dtype", choices=list(DTYPES), default="fp32", help="autocast dtype for the encode")
    parser.add_argument("--threads", type=int, help="CPU threads per encode (default: torch's, one per core)")
    parser.add_argument("--json", type=Path, metavar="OUT", help="write the results here")
    args = parser.parse_args()
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    print(
        f"device {device}, dtype {args.dtype}, torch {torch.__version__}, {args.threads or torch.get_num_threads()} threads"
        + (f", {torch.cuda.get_device_name()}" if device == "cuda" else "")
    )

    all_results: list[Result] = []
    for geometry in args.geometries.split(","):
        seconds = args.seconds if args.seconds is not None else DEFAULT_SECONDS[geometry]
        jobs = [Job(geometry, batch, seconds, args.repeats, device, args.dtype, args.threads) for batch in batch_sizes]
        results = [measure_isolated(job) for job in jobs]
        print_table(results, device, args.dtype)
        all_results.extend(results)
    if args.json:
        report = {
            "device": device,
            "dtype": args.dtype,
            "torch": torch.__version__,
            "threads": args.threads or torch.get_num_threads(),
            "results": [asdict(r) for r in all_results],
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
