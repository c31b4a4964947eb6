"""pre-encode: stored latents equal a direct encode, codes exactly; plain-h5py readable; index virtual
datasets equal the shards; SIGKILL leaves no store; rebuilt when the autoencoder changes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import h5py
import numpy as np
import pytest
import torch

from pipeline.config import load_experiment, stage_hash
from pipeline.encode.pre_encode import pre_encode_all, pre_encode_shard
from pipeline.latents.index import build_index
from pipeline.layout import layout_of
from pipeline.models.autoencoder.checkpoints import save_autoencoder
from pipeline.models.autoencoder.model import Autoencoder
from pipeline.shards.reader import read_items
from tests.conftest import REPO_ROOT, deep_merge

RVQ = {"type": "rvq", "num_quantizers": 3, "codebook_size": 64}
# Small batches and windows so every path runs: padded batches (tail re-encode) and windowed long items.
SETTINGS = {"pre_encode": {"batch_size": 3, "window_seconds": 6.0, "num_workers": 1, "store_scale": True}}


def random_autoencoder(experiment, seed: int) -> Autoencoder:
    """Weights the test creates, saved where train_autoencoder would put them (or any path)."""
    torch.manual_seed(seed)
    model = Autoencoder(experiment.autoencoder.model, experiment.data.sample_rate).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith(("alpha", "beta")):
                parameter.normal_(0, 0.3)  # Snake starts at zero; make it matter
    return model


@pytest.fixture
def encoded_experiment(sharded_experiment):
    def make(name="exp", bottleneck=None, **sections):
        changes = deep_merge(SETTINGS, sections)
        if bottleneck is not None:
            width = 16 if bottleneck["type"] != "vae" else 32
            changes["autoencoder"] = {"model": {"bottleneck": bottleneck, "encoder": {"latent_dim": width}}}
            changes = deep_merge(
                changes, {"pre_encode": {"store_scale": bottleneck["type"] == "vae"}}
            )  # only a VAE has one
            if bottleneck["type"] in ("rvq", "fsq"):
                changes["train"] = None  # the demo's diffusion model needs continuous latents
        path = sharded_experiment(name, **changes)
        experiment = load_experiment(path)
        model = random_autoencoder(experiment, seed=1)
        save_autoencoder(model, layout_of(experiment).autoencoder_weights, stage_hash(experiment, "train_autoencoder"))
        return path, experiment, model

    return make


def shard_items(experiment, index):
    return list(read_items([layout_of(experiment).shard_tar(index)]))


def test_stored_latents_equal_a_direct_encode(encoded_experiment):
    _, experiment, model = encoded_experiment()
    results = pre_encode_all(experiment, progress=False)
    assert len(results) >= 2 and not any(result.skipped for result in results)
    long_items = 0
    for result in results:
        items = shard_items(experiment, result.index)
        with h5py.File(layout_of(experiment).store(result.index), "r") as store:
            keys = list(store["index/key"].asstr()[()])
            assert keys == [item.key for item in items]  # tar order
            for row, item in enumerate(items):
                offset, length = int(store["index/offset"][row]), int(store["index/length"][row])
                with torch.inference_mode():
                    direct, scale = model.encode(torch.from_numpy(item.audio)[None], return_scale=True)
                direct, scale = direct[0].T.numpy(), scale[0].T.numpy()
                stored = store["latents"][offset : offset + length].astype(np.float32)
                assert stored.shape == direct.shape
                tolerance = 1e-3 * np.abs(direct) + 1e-3 * np.sqrt(np.mean(direct**2))  # float16 + window edges
                assert np.all(np.abs(stored - direct) <= tolerance), item.key
                assert np.allclose(store["latents_scale"][offset : offset + length], scale, rtol=1e-3, atol=1e-4)
                long_items += item.audio.shape[1] > 6.0 * experiment.data.sample_rate
    assert long_items > 0  # the windowed path ran


def test_discrete_codes_round_trip_exactly(encoded_experiment):
    _, experiment, model = encoded_experiment(bottleneck=RVQ)
    result = pre_encode_shard(experiment, 0)
    with h5py.File(layout_of(experiment).store(0), "r") as store:
        assert "latents" not in store and store["codes"].dtype == np.int16
        assert store.attrs["n_codebooks"] == 3 and store.attrs["codebook_size"] == 64
        for row, item in enumerate(shard_items(experiment, 0)):
            offset, length = int(store["index/offset"][row]), int(store["index/length"][row])
            with torch.inference_mode():
                direct = model.encode(torch.from_numpy(item.audio)[None])[0].T.numpy()
            assert np.array_equal(store["codes"][offset : offset + length], direct), item.key
    assert result.items == row + 1


def test_store_readable_with_plain_h5py_and_h5ls(encoded_experiment):
    _, experiment, _ = encoded_experiment()
    pre_encode_shard(experiment, 0)
    store = layout_of(experiment).store(0)
    reader = textwrap.dedent(f"""
        import json, sys, h5py, numpy as np
        assert "pipeline" not in sys.modules
        with h5py.File({str(store)!r}, "r") as f:
            keys = f["index/key"].asstr()[()]
            offsets, lengths = f["index/offset"][()], f["index/length"][()]
            item = f["latents"][offsets[-1] : offsets[-1] + lengths[-1]]
            meta = json.loads(f["index/metadata_json"].asstr()[0])
            print(len(keys), item.shape, item.dtype, f.attrs["latent_rate"], f.attrs["format"], meta["key"] == keys[0],
                  f["stats/mean"].shape, "pipeline" in sys.modules)
    """)
    result = subprocess.run([sys.executable, "-c", reader], capture_output=True, text=True, cwd="/")
    assert result.returncode == 0, result.stderr
    count, *rest = result.stdout.split(maxsplit=1)
    assert int(count) >= 2 and "float16 125.0 pipeline-latent-store True (16,) False" in rest[0]
    h5ls = shutil.which("h5ls")
    if h5ls is None:
        pytest.skip("h5ls (hdf5-tools) is not installed; .ci/run installs it")
    listing = subprocess.run([h5ls, "-r", str(store)], capture_output=True, text=True, check=True).stdout
    for name in ("/latents", "/latents_scale", "/index/key", "/index/offset", "/index/metadata_json", "/stats/mean"):
        assert f"{name} " in listing, listing


def test_index_virtual_datasets_match_the_shards(encoded_experiment, tmp_path):
    _, experiment, _ = encoded_experiment()
    results = pre_encode_all(experiment, workers=2, progress=False)  # one process per shard
    assert len(results) >= 2 and [result.index for result in results] == list(range(len(results)))
    index = build_index(experiment)
    moved = tmp_path / "moved_latents"
    shutil.copytree(index.parent, moved)  # relative sources: the folder can move as a whole
    all_values = []
    with h5py.File(moved / "index.h5", "r") as combined:
        assert combined["latents"].shape[0] == combined.attrs["frames"] == sum(r.frames for r in results)
        for number, result in enumerate(results):
            with h5py.File(layout_of(experiment).store(result.index), "r") as shard:
                rows = np.flatnonzero(combined["index/shard"][()] == number)
                start = int(combined["index/offset"][rows[0]])
                assert np.array_equal(combined["latents"][start : start + result.frames], shard["latents"][()])
                assert np.array_equal(
                    combined["latents_scale"][start : start + result.frames], shard["latents_scale"][()]
                )
                assert list(combined["index/key"].asstr()[rows]) == list(shard["index/key"].asstr()[()])
                all_values.append(shard["latents"][()].astype(np.float64))
        everything = np.concatenate(all_values)
        assert np.allclose(combined["stats/mean"][()], everything.mean(axis=0), rtol=1e-9, atol=1e-9)
        assert np.allclose(combined["stats/std"][()], everything.std(axis=0), rtol=1e-6, atol=1e-9)


def test_sigkill_during_a_store_write_then_rerun(encoded_experiment, tmp_path):
    path, experiment, _ = encoded_experiment(
        "big", data={"shard": {"max_items": 100}}, pre_encode={"batch_size": 1, "num_workers": 0}
    )
    store = layout_of(experiment).store(0)
    process = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "pre-encode", str(path), "--shard", "0", "--quiet"],
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while not list(store.parent.glob(".shard-000000.h5.tmp-*")):
        assert process.poll() is None, "pre-encode ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(0.5)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not store.exists()
    rerun = subprocess.run(
        [sys.executable, "-m", "pipeline", "pre-encode", str(path), "--shard", "0", "--quiet"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
    )
    assert rerun.returncode == 0, rerun.stderr
    assert not list(store.parent.glob(".*tmp-*"))
    killed_then_rerun = tmp_path / "rerun.h5"
    shutil.copy(store, killed_then_rerun)
    assert pre_encode_shard(experiment, 0).skipped
    pre_encode_shard(experiment, 0, force=True)  # an uninterrupted run
    with h5py.File(killed_then_rerun, "r") as first, h5py.File(store, "r") as second:
        for name in ("latents", "latents_scale", "index/offset", "index/length", "index/key", "stats/mean"):
            assert np.array_equal(first[name][()], second[name][()]), name
        assert {k: v for k, v in first.attrs.items() if k != "created"} == {
            k: v for k, v in second.attrs.items() if k != "created"
        }


def test_store_is_rebuilt_when_the_autoencoder_changes(encoded_experiment, tmp_path):
    _, experiment, model_a = encoded_experiment()
    weights_a, weights_b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    save_autoencoder(model_a, weights_a)
    save_autoencoder(random_autoencoder(experiment, seed=2), weights_b)
    with_a = experiment.model_copy(
        update={"autoencoder": experiment.autoencoder.model_copy(update={"checkpoint": weights_a})}
    )
    with_b = experiment.model_copy(
        update={"autoencoder": experiment.autoencoder.model_copy(update={"checkpoint": weights_b})}
    )
    assert not pre_encode_shard(with_a, 0).skipped
    assert pre_encode_shard(with_a, 0).skipped
    latents_a = h5py.File(layout_of(experiment).store(0), "r")["latents"][()]
    assert not pre_encode_shard(with_b, 0).skipped  # another checkpoint: another stage hash
    with h5py.File(layout_of(experiment).store(0), "r") as store:
        assert not np.array_equal(store["latents"][()], latents_a)
        assert store.attrs["autoencoder_weights_sha256"] != "" and store.attrs["source_shard"] == "shard-000000.tar"
    shutil.copy(weights_a, weights_b)  # same path, other weights: the weights hash catches it
    assert not pre_encode_shard(with_b, 0).skipped
    assert np.array_equal(h5py.File(layout_of(experiment).store(0), "r")["latents"][()], latents_a)


# --- nothing wrong passes silently ------------------------------------------------------------------
def _cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *map(str, args)], capture_output=True, text=True, cwd=REPO_ROOT
    )


def test_stale_weights_are_refused(encoded_experiment):
    """Weights trained under another autoencoder.training config never encode this experiment's stores."""
    path, experiment, _ = encoded_experiment()
    changed = _cli("pre-encode", path, "--shard", "0", "--quiet", "autoencoder.training.learning_rate=0.01")
    assert changed.returncode == 1 and "Traceback" not in changed.stderr, changed.stderr
    new_hash = stage_hash(load_experiment(path, ["autoencoder.training.learning_rate=0.01"]), "train_autoencoder")
    assert f"hashes to {new_hash}" in changed.stderr and stage_hash(experiment, "train_autoencoder") in changed.stderr
    assert "pipeline train-autoencoder" in changed.stderr and "stale" in changed.stderr
    assert not layout_of(experiment).store(0).exists()
    save_autoencoder(
        random_autoencoder(experiment, seed=1), layout_of(experiment).autoencoder_weights
    )  # no stage hash at all
    unrecorded = _cli("pre-encode", path, "--all", "--quiet")
    assert unrecorded.returncode == 1 and "(none recorded)" in unrecorded.stderr


def test_non_finite_latents_fail_the_stage(encoded_experiment):
    path, experiment, model = encoded_experiment()
    with torch.no_grad():
        model.encoder.layers[0].bias.fill_(1e30)  # finite weights whose latents overflow
    save_autoencoder(model, layout_of(experiment).autoencoder_weights, stage_hash(experiment, "train_autoencoder"))
    result = _cli("pre-encode", path, "--shard", "0", "--quiet")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "/latents" in result.stderr and ("NaN/Inf" in result.stderr or "overflows float16" in result.stderr)
    assert not layout_of(experiment).store(0).exists()


def test_nan_weights_are_refused_at_load(encoded_experiment):
    path, experiment, model = encoded_experiment()
    state = {key: value.clone() for key, value in model.state_dict().items()}
    state["decoder.layers.0.bias"][0] = float("nan")
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    weights = layout_of(experiment).autoencoder_weights
    with safe_open(str(weights), framework="pt") as handle:
        metadata = handle.metadata()
    tensors = load_file(str(weights))
    tensors["decoder.layers.0.bias"][0] = float("nan")
    save_file(tensors, str(weights), metadata=metadata)  # written by hand: save_autoencoder refuses NaN
    result = _cli("pre-encode", path, "--shard", "0", "--quiet")
    assert result.returncode == 1 and "NaN/Inf" in result.stderr and "decoder.layers.0.bias" in result.stderr


def test_a_damaged_store_is_not_up_to_date(encoded_experiment):
    path, experiment, _ = encoded_experiment()
    assert not pre_encode_shard(experiment, 0).skipped
    store = layout_of(experiment).store(0)
    with h5py.File(store, "r") as file:
        good = file["latents"][()]
    with h5py.File(store, "r+") as file:
        file["latents"][:16] = 0  # consistent for HDF5 (checksums recomputed), wrong for us
    assert _cli("verify", store).returncode == 1
    rerun = _cli("pre-encode", path, "--all", "--quiet")
    assert rerun.returncode == 0, rerun.stderr
    assert "fails verification" in rerun.stderr and "rebuilding" in rerun.stderr
    with h5py.File(store, "r") as file:
        assert np.array_equal(file["latents"][()], good)
    assert _cli("verify", store).returncode == 0


def test_index_and_verify_refuse_stores_from_older_weights(encoded_experiment):
    path, experiment, _ = encoded_experiment()
    pre_encode_all(experiment, progress=False)
    index = build_index(experiment)
    assert _cli("verify", index, "--experiment", path).returncode == 0
    # new weights at the same path (as a retrain writes them): the old stores no longer belong
    save_autoencoder(
        random_autoencoder(experiment, seed=5),
        layout_of(experiment).autoencoder_weights,
        stage_hash(experiment, "train_autoencoder"),
    )
    stale = _cli("verify", index, "--experiment", path)
    assert stale.returncode == 1 and "store(s) recorded with another autoencoder_weights_sha256" in stale.stdout
    assert (
        "autoencoder_weights_sha256 is" in _cli("verify", layout_of(experiment).store(0), "--experiment", path).stdout
    )
    refused = _cli("index", path)
    assert refused.returncode == 1 and "encoded with other autoencoder weights" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_a_pre_encode_job_killed_during_its_second_shard_resumes_there(encoded_experiment):
    """`pipeline pre-encode --job J` (what the workflow runs) encodes K shards with one model load, then
    writes the job's record; killed half-way it leaves no record, and its rerun skips the finished stores."""
    path, experiment, _ = encoded_experiment(
        "jobs",
        data={"shard": {"max_items": 4}},
        pre_encode={"batch_size": 1, "num_workers": 0},
        resources={"pre_encode": {"shards_per_job": 2}},
    )
    layout = layout_of(experiment)
    record = layout.job_record("pre_encode", 0)
    process = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "pre-encode", str(path), "--job", "0", "--quiet"],
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while not list(layout.latents_dir.glob(".shard-000001.h5.tmp-*")):
        assert process.poll() is None, "pre-encode ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    first_store = layout.store(0).stat().st_mtime_ns
    assert not layout.store(1).exists() and not record.exists()

    rerun = _cli("pre-encode", str(path), "--job", "0", "--quiet")
    assert rerun.returncode == 0, rerun.stderr
    written = json.loads(record.read_text())
    assert written["shards"] == [0, 1] and [r["skipped"] for r in written["results"]] == [True, False]
    assert written["stage_hash"] == stage_hash(experiment, "pre_encode")
    assert layout.store(0).stat().st_mtime_ns == first_store
    assert not layout.store(2).exists()  # job 1's
    assert pre_encode_shard(experiment, 1).skipped
