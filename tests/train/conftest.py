"""An experiment on freshly generated demo audio, sharded, ready for the autoencoder stage."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest
import yaml

from pipeline.audio.demo import write_demo_data
from pipeline.config import load_experiment
from pipeline.shards.plan import write_plan
from pipeline.shards.run import write_all_shards
from tests.conftest import DEMO_EXPERIMENT


@pytest.fixture(scope="session")
def training_audio(tmp_path_factory) -> Path:
    audio = tmp_path_factory.mktemp("training_audio")
    write_demo_data(audio, seed=21, total_seconds=90)
    return audio


@pytest.fixture
def sharded_experiment(tmp_path, training_audio) -> Callable[..., Path]:
    """sharded_experiment(**training_overrides) -> experiment file (extends the demo) whose shards exist."""

    def make(name: str = "exp", **training) -> Path:
        document = {
            "extends": str(DEMO_EXPERIMENT),
            "name": "aetest",
            "paths": {"audio_dir": str(training_audio), "work_dir": str(tmp_path / "work")},
            "autoencoder": {"training": training},
        }
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(document), encoding="utf-8")
        experiment = load_experiment(path)
        write_plan(experiment)
        write_all_shards(experiment, progress=False)
        return path

    return make
