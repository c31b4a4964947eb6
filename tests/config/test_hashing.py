"""Stage hashes: what changes them, what must not."""

from __future__ import annotations

import pytest

from pipeline.config import load_experiment, stage_hash, stage_hashes
from pipeline.config.hashing import STAGE_INPUTS


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
    ["data.sample_rate=22050", "data.channels=2", "data.shard.max_items=11", "data.codec={type: flac, bits: 24}",
     "data.max_item_seconds=30", "data.extensions=[.wav]", "paths.audio_dir=other"],
)  # fmt: skip
def test_changing_data_changes_every_hash(base, override):
    before, after = base(EXPERIMENT), base(EXPERIMENT, [override])
    assert set(before) == set(STAGE_INPUTS)
    for stage in STAGE_INPUTS:
        assert before[stage] != after[stage], stage


@pytest.mark.parametrize(
    "override",
    ["resources.train.gpus=8", "resources.pre_encode.mem_mb=64000", "resources.shard.cpus=4",
     "paths.work_dir=elsewhere", "name=renamed"],
)  # fmt: skip
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
            "encoder": {"type": "oobleck", "in_channels": 1, "channels": 4, "c_mults": [1], "strides": [2], "latent_dim": 4},
            "decoder": {"type": "oobleck", "out_channels": 1, "channels": 4, "c_mults": [1], "strides": [2], "latent_dim": 2},
            "bottleneck": {"type": "vae"},
        },
        "training": {"kl_weight": 0.001},
    },
}


@pytest.mark.parametrize(
    "override",
    ["pre_encode.num_workers=1", "autoencoder.training.num_workers=2", "autoencoder.training.log_every=7",
     "autoencoder.training.eval_every=9", "autoencoder.training.checkpoint_every=11"],
)  # fmt: skip
def test_runtime_only_settings_change_no_hash(base, override):
    assert base(WITH_AUTOENCODER) == base(WITH_AUTOENCODER, [override])


@pytest.mark.parametrize(
    "override, changed",
    [("autoencoder.training.kl_weight=0.01", {"train_autoencoder", "pre_encode", "train", "sample"}),
     ("pre_encode.batch_size=4", {"pre_encode", "train", "sample"}),
     ("pre_encode.store_scale=true", {"pre_encode", "train", "sample"})],
)  # fmt: skip
def test_autoencoder_and_pre_encode_settings_change_their_stages(base, override, changed):
    before, after = base(WITH_AUTOENCODER), base(WITH_AUTOENCODER, [override])
    assert {stage for stage in STAGE_INPUTS if before[stage] != after[stage]} == changed
