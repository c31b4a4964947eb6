"""The diffusion family through `train_stage` and `pipeline train`: a tiny DiT overfits a few fixed
latents (v and rectified flow) and its exported EMA model generates near them; per-item draws are
the same in any batch; crop timing reaches the number conditioners; bad stores and configs fail at
`pipeline train` with one line naming the file or field."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from pipeline.config import load_experiment
from pipeline.latents.dataset import collate, item_rng
from pipeline.layout import layout_of
from pipeline.train.distributed import DistEnv
from pipeline.train.stage import run_files, train_stage
from tests.conftest import DEMO_EXPERIMENT, REPO_ROOT, deep_merge
from tests.train.conftest import TINY_TRAIN, encode_document

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models, shared cores

CPU = torch.device("cpu")


# --- a store of a few fixed latents ---------------------------------------------------------------
@pytest.fixture(scope="module")
def few_items_work(tmp_path_factory, training_audio) -> tuple[Path, dict]:
    """Stores of 8 items, each the first 0.256 s (32 latent frames) of one demo file: with
    crop_frames 32 every crop is a whole item, so the model sees 6 fixed latents (2 held out)."""
    base = tmp_path_factory.mktemp("few_items")
    document = {
        "extends": str(DEMO_EXPERIMENT),
        "name": "overfit",
        "paths": {"audio_dir": str(training_audio), "work_dir": str(base / "work")},
        "data": {"max_item_seconds": 0.256, "min_item_seconds": 0.1, "long_items": "truncate"},
    }
    return encode_document(base, document), document


def few_items_experiment(few_items_work, tmp_path: Path, train: dict):
    work, document = few_items_work
    copy = tmp_path / "work"
    shutil.copytree(work, copy, symlinks=True)
    changes = {"paths": {"work_dir": str(copy)}, "train": deep_merge(TINY_TRAIN, train)}
    path = tmp_path / "overfit.yaml"
    path.write_text(yaml.safe_dump(deep_merge(document, changes)), encoding="utf-8")
    return load_experiment(path)


def logged_losses(experiment) -> list[float]:
    lines = [json.loads(line) for line in run_files(experiment).metrics.read_text().splitlines()]
    return [line["loss"] for line in lines if "loss" in line]


def mean_squared_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(A, B) mean over channels and frames of (a_i - b_j)^2, for a (A, C, T) and b (B, C, T)."""
    return (a[:, None] - b[None]).square().flatten(2).mean(2)


OVERFIT_STEPS = 500
# Measured on 2 shared CPU cores, mean of the first 20 logged losses -> mean of the last 20:
# v 0.891 -> 0.211 (x4.2), rectified_flow 1.665 -> 0.360 (x4.6); each case ~40 s.
OVERFIT_FACTOR = 3.0


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["v", "rectified_flow"])
def test_the_tiny_dit_overfits_a_few_latents_and_generates_near_them(few_items_work, tmp_path, objective):
    from pipeline.sample.generate import exported_description, load_exported
    from pipeline.train.diffusion import DiffusionFamily, conditioning_values

    train = {
        "model": {
            "objective": objective,
            "timestep_sampler": "logit_normal",
            "backbone": {"embed_dim": 64, "num_heads": 2},
        },
        "data": {"holdout_items": 5},
        "steps": OVERFIT_STEPS,
        "grad_clip": None,
        "optimizer": {"lr": 3e-3},
        "eval_every": OVERFIT_STEPS,
        "checkpoint_every": OVERFIT_STEPS,
    }
    experiment = few_items_experiment(few_items_work, tmp_path, train)
    result = train_stage(experiment, progress=False)
    assert result.exported is not None

    losses = logged_losses(experiment)
    assert len(losses) == OVERFIT_STEPS
    first, last = float(np.mean(losses[:20])), float(np.mean(losses[-20:]))
    assert first / last > OVERFIT_FACTOR, f"the loss fell only from {first:.4f} to {last:.4f}"

    # The crops it trained on: every item whole (offset 0, no padding), the same at every epoch.
    family = DiffusionFamily(experiment, DistEnv(), CPU)
    items = family.training_items
    dataset = family.dataset(items, True, experiment.seed)
    assert len(items) == 3 and (items.lengths == 32).all()
    crops = [dataset[(item, 0)] for item in range(len(items))]
    assert all(dataset.window(item, 7).offset == 0 and crop["mask"].all() for item, crop in enumerate(crops))
    data = torch.stack([crop["latents"] for crop in crops])

    # Generated from noise with each training crop's conditioning, by the exported EMA weights.
    # Measured (mean squared distance per element; v / rectified_flow): generated -> nearest training
    # latent 0.61 / 0.39, generated -> its own starting noise 1.35 / 1.35, fresh noise -> nearest
    # training latent 1.78 / 1.78; generated -> the latent whose conditioning it got 0.61 / 0.39, -> the
    # other latents 1.50 / 1.29.
    model = load_exported(exported_description(experiment), layout_of(experiment).exported_model).eval()
    generator = torch.Generator().manual_seed(5)
    noise = torch.randn(data.shape, generator=generator)
    fresh = torch.randn(data.shape, generator=generator)
    generated = model.generate(noise, conditioning_values(model, collate(crops)), steps=50)

    distances = mean_squared_distance(generated, data)
    to_data = distances.min(dim=1).values.mean()
    to_own_noise = mean_squared_distance(generated, noise).diagonal().mean()
    fresh_to_data = mean_squared_distance(fresh, data).min(dim=1).values.mean()
    summary = (
        f"generated -> data {to_data:.3f}, -> own noise {to_own_noise:.3f}; fresh noise -> data {fresh_to_data:.3f}"
    )
    assert to_data < 0.6 * to_own_noise, summary
    assert to_data < 0.6 * fresh_to_data, summary
    own, others = distances.diagonal().mean(), distances[~torch.eye(len(data), dtype=torch.bool)].mean()
    assert own < 0.6 * others, f"the conditioning is not followed: own crop {own:.3f}, other crops {others:.3f}"


# --- per-item draws ---------------------------------------------------------------------------------
def drawn_by_item(batches, steps: int) -> dict[tuple[int, int], dict]:
    """(item, epoch) -> what the batches gave that example, over the first `steps` micro-batches."""
    found = {}
    for _, batch in zip(range(steps), batches):
        for row, (item, epoch) in enumerate(zip(batch["item"].tolist(), batch["epoch"].tolist())):
            example = {name: batch[name][row] for name in ("latents", "mask", "noise", "t", "keep", "seconds_start")}
            assert (item, epoch) not in found, "an item came twice in one epoch"
            found[(item, epoch)] = example
    return found


def test_an_items_draws_are_the_same_in_any_batch_on_any_rank(train_experiment):
    """What makes DDP equal one process: the union of the ranks' batches of a step is the single
    process's batch, and each example's crop, noise, t and keep come from (seed, epoch, item) alone."""
    from pipeline.train.diffusion import DRAW_TAG, DiffusionFamily

    train = {"batch_size": 8, "model": {"timestep_sampler": "logit_normal", "cfg_dropout": 0.3}}
    experiment = load_experiment(train_experiment(train))
    single = drawn_by_item(DiffusionFamily(experiment, DistEnv(), CPU).batches(1, CPU), 1)
    ranks = {}
    for rank in range(2):
        family = DiffusionFamily(experiment, DistEnv(rank=rank, world_size=2), CPU)
        assert family.micro_batch == 4
        ranks.update(drawn_by_item(family.batches(1, CPU), 1))
    accumulated = load_experiment(train_experiment({**train, "grad_accum": 4}, name="accumulated"))
    micro = drawn_by_item(DiffusionFamily(accumulated, DistEnv(), CPU).batches(1, CPU), 4)
    assert len(single) == 8 and single.keys() == ranks.keys() == micro.keys()
    for key, example in single.items():
        for other in (ranks[key], micro[key]):
            for name, value in example.items():
                assert torch.equal(value, other[name]), f"{name} of (item, epoch) {key} differs"

    # And they are the documented draws: noise, then U[0, 1) (unused by logit_normal), N(0, 1), U[0, 1).
    channels, frames = example["noise"].shape
    for (item, epoch), example in single.items():
        rng = item_rng(experiment.seed, epoch, item, DRAW_TAG)
        noise = rng.standard_normal((channels, frames), dtype=np.float32)
        _, normal, dropout = rng.random(), rng.standard_normal(), rng.random()
        assert torch.equal(example["noise"], torch.from_numpy(noise))
        assert example["t"].dtype == torch.float32
        assert example["t"].item() == np.float32(1.0 / (1.0 + math.exp(-normal)))
        assert example["keep"].item() == (dropout >= 0.3)


def fake_examples(count: int, epoch: int = 0) -> list[dict]:
    """What `LatentCrops` gives, for the Drawer alone (its draws read only item and epoch)."""
    return [
        {
            "latents": torch.zeros(2, 3),
            "mask": torch.ones(3, dtype=torch.bool),
            "seconds_start": 0.0,
            "seconds_total": 1.0,
            "key": f"k{item}",
            "item": item,
            "epoch": epoch,
            "metadata": {},
        }
        for item in range(count)
    ]


def test_cfg_dropout_drops_that_share_of_items_and_timesteps_follow_the_sampler():
    from pipeline.models.diffusion.objectives import timesteps_from
    from pipeline.train.diffusion import Drawer as WorkerDrawer
    from pipeline.train.diffusion import to_device

    def Drawer(*settings):  # noqa: N802 (the drawer as the trainer sees its batches: tensors)
        return lambda examples: to_device(WorkerDrawer(*settings)(examples), CPU)

    examples = fake_examples(4000)
    kept = {p: Drawer(11, "uniform", p)(examples)["keep"] for p in (0.0, 0.25, 0.5)}
    assert kept[0.0].all()
    for p in (0.25, 0.5):  # binomial(4000, p): 5 standard deviations are under 0.04
        assert abs((~kept[p]).float().mean().item() - p) < 0.04
    assert (kept[0.5] <= kept[0.25]).all(), "a higher dropout must drop a superset (the same draw, a higher bar)"
    assert not torch.equal(Drawer(11, "uniform", 0.25)(fake_examples(64, epoch=1))["keep"], kept[0.25][:64])

    uniform, normal = Drawer(11, "uniform", 0.0)(examples)["t"], Drawer(11, "logit_normal", 0.0)(examples)["t"]
    assert 0.0 <= uniform.min() and uniform.max() < 1.0 and abs(uniform.mean().item() - 0.5) < 0.02
    assert abs(normal.mean().item() - 0.5) < 0.02 and normal.std() < uniform.std()  # sigmoid(N(0, 1)) is narrower
    assert torch.equal(timesteps_from("uniform", uniform, None), uniform)
    with pytest.raises(ValueError, match="unknown timestep sampler"):
        Drawer(11, "cosine", 0.0)(examples[:2])


def test_a_dropped_items_label_changes_nothing_and_a_kept_ones_does(train_experiment):
    """The keep flag reaches the model: with keep False the cross-attention tokens are the null."""
    from pipeline.train.diffusion import DiffusionFamily, DiffusionStep

    experiment = load_experiment(train_experiment())
    family = DiffusionFamily(experiment, DistEnv(), CPU)
    torch.manual_seed(0)
    step = DiffusionStep(family.build()).eval()
    with torch.no_grad():  # a trained model's cross-attention matters; the initial one's is zeroed (SAT's init)
        for parameter in step.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    batch = next(family.batches(0, CPU))
    relabelled = {**batch, "metadata": {"label": ["organ"] * len(batch["key"])}}
    assert batch["metadata"]["label"] != relabelled["metadata"]["label"]
    for keep, changes in ((False, False), (True, True)):
        flags = torch.full_like(batch["keep"], keep)
        with torch.no_grad():
            loss = step({**batch, "keep": flags})[0]
            other = step({**relabelled, "keep": flags})[0]
        assert (loss != other) == changes, f"keep={keep}: {loss} vs {other}"


# --- conditioning values ----------------------------------------------------------------------------
def test_seconds_start_of_a_random_crop_is_where_the_crop_starts_in_its_file(train_experiment):
    """The number conditioner gets the item's seconds_start + crop offset / latent_rate, not the
    segment's start; seconds_total is the source file's."""
    from pipeline.train.diffusion import DiffusionFamily, DiffusionStep

    experiment = load_experiment(train_experiment())
    family = DiffusionFamily(experiment, DistEnv(), CPU)
    table, rate = family.training_items, family.stores.latent_rate
    dataset = family.dataset(table, True, experiment.seed)
    torch.manual_seed(0)
    model = family.build()
    received = {}

    def record(name):
        def hook(module, args):
            received.setdefault(name, []).extend(args[0])

        return hook

    for name in ("seconds_start", "seconds_total"):
        model.conditioner.conditioners[name].register_forward_pre_hook(record(name))
    batches = family.batches(0, CPU)
    expected_start, expected_total, moved = [], [], 0
    for _ in range(4):
        batch = next(batches)
        DiffusionStep(model)(batch)
        for item, epoch in zip(batch["item"].tolist(), batch["epoch"].tolist()):
            offset = dataset.window(item, epoch).offset
            expected_start.append(table.seconds_start[item] + offset / rate)
            expected_total.append(table.seconds_total[item])
            moved += offset > 0 and table.seconds_start[item] > 0
    assert moved >= 3, "the test needs crops inside later segments, away from their start"
    assert received["seconds_start"] == pytest.approx(expected_start, abs=1e-9)
    assert received["seconds_total"] == pytest.approx(expected_total, abs=1e-9)
    segment_starts = [float(table.seconds_start[item]) for item in batch["item"].tolist()]
    assert received["seconds_start"][-len(segment_starts) :] != pytest.approx(segment_starts)


def test_each_conditioner_reads_its_own_field_when_ids_and_fields_cross(train_experiment):
    """A conditioner whose id is another's field still gets its own field's values."""
    from pipeline.train.diffusion import DiffusionFamily, DiffusionStep
    from tests.train.conftest import TINY_MODEL

    captions = {"type": "label", "id": "label", "field": "caption", "values": ["a caption nobody wrote"]}
    labels = {"type": "label", "id": "caption", "field": "label", "values": ["bell", "flute", "organ", "pluck"]}
    model = {
        "conditioners": [*TINY_MODEL["conditioners"][:2], captions, labels],
        "cross_attention_cond_ids": ["label", "caption", "seconds_start", "seconds_total"],
    }
    experiment = load_experiment(train_experiment({"model": model}))
    family = DiffusionFamily(experiment, DistEnv(), CPU)
    built = family.build()
    received = {}
    for name in ("label", "caption"):
        hook = lambda module, args, name=name: received.__setitem__(name, list(args[0]))  # noqa: E731
        built.conditioner.conditioners[name].register_forward_pre_hook(hook)
    batch = next(family.batches(0, CPU))
    DiffusionStep(built)(batch)
    assert received["label"] == batch["metadata"]["caption"] and received["caption"] == batch["metadata"]["label"]
    assert set(received["caption"]) <= {"bell", "flute", "organ", "pluck", None}


# --- bad input at `pipeline train` --------------------------------------------------------------------
def pipeline_train(experiment_file: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", "train", str(experiment_file), "--quiet", *extra],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=300,
    )


def assert_user_error(run: subprocess.CompletedProcess, status: int, *names: str) -> str:
    """Exit `status`, no traceback, stderr naming each of `names`; returns stderr."""
    assert run.returncode == status, run.stdout + run.stderr
    assert "Traceback" not in run.stderr, run.stderr
    for name in names:
        assert name in run.stderr, f"{name!r} not in: {run.stderr}"
    return run.stderr


def test_stores_of_other_autoencoder_weights_are_refused(train_experiment):
    from pipeline.config import stage_hash
    from pipeline.models.autoencoder.checkpoints import save_autoencoder
    from pipeline.models.autoencoder.model import Autoencoder

    path = train_experiment()
    experiment = load_experiment(path)
    torch.manual_seed(4)  # not the encoding autoencoder's seed (3)
    other = Autoencoder(experiment.autoencoder.model, experiment.data.sample_rate).eval()
    weights = layout_of(experiment).autoencoder_weights
    save_autoencoder(other, weights, stage_hash(experiment, "train_autoencoder"))
    stderr = assert_user_error(pipeline_train(path), 1, "shard-000000.h5", "other autoencoder weights", "pre_encode")
    assert len(stderr.strip().splitlines()) == 1


def test_a_diffusion_model_over_a_discrete_autoencoder_is_a_config_error(train_experiment):
    """Discrete stores cannot reach the diffusion family: the experiment refuses the pairing first."""
    discrete = {"model": {"encoder": {"latent_dim": 16}, "bottleneck": {"type": "rvq", "num_quantizers": 2}}}
    path = train_experiment(autoencoder=discrete)
    assert_user_error(pipeline_train(path), 2, "train.model.type", "rvq", "discrete codes")


@pytest.mark.parametrize(
    ("remove", "named"),
    [
        ("index.h5", ["latents/index.h5", "pipeline index EXP"]),
        ("shard-000001.h5", ["latents/shard-000001.h5", "missing"]),
    ],
)
def test_a_missing_index_or_store_is_named(train_experiment, remove, named):
    path = train_experiment()
    (layout_of(load_experiment(path)).index.parent / remove).unlink()
    stderr = assert_user_error(pipeline_train(path), 1, *named)
    assert len(stderr.strip().splitlines()) == 1


def test_a_crop_longer_than_every_item_trains_padded_with_a_note(train_experiment):
    path = train_experiment({"data": {"crop_frames": 1300}, "steps": 1, "batch_size": 2, "eval_every": 1})
    run = pipeline_train(path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "every item is shorter than train.data.crop_frames (1300); the longest has 1250 frames" in run.stdout
    assert "padding is masked out" in run.stdout
    experiment = load_experiment(path)
    assert len(logged_losses(experiment)) == 1 and math.isfinite(logged_losses(experiment)[0])
    assert layout_of(experiment).exported_model.is_file()


@pytest.mark.parametrize(
    ("conditioner", "named"),
    [
        ({"type": "label", "id": "mood", "values": ["calm", "busy"]}, "train.model.conditioners[3].id"),
        (
            {"type": "label", "id": "family", "field": "instrument_family", "values": ["winds"]},
            "train.model.conditioners[3].field",
        ),
    ],
)
def test_a_conditioner_of_a_field_no_item_has_is_named(train_experiment, conditioner, named):
    from tests.train.conftest import TINY_MODEL

    model = {
        "conditioners": [*TINY_MODEL["conditioners"], conditioner],
        "cross_attention_cond_ids": [*TINY_MODEL["cross_attention_cond_ids"], conditioner["id"]],
    }
    path = train_experiment({"model": model})
    field = conditioner.get("field", conditioner["id"])
    stderr = assert_user_error(pipeline_train(path), 1, named, f"metadata field '{field}'", "label")
    assert len(stderr.strip().splitlines()) == 1
