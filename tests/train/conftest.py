"""Real latent stores for the training tests: the demo experiment's shards of `training_audio`,
pre-encoded once per session with an autoencoder the fixture creates; each test gets its own copy of
the work dir and writes its own `train` section. The same for code stores (the discrete demo's rvq
autoencoder), for the LM family: a test that takes the `family` fixture, or parametrises it, runs on
the stores and tiny model of that family."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml

from tests.conftest import DEMO_EXPERIMENT, REPO_ROOT, deep_merge

DEMO_LM_EXPERIMENT = REPO_ROOT / "configs" / "experiments" / "demo_lm.yaml"

# Every field the demo's own train section sets is set here too (extends merges sections key by key).
# A DiT small enough for a few hundred CPU steps a test; conditioned as Stable Audio Open is (timing
# numbers prepended globally and cross-attended) plus the demo's instrument label.
TINY_MODEL = {
    "type": "diffusion",
    "objective": "v",
    "timestep_sampler": "uniform",
    "backbone": {"type": "dit", "embed_dim": 32, "depth": 2, "num_heads": 1, "cond_token_dim": 32,
                 "global_cond_dim": 64, "project_cond_tokens": False},
    "cond_dim": 32,
    "conditioners": [
        {"type": "number", "id": "seconds_start", "min_val": 0, "max_val": 60},
        {"type": "number", "id": "seconds_total", "min_val": 0, "max_val": 60},
        {"type": "label", "id": "label", "values": ["bell", "flute", "organ", "pluck"]},
    ],
    "cross_attention_cond_ids": ["label", "seconds_start", "seconds_total"],
    "global_cond_ids": ["seconds_start", "seconds_total"],
    "cfg_dropout": 0.1,
}  # fmt: skip
TINY_TRAIN = {
    "model": TINY_MODEL,
    "data": {"crop_frames": 32, "num_workers": 0, "holdout_items": 2},
    "steps": 20,
    "batch_size": 8,
    "optimizer": {"name": "AdamW", "lr": 1e-3},
    "scheduler": {"name": "constant", "warmup_steps": 0},
    "ema": {"decay": 0.9},
    "log_every": 1,
    "eval_every": 10,
    "checkpoint_every": 10,
    "device": "cpu",
}

# A tiny LM over the discrete demo's codes (4 codebooks of 64), conditioned as the demo LM is: the
# label cross-attended (dropped for CFG), the timing prepended.
TINY_LM = {
    "type": "lm",
    "pattern": "delay",
    "embed_dim": 32,
    "depth": 2,
    "num_heads": 1,
    "cond_dim": 16,
    "conditioners": [
        {"type": "number", "id": "seconds_start", "min_val": 0, "max_val": 60},
        {"type": "number", "id": "seconds_total", "min_val": 0, "max_val": 60},
        {"type": "label", "id": "label", "values": ["bell", "flute", "organ", "pluck"]},
    ],
    "cross_attention_cond_ids": ["label"],
    "prepend_cond_ids": ["seconds_start", "seconds_total"],
    "cfg_dropout": 0.1,
}
TINY_LM_TRAIN = {**TINY_TRAIN, "model": TINY_LM, "data": {**TINY_TRAIN["data"], "normalise": "none"}}
FAMILY_TRAIN = {"diffusion": TINY_TRAIN, "lm": TINY_LM_TRAIN}


def encode_document(base: Path, document: dict) -> Path:
    """Plan, shards, autoencoder weights the test creates, stores and index for `document` (its
    work_dir under `base`); returns the work dir."""
    from pipeline.config import load_experiment, stage_hash
    from pipeline.encode.pre_encode import pre_encode_all
    from pipeline.latents.index import build_index
    from pipeline.layout import layout_of
    from pipeline.models.autoencoder.checkpoints import save_autoencoder
    from pipeline.models.autoencoder.model import Autoencoder
    from pipeline.shards.plan import write_plan
    from pipeline.shards.run import write_all_shards

    path = base / "exp.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    experiment = load_experiment(path)
    write_plan(experiment)
    write_all_shards(experiment, progress=False)
    torch.manual_seed(3)
    model = Autoencoder(experiment.autoencoder.model, experiment.data.sample_rate).eval()
    save_autoencoder(model, layout_of(experiment).autoencoder_weights, stage_hash(experiment, "train_autoencoder"))
    pre_encode_all(experiment, progress=False)
    build_index(experiment)
    return experiment.work_dir


@pytest.fixture(scope="session")
def encoded_work(tmp_path_factory, training_audio) -> tuple[Path, dict]:
    """(work dir with plan, shards, autoencoder weights, stores and index; the experiment document)."""
    base = tmp_path_factory.mktemp("encoded")
    document = {
        "extends": str(DEMO_EXPERIMENT),
        "name": "traintest",
        "paths": {"audio_dir": str(training_audio), "work_dir": str(base / "work")},
        "pre_encode": {"store_scale": True, "batch_size": 8},
    }
    return encode_document(base, document), document


@pytest.fixture(scope="session")
def encoded_codes_work(tmp_path_factory, training_audio) -> tuple[Path, dict]:
    """The same for the discrete demo: code stores of its rvq autoencoder (weights the fixture creates)."""
    base = tmp_path_factory.mktemp("encoded_codes")
    document = {
        "extends": str(DEMO_LM_EXPERIMENT),
        "name": "lmtest",
        "paths": {"audio_dir": str(training_audio), "work_dir": str(base / "work")},
        "pre_encode": {"batch_size": 8},
    }
    return encode_document(base, document), document


@pytest.fixture
def family() -> str:
    """The model family of `train_experiment`; tests parametrise it to run for every family."""
    return "diffusion"


@pytest.fixture
def train_experiment(tmp_path, family, request) -> Callable[..., Path]:
    """train_experiment(train={...}, name=..., **sections) -> an experiment file over a fresh copy of
    the encoded work dir of `family` (one copy per test), with its tiny train section (TINY_TRAIN,
    TINY_LM_TRAIN) updated by `train`."""
    work, document = request.getfixturevalue("encoded_work" if family == "diffusion" else "encoded_codes_work")
    copy = tmp_path / "work"
    if not copy.exists():
        shutil.copytree(work, copy, symlinks=True)

    def make(train: dict | None = None, name: str = "exp", **sections) -> Path:
        changes = {"paths": {"work_dir": str(copy)}, "train": deep_merge(FAMILY_TRAIN[family], train or {})}
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(deep_merge(deep_merge(document, changes), sections)), encoding="utf-8")
        return path

    return make
