# Load and validate the experiment once; every rule calls the `pipeline` CLI with the same arguments.
import os
import shlex
import sys
from pathlib import Path

from snakemake.settings.types import DeploymentMethod

from pipeline.config import ConfigError, load_experiment, stage_hashes
from pipeline.config.jobs import job_count, job_resources, job_shards, shards_per_job
from pipeline.layout import layout_of

# Relative to where Snakemake runs; the default is the bundled demo of this checkout.
REPOSITORY = Path(workflow.main_snakefile).absolute().parent
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

# Snakemake keeps what decides a rerun (the params, code and input checksums each output was made with)
# and its locks in .snakemake/ of its working directory. That is the experiment's work_dir, so the
# records go with the experiment whichever directory snakemake is started from (a changed stage hash
# reruns the stage from anywhere), and two experiments can run side by side. Jobs still run in the
# directory snakemake was started from (LAUNCH_DIR, see shell.prefix), where the experiment file and its
# relative paths were resolved; the SLURM plugin starts its jobs there too (and keeps its logs there).
LAUNCH_DIR = os.getcwd()


workdir: str(LAYOUT.work_dir)


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


def _quoted(text):
    """A shell word for `text`, with the braces of Snakemake's format strings escaped."""
    return shlex.quote(text).replace("{", "{{").replace("}", "}}")


def _shell_array(words):
    return "(" + " ".join(_quoted(word) for word in words) + ")"


shell.prefix(
    "set -euo pipefail; "
    f"cd {_quoted(LAUNCH_DIR)}; "
    f"PIPELINE={_shell_array([INTERPRETER, '-m', 'pipeline'])}; "
    f"EXPERIMENT={_shell_array([EXPERIMENT_FILE, *OVERRIDES])}; "
)


def stage_resources(stage):
    """Snakemake/SLURM resources of one job of a stage (pipeline/config/jobs.py)."""
    return job_resources(stage, getattr(EXPERIMENT.resources, stage))


def per_shard_stage_resources(stage):
    """The same for a per-shard stage, whose job of K shards asks for K x the runtime of one."""
    wanted = getattr(EXPERIMENT.resources, stage)
    return job_resources(stage, wanted, lambda wildcards: len(job_shards_of(stage, wildcards.job)))


_PLAN_CACHE = {}


def planned_indices(wildcards=None):
    """Index of every shard in the plan (evaluated after the `plan` checkpoint ran; read once per
    version of the file: the per-job input, params and resource functions all ask).

    The .smk files import only pipeline.config and pipeline.layout, and the typed plan records
    (pipeline.shards.records, read by pipeline.shards.plan.load_plan) sit in the shard stage, which
    pulls in the audio libraries. All a rule needs is `shards[].index` (docs/formats.md), so it is
    read here with the standard library."""
    import json

    plan_file = checkpoints.plan.get().output[0]
    version = (plan_file, os.stat(plan_file).st_mtime_ns)
    if version not in _PLAN_CACHE:
        with open(plan_file, encoding="utf-8") as handle:
            _PLAN_CACHE.clear()
            _PLAN_CACHE[version] = [shard["index"] for shard in json.load(handle)["shards"]]
    return _PLAN_CACHE[version]


# Per-shard stages (shard, pre_encode) run K shards per job (resources.<stage>.shards_per_job);
# job J is the wildcard {job}, six digits, and its shards come from pipeline.config.jobs.
def stage_jobs(stage):
    """Every job number of a per-shard stage."""
    return range(job_count(getattr(EXPERIMENT.resources, stage), len(planned_indices())))


def job_shards_of(stage, job):
    """The plan indices job `job` (a number or its wildcard string) of a per-shard stage holds."""
    wanted = getattr(EXPERIMENT.resources, stage)
    return job_shards(wanted, len(planned_indices()), int(job))


def job_records(stage):
    """Input function: the record of every job of a per-shard stage."""
    return lambda wildcards: [LAYOUT.job_record(stage, job) for job in stage_jobs(stage)]


def job_shard_range(stage):
    """Params function: `first-last` shard of the job, so a job whose shards change reruns."""

    def shard_range(wildcards):
        shards = job_shards_of(stage, wildcards.job)
        return f"{shards[0]}-{shards[-1]}"

    return shard_range


def shard_jobs_feeding(stage):
    """Input function: the shard-stage job records holding the shards of a job of `stage`."""

    def records(wildcards):
        per_job = shards_per_job(EXPERIMENT.resources.shard, len(planned_indices()))
        jobs = sorted({index // per_job for index in job_shards_of(stage, wildcards.job)})
        return [LAYOUT.job_record("shard", job) for job in jobs]

    return records
