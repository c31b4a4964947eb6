# Load and validate the experiment once; every rule calls the `pipeline` CLI with the same arguments.
import shlex
import sys
from pathlib import Path

from pipeline.config import ConfigError, load_experiment, stage_hashes
from pipeline.config.jobs import job_resources
from pipeline.layout import layout_of

# Relative to where Snakemake runs; the default is the bundled demo of this checkout.
DEFAULT_EXPERIMENT = Path(workflow.main_snakefile).parent / "configs" / "experiments" / "demo.yaml"
EXPERIMENT_FILE = str(config.get("experiment", DEFAULT_EXPERIMENT))
OVERRIDES = [str(item) for item in config.get("overrides", [])]
try:
    EXPERIMENT = load_experiment(EXPERIMENT_FILE, OVERRIDES)
except ConfigError as error:
    sys.stderr.write(error.report() + "\n")
    raise SystemExit(2)

LAYOUT = layout_of(EXPERIMENT)  # every path under work_dir
HASHES = stage_hashes(EXPERIMENT)


# Every job's shell starts with two bash arrays: PIPELINE, the interpreter that runs Snakemake with
# `-m pipeline` (the package is in it on every node: shared filesystem assumed), and EXPERIMENT, the
# experiment file and its overrides. Rules run `"${{PIPELINE[@]}}" COMMAND "${{EXPERIMENT[@]}}" ...`.
# They are shell variables, not rule parameters: a different checkout path or override list must not
# rerun anything by itself; what a stage produces is covered by its stage hash (params: stage_hash).
def _shell_array(words):
    return "(" + shlex.join(words).replace("{", "{{").replace("}", "}}") + ")"


shell.prefix(
    "set -euo pipefail; "
    f"PIPELINE={_shell_array([sys.executable, '-m', 'pipeline'])}; "
    f"EXPERIMENT={_shell_array([EXPERIMENT_FILE, *OVERRIDES])}; "
)


def stage_resources(stage):
    """Snakemake/SLURM resources of one job of a stage (pipeline/config/jobs.py)."""
    return job_resources(stage, getattr(EXPERIMENT.resources, stage))
