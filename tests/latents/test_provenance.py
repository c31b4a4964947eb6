"""check_training_stores on a real experiment (a pretrained checkpoint file) and real stores + index
written for it: what passes, and each refusal naming its file or field."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import pytest

from pipeline.config import load_experiment, stage_hash
from pipeline.errors import UserFacingError
from pipeline.latents.dataset import LatentCrops, RankBatches
from pipeline.latents.provenance import (
    ChangedStore,
    ForeignStore,
    MissingField,
    MissingIndex,
    MissingStore,
    NoItems,
    WrongKind,
    check_training_stores,
)
from pipeline.layout import layout_of
from pipeline.utils.atomic import sha256_file
from tests.latents.stores import write_test_index, write_test_store

MODEL = {
    "encoder": {
        "type": "oobleck",
        "in_channels": 1,
        "channels": 8,
        "c_mults": [1, 2],
        "strides": [2, 4],
        "latent_dim": 8,
    },
    "decoder": {
        "type": "oobleck",
        "out_channels": 1,
        "channels": 8,
        "c_mults": [1, 2],
        "strides": [2, 4],
        "latent_dim": 4,
    },
    "bottleneck": {"type": "vae"},
}
METADATA = [{"genre": "rock", "bpm": 100}, {"genre": "jazz"}, {"prompt": "calm"}]


@pytest.fixture
def experiment(write_yaml, tmp_path: Path):
    (tmp_path / "weights.safetensors").write_bytes(b"pretend weights")
    document = {
        "name": "prov",
        "data": {"sample_rate": 16000, "channels": 1},
        "paths": {"audio_dir": str(tmp_path / "audio"), "work_dir": str(tmp_path / "work")},
        "autoencoder": {"checkpoint": str(tmp_path / "weights.safetensors"), "model": MODEL},
    }
    return load_experiment(write_yaml("prov.yaml", document))


def provenance(experiment, **changes) -> dict:
    """The attributes pre_encode would write for `experiment`."""
    config = experiment.autoencoder.model
    attributes = {
        "sample_rate": experiment.data.sample_rate,
        "latent_rate": experiment.data.sample_rate / config.downsampling_ratio,
        "downsampling_ratio": config.downsampling_ratio,
        "latent_dim": config.latent_dim,
        "autoencoder_config": json.dumps(config.model_dump(mode="json"), sort_keys=True),
        "autoencoder_weights_sha256": sha256_file(experiment.autoencoder.checkpoint),
        "stage_hash": stage_hash(experiment, "pre_encode"),
    }
    return {**attributes, **changes}


def write_stores(experiment, count: int = 2, lengths=(6, 10, 3), **changes) -> Path:
    """`count` stores and the index over them, in the experiment's latents folder."""
    layout = layout_of(experiment)
    attributes = provenance(experiment, **changes)
    stores = [
        write_test_store(layout.store(number), lengths, seed=number, metadata=METADATA, attributes=attributes)
        for number in range(count)
    ]
    return write_test_index(layout.latents_dir, stores, attributes["stage_hash"])


FIELDS = {"genre": "train.model.conditioners[0].field"}


def test_the_experiments_stores_pass(experiment):
    index = write_stores(experiment)
    info = check_training_stores(experiment, index, want_discrete=False, fields=FIELDS)
    assert (info.latent_dim, info.sample_rate, info.is_discrete, info.items) == (4, 16000, False, 6)
    assert info.latent_rate == 16000 / 8 and info.longest_frames == 10 and info.has_scale
    assert len(info.stats.mean) == 4 and info.table.keys[0] == "shard-000000/item-000"
    dataset = LatentCrops(info.table, 12, seed=0, normalise="per_channel", fields=list(FIELDS))
    example = dataset[next(iter(RankBatches(info.items, 0, 0, 1)))[0]]
    assert example["latents"].shape == (4, 12)  # longer than every item: padded, allowed


def test_missing_index_says_how_to_build_it(experiment):
    index = layout_of(experiment).index
    with pytest.raises(MissingIndex, match=r"index.h5: no latent index.*`pipeline index EXP`.*snakemake pre_encode"):
        check_training_stores(experiment, index, want_discrete=False)
    store = write_test_store(layout_of(experiment).store(0), [3], attributes=provenance(experiment))
    with pytest.raises(MissingIndex, match=r"shard-000000.h5 is not a latent index"):
        check_training_stores(experiment, store, want_discrete=False)


def test_an_index_listing_a_deleted_store(experiment):
    index = write_stores(experiment)
    layout_of(experiment).store(1).unlink()
    with pytest.raises(MissingStore, match=r"shard-000001.h5 is missing, but .*index.h5 reads its frames"):
        check_training_stores(experiment, index, want_discrete=False)


def test_a_store_replaced_under_the_index(experiment):
    index = write_stores(experiment)
    attributes = provenance(experiment)
    write_test_store(layout_of(experiment).store(1), (6, 10, 3), seed=99, metadata=METADATA, attributes=attributes)
    with pytest.raises(ChangedStore, match=r"shard-000001.h5 changed after .*index.h5 was built: content_sha256"):
        check_training_stores(experiment, index, want_discrete=False)
    write_stores(experiment)  # rebuilt: passes again
    check_training_stores(experiment, index, want_discrete=False)
    with h5py.File(layout_of(experiment).store(0), "r+") as file:
        file.attrs["stage_hash"] = "somethingelse000"
    with pytest.raises(ChangedStore, match=r"shard-000000.h5 changed .*stage_hash 'somethingelse000'"):
        check_training_stores(experiment, index, want_discrete=False)


def test_a_store_of_other_weights(experiment):
    index = write_stores(experiment, autoencoder_weights_sha256="e" * 64)
    with pytest.raises(ForeignStore, match=r"shard-000000.h5 was encoded with other autoencoder weights \(sha256 eeee"):
        check_training_stores(experiment, index, want_discrete=False)


def test_a_store_of_another_autoencoder_configuration(experiment):
    other = experiment.autoencoder.model.model_dump(mode="json")
    other["decoder"]["final_tanh"] = not other["decoder"]["final_tanh"]
    # Same meaning written another way (key order) is the same configuration.
    reordered = json.dumps(dict(reversed(list(experiment.autoencoder.model.model_dump(mode="json").items()))))
    check_training_stores(experiment, write_stores(experiment, autoencoder_config=reordered), want_discrete=False)
    index = write_stores(experiment, autoencoder_config=json.dumps(other))
    with pytest.raises(
        ForeignStore,
        match=r"shard-000000.h5 was encoded by another autoencoder configuration \(autoencoder.model.decoder.final_tanh",
    ):
        check_training_stores(experiment, index, want_discrete=False)


def test_a_store_of_another_pre_encode_configuration(experiment):
    index = write_stores(experiment, stage_hash="0" * 16)
    with pytest.raises(
        ForeignStore, match=r"shard-000000.h5 was built for another configuration \(pre_encode stage hash 0000"
    ):
        check_training_stores(experiment, index, want_discrete=False)


def test_discrete_stores_for_a_diffusion_model(experiment):
    layout = layout_of(experiment)
    attributes = provenance(experiment, is_discrete=True, n_codebooks=2, codebook_size=16)
    stores = [write_test_store(layout.store(0), [4, 5], discrete=True, attributes=attributes)]
    index = write_test_index(layout.latents_dir, stores, attributes["stage_hash"])
    with pytest.raises(
        WrongKind, match=r"index.h5 holds discrete codes \(/codes\), but the model trains on continuous"
    ):
        check_training_stores(experiment, index, want_discrete=False)
    with pytest.raises(WrongKind, match=r"holds continuous latents .* trains on discrete codes"):
        check_training_stores(experiment, write_stores(experiment), want_discrete=True)


def test_a_conditioning_field_no_item_has(experiment):
    index = write_stores(experiment)
    fields = {"genre": "train.model.conditioners[0].field", "mood": "train.model.conditioners[2].field"}
    with pytest.raises(MissingField) as raised:
        check_training_stores(experiment, index, want_discrete=False, fields=fields)
    message = str(raised.value)
    assert message.startswith("train.model.conditioners[2].field: no item of ")
    assert "index.h5 has metadata field 'mood'" in message and "the items have: bpm, genre, prompt" in message


def test_no_items(experiment):
    index = write_stores(experiment, count=1, lengths=())
    with pytest.raises(NoItems, match=r"index.h5 lists no items"):
        check_training_stores(experiment, index, want_discrete=False)


def test_every_refusal_is_user_facing():
    for error in (MissingIndex, MissingStore, ChangedStore, ForeignStore, WrongKind, NoItems, MissingField):
        assert issubclass(error, UserFacingError)


@pytest.mark.slow
def test_stores_pre_encode_writes_pass(sharded_experiment):
    """The real stages: shards from audio, a saved autoencoder, pre-encode and index -> accepted, read."""
    import torch

    from pipeline.encode.pre_encode import pre_encode_all
    from pipeline.latents.index import build_index
    from pipeline.models.autoencoder.checkpoints import save_autoencoder
    from pipeline.models.autoencoder.model import Autoencoder

    experiment = load_experiment(sharded_experiment(pre_encode={"store_scale": True, "num_workers": 0}))
    torch.manual_seed(0)
    model = Autoencoder(experiment.autoencoder.model, experiment.data.sample_rate).eval()
    save_autoencoder(model, layout_of(experiment).autoencoder_weights, stage_hash(experiment, "train_autoencoder"))
    pre_encode_all(experiment, progress=False)
    info = check_training_stores(experiment, build_index(experiment), want_discrete=False)
    assert info.latent_dim == experiment.autoencoder.model.latent_dim and info.has_scale and info.items > 0
    dataset = LatentCrops(info.table, 64, seed=experiment.seed, normalise="per_channel", posterior_sample=True)
    example = dataset[next(iter(RankBatches(info.items, experiment.seed, 0, 1)))[0]]
    assert example["latents"].shape == (info.latent_dim, 64) and torch.isfinite(example["latents"]).all()
