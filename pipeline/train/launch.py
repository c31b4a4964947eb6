"""Start the processes of one training job: one per GPU (`resources.<stage>`: gpus per node x nodes).

`pipeline train --launch` (what the workflow's rule runs) calls this: inside a SLURM allocation it
re-runs the same command under `srun` (one task per GPU; rank and world come from SLURM, see
distributed.py), on a machine without SLURM under torchrun (one node). In a job's batch script a
single process is an `srun` step too: SLURM's `--signal=USR1@N` (without `B:`) reaches job steps, not
the batch shell, and the workflow submits training jobs so that nothing else stands between the
signal and the training (pipeline/config/jobs.py). Off SLURM or already inside a step, a job with one
process trains in place, and so does a process that already is one of the ranks. Kept torch-free
until it trains: the launcher only builds a command line.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence

from pipeline.config.sections import StageResources
from pipeline.errors import UserFacingError


def rank_launcher(environ: Mapping[str, str]) -> str | None:
    """What started this process as one rank of several: "torchrun", "slurm" (an srun step of more than
    one task), or None (a process on its own). distributed.detect() reads the rank from the same variables."""
    if "RANK" in environ and "WORLD_SIZE" in environ:
        return "torchrun"
    if "SLURM_PROCID" in environ and "SLURM_STEP_ID" in environ and int(environ.get("SLURM_NTASKS", "1")) > 1:
        return "slurm"
    return None


def is_rank(environ: Mapping[str, str]) -> bool:
    return rank_launcher(environ) is not None


def launch_command(
    resources: StageResources, arguments: Sequence[str], environ: Mapping[str, str], stage: str = "train"
) -> list[str] | None:
    """The command line that starts `resources.processes` copies of `pipeline <arguments>`, or None when
    this process should train itself."""
    in_batch_script = "SLURM_JOB_ID" in environ and "SLURM_STEP_ID" not in environ
    if is_rank(environ) or (resources.processes == 1 and not in_batch_script):
        return None
    command = [sys.executable, "-m", "pipeline", *arguments]
    if "SLURM_JOB_ID" in environ:
        return [
            "srun",
            f"--nodes={resources.nodes}",
            f"--ntasks={resources.processes}",
            f"--ntasks-per-node={resources.processes_per_node}",
            f"--cpus-per-task={resources.cpus}",
            "--kill-on-bad-exit=1",  # one rank failing stops the others instead of leaving them in a collective
            "--export=ALL",
            *command,
        ]
    if resources.nodes > 1:
        raise UserFacingError(
            f"resources.{stage}.nodes is {resources.nodes}: training on several nodes needs SLURM "
            "(run it through the workflow's SLURM profile or `pipeline train --submit`), here there is no allocation"
        )
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={resources.processes_per_node}",
        "-m",
        "pipeline",
        *arguments,
    ]


def run_launched(command: list[str]) -> int:
    """Run the ranks and return their exit status (75 when they saved and stopped on a signal).

    SLURM signals the ranks themselves; this process only waits, so it ignores SIGUSR1 (which would
    otherwise end it before the ranks have saved) and passes SIGTERM on."""
    child = subprocess.Popen(command)
    previous_usr1 = signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    previous_term = signal.signal(signal.SIGTERM, lambda number, frame: child.send_signal(number))
    try:
        return child.wait()
    finally:
        signal.signal(signal.SIGUSR1, previous_usr1)
        signal.signal(signal.SIGTERM, previous_term)
