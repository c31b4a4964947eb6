"""Resources of one job: stage defaults per field, attempt scaling, one task per GPU for training, the
shards each job of a per-shard stage holds."""

from __future__ import annotations

import pytest

from pipeline.config import ConfigError, load_experiment
from pipeline.config.jobs import job_count, job_resources, job_shards, shards_per_job
from pipeline.config.stages import STAGES
from tests.conftest import DEMO_EXPERIMENT


def test_setting_one_field_keeps_the_stage_defaults(write_yaml, minimal):
    path = write_yaml("exp.yaml", {**minimal, "resources": {"train": {"mem_mb": 1000}}})
    train = load_experiment(path).resources.train
    defaults = next(stage for stage in STAGES if stage.name == "train").resources
    assert train.mem_mb == 1000
    assert (train.cpus, train.gpus, train.runtime) == (defaults["cpus"], defaults["gpus"], defaults["runtime"])


def test_memory_and_runtime_grow_with_the_attempt():
    resources = job_resources("pre_encode", load_experiment(DEMO_EXPERIMENT).resources.pre_encode)
    wanted = load_experiment(DEMO_EXPERIMENT).resources.pre_encode
    assert [resources["mem_mb"](None, attempt) for attempt in (1, 2, 3)] == [wanted.mem_mb * n for n in (1, 2, 3)]
    assert [resources["runtime"](None, attempt) for attempt in (1, 3)] == [wanted.runtime, wanted.runtime * 3]
    assert resources["cpus_per_task"] == wanted.cpus and "mpi" not in resources


def _resources(stage: str, **fields):
    overrides = [f"resources.{stage}.{key}={value}" for key, value in fields.items()]
    return job_resources(stage, getattr(load_experiment(DEMO_EXPERIMENT, overrides).resources, stage))


def test_one_gpu_training_job_asks_for_its_gpu_and_watches_the_time_limit_itself():
    resources = _resources("train", gpus=1, signal_seconds=120)
    assert resources["gpu"] == 1 and "mpi" not in resources
    # No --signal: in the executor's srun step it would kill the Snakemake that runs the training first;
    # the loop stops signal_seconds before the job's end time (pipeline/train/time_limit.py).
    assert "slurm_extra" not in resources
    assert "--signal=USR1@60" in _resources("train", gpus=2, signal_seconds=60)["slurm_extra"]
    assert _resources("pre_encode", gpus=1, signal_seconds=60)["slurm_extra"] == "--signal=USR1@60"


def test_multi_gpu_training_is_one_task_per_gpu_on_every_node():
    one_node = _resources("train", gpus=4, signal_seconds=0)
    assert one_node["mpi"] == "srun" and one_node["tasks_per_node"] == 4 and "gpu" not in one_node
    assert one_node["slurm_extra"] == "--gpus-per-node=4"
    two_nodes = _resources("train", gpus=1, nodes=2, signal_seconds=0)
    assert two_nodes["tasks"] == 2 and two_nodes["nodes"] == 2 and "tasks_per_node" not in two_nodes
    # Stages that are not training run one process whatever their GPU count.
    assert "mpi" not in _resources("pre_encode", gpus=2) and _resources("pre_encode", gpus=2)["gpu"] == 2


def test_a_signal_after_the_time_limit_is_a_config_error():
    with pytest.raises(ConfigError) as caught:
        load_experiment(DEMO_EXPERIMENT, ["resources.train.runtime=1", "resources.train.signal_seconds=60"])
    assert "resources.train.signal_seconds" in caught.value.report()


def test_an_experiment_pickles_with_its_per_stage_resources():
    """Worker processes (pre-encode --workers, DataLoader workers) receive the experiment by pickle."""
    import pickle

    experiment = load_experiment(DEMO_EXPERIMENT)
    copy = pickle.loads(pickle.dumps(experiment))
    assert copy.resources == experiment.resources
    assert type(copy.resources.train).__name__ == "TrainResources"


# --- per-shard stages: K shards per job ------------------------------------------------------------
@pytest.mark.parametrize(
    ("shard_count", "setting", "max_jobs", "per_job", "jobs"),
    [
        (1, "auto", 500, 1, 1),
        (10, "auto", 500, 1, 10),
        (500, "auto", 500, 1, 500),
        (501, "auto", 500, 2, 251),
        (10_000, "auto", 500, 20, 500),
        (10_001, "auto", 500, 21, 477),
        (10, "auto", 3, 4, 3),
        (10, 3, 500, 3, 4),
        (2, 20, 500, 20, 1),
    ],
)
def test_jobs_hold_every_shard_once_in_order(shard_count, setting, max_jobs, per_job, jobs):
    wanted = _experiment_resources("pre_encode", shards_per_job=setting, max_jobs=max_jobs)
    assert shards_per_job(wanted, shard_count) == per_job and job_count(wanted, shard_count) == jobs
    held = [list(job_shards(wanted, shard_count, job)) for job in range(jobs)]
    assert [index for shards in held for index in shards] == list(range(shard_count))
    assert all(1 <= len(shards) <= per_job for shards in held)
    with pytest.raises(ValueError, match=f"job {jobs} is not one of the {jobs} jobs"):
        job_shards(wanted, shard_count, jobs)


def _experiment_resources(stage: str, **fields):
    overrides = [f"resources.{stage}.{key}={value}" for key, value in fields.items()]
    return getattr(load_experiment(DEMO_EXPERIMENT, overrides).resources, stage)


def test_a_job_of_k_shards_asks_for_k_times_the_runtime_of_one():
    wanted = _experiment_resources("pre_encode", runtime=7, shards_per_job=3)
    resources = job_resources("pre_encode", wanted, lambda wildcards: wildcards["shards"])
    assert [resources["runtime"]({"shards": 3}, attempt) for attempt in (1, 2)] == [21, 42]
    assert resources["runtime"]({"shards": 1}, 1) == 7  # the last job may hold fewer
    assert resources["mem_mb"](None, 2) == 2 * wanted.mem_mb  # memory is per shard too: one at a time


@pytest.mark.parametrize("value", ["0", "-2", "many"])
def test_shards_per_job_is_auto_or_a_positive_count(value):
    with pytest.raises(ConfigError) as caught:
        load_experiment(DEMO_EXPERIMENT, [f"resources.shard.shards_per_job={value}"])
    assert "resources.shard.shards_per_job" in caught.value.report()


def test_only_per_shard_stages_take_shards_per_job():
    with pytest.raises(ConfigError) as caught:
        load_experiment(DEMO_EXPERIMENT, ["resources.train.shards_per_job=2"])
    assert "resources.train.shards_per_job" in caught.value.report()
    assert {stage.name for stage in STAGES if stage.per_shard} == {"shard", "pre_encode"}
