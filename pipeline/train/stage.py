"""`pipeline train EXP`: the train stage for any `train.model.type`: the distributed environment,
the family of the configured model, this experiment's run, then the one loop.

Runs live in `<work_dir>/train/checkpoints/<run hash>/` (numbered checkpoints, metrics.jsonl, run.json),
outside Snakemake's declared outputs. The run hash is the train stage hash without `train.steps`:
raising steps continues a run; any other change starts a new one beside it and touches no other."""

from __future__ import annotations

import importlib

from pipeline.config.experiment import Experiment
from pipeline.config.hashing import stage_hash
from pipeline.errors import UserFacingError
from pipeline.layout import RunFiles, layout_of
from pipeline.train import distributed
from pipeline.train.loop import Family, LoopResult, train

RUN_IGNORES = ("train.steps",)  # raising the step count continues the same run
FAMILIES = {"diffusion": "pipeline.train.diffusion:DiffusionFamily"}  # train.model.type -> family class


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
    env = distributed.detect()
    device = distributed.device_for(env, config.device)
    try:
        micro = config.micro_batch(env.world_size)
    except ValueError as error:
        raise UserFacingError(str(error)) from None
    if env.is_main:
        print(
            f"train: {env.world_size} process(es) ({env.launcher}) on {device.type}: global batch {config.batch_size} "
            f"= {micro} per micro-batch x {config.grad_accum} accumulation step(s) x {env.world_size}"
        )
    distributed.initialise(env, device)
    try:
        family: Family = family_class(config.model.type)(experiment, env, device)
        return train(
            family,
            config,
            experiment.seed,
            run_files(experiment),
            run_hash(experiment),
            env,
            device,
            progress,
            max_steps,
        )
    finally:
        distributed.shutdown()
