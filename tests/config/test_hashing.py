"""Stage hashes: what changes them, what must not."""

from __future__ import annotations

from typing import Annotated

import pytest

from pipeline.config import load_experiment, stage_hash, stage_hashes
from pipeline.config.base import StrictModel
from pipeline.config.hashing import STAGE_INPUTS, hashed_dump
from pipeline.config.stages import RUNTIME_ONLY, STAGE_NAMES


@pytest.fixture
def base(write_yaml, tmp_path):
    def load(content, overrides=()):
        return stage_hashes(load_experiment(write_yaml("exp.yaml", content), overrides, base_dir=tmp_path))

    return load


EXPERIMENT = {
    "name": "h",
    "seed": 5,
    "paths": {"audio_dir": "audio", "work_dir": "out"},
    "data": {"sample_rate": 16000, "channels": 1, "shard": {"max_items": 10}},
}


@pytest.mark.parametrize(
    "override",
    [
        "data.sample_rate=22050",
        "data.channels=2",
        "data.shard.max_items=11",
        "data.codec={type: flac, bits: 24}",
        "data.max_item_seconds=30",
        "data.extensions=[.wav]",
        "paths.audio_dir=other",
    ],
)
def test_changing_data_changes_every_hash(base, override):
    before, after = base(EXPERIMENT), base(EXPERIMENT, [override])
    assert set(before) == set(STAGE_INPUTS)
    for stage in STAGE_INPUTS:
        assert before[stage] != after[stage], stage


@pytest.mark.parametrize(
    "override",
    [
        "resources.train.gpus=8",
        "resources.pre_encode.mem_mb=64000",
        "resources.shard.cpus=4",
        "paths.work_dir=elsewhere",
        "name=renamed",
    ],
)
def test_resources_name_and_work_dir_change_no_hash(base, override):
    assert base(EXPERIMENT) == base(EXPERIMENT, [override])


def test_seed_changes_only_stages_that_draw_random_numbers(base):
    before, after = base(EXPERIMENT), base(EXPERIMENT, ["seed=6"])
    assert before["shard"] == after["shard"] and before["pre_encode"] == after["pre_encode"]
    for stage in ("train_autoencoder", "train", "sample"):
        assert before[stage] != after[stage]


def test_key_order_and_explicit_defaults_do_not_change_hashes(base):
    reordered = {
        "data": {"shard": {"max_items": 10}, "channels": 1, "sample_rate": 16000},
        "paths": {"work_dir": "out", "audio_dir": "audio"},
        "seed": 5,
        "name": "h",
    }
    explicit = {
        **EXPERIMENT,
        "data": {
            **EXPERIMENT["data"],
            "multichannel": "downmix",
            "extensions": [".mp3", ".WAV", "flac", ".ogg", ".aif", ".aiff"],  # normalised, order-free
            "min_item_seconds": 0.5,
            "max_item_seconds": None,
            "codec": {"type": "flac", "bits": 16, "compression_level": 0.5},
            "shard": {"max_items": 10, "max_bytes": "1GB"},
        },
        "resources": {"train": {"gpus": 1}},
    }
    assert base(EXPERIMENT) == base(reordered) == base(explicit)


def test_hash_is_stable_across_processes_and_looks_like_hex(base):
    hashes = base(EXPERIMENT)
    assert all(len(h) == 16 and int(h, 16) >= 0 for h in hashes.values())
    assert base(EXPERIMENT) == hashes


def test_unknown_stage(write_yaml, tmp_path):
    experiment = load_experiment(write_yaml("e.yaml", EXPERIMENT), base_dir=tmp_path)
    with pytest.raises(KeyError, match="unknown stage"):
        stage_hash(experiment, "bake")


WITH_AUTOENCODER = {
    **EXPERIMENT,
    "autoencoder": {
        "model": {
            "encoder": {
                "type": "oobleck",
                "in_channels": 1,
                "channels": 4,
                "c_mults": [1],
                "strides": [2],
                "latent_dim": 4,
            },
            "decoder": {
                "type": "oobleck",
                "out_channels": 1,
                "channels": 4,
                "c_mults": [1],
                "strides": [2],
                "latent_dim": 2,
            },
            "bottleneck": {"type": "vae"},
        },
        "training": {"kl_weight": 0.001},
    },
}


@pytest.mark.parametrize(
    "override",
    [
        "pre_encode.num_workers=1",
        "autoencoder.training.num_workers=2",
        "autoencoder.training.log_every=7",
        "autoencoder.training.eval_every=9",
        "autoencoder.training.checkpoint_every=11",
    ],
)
def test_runtime_only_settings_change_no_hash(base, override):
    assert base(WITH_AUTOENCODER) == base(WITH_AUTOENCODER, [override])


@pytest.mark.parametrize(
    "override, changed",
    [
        ("autoencoder.training.kl_weight=0.01", {"train_autoencoder", "pre_encode", "train", "sample"}),
        ("pre_encode.batch_size=4", {"pre_encode", "train", "sample"}),
        ("pre_encode.store_scale=true", {"pre_encode", "train", "sample"}),
    ],
)
def test_autoencoder_and_pre_encode_settings_change_their_stages(base, override, changed):
    before, after = base(WITH_AUTOENCODER), base(WITH_AUTOENCODER, [override])
    assert {stage for stage in STAGE_INPUTS if before[stage] != after[stage]} == changed


def test_the_runtime_only_marks_are_where_the_fields_are():
    """The marks sit on the fields (found by walking the models), so a rename keeps them."""
    from pipeline.config.sections import AutoencoderTrainingConfig, PreEncodeConfig

    marked = {
        f"{model.__name__}.{name}"
        for model in (AutoencoderTrainingConfig, PreEncodeConfig)
        for name, info in model.model_fields.items()
        if RUNTIME_ONLY in info.metadata
    }
    assert marked == {
        "AutoencoderTrainingConfig.num_workers",
        "AutoencoderTrainingConfig.log_every",
        "AutoencoderTrainingConfig.eval_every",
        "AutoencoderTrainingConfig.checkpoint_every",
        "PreEncodeConfig.num_workers",
    }


class Inner(StrictModel):
    workers: Annotated[int, RUNTIME_ONLY] = 0
    rate: float = 1.0


class Outer(StrictModel):
    inner: Inner = Inner()
    items: tuple[Inner, ...] = ()


class RenamedInner(StrictModel):  # `workers` renamed: the mark moves with the field
    n_workers: Annotated[int, RUNTIME_ONLY] = 0
    rate: float = 1.0


def test_a_marked_field_is_left_out_at_any_depth_and_an_unmarked_one_is_kept():
    plain = hashed_dump(Outer(inner=Inner(workers=3, rate=2.0), items=(Inner(workers=5),)))
    assert plain == {"inner": {"rate": 2.0}, "items": [{"rate": 1.0}]}
    assert hashed_dump(Outer(inner=Inner(workers=1))) == hashed_dump(Outer(inner=Inner(workers=9)))
    assert hashed_dump(Outer(inner=Inner(rate=1.5))) != hashed_dump(Outer())
    assert hashed_dump(RenamedInner(n_workers=4, rate=2.0)) == {"rate": 2.0}


def test_a_marked_experiment_field_changes_no_hash_and_an_unmarked_one_does(base):
    before = base(WITH_AUTOENCODER)
    assert base(WITH_AUTOENCODER, ["autoencoder.training.log_every=3"]) == before
    after = base(WITH_AUTOENCODER, ["autoencoder.training.batch_size=3"])
    assert {stage for stage in STAGE_INPUTS if before[stage] != after[stage]} == {
        "train_autoencoder",
        "pre_encode",
        "train",
        "sample",
    }


def test_ignoring_leaves_a_field_out_and_refuses_a_name_that_is_no_field(write_yaml, tmp_path):
    experiment = load_experiment(write_yaml("e.yaml", WITH_AUTOENCODER), base_dir=tmp_path)
    longer = load_experiment(
        write_yaml("e.yaml", WITH_AUTOENCODER), ["autoencoder.training.steps=99"], base_dir=tmp_path
    )
    ignoring = ("autoencoder.training.steps",)
    assert stage_hash(experiment, "train_autoencoder") != stage_hash(longer, "train_autoencoder")
    assert stage_hash(experiment, "train_autoencoder", ignoring) == stage_hash(longer, "train_autoencoder", ignoring)
    with pytest.raises(KeyError, match="names no field of the experiment"):
        stage_hash(experiment, "train_autoencoder", ignoring=("autoencoder.training.step_count",))


def test_stages_are_listed_once():
    """Resources and hashes follow the stage table, in its order."""
    from pipeline.config.sections import ResourcesConfig

    assert tuple(ResourcesConfig.model_fields) == STAGE_NAMES
    assert list(STAGE_INPUTS) == [name for name in STAGE_NAMES if name not in ("plan", "index")]
    assert all(STAGE_INPUTS[name].upstream in (None, *STAGE_INPUTS) for name in STAGE_INPUTS)
