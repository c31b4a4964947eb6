# Load and validate the experiment once; every rule calls the `pipeline` CLI with the same arguments.
import shlex
import sys

from pipeline.config import ConfigError, load_experiment, stage_hashes
from pipeline.layout import layout_of

EXPERIMENT_FILE = str(config.get("experiment", "configs/experiments/demo.yaml"))
OVERRIDES = [str(item) for item in config.get("overrides", [])]
try:
    EXPERIMENT = load_experiment(EXPERIMENT_FILE, OVERRIDES)
except ConfigError as error:
    sys.stderr.write(error.report() + "\n")
    raise SystemExit(2)

LAYOUT = layout_of(EXPERIMENT)  # every path under work_dir
HASHES = stage_hashes(EXPERIMENT)
# The interpreter running Snakemake has the package: use it on every node (shared filesystem assumed).
PIPELINE = f"{shlex.quote(sys.executable)} -m pipeline"
EXP_ARGS = shlex.join([EXPERIMENT_FILE, *OVERRIDES])


def stage_resources(stage):
    """Snakemake/SLURM resources of a stage from the experiment's `resources` section."""
    wanted = getattr(EXPERIMENT.resources, stage)
    resources = {
        "mem_mb": wanted.mem_mb,
        "runtime": wanted.runtime,
        "cpus_per_task": wanted.cpus,
        "nodes": wanted.nodes,
    }
    if wanted.gpus:
        resources["gpu"] = wanted.gpus
    return resources
