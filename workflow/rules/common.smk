# Load and validate the experiment once; every rule calls the `pipeline` CLI with the same arguments.
import os
import shlex
import sys
from pathlib import Path

from snakemake.settings.types import DeploymentMethod

from pipeline.config import ConfigError, load_experiment, stage_hashes
from pipeline.config.jobs import job_resources
from pipeline.layout import layout_of

# Relative to where Snakemake runs; the default is the bundled demo of this checkout.
REPOSITORY = Path(workflow.main_snakefile).parent
DEFAULT_EXPERIMENT = REPOSITORY / "configs" / "experiments" / "demo.yaml"
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
# They are shell variables, not `params`: a different checkout path or override list must not rerun
# anything by itself; what a stage produces is covered by its stage hash (params: stage_hash).
# With --software-deployment-method conda every job runs in envs/pipeline.yaml's environment (which
# installs this checkout, found through PIPELINE_REPOSITORY) and uses its `python`.
os.environ.setdefault("PIPELINE_REPOSITORY", str(REPOSITORY))
SOFTWARE_ENV = "../../envs/pipeline.yaml"  # the `conda:` of every rule, relative to workflow/rules/
IN_CONDA_ENVS = DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method
INTERPRETER = "python" if IN_CONDA_ENVS else sys.executable


def _shell_array(words):
    quoted = shlex.join(words).replace("{", "{{").replace("}", "}}")
    return f"({quoted})"


shell.prefix(
    "set -euo pipefail; "
    f"PIPELINE={_shell_array([INTERPRETER, '-m', 'pipeline'])}; "
    f"EXPERIMENT={_shell_array([EXPERIMENT_FILE, *OVERRIDES])}; "
)


def stage_resources(stage):
    """Snakemake/SLURM resources of one job of a stage (pipeline/config/jobs.py)."""
    return job_resources(stage, getattr(EXPERIMENT.resources, stage))


def planned_indices(wildcards):
    """Index of every shard in the plan (evaluated after the `plan` checkpoint ran).

    The .smk files import only pipeline.config and pipeline.layout, and the typed plan records
    (pipeline.shards.records, read by pipeline.shards.plan.load_plan) sit in the shard stage, which
    pulls in the audio libraries. All a rule needs is `shards[].index` (docs/formats.md), so it is
    read here with the standard library."""
    import json

    plan_file = checkpoints.plan.get().output[0]
    with open(plan_file, encoding="utf-8") as handle:
        return [shard["index"] for shard in json.load(handle)["shards"]]


def planned_shards(wildcards):
    return [LAYOUT.shard_tar(index) for index in planned_indices(wildcards)]


def planned_manifests(wildcards):
    return [LAYOUT.manifest(index) for index in planned_indices(wildcards)]


def planned_stores(wildcards):
    return [LAYOUT.store(index) for index in planned_indices(wildcards)]
