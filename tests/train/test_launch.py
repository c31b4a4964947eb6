"""`pipeline train --launch`: which command starts the ranks (srun in an allocation, torchrun without)."""

from __future__ import annotations

import sys

import pytest

from pipeline.config import load_experiment
from pipeline.errors import UserFacingError
from pipeline.train.launch import launch_command
from tests.conftest import DEMO_EXPERIMENT


def _train(**fields):
    overrides = [f"resources.train.{key}={value}" for key, value in fields.items()]
    return load_experiment(DEMO_EXPERIMENT, overrides).resources.train


ARGS = ["train", "exp.yaml", "--launch"]


def test_one_process_trains_in_place_off_slurm_and_inside_a_step():
    assert launch_command(_train(gpus=1), ARGS, {"SLURM_JOB_ID": "7", "SLURM_STEP_ID": "0"}) is None
    assert launch_command(_train(gpus=0), ARGS, {}) is None


def test_one_process_in_a_batch_script_is_an_srun_step_so_that_the_time_limit_signal_reaches_it():
    command = launch_command(_train(gpus=1), ARGS, {"SLURM_JOB_ID": "7"})
    assert command[0] == "srun" and {"--nodes=1", "--ntasks=1", "--ntasks-per-node=1"} <= set(command)


def test_inside_an_allocation_it_is_one_srun_task_per_gpu():
    command = launch_command(_train(gpus=2, nodes=3, cpus=4), ARGS, {"SLURM_JOB_ID": "7"})
    assert command[0] == "srun"
    assert {"--nodes=3", "--ntasks=6", "--ntasks-per-node=2", "--cpus-per-task=4"} <= set(command)
    assert command[-6:] == [sys.executable, "-m", "pipeline", *ARGS]


def test_without_slurm_it_is_torchrun_on_one_node():
    command = launch_command(_train(gpus=2), ARGS, {})
    assert command[:4] == [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    assert "--nproc-per-node=2" in command and command[-3:] == ARGS
    with pytest.raises(UserFacingError, match="resources.train.nodes is 2"):
        launch_command(_train(gpus=1, nodes=2), ARGS, {})


def test_a_rank_never_launches_again():
    rank_env = {"SLURM_JOB_ID": "7", "SLURM_STEP_ID": "0", "SLURM_NTASKS": "2", "SLURM_PROCID": "1"}
    assert launch_command(_train(gpus=2), ARGS, rank_env) is None
    assert launch_command(_train(gpus=2), ARGS, {"RANK": "0", "WORLD_SIZE": "2"}) is None
