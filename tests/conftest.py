"""Shared fixtures: the repository root, the demo experiment, helpers to write experiment files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_EXPERIMENT = REPO_ROOT / "configs" / "experiments" / "demo.yaml"
SAT_CONFIGS = REPO_ROOT.parent / "shared" / "sat_configs"
# The demo's train and sample stages cut to seconds, for tests that run the whole workflow.
QUICK_TRAIN = {
    "steps": 2,
    "batch_size": 4,
    "log_every": 1,
    "eval_every": 2,
    "checkpoint_every": 2,
    "scheduler": {"warmup_steps": 0},
    "data": {"num_workers": 0, "holdout_items": 1, "crop_frames": 32},
}
QUICK_SAMPLE = {"count": 1, "seconds": 1.0, "steps": 2}
QUICK_AUTOENCODER = {"steps": 2, "eval_every": 2, "checkpoint_every": 2, "holdout_items": 1}


def write_quick_experiment(directory: Path, name: str, seed: int, audio_seconds: float, **changes: object) -> Path:
    """<directory>/<name>.yaml: the demo cut to seconds per stage (QUICK_*), on its own demo audio
    (<directory>/audio) and work dir (<directory>/work), with `changes` merged over it; for the tests
    that run the whole workflow."""
    from pipeline.audio.demo import write_demo_data

    audio = directory / "audio"
    write_demo_data(audio, seed=seed, total_seconds=audio_seconds)
    document = {
        "extends": str(DEMO_EXPERIMENT),
        "name": name,
        "paths": {"audio_dir": str(audio), "work_dir": str(directory / "work")},
        "autoencoder": {"training": QUICK_AUTOENCODER},
        "train": QUICK_TRAIN,
        "sample": QUICK_SAMPLE,
    }
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(deep_merge(document, changes), sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture
def write_yaml(tmp_path: Path) -> Callable[..., Path]:
    """write_yaml("name.yaml", {...}) or write_yaml("name.yaml", "raw text") -> path under tmp_path."""

    def write(name: str, content: object) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        text = content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False)
        path.write_text(text, encoding="utf-8")
        return path

    return write


@pytest.fixture
def minimal() -> dict:
    """The smallest valid experiment."""
    return {"name": "tiny", "paths": {"audio_dir": "audio"}}


@pytest.fixture(scope="session")
def training_audio(tmp_path_factory) -> Path:
    """~90 s of demo music (seed 21), written once per session."""
    from pipeline.audio.demo import write_demo_data

    audio = tmp_path_factory.mktemp("training_audio")
    write_demo_data(audio, seed=21, total_seconds=90)
    return audio


def deep_merge(base: dict, changes: dict) -> dict:
    merged = dict(base)
    for key, value in changes.items():
        merged[key] = (
            deep_merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
        )
    return merged


@pytest.fixture
def sharded_experiment(tmp_path, training_audio) -> Callable[..., Path]:
    """sharded_experiment(name, training={...}, **sections) -> an experiment file extending the demo,
    on `training_audio`, whose plan and shards are written."""
    from pipeline.config import load_experiment
    from pipeline.shards.plan import write_plan
    from pipeline.shards.run import write_all_shards

    def make(name: str = "exp", training: dict | None = None, **sections) -> Path:
        document = {
            "extends": str(DEMO_EXPERIMENT),
            "name": "aetest",
            "paths": {"audio_dir": str(training_audio), "work_dir": str(tmp_path / "work")},
            "autoencoder": {"training": training or {}},
        }
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(deep_merge(document, sections)), encoding="utf-8")
        experiment = load_experiment(path)
        write_plan(experiment)
        write_all_shards(experiment, progress=False)
        return path

    return make


@pytest.fixture(scope="module")
def one_torch_thread():
    """Torch on one thread while a module's tests run (tiny models; more threads than free cores make
    small matmuls slower on the shared machine). Modules ask for it with
    `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
