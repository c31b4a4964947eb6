"""Where everything lives under an experiment's `work_dir`: the only module that knows these paths.

Stages, `verify`, `index` and the Snakemake rules take their paths from `Layout`. No torch, no
experiment import: `Layout(experiment.work_dir)` (or `layout_of(experiment)`).

    experiment.json                      the resolved experiment (written by `plan`)
    logs/<job>.log                       one log per Snakemake job
    shards/plan.json                     the plan (stage plan)
    shards/shard-NNNNNN.{tar,json}       a shard tar and its manifest (stage shard)
    shards/rejected.jsonl, summary.json  the rejects ledger and the shard summary
    shards/jobs/job-NNNNNN.json          what one shard job (several shards) did: its Snakemake output
    autoencoder/model.{safetensors,json} the trained autoencoder (stage train_autoencoder)
    autoencoder/runs/<run hash>/         its resumable runs: checkpoint.pt, metrics.jsonl, run.json
    latents/shard-NNNNNN.h5              one latent store per shard (stage pre_encode)
    latents/index.h5                     the index over every store (stage index)
    latents/jobs/job-NNNNNN.json         what one pre-encode job (several shards) did: its Snakemake output
    train/checkpoints/<run hash>/        training runs: step-NNNNNNNNN.pt (the newest K), metrics.jsonl,
                                         run.json (stage train; outside the declared outputs)
    train/model.{safetensors,json}       the exported model (EMA weights + the config that built it)
    train/submitit/                      `pipeline train --submit`: job pickles and logs (<job id>_0_log.out/err)
    samples/                             generated audio (stage sample)
    report/                              figures and tables for `snakemake --report` (stage report):
                                         training_loss.svg, autoencoder_loss.svg, latents.{svg,html,csv},
                                         samples.html
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

SHARD_PREFIX = "shard-"
SHARD_DIGITS = 6
JOB_PREFIX = "job-"
JOB_DIGITS = 6
STEP_PREFIX = "step-"
STEP_DIGITS = 9


def shard_name(index: int | str) -> str:
    """`shard-000012` for 12; a string (a Snakemake wildcard such as `{index}`) is used as it is."""
    return f"{SHARD_PREFIX}{index:0{SHARD_DIGITS}d}" if isinstance(index, int) else f"{SHARD_PREFIX}{index}"


@dataclass(frozen=True)
class RunFiles:
    """One training run's directory (its name is the run hash)."""

    directory: Path

    @property
    def checkpoint(self) -> Path:
        return self.directory / "checkpoint.pt"

    @property
    def metrics(self) -> Path:
        return self.directory / "metrics.jsonl"

    @property
    def description(self) -> Path:
        return self.directory / "run.json"

    def step_checkpoint(self, step: int) -> Path:
        """A numbered checkpoint of a run that keeps several (the training loop's)."""
        return self.directory / f"{STEP_PREFIX}{step:0{STEP_DIGITS}d}.pt"

    def step_checkpoints(self) -> list[tuple[int, Path]]:
        """This run's numbered checkpoints, oldest first."""
        found = []
        for path in self.directory.glob(f"{STEP_PREFIX}*.pt"):
            digits = path.stem.removeprefix(STEP_PREFIX)
            if digits.isdigit():
                found.append((int(digits), path))
        return sorted(found)


@dataclass(frozen=True)
class Layout:
    work_dir: Path

    @classmethod
    def of_store(cls, store: str | Path) -> Layout:
        """The layout a latent store or index sits in (`<work_dir>/latents/<file>.h5`)."""
        return cls(Path(store).parent.parent)

    # --- experiment and logs -------------------------------------------------------------------
    @property
    def experiment_json(self) -> Path:
        return self.work_dir / "experiment.json"

    @property
    def logs_dir(self) -> Path:
        return self.work_dir / "logs"

    def log(self, job: str) -> Path:
        return self.logs_dir / f"{job}.log"

    # --- shards ----------------------------------------------------------------------------------
    @property
    def shards_dir(self) -> Path:
        return self.work_dir / "shards"

    @property
    def plan(self) -> Path:
        return self.shards_dir / "plan.json"

    def shard_tar(self, index: int | str) -> Path:
        return self.shards_dir / f"{shard_name(index)}.tar"

    def manifest(self, index: int | str) -> Path:
        return self.shards_dir / f"{shard_name(index)}.json"

    @property
    def rejected(self) -> Path:
        return self.shards_dir / "rejected.jsonl"

    @property
    def shard_summary(self) -> Path:
        return self.shards_dir / "summary.json"

    def job_record(self, stage: str, job: int | str) -> Path:
        """The record a job of a per-shard stage (shard, pre_encode) writes when all its shards are done.
        `job`: its number, or a Snakemake wildcard such as `{job}`."""
        folder = {"shard": self.shards_dir, "pre_encode": self.latents_dir}[stage]
        name = f"{JOB_PREFIX}{job:0{JOB_DIGITS}d}" if isinstance(job, int) else f"{JOB_PREFIX}{job}"
        return folder / "jobs" / f"{name}.json"

    # --- autoencoder -----------------------------------------------------------------------------
    @property
    def autoencoder_dir(self) -> Path:
        return self.work_dir / "autoencoder"

    @property
    def autoencoder_weights(self) -> Path:
        return self.autoencoder_dir / "model.safetensors"

    def autoencoder_weights_for(self, checkpoint: Path | None) -> Path:
        """The weights an experiment encodes with: its configured checkpoint, else the trained ones."""
        return checkpoint if checkpoint is not None else self.autoencoder_weights

    @property
    def autoencoder_description(self) -> Path:
        return self.autoencoder_weights.with_suffix(".json")

    @property
    def autoencoder_runs(self) -> Path:
        return self.autoencoder_dir / "runs"

    def autoencoder_run(self, run_hash: str) -> RunFiles:
        return RunFiles(self.autoencoder_runs / run_hash)

    # --- latents ---------------------------------------------------------------------------------
    @property
    def latents_dir(self) -> Path:
        return self.work_dir / "latents"

    def store(self, index: int | str) -> Path:
        return self.latents_dir / f"{shard_name(index)}.h5"

    @property
    def index(self) -> Path:
        return self.latents_dir / "index.h5"

    def prompt_embeddings(self, conditioner_id: str) -> Path:
        """A text conditioner's pre-computed prompt embeddings (`pipeline/latents/prompts.py`)."""
        return self.latents_dir / "prompts" / f"{conditioner_id}.h5"

    # --- training and sampling -------------------------------------------------------------------
    @property
    def train_dir(self) -> Path:
        return self.work_dir / "train"

    @property
    def train_runs(self) -> Path:
        return self.train_dir / "checkpoints"

    def train_run(self, run_hash: str) -> RunFiles:
        return RunFiles(self.train_runs / run_hash)

    @property
    def exported_model(self) -> Path:
        return self.train_dir / "model.safetensors"

    @property
    def exported_description(self) -> Path:
        return self.exported_model.with_suffix(".json")

    @property
    def train_submitit(self) -> Path:
        """`pipeline train --submit`'s jobs: submitit's pickles and each job's logs (`<job id>_<task>_log.{out,err}`)."""
        return self.train_dir / "submitit"

    @property
    def samples_dir(self) -> Path:
        return self.work_dir / "samples"

    @property
    def samples_settings(self) -> Path:
        """Written last by `pipeline sample`: the settings and the list of files (the stage's output)."""
        return self.samples_dir / "samples.json"

    def sample_wav(self, number: int) -> Path:
        return self.samples_dir / f"sample-{number:04d}.wav"

    # --- report ----------------------------------------------------------------------------------
    @property
    def report_dir(self) -> Path:
        return self.work_dir / "report"

    @property
    def report_training_loss(self) -> Path:
        """The train stage's loss curve (from its run's metrics.jsonl)."""
        return self.report_dir / "training_loss.svg"

    @property
    def report_autoencoder_loss(self) -> Path:
        """The train_autoencoder stage's loss curve."""
        return self.report_dir / "autoencoder_loss.svg"

    @property
    def report_latents_figure(self) -> Path:
        return self.report_dir / "latents.svg"

    @property
    def report_latents_table(self) -> Path:
        return self.report_dir / "latents.html"

    @property
    def report_latents_csv(self) -> Path:
        return self.report_dir / "latents.csv"

    @property
    def report_samples(self) -> Path:
        """The sampled WAVs as playable <audio> elements (Snakemake's report only offers WAVs as downloads)."""
        return self.report_dir / "samples.html"


def layout_of(experiment: Any) -> Layout:
    """The layout of an experiment (anything with a `work_dir`)."""
    return Layout(experiment.work_dir)
