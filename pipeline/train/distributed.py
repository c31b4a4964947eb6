"""Who this process is in a distributed run, from the environment: torchrun (`RANK`, `WORLD_SIZE`,
`LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`) or SLURM (`srun`: one task per GPU, `SLURM_PROCID`,
`SLURM_NTASKS`, `SLURM_LOCALID`, the first host of `SLURM_JOB_NODELIST`). A plain `pipeline train`
is rank 0 of 1 and initialises nothing. gloo on CPU, nccl on GPU."""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass

import torch
import torch.distributed as dist

from pipeline.train.launch import rank_launcher

DEFAULT_PORT_BASE = 29500  # SLURM: port = base + job id % 10000, so two jobs on one node do not collide


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = DEFAULT_PORT_BASE
    launcher: str = "single"  # single | torchrun | slurm

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def detect(environ: dict[str, str] | None = None) -> DistEnv:
    """The distributed environment this process was started in."""
    env = dict(os.environ if environ is None else environ)
    launcher = rank_launcher(env)
    if launcher == "torchrun":
        return DistEnv(
            rank=int(env["RANK"]),
            world_size=int(env["WORLD_SIZE"]),
            local_rank=int(env.get("LOCAL_RANK", 0)),
            master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
            master_port=int(env.get("MASTER_PORT", DEFAULT_PORT_BASE)),
            launcher="torchrun",
        )
    if launcher == "slurm":
        job = int(env.get("SLURM_JOB_ID", "0"))
        return DistEnv(
            rank=int(env["SLURM_PROCID"]),
            world_size=int(env["SLURM_NTASKS"]),
            local_rank=int(env.get("SLURM_LOCALID", 0)),
            master_addr=env.get("MASTER_ADDR") or first_host(env.get("SLURM_JOB_NODELIST", "127.0.0.1")),
            master_port=int(env.get("MASTER_PORT", DEFAULT_PORT_BASE + job % 10000)),
            launcher="slurm",
        )
    return DistEnv()


def first_host(nodelist: str) -> str:
    """The first host of a SLURM node list (`gpu[03-05,09],cpu1` -> `gpu03`), by `scontrol` when present."""
    try:
        listed = subprocess.run(
            ["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, check=True, timeout=30
        )
        if listed.stdout.split():
            return listed.stdout.split()[0]
    except (OSError, subprocess.SubprocessError):
        pass
    return expand_first(nodelist)


def expand_first(nodelist: str) -> str:
    """The first host of a node list without `scontrol`: the prefix plus the first number of its range."""
    match = re.match(r"^([^,\[]+)(?:\[([^\]]+)\])?", nodelist.strip())
    if match is None:
        return nodelist
    prefix, ranges = match.groups()
    if not ranges:
        return prefix
    return prefix + re.split(r"[-,]", ranges)[0]


def device_for(env: DistEnv, wanted: str) -> torch.device:
    """CPU, or this rank's GPU (`cuda:LOCAL_RANK`)."""
    from pipeline.utils.devices import pick_device

    device = pick_device(wanted)
    if device.type == "cuda":
        torch.cuda.set_device(env.local_rank)
        return torch.device("cuda", env.local_rank)
    return device


def initialise(env: DistEnv, device: torch.device) -> None:
    """Join the process group (no-op for a single process)."""
    if not env.distributed or dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    os.environ.setdefault("MASTER_ADDR", env.master_addr)
    os.environ.setdefault("MASTER_PORT", str(env.master_port))
    dist.init_process_group(
        backend, rank=env.rank, world_size=env.world_size, device_id=device if device.type == "cuda" else None
    )


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def reduce_step(loss: float, stop_requested: bool, device: torch.device) -> tuple[float, bool]:
    """(the loss averaged over the ranks, whether any rank was asked to stop): one collective per step,
    so a stop signal seen by one rank stops them all at the same step boundary."""
    if not dist.is_initialized():
        return loss, stop_requested
    values = torch.tensor([loss, 1.0 if stop_requested else 0.0], dtype=torch.float64, device=device)
    dist.all_reduce(values)
    return float(values[0].item()) / dist.get_world_size(), bool(values[1].item() > 0)


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()
