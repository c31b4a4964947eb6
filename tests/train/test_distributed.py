"""DDP on CPU (gloo): two torchrun processes equal one process with the same global batch, for the
diffusion and the LM family; the distributed environment is read from torchrun's and SLURM's variables."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipeline.config import load_experiment
from pipeline.train.distributed import DistEnv, detect, expand_first
from pipeline.train.stage import run_files, train_stage
from tests.conftest import REPO_ROOT

DDP_RUN = {"steps": 8, "batch_size": 8, "grad_accum": 2, "checkpoint_every": 4, "eval_every": 4}


def final_checkpoint(experiment) -> dict:
    return torch.load(run_files(experiment).step_checkpoints()[-1][1], weights_only=True)


@pytest.mark.parametrize("family", ["diffusion", "lm"])  # the `family` fixture of train_experiment
def test_two_gloo_processes_equal_one_with_the_same_global_batch(train_experiment, tmp_path):
    single = load_experiment(train_experiment(DDP_RUN, name="single"))
    assert train_stage(single, progress=False).step == 8

    other = tmp_path / "work-ddp"
    shutil.copytree(tmp_path / "work", other, symlinks=True, ignore=shutil.ignore_patterns("train"))
    ddp_file = train_experiment(DDP_RUN, name="ddp", paths={"work_dir": str(other)})
    torchrun = Path(sys.executable).with_name("torchrun")
    launched = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "pipeline", "train", str(ddp_file), "--quiet"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert launched.returncode == 0, launched.stdout[-3000:] + launched.stderr[-3000:]
    assert "2 process(es) (torchrun) on cpu: global batch 8 = 2 per micro-batch" in launched.stdout
    ddp = load_experiment(ddp_file)
    one, two = final_checkpoint(single), final_checkpoint(ddp)
    assert one["step"] == two["step"] == 8
    for part in ("model", "ema"):
        for name, tensor in one[part].items():
            if tensor.is_floating_point():
                torch.testing.assert_close(two[part][name], tensor, rtol=1e-4, atol=1e-5, msg=f"{part}.{name}")
    lines = run_files(ddp).metrics.read_text().splitlines()
    assert len([line for line in lines if '"loss"' in line]) == 8  # rank 0 alone logs


@pytest.mark.parametrize(
    "environ, expected",
    [
        ({}, DistEnv()),
        (
            {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "MASTER_ADDR": "node7", "MASTER_PORT": "1234"},
            DistEnv(3, 4, 1, "node7", 1234, "torchrun"),
        ),
        (
            {
                "SLURM_PROCID": "5",
                "SLURM_NTASKS": "8",
                "SLURM_LOCALID": "1",
                "SLURM_STEP_ID": "0",
                "SLURM_JOB_ID": "123456",
                "SLURM_JOB_NODELIST": "zz-gpu[07-09,12]",
            },
            DistEnv(5, 8, 1, "zz-gpu07", 29500 + 3456, "slurm"),
        ),
        # One task of an sbatch script (no srun step, or a single task) is a plain single process.
        ({"SLURM_PROCID": "0", "SLURM_NTASKS": "1", "SLURM_STEP_ID": "0", "SLURM_JOB_ID": "9"}, DistEnv()),
        ({"SLURM_PROCID": "0", "SLURM_NTASKS": "4", "SLURM_JOB_ID": "9"}, DistEnv()),
    ],
)
def test_the_environment_names_rank_world_and_master(environ, expected, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")  # no scontrol: the node list is expanded here
    assert detect(environ) == expected


@pytest.mark.parametrize(
    "nodelist, first",
    [
        ("node1", "node1"),
        ("gpu[03-05,09]", "gpu03"),
        ("a[1,2],b[3-4]", "a1"),
        ("c12,c13", "c12"),
        ("x-[010-011]", "x-010"),
    ],
)
def test_first_host_of_a_node_list(nodelist, first):
    assert expand_first(nodelist) == first
