"""Resources of one job: stage defaults per field, attempt scaling, one task per GPU for training."""

from __future__ import annotations

import pytest

from pipeline.config import ConfigError, load_experiment
from pipeline.config.jobs import job_resources
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


def test_one_gpu_job_asks_for_gpus_and_a_signal_before_the_limit():
    resources = _resources("train", gpus=1, signal_seconds=120)
    assert resources["gpu"] == 1 and "mpi" not in resources
    assert resources["slurm_extra"] == "--signal=USR1@120"


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
