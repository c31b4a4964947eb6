"""Training throughput and checkpoint cost, measured side by side in one run.

The latent stores against the same latents in memory, the input pipeline's headroom, pre-encoded
latents against encoding on the fly, and a checkpoint's share of the wall time.

    .venv/bin/python bench/train.py [--quick] [--device cpu|cuda|auto] [--seconds 180] [--repeats 12]
        [--steps 10] [--workers 0,1,2] [--sao-depth D] [--sao-batch B] [--sao-frames F] [--sao-steps 2]
        [--sao-repeats 3] [--no-sao] [--no-text] [--text-d-model N] [--text-layers N] [--text-max-length L]
        [--threads N] [--work DIR] [--json OUT]

Sets up the demo experiment on generated audio (plan, shards, random-init autoencoder weights,
pre_encode_all, build_index: good enough for throughput, meaningless latents). Every training step
below is the loop's own `_optimizer_step` (autocast, backward, clipping, AdamW, scheduler, EMA) on one
training state built as `train()` builds it; every timed stretch is synchronised on CUDA.

demo (the demo experiment's DiT and `train` section), in --repeats rounds of --steps steps, the
variants in one order, then reversed in the next round (medians; ratios are medians of per-round ratios):
  memory       steps over batches pre-read into memory (on the device): exactly the batches that the
               store runs of the same round read
  store wK     `DiffusionFamily.batches` (the real DataLoader over index.h5, K workers) -> the same step
  loader wK    that loader alone, no model: the batches/s the input pipeline produces
  on the fly   the same items' audio crops (same windows, from the shard tars) in memory -> the frozen
               autoencoder's encode -> normalise -> the same step
  checkpoint   the loop's `_save` of the real state (finite-weights check, then `save_checkpoint` of model,
               AdamW, scheduler, EMA and RNG states: torch.save, fsync, rename, older ones deleted)
Every store and loader run has its own loader for the whole bench (workers fork once, before any
timing, as in a run). A store run starts with the workers as far ahead as they read (steady state:
each step takes a batch and the workers read the next inside the timed stretch); a loader run first
takes what was read ahead, so it times only batches read while the clock runs. After each, an
untimed 0.5 s lets the workers refill, so their reading never lands in another run's time.

sao (Stable Audio Open's DiT: embed 1536, 24 heads, cond tokens 768, global cond 1536, 64 channels, at
--sao-depth blocks; its Oobleck VAE; the two timing conditioners, no T5 prompt), batch --sao-batch of
--sao-frames latent frames, in --sao-repeats rounds of --sao-steps steps:
  pre-encoded  latents in memory -> step;   on the fly  audio in memory -> VAE encode -> step;   checkpoint
Prints ratios: store / memory (goal >= 0.95 at the configured workers), loader / training consumption,
pre-encoded / on the fly, and checkpoint time / (1000 steps, train.checkpoint_every's default, x step time)
(goal <= 5%).

lm (the discrete demo, configs/experiments/demo_lm.yaml: its rvq autoencoder with random-init weights,
its LM and `train` section), in --repeats rounds of --steps steps, interleaved as above:
  memory       steps over batches pre-read into memory (the store runs' batches of the round)
  store wK     `LMFamily.batches` (the same DataLoader over index.h5 of codes, K workers) -> the same step
and sampling: the demo LM's `generate` (its sample settings: top-k, CFG) of --lm-frames frames for a
batch of 1, with the key/value cache and without (each step recomputes the whole prefix), in
--lm-sample-repeats rounds; positions/s = the pattern's sequence length / seconds.

text (the demo DiT with a `t5` prompt conditioner on the items' `caption` field, cross-attended before
the demo's label and timing; a random-init T5 encoder built by the bench: t5-base's geometry on CUDA,
--text-d-model/--text-layers on CPU; max_length --text-max-length), in --repeats rounds of --steps
steps, both from batches pre-read into memory by the family's own loader (the same items and draws):
  precomputed  `precompute: true`: the prompts' embeddings come from latents/prompts/prompt.h5
  t5 per step  the frozen encoder runs on the batch's captions every step
plus the one-off cost of writing the store (DiffusionFamily's start with and without precompute).

On CPU, torch computes with the threads `pipeline train` gives the demo (resources.train.cpus less
train.data.num_workers: 2 - 1 = 1 thread) in every variant; --threads changes it. With torch's
default of one thread per core, a worker or any other process on the machine takes a core from
OpenMP's threads and a step runs up to ~20x slower in bursts (measured on the 2-core machine).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import DEMO_LM_EXPERIMENT, sharded_demo  # bench/ is the script's directory: on sys.path

from pipeline.autoencoder import experiment_autoencoder
from pipeline.config import load_experiment
from pipeline.config.experiment import Experiment
from pipeline.config.registry import build
from pipeline.config.training import TrainConfig
from pipeline.encode.pre_encode import pre_encode_all
from pipeline.latents.dataset import normalise
from pipeline.latents.index import build_index
from pipeline.layout import RunFiles, layout_of
from pipeline.models.autoencoder.config import AutoencoderModelConfig
from pipeline.models.autoencoder.model import Autoencoder
from pipeline.models.diffusion.diffusion_config import DiffusionModelConfig
from pipeline.models.lm import patterns
from pipeline.models.t5 import load_text_encoder
from pipeline.shards.reader import read_items, shard_tars
from pipeline.train.crops import CropsFamily
from pipeline.train.diffusion import DiffusionFamily, DiffusionStep
from pipeline.train.distributed import DistEnv
from pipeline.train.lm import LMFamily, LMStep
from pipeline.train.loop import (
    LoopSettings,
    MetricsLog,
    State,
    _optimizer_step,
    _save,
    autocast,
    make_ema,
    make_optimizer_and_scheduler,
)
from pipeline.train.prompts import prompts_of
from pipeline.utils.devices import pick_device

# Stable Audio Open 1.0 (model_configs/txt2audio/stable_audio_open_1_0.json): its VAE pretransform, its
# DiT, and its two number conditioners (the t5 prompt is left out: a frozen text encoder, not trained).
SAO_OOBLECK = {"type": "oobleck", "channels": 128, "c_mults": [1, 2, 4, 8, 16], "strides": [2, 4, 4, 8, 8]}
SAO_VAE = {
    "encoder": {**SAO_OOBLECK, "in_channels": 2, "latent_dim": 128, "use_snake": True},
    "decoder": {**SAO_OOBLECK, "out_channels": 2, "latent_dim": 64, "use_snake": True, "final_tanh": False},
    "bottleneck": {"type": "vae"},
}
SAO_SAMPLE_RATE = 44100
SAO_DOWNSAMPLING = math.prod(SAO_OOBLECK["strides"])  # 2048 samples per latent frame
SAO_LATENT_DIM = 64
SAO_DIT = {
    "type": "dit",
    "embed_dim": 1536,
    "depth": 24,
    "num_heads": 24,
    "cond_token_dim": 768,
    "global_cond_dim": 1536,
    "project_cond_tokens": False,
}
SAO_TRAIN = {  # SAO's training section: AdamW 5e-5, betas (0.9, 0.999), weight decay 1e-3, EMA
    "batch_size": 1,
    "optimizer": {"name": "AdamW", "lr": 5e-5, "options": {"betas": [0.9, 0.999], "weight_decay": 1e-3}},
    "ema": {"decay": 0.999},
    "keep_checkpoints": 1,  # at full size ~17 GB each, and save_checkpoint holds keep + 1 at its peak
}
WARM_UP_STEPS = 3
SETTLE_SECONDS = 0.5  # after each loader run, untimed: its workers refill their read-ahead
CHECKPOINT_EVERY = TrainConfig.model_fields["checkpoint_every"].default  # the share is reported at the default
QUICK = {
    "seconds": 60.0,
    "repeats": 2,
    "steps": 4,
    "sao_depth": 1,
    "sao_frames": 8,
    "sao_steps": 1,
    "sao_repeats": 1,
    "lm_frames": 50,
    "lm_sample_repeats": 1,
}
Batch = dict[str, Any]


def sao_model_config(depth: int) -> dict[str, Any]:
    return {
        "type": "diffusion",
        "objective": "v",
        "backbone": {**SAO_DIT, "depth": depth},
        "conditioners": [
            {"type": "number", "id": "seconds_start", "min_val": 0, "max_val": 512},
            {"type": "number", "id": "seconds_total", "min_val": 0, "max_val": 512},
        ],
        "cond_dim": 768,
        "cross_attention_cond_ids": ["seconds_start", "seconds_total"],
        "global_cond_ids": ["seconds_start", "seconds_total"],
    }


# --- timing ---------------------------------------------------------------------------------------
def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(function: Callable[[], object], device: torch.device) -> float:
    synchronise(device)
    started = time.perf_counter()
    function()
    synchronise(device)
    return time.perf_counter() - started


Run = Callable[[int, int], float]  # (round, steps) -> seconds


def interleaved(runs: dict[str, Run], rounds: Iterable[int], steps: int) -> dict[str, list[float]]:
    """Every run once per round, in one order, then reversed in the next round (drift hits all alike)."""
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for round_ in rounds:
        for name in list(runs)[:: 1 if round_ % 2 == 0 else -1]:
            seconds[name].append(runs[name](round_, steps))
    return seconds


def paired(numerator: list[float], denominator: list[float]) -> float:
    """Median of the per-round ratios (both sides saw the same moment of the machine)."""
    return statistics.median(a / b for a, b in zip(numerator, denominator))


# --- the training state and its step ----------------------------------------------------------------
class Trainer:
    """One training state, built as `train()` builds it, stepped by the loop's own `_optimizer_step`."""

    def __init__(
        self, model: torch.nn.Module, config: TrainConfig, device: torch.device, run: RunFiles, step=DiffusionStep
    ):
        self.config, self.device, self.run, self.env = LoopSettings.of(config), device, run, DistEnv()
        self.log = MetricsLog(run, enabled=False, step=0, tensorboard=False)
        model = model.to(device)
        self.state = State(model, *make_optimizer_and_scheduler(model, self.config), make_ema(model, self.config))
        self.step_module = step(model)
        self.checkpoint_bytes = 0

    @property
    def parameters(self) -> int:
        return sum(p.numel() for p in self.state.model.parameters())

    def steps(self, batches: Iterable[Batch], count: int) -> None:
        batches = iter(batches)
        for _ in range(count):
            loss, _, _ = _optimizer_step(self.state, self.step_module, batches, self.config, self.device, self.env)
            if not math.isfinite(loss):
                raise RuntimeError(f"the bench's training diverged (loss {loss}) at step {self.state.step}")
            self.state.step += 1

    def checkpoint(self) -> None:
        """The loop's own `_save` (finite-weights check, then `save_checkpoint`: fsync + rename, old ones deleted)."""
        _save(self.state, self.run, "bench", self.config, self.env, self.log)
        self.checkpoint_bytes = self.run.step_checkpoints()[-1][1].stat().st_size


# --- the demo experiment ------------------------------------------------------------------------------
def setup(work: Path, seconds: float, device: str) -> Experiment:
    """Demo audio, an experiment extending the demo, its shards, random-init weights, stores and index."""
    experiment = sharded_demo(work, seconds, "bench_train", [f"pre_encode.device={device}", f"train.device={device}"])
    pre_encode_all(experiment, progress=False)
    build_index(experiment)
    return experiment


def with_workers(work: Path, device: str, workers: int) -> Experiment:
    overrides = [f"pre_encode.device={device}", f"train.device={device}", f"train.data.num_workers={workers}"]
    return load_experiment(work / "bench.yaml", overrides)


class Stream:
    """One loader kept for the whole bench, as a run keeps one (its workers fork once, before any
    timing), and the stream position (optimizer step) it has reached."""

    def __init__(self, family: CropsFamily, device: torch.device):
        self.batches, self.position = family.batches(0, device), 0

    def __iter__(self) -> Stream:
        return self

    def __next__(self) -> Batch:
        self.position += 1
        return next(self.batches)

    def skip(self, count: int) -> None:
        for _ in range(count):
            next(self)

    def close(self) -> None:
        self.batches.close()  # the DataLoader and its workers go now


def store_steps(trainer: Trainer, stream: Stream, start: int, count: int) -> float:
    """`count` steps from the stream. Its workers are as far ahead as they go (they refilled their
    read-ahead during the untimed settle after the last run), as in a run's steady state: each step
    then takes one batch and the workers read one, inside the timed stretch."""
    assert stream.position == start, (stream.position, start)  # the batches of the memory run of this round
    seconds = timed(lambda: trainer.steps(stream, count), trainer.device)
    time.sleep(SETTLE_SECONDS)  # the workers refill now, not during the next run
    return seconds


def loader_alone(stream: Stream, count: int, read_ahead: int, device: torch.device) -> float:
    """Batches/s the loader produces: what its workers read ahead is taken first (untimed), then one
    more is waited for, so the timed `count` are all read while the clock runs."""
    stream.skip(read_ahead + 1)
    seconds = timed(lambda: stream.skip(count), device)
    time.sleep(SETTLE_SECONDS)
    return seconds


def audio_crops(
    audio: dict[str, np.ndarray], family: DiffusionFamily, batches: list[Batch], ratio: int
) -> list[torch.Tensor]:
    """Per batch, (B, channels, crop_frames * ratio) audio: the samples under each item's latent crop."""
    dataset = family.dataset(family.training_items, True, family.experiment.seed)
    samples = family.train_config.data.crop_frames * ratio
    crops = []
    for batch in batches:
        rows = []
        for item, epoch in zip(batch["item"].tolist(), batch["epoch"].tolist()):
            window = dataset.window(item, epoch)
            source = audio[dataset.table.keys[item]][:, window.offset * ratio : (window.offset + window.frames) * ratio]
            row = np.zeros((source.shape[0], samples), np.float32)
            row[:, : source.shape[1]] = source
            rows.append(row)
        crops.append(torch.from_numpy(np.stack(rows)).to(batch["latents"].device))
    return crops


def encoded_batches(
    autoencoder: Autoencoder,
    batches: list[Batch],
    crops: list[torch.Tensor],
    config: TrainConfig,
    device: torch.device,
    stats: Any = None,
) -> Iterator[Batch]:
    """Each batch with its latents replaced by the frozen encoder's latents of its audio crop (encoded now)."""
    for batch, audio in zip(batches, crops):
        with torch.no_grad(), autocast(config.precision, device):
            latents = autoencoder.encode(audio).float()
        if stats is not None and config.data.normalise != "none":
            latents = normalise(latents, stats, config.data.normalise)
        yield {**batch, "latents": latents}


def bench_demo(work: Path, experiment: Experiment, device: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    config = experiment.train
    assert config is not None
    steps, repeats = args.steps, args.repeats
    families = {k: DiffusionFamily(with_workers(work, args.device, k), DistEnv(), device) for k in args.workers}
    family = DiffusionFamily(experiment, DistEnv(), device)  # the configured workers
    torch.manual_seed(experiment.seed)
    trainer = Trainer(family.build(), config, device, RunFiles(work / "runs/demo"))
    # Store streams take 1 batch when they start, then 3 warm-up steps, then `steps` per round.
    start = {-1: 1, **{r: 1 + WARM_UP_STEPS + r * steps for r in range(repeats)}}
    reader = family.batches(0, device)  # every batch the store runs will read, in stream order
    stream_batches = list(itertools.islice(reader, start[repeats - 1] + steps))
    reader.close()
    memory = {r: stream_batches[at : at + max(steps, WARM_UP_STEPS)] for r, at in start.items()}
    autoencoder = experiment_autoencoder(experiment).eval().to(device)
    audio = {item.key: item.audio for item in read_items(shard_tars(experiment))}  # the items, as the shards hold them
    ratio = autoencoder.downsampling_ratio
    crops = {r: audio_crops(audio, family, batches, ratio) for r, batches in memory.items()}
    stats = family.stores.stats
    stores = {k: Stream(families[k], device) for k in families}
    loaders = {k: Stream(families[k], device) for k in families}
    for stream in (*stores.values(), *loaders.values()):
        next(stream)  # the workers start (fork) here, before anything is timed
    time.sleep(SETTLE_SECONDS)
    read_ahead = {k: config.data.prefetch_factor * k for k in families}

    def on_the_fly(r: int, count: int) -> float:
        encoded = encoded_batches(autoencoder, memory[r], crops[r], config, device, stats)
        return timed(lambda: trainer.steps(encoded, count), device)

    runs: dict[str, Run] = {
        "memory": lambda r, count: timed(lambda: trainer.steps(memory[r], count), device),
        **{f"store w{k}": (lambda r, count, k=k: store_steps(trainer, stores[k], start[r], count)) for k in families},
        **{
            f"loader w{k}": (lambda r, count, k=k: loader_alone(loaders[k], count, read_ahead[k], device))
            for k in families
        },
        "on the fly": on_the_fly,
        "checkpoint": lambda r, count: timed(trainer.checkpoint, device),
    }
    interleaved(runs, [-1], WARM_UP_STEPS)  # warm-up: allocator, kernels, page cache, the first AdamW step
    seconds = interleaved(runs, range(repeats), steps)
    for stream in (*stores.values(), *loaders.values()):
        stream.close()
    return {
        "configured_workers": config.data.num_workers,
        "batch_size": config.batch_size,
        "crop_frames": config.data.crop_frames,
        "latent_dim": family.stores.latent_dim,
        "items": len(family.training_items),
        "parameters": trainer.parameters,
        "autoencoder_parameters": sum(p.numel() for p in autoencoder.parameters()),
        "checkpoint_bytes": trainer.checkpoint_bytes,
        "checkpoint_every": CHECKPOINT_EVERY,
        "checkpoint_every_configured": config.checkpoint_every,
        "steps_per_round": steps,
        "seconds": seconds,
    }


# --- the discrete demo's LM -----------------------------------------------------------------------------
def setup_lm(work: Path, seconds: float, device: str) -> Experiment:
    """The discrete demo on its own generated audio: shards, random-init rvq weights, code stores, index."""
    overrides = [f"pre_encode.device={device}", f"train.device={device}"]
    experiment = sharded_demo(work, seconds, "bench_lm", overrides, base=DEMO_LM_EXPERIMENT)
    pre_encode_all(experiment, progress=False)
    build_index(experiment)
    return experiment


def bench_lm(work: Path, experiment: Experiment, device: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    config = experiment.train
    assert config is not None
    steps, repeats = args.steps, args.repeats
    family = LMFamily(experiment, DistEnv(), device)
    torch.manual_seed(experiment.seed)
    trainer = Trainer(family.build(), config, device, RunFiles(work / "runs/lm"), step=LMStep)
    start = {-1: 1, **{r: 1 + WARM_UP_STEPS + r * steps for r in range(repeats)}}
    reader = family.batches(0, device)
    stream_batches = list(itertools.islice(reader, start[repeats - 1] + steps))
    reader.close()
    memory = {r: stream_batches[at : at + max(steps, WARM_UP_STEPS)] for r, at in start.items()}
    workers = config.data.num_workers
    stream = Stream(family, device)
    next(stream)  # the workers fork here, before anything is timed
    time.sleep(SETTLE_SECONDS)
    runs: dict[str, Run] = {
        "memory": lambda r, count: timed(lambda: trainer.steps(memory[r], count), device),
        f"store w{workers}": lambda r, count: store_steps(trainer, stream, start[r], count),
    }
    interleaved(runs, [-1], WARM_UP_STEPS)
    seconds = interleaved(runs, range(repeats), steps)
    stream.close()
    model = trainer.state.model.eval()
    sample = experiment.sample
    length = patterns.sequence_length(model.config.pattern, model.n_codebooks, args.lm_frames)
    uniforms = torch.rand(1, length, model.n_codebooks, generator=torch.Generator().manual_seed(0)).to(device)
    values = {"seconds_start": [0.0], "seconds_total": [args.lm_frames / family.stores.latent_rate], "label": ["flute"]}

    def sampling(use_cache: bool) -> Run:
        settings = {"temperature": sample.temperature, "top_k": sample.top_k, "cfg_scale": sample.cfg_scale}
        return lambda r, count: timed(
            lambda: model.generate(values, args.lm_frames, uniforms, use_cache=use_cache, **settings), device
        )

    sampled = interleaved({"cache": sampling(True), "no cache": sampling(False)}, range(args.lm_sample_repeats), 1)
    return {
        "configured_workers": workers,
        "batch_size": config.batch_size,
        "crop_frames": config.data.crop_frames,
        "n_codebooks": model.n_codebooks,
        "codebook_size": model.codebook_size,
        "items": len(family.training_items),
        "parameters": trainer.parameters,
        "steps_per_round": steps,
        "seconds": seconds,
        "sample_frames": args.lm_frames,
        "sample_positions": length,
        "sample_cfg_scale": sample.cfg_scale,
        "sample_seconds": sampled,
    }


def report_lm(lm: dict[str, Any]) -> dict[str, float]:
    n, s = lm["steps_per_round"], lm["seconds"]
    store = next(name for name in s if name.startswith("store"))
    print(
        f"\nlm: {lm['parameters']:,} parameters, batch {lm['batch_size']} x {lm['n_codebooks']} codebooks of "
        f"{lm['codebook_size']} x {lm['crop_frames']} frames, {lm['items']} training items; {len(s['memory'])} rounds "
        f"of {n} steps"
    )
    for name, values in s.items():
        print(f"{name:12s} {n / statistics.median(values):9.2f}   {', '.join(f'{v:.2f}' for v in rates(values, n))}")
    summary = {"lm_store_over_memory": paired(s["memory"], s[store])}
    rounds = ", ".join(f"{a / b:.2f}" for a, b in zip(s["memory"], s[store]))
    print(
        f"5. lm: steps/s from the stores / from memory (goal >= 0.95): {summary['lm_store_over_memory']:.3f}  ({rounds})"
    )
    t, positions = lm["sample_seconds"], lm["sample_positions"]
    cached, uncached = (positions / statistics.median(t[name]) for name in ("cache", "no cache"))
    summary.update(lm_positions_per_s_cache=cached, lm_positions_per_s_no_cache=uncached)
    summary["lm_cache_speedup"] = paired(t["no cache"], t["cache"])
    print(
        f"6. lm sampling, {lm['sample_frames']} frames = {positions} positions, batch 1, cfg {lm['sample_cfg_scale']}: "
        f"{cached:.0f} positions/s with the key/value cache, {uncached:.0f} without: "
        f"{summary['lm_cache_speedup']:.1f}x"
    )
    return summary


# --- Stable Audio Open's geometry ---------------------------------------------------------------------
def sao_parameters(depth: int) -> int:
    """Parameters of the SAO DiT at `depth` blocks, built on the meta device (no memory)."""
    with torch.device("meta"):
        config = DiffusionModelConfig.model_validate(sao_model_config(depth))
        model = build("model", config, io_channels=SAO_LATENT_DIM)
    return sum(p.numel() for p in model.parameters())


def sao_batches(count: int, batch: int, frames: int, device: torch.device) -> list[Batch]:
    generator = torch.Generator().manual_seed(0)
    seconds = frames * SAO_DOWNSAMPLING / SAO_SAMPLE_RATE
    shape = (batch, SAO_LATENT_DIM, frames)
    made = []
    for _ in range(count):
        made.append(
            {
                "latents": torch.randn(shape, generator=generator).to(device),
                "mask": torch.ones(batch, frames, dtype=torch.bool, device=device),
                "noise": torch.randn(shape, generator=generator).to(device),
                "t": torch.rand(batch, generator=generator).to(device),
                "keep": torch.ones(batch, dtype=torch.bool, device=device),
                "seconds_start": torch.zeros(batch, dtype=torch.float64),
                "seconds_total": torch.full((batch,), seconds, dtype=torch.float64),
                "metadata": {},
            }
        )
    return made


def bench_sao(work: Path, device: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    config = TrainConfig.model_validate(
        {**SAO_TRAIN, "model": sao_model_config(args.sao_depth), "batch_size": args.sao_batch}
    )
    torch.manual_seed(0)
    vae = Autoencoder(AutoencoderModelConfig.model_validate(SAO_VAE), SAO_SAMPLE_RATE).eval().to(device)
    vae.requires_grad_(False)
    model = build("model", config.model, io_channels=SAO_LATENT_DIM)
    trainer = Trainer(model, config, device, RunFiles(work / "runs/sao"))
    steps = args.sao_steps
    batches = sao_batches(steps, args.sao_batch, args.sao_frames, device)
    generator = torch.Generator().manual_seed(1)
    samples = args.sao_frames * vae.downsampling_ratio
    crops = [0.1 * torch.randn(args.sao_batch, 2, samples, generator=generator).to(device) for _ in batches]

    runs: dict[str, Run] = {
        "pre-encoded": lambda _, count: timed(lambda: trainer.steps(batches, count), device),
        "on the fly": lambda _, count: timed(
            lambda: trainer.steps(encoded_batches(vae, batches, crops, config, device), count), device
        ),
        "checkpoint": lambda _, count: timed(trainer.checkpoint, device),
    }
    interleaved(runs, [-1], 1)  # warm-up; AdamW's state exists from here on
    seconds = interleaved(runs, range(args.sao_repeats), steps)
    return {
        "depth": args.sao_depth,
        "batch_size": args.sao_batch,
        "crop_frames": args.sao_frames,
        "crop_seconds": samples / SAO_SAMPLE_RATE,
        "parameters": trainer.parameters,
        "parameters_full_depth": sao_parameters(SAO_DIT["depth"]),
        "vae_parameters": sum(p.numel() for p in vae.parameters()),
        "checkpoint_bytes": trainer.checkpoint_bytes,
        "checkpoint_every": CHECKPOINT_EVERY,
        "steps_per_round": steps,
        "seconds": seconds,
    }


# --- the demo DiT with a text prompt ---------------------------------------------------------------------
def text_experiment(work: Path, args: argparse.Namespace, t5: Path, precompute: bool) -> Experiment:
    prompt = {
        "type": "t5",
        "id": "prompt",
        "field": "caption",
        "model_dir": str(t5),
        "max_length": args.text_max_length,
        "dtype": "float16" if args.device == "cuda" else "float32",
        "precompute": precompute,
    }
    demo = load_experiment(work / "bench.yaml").train.model
    conditioners = [prompt, *(c.model_dump(mode="json") for c in demo.conditioners)]
    overrides = [
        f"pre_encode.device={args.device}",
        f"train.device={args.device}",
        f"train.model.conditioners={json.dumps(conditioners)}",
        f"train.model.cross_attention_cond_ids={json.dumps(['prompt', *demo.cross_attention_cond_ids])}",
    ]
    return load_experiment(work / "bench.yaml", overrides)


def bench_text(work: Path, device: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    from common import write_t5

    captions = [json.loads(p.read_text()).get("caption", "") for p in (work / "audio").rglob("*.json")]
    heads = max(1, args.text_d_model // 64)
    t5 = write_t5(work / "t5", captions, args.text_d_model, args.text_layers, heads, 4 * args.text_d_model)
    experiments = {p: text_experiment(work, args, t5, p) for p in (True, False)}
    config = experiments[True].train
    assert config is not None
    started = {}
    families = {}
    for precompute in (False, True):  # the store is written when the precompute family starts
        begin = time.perf_counter()
        families[precompute] = DiffusionFamily(experiments[precompute], DistEnv(), device)
        started[precompute] = time.perf_counter() - begin
    store = layout_of(experiments[True]).prompt_embeddings("prompt")
    steps, repeats = args.steps, args.repeats
    count = 1 + WARM_UP_STEPS + repeats * steps
    memory = {}
    for precompute, family in families.items():
        reader = family.batches(0, device)
        memory[precompute] = list(itertools.islice(reader, count))
        reader.close()
    torch.manual_seed(experiments[True].seed)
    trainer = Trainer(families[True].build(), config, device, RunFiles(work / "runs/text"))
    start = {-1: 1, **{r: 1 + WARM_UP_STEPS + r * steps for r in range(repeats)}}

    def run(precompute: bool) -> Run:
        return lambda r, n: timed(lambda: trainer.steps(memory[precompute][start[r] :], n), device)

    runs: dict[str, Run] = {"precomputed": run(True), "t5 per step": run(False)}
    interleaved(runs, [-1], WARM_UP_STEPS)  # the encoder loads here (first use), untimed
    seconds = interleaved(runs, range(repeats), steps)
    return {
        "t5_d_model": args.text_d_model,
        "t5_layers": args.text_layers,
        "t5_max_length": args.text_max_length,
        "t5_parameters": sum(p.numel() for p in load_text_encoder_for(families[False]).parameters()),
        "prompts": len(prompts_of(families[True].stores.table, "caption")),
        "store_bytes": store.stat().st_size,
        "family_start_seconds": {"precompute": started[True], "no precompute": started[False]},
        "batch_size": config.batch_size,
        "parameters": trainer.parameters,
        "steps_per_round": steps,
        "seconds": seconds,
    }


def load_text_encoder_for(family: DiffusionFamily) -> torch.nn.Module:
    conditioner = family.config.conditioners[0]
    return load_text_encoder(Path(conditioner.model_dir), conditioner.dtype, family.device)[1]


def report_text(text: dict[str, Any]) -> dict[str, float]:
    n, s = text["steps_per_round"], text["seconds"]
    print(
        f"\ntext: T5 encoder {text['t5_parameters']:,} parameters (d_model {text['t5_d_model']}, "
        f"{text['t5_layers']} blocks, {text['t5_max_length']} tokens), demo DiT {text['parameters']:,}, "
        f"batch {text['batch_size']}; {text['prompts']} distinct captions, store {text['store_bytes'] / 1e6:.2f} MB, "
        f"written in {text['family_start_seconds']['precompute'] - text['family_start_seconds']['no precompute']:.2f} s"
    )
    print(f"{'':12s} {'steps/s':>9s}   per round")
    for name in s:
        print(f"{name:12s} {n / statistics.median(s[name]):9.3f}   {', '.join(f'{v:.3f}' for v in rates(s[name], n))}")
    ratio = paired(s["t5 per step"], s["precomputed"])
    print(f"precomputed / t5 per step (steps/s, median of per-round ratios): {ratio:.2f}")
    return {"text_precomputed_over_t5": ratio}


# --- report -------------------------------------------------------------------------------------------
def rates(seconds: list[float], count: int) -> list[float]:
    return [count / s for s in seconds]


def report(demo: dict[str, Any], sao: dict[str, Any] | None, device: torch.device, phases: dict[str, Any]) -> dict:
    n, s = demo["steps_per_round"], demo["seconds"]
    median = {name: statistics.median(values) for name, values in s.items()}
    step_s = median["memory"] / n
    walls = ", ".join(f"{name} {wall:.0f} s (load {load:.1f})" for name, (wall, load) in phases.items())
    print(
        f"device {device}, {torch.get_num_threads()} torch threads; wall and 1-min load average after each phase: "
        f"{walls}\n\ndemo: DiT {demo['parameters']:,} parameters, batch {demo['batch_size']} x "
        f"{demo['latent_dim']} x {demo['crop_frames']} frames, {demo['items']} training items; "
        f"{len(s['memory'])} rounds of {n} steps"
    )
    print(f"{'run':12s} {'per s':>9s}   runs")
    for name, values in s.items():
        if name == "checkpoint":
            continue
        unit = "batches/s" if name.startswith("loader") else "steps/s"
        print(f"{name:12s} {n / median[name]:9.2f}   {', '.join(f'{v:.2f}' for v in rates(values, n))}  ({unit})")
    summary: dict[str, float] = {}
    workers = [name.removeprefix("store w") for name in s if name.startswith("store w")]
    print("\n1. steps/s from the stores / steps/s from memory (goal >= 0.95 at the configured workers)")
    for k in workers:
        ratio = summary[f"store_w{k}_over_memory"] = paired(s["memory"], s[f"store w{k}"])
        mark = " <- configured" if int(k) == demo["configured_workers"] else ""
        rounds = ", ".join(f"{a / b:.2f}" for a, b in zip(s["memory"], s[f"store w{k}"]))
        print(f"   num_workers {k}: {ratio:.3f}{mark}   (rounds {rounds})")
    print("2. loader alone, batches/s / batches/s the training step consumes (headroom)")
    for k in workers:
        ratio = summary[f"loader_w{k}_over_training"] = paired(s["memory"], s[f"loader w{k}"])
        print(f"   num_workers {k}: {ratio:.1f}x")
    ratio = summary["demo_pre_encoded_over_on_the_fly"] = paired(s["on the fly"], s["memory"])
    print(f"3. pre-encoded / on the fly, steps/s: demo {ratio:.2f}x", end="")
    if sao is not None:
        t = sao["seconds"]
        ratio = summary["sao_pre_encoded_over_on_the_fly"] = paired(t["on the fly"], t["pre-encoded"])
        print(f", sao {ratio:.2f}x")
    else:
        print()
    share = summary["demo_checkpoint_share"] = median["checkpoint"] / (demo["checkpoint_every"] * step_s)
    configured = demo["checkpoint_every_configured"]
    print(
        f"4. checkpoint / (checkpoint_every {demo['checkpoint_every']} x step) (goal <= 5%): demo {share:.3%} "
        f"({share * demo['checkpoint_every'] / configured:.3%} at the demo's own {configured}; checkpoint "
        f"{median['checkpoint'] * 1000:.0f} ms, {demo['checkpoint_bytes']:,} bytes; step {step_s * 1000:.1f} ms from memory)"
    )
    if sao is not None:
        t, m = sao["seconds"], sao["steps_per_round"]
        checkpoint, step = statistics.median(t["checkpoint"]), statistics.median(t["pre-encoded"]) / m
        share = summary["sao_checkpoint_share"] = checkpoint / (sao["checkpoint_every"] * step)
        rate = sao["checkpoint_bytes"] / checkpoint
        full_bytes = sao["checkpoint_bytes"] * sao["parameters_full_depth"] / sao["parameters"]
        summary.update(sao_checkpoint_bytes_per_s=rate, sao_full_depth_checkpoint_bytes=full_bytes)
        print(
            f"   sao (depth {sao['depth']}, {sao['parameters']:,} parameters): {share:.3%} (checkpoint {checkpoint:.2f} s, "
            f"{sao['checkpoint_bytes']:,} bytes at {rate / 1e6:.0f} MB/s; step {step:.2f} s)\n"
            f"   at depth 24 ({sao['parameters_full_depth']:,} parameters) a checkpoint is ~{full_bytes / 1e9:.1f} GB: "
            f"~{full_bytes / rate:.0f} s at that write rate, within 5% of the wall time for steps of at least "
            f"{full_bytes / rate / (0.05 * sao['checkpoint_every']):.1f} s"
        )
        print(
            f"\nsao: batch {sao['batch_size']} x {sao['crop_frames']} frames ({sao['crop_seconds']:.2f} s of 44.1 kHz "
            f"stereo), VAE {sao['vae_parameters']:,} parameters; {len(t['checkpoint'])} rounds of {m} steps"
        )
        for name in ("pre-encoded", "on the fly"):
            print(
                f"{name:12s} {m / statistics.median(t[name]):9.3f}   {', '.join(f'{v:.3f}' for v in rates(t[name], m))}"
            )
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a fast smoke run: " + json.dumps(QUICK))
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu")
    parser.add_argument("--seconds", type=float, default=180.0, help="audio in the generated corpus")
    parser.add_argument("--repeats", type=int, default=12, help="demo rounds")
    parser.add_argument("--steps", type=int, default=10, help="demo steps per run and round")
    parser.add_argument("--workers", default="0,1,2", help="DataLoader worker counts to compare")
    parser.add_argument("--sao-depth", type=int, help="SAO DiT blocks (24 in SAO); default 24 on CUDA, 2 on CPU")
    parser.add_argument("--sao-batch", type=int, help="default 4 on CUDA, 1 on CPU")
    parser.add_argument("--sao-frames", type=int, help="latent frames per crop (SAO trains on 1024); 256 / 32")
    parser.add_argument("--sao-steps", type=int, default=2, help="SAO steps per run and round")
    parser.add_argument("--sao-repeats", type=int, default=3, help="SAO rounds")
    parser.add_argument("--no-sao", action="store_true", help="skip the SAO geometry")
    parser.add_argument("--no-demo", action="store_true", help="skip the demo DiT (and SAO): the LM only")
    parser.add_argument("--no-lm", action="store_true", help="skip the discrete demo's LM")
    parser.add_argument("--no-text", action="store_true", help="skip the text-conditioned demo DiT")
    parser.add_argument("--text-d-model", type=int, help="T5 width (t5-base: 768, the default on CUDA; 256 on CPU)")
    parser.add_argument(
        "--text-layers", type=int, help="T5 encoder blocks (t5-base: 12, the default on CUDA; 2 on CPU)"
    )
    parser.add_argument("--text-max-length", type=int, default=128, help="prompt tokens (SAO: 128)")
    parser.add_argument("--lm-frames", type=int, default=250, help="frames the LM samples (2 s of the demo)")
    parser.add_argument("--lm-sample-repeats", type=int, default=3, help="LM sampling rounds")
    parser.add_argument(
        "--threads",
        type=int,
        help="torch threads on CPU; 0: torch's default; default: the demo's resources.train.cpus - num_workers",
    )
    parser.add_argument("--work", type=Path, help="work here instead of a temporary directory")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    device = pick_device(args.device)
    args.device = device.type
    cuda = device.type == "cuda"
    if args.quick:
        for name, value in QUICK.items():
            setattr(args, name, value)
    args.sao_depth = args.sao_depth or (SAO_DIT["depth"] if cuda else 2)
    args.sao_batch = args.sao_batch or (4 if cuda else 1)
    args.sao_frames = args.sao_frames or (256 if cuda else 32)
    args.workers = [int(k) for k in args.workers.split(",")]
    args.text_d_model = args.text_d_model or (768 if cuda else 256)
    args.text_layers = args.text_layers or (12 if cuda else 2)

    phases: dict[str, tuple[float, float]] = {}
    started = time.perf_counter()

    def phase(name: str) -> None:
        nonlocal started
        phases[name] = (time.perf_counter() - started, os.getloadavg()[0])
        started = time.perf_counter()

    with tempfile.TemporaryDirectory(prefix="bench-train-") as temporary:
        work = args.work or Path(temporary)
        demo = sao = lm = text = None
        if not args.no_demo:
            experiment = setup(work, args.seconds, args.device)
            set_threads(args, experiment, cuda)
            phase("setup")
            demo = bench_demo(work, experiment, device, args)
            phase("demo")
            sao = None if args.no_sao else bench_sao(work, device, args)
            if sao is not None:
                phase("sao")
            text = None if args.no_text else bench_text(work, device, args)
            if text is not None:
                phase("text")
        if not args.no_lm:
            experiment = setup_lm(work / "lm", args.seconds, args.device)
            set_threads(args, experiment, cuda)
            phase("lm setup")
            lm = bench_lm(work / "lm", experiment, device, args)
            phase("lm")
    if demo is not None:
        summary = report(demo, sao, device, phases)
    else:
        walls = ", ".join(f"{name} {wall:.0f} s (load {load:.1f})" for name, (wall, load) in phases.items())
        print(f"device {device}, {torch.get_num_threads()} torch threads; wall and 1-min load average: {walls}")
        summary = {}
    if lm is not None:
        summary.update(report_lm(lm))
    if text is not None:
        summary.update(report_text(text))
    if args.json:
        document = {
            "args": {k: str(v) for k, v in vars(args).items()},
            "demo": demo,
            "sao": sao,
            "lm": lm,
            "text": text,
            "summary": summary,
        }
        args.json.write_text(json.dumps(document, indent=2))


def set_threads(args: argparse.Namespace, experiment: Experiment, cuda: bool) -> None:
    """On CPU, the threads `pipeline train` gives the experiment (its CPUs less its workers), as train_stage does."""
    if args.threads is None and not cuda:
        args.threads = experiment.resources.train.cpus - experiment.train.data.num_workers
    if args.threads:
        torch.set_num_threads(max(1, args.threads))


if __name__ == "__main__":
    main()
