"""`pipeline train EXP`: the train stage for any `train.model.type`: the distributed environment,
the family of the configured model, this experiment's run, then the one loop.

Runs live in `<work_dir>/train/checkpoints/<run hash>/` (numbered checkpoints, metrics.jsonl, run.json),
outside Snakemake's declared outputs. The run hash is the train stage hash without `train.steps`:
raising steps continues a run; any other change starts a new one beside it and touches no other."""

from __future__ import annotations

import dataclasses
import importlib

from pipeline.config.experiment import Experiment
from pipeline.config.hashing import stage_hash
from pipeline.errors import UserFacingError
from pipeline.layout import RunFiles, layout_of
from pipeline.train.loop import LoopResult, LoopSettings, launch

RUN_IGNORES = ("train.steps",)  # raising the step count continues the same run
FAMILIES = {  # train.model.type -> family class
    "diffusion": "pipeline.train.diffusion:DiffusionFamily",
    "lm": "pipeline.train.lm:LMFamily",
}


def run_hash(experiment: Experiment) -> str:
    return stage_hash(experiment, "train", ignoring=RUN_IGNORES)


def run_files(experiment: Experiment) -> RunFiles:
    return layout_of(experiment).train_run(run_hash(experiment))


def family_class(model_type: str) -> type:
    if model_type not in FAMILIES:
        raise UserFacingError(f"train.model.type '{model_type}' has no training family; known: {sorted(FAMILIES)}")
    module, _, name = FAMILIES[model_type].partition(":")
    return getattr(importlib.import_module(module), name)


def train_stage(experiment: Experiment, progress: bool = True, max_steps: int | None = None) -> LoopResult:
    """Train (or resume) the experiment's model, on every process of a torchrun / srun launch."""
    config = experiment.train
    if config is None:
        raise UserFacingError(f"experiment '{experiment.name}' has no train section")
    family = family_class(config.model.type)

    def micro_batch(world_size: int) -> int:
        try:
            return config.micro_batch(world_size)
        except ValueError as error:
            raise UserFacingError(str(error)) from None

    return launch(
        lambda env, device: family(experiment, env, device),
        dataclasses.replace(LoopSettings.of(config), time_limit_margin_s=experiment.resources.train.signal_seconds),
        experiment.seed,
        run_files(experiment),
        run_hash(experiment),
        config.device,
        progress,
        max_steps,
        batch_split=micro_batch,
        cpu_threads=experiment.resources.train.cpus - config.data.num_workers,
    )
