"""The LM family through `train_stage` and `pipeline train`: a tiny LM overfits a few fixed code
crops and, given an item's conditioning, its exported EMA model samples that item's first frames far
above chance; crops of codes come from the same dataset as latents (padding, timing, per-item
draws); config mismatches with the autoencoder fail at validation with one line naming the field."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from pipeline.config import load_experiment
from pipeline.latents.dataset import collate
from pipeline.layout import layout_of
from pipeline.train.distributed import DistEnv
from pipeline.train.stage import run_files, train_stage
from tests.conftest import DEMO_EXPERIMENT, deep_merge
from tests.train.conftest import DEMO_LM_EXPERIMENT, TINY_LM, TINY_LM_TRAIN, encode_document
from tests.train.test_diffusion import assert_user_error, pipeline_train

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models, shared cores

CPU = torch.device("cpu")


@pytest.fixture
def family() -> str:
    """`train_experiment` here writes LM experiments over code stores."""
    return "lm"


@pytest.fixture(scope="module")
def few_code_items_work(tmp_path_factory, training_audio) -> tuple[Path, dict]:
    """Code stores of 8 items, each the first 0.256 s (32 frames x 4 codes) of one demo file: with
    crop_frames 32 every crop is a whole item, so the model sees the same few code sequences."""
    base = tmp_path_factory.mktemp("few_code_items")
    document = {
        "extends": str(DEMO_LM_EXPERIMENT),
        "name": "lmoverfit",
        "paths": {"audio_dir": str(training_audio), "work_dir": str(base / "work")},
        "data": {"max_item_seconds": 0.256, "min_item_seconds": 0.1, "long_items": "truncate"},
    }
    return encode_document(base, document), document


def logged(experiment, name: str) -> list[float]:
    lines = [json.loads(line) for line in run_files(experiment).metrics.read_text().splitlines()]
    return [line[name] for line in lines if name in line]


OVERFIT_STEPS = 300
# Asserted: the mean of the last 20 losses is 10x below the mean of the first 20, and the codes drawn
# (greedy and at temperature 1) for each item's conditioning match its first 16 frames' codes (all 4
# codebooks) at more than 20x chance (1/64). The whole test took 80 s on 2 shared CPU cores (the
# module's code stores included).
OVERFIT_FACTOR = 10.0


@pytest.mark.slow
def test_the_tiny_lm_overfits_a_few_items_and_samples_their_first_frames(few_code_items_work, tmp_path):
    from pipeline.sample.generate import exported_description, load_exported
    from pipeline.train.lm import LMFamily, conditioning_values

    work, document = few_code_items_work
    copy = tmp_path / "work"
    shutil.copytree(work, copy, symlinks=True)
    train = deep_merge(
        TINY_LM_TRAIN,
        {
            "model": {"embed_dim": 64, "num_heads": 2, "cfg_dropout": 0.0},
            "data": {"holdout_items": 2},
            "steps": OVERFIT_STEPS,
            "grad_clip": None,
            "optimizer": {"lr": 3e-3},
            "log_every": 1,
            "eval_every": OVERFIT_STEPS,
            "checkpoint_every": OVERFIT_STEPS,
        },
    )
    path = tmp_path / "overfit.yaml"
    path.write_text(yaml.safe_dump(deep_merge(document, {"paths": {"work_dir": str(copy)}, "train": train})))
    experiment = load_experiment(path)
    result = train_stage(experiment, progress=False)
    assert result.exported is not None

    losses = logged(experiment, "loss")
    first, last = float(np.mean(losses[:20])), float(np.mean(losses[-20:]))
    assert first / last > OVERFIT_FACTOR, f"the loss fell only from {first:.4f} to {last:.4f}"

    family = LMFamily(experiment, DistEnv(), CPU)
    items = family.training_items
    assert (items.lengths == 32).all()
    dataset = family.dataset(items, True, experiment.seed)
    crops = [dataset[(item, 0)] for item in range(len(items))]
    codes = torch.stack([crop["codes"] for crop in crops])
    assert codes.shape[1:] == (4, 32)

    description = exported_description(experiment)
    assert (description["family"], description["n_codebooks"], description["codebook_size"]) == ("lm", 4, 64)
    model = load_exported(description, layout_of(experiment).exported_model).eval()
    frames = 16
    length = frames + 3  # the delay pattern of 4 codebooks
    values = conditioning_values(model, collate(crops))
    greedy = model.generate(values, frames, torch.zeros(len(crops), length, 4), temperature=0.0)
    sampled = model.generate(values, frames, torch.rand(len(crops), length, 4), temperature=1.0)
    chance = 1 / 64
    for generated in (greedy, sampled):
        matches = (generated == codes[..., :frames]).float().mean()
        assert matches > 20 * chance, f"{matches:.3f} of the codes match, chance is {chance:.3f}"


def test_code_crops_are_the_latent_crops_with_keep_flags_per_item(train_experiment):
    """LM batches go through the latent dataset (its crop windows and timing) and draw one CFG keep
    flag per (seed, epoch, item), whatever the batch."""
    from pipeline.latents.dataset import item_rng
    from pipeline.train.lm import DROP_TAG, DropDrawer, LMFamily

    experiment = load_experiment(train_experiment({"data": {"crop_frames": 48}}, name="crops"))
    family = LMFamily(experiment, DistEnv(), CPU)
    batches = family.batches(0, CPU)
    batch = next(batches)
    assert batch["codes"].dtype == torch.int64 and batch["codes"].shape == (8, 4, 48)
    dataset = family.dataset(family.training_items, True, experiment.seed)
    for row, (item, epoch) in enumerate(zip(batch["item"].tolist(), batch["epoch"].tolist())):
        example = dataset[(item, epoch)]
        assert torch.equal(batch["codes"][row], example["codes"])
        assert batch["seconds_start"][row] == example["seconds_start"]
        assert bool(batch["keep"][row]) == (item_rng(experiment.seed, epoch, item, DROP_TAG).random() >= 0.1)
        alone = DropDrawer(experiment.seed, 0.1)([example])
        assert bool(alone["keep"][0]) == bool(batch["keep"][row])


def test_a_crop_longer_than_the_items_pads_and_trains(train_experiment, capsys):
    experiment = load_experiment(train_experiment({"data": {"crop_frames": 4000}, "steps": 2}, name="long"))
    result = train_stage(experiment, progress=False)
    assert result.step == 2 and result.exported is not None
    assert "every item is shorter than train.data.crop_frames (4000)" in capsys.readouterr().out


def own_copy(experiment: Path, tmp_path: Path, **changes) -> Path:
    """`experiment`'s document with its bases named absolutely and `changes` merged in, so that a
    section can be replaced outright (extending the file would merge it key by key)."""
    document = yaml.safe_load(experiment.read_text())
    document["extends"] = [str((experiment.parent / base).resolve()) for base in document["extends"]]
    document.update(name="mismatch", paths={"audio_dir": str(tmp_path)})
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(deep_merge(document, changes)))
    return path


FSQ = {"type": "fsq", "levels": [8, 5], "num_codebooks": 2}


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"train": {"model": {"n_codebooks": 8}}}, ["train.model.n_codebooks", "rvq", "(4), got 8"]),
        ({"train": {"model": {"codebook_size": 1024}}}, ["train.model.codebook_size", "(64), got 1024"]),
        ({"sample": {"sampler": "euler"}}, ["sample.sampler", "diffusion sampler"]),
        (
            {"autoencoder": {"model": {"bottleneck": FSQ}}, "train": {"model": {"codebook_size": 64}}},
            ["train.model.codebook_size", "fsq", "(40), got 64"],
        ),
    ],
)
def test_an_lm_that_does_not_fit_the_autoencoder_is_a_config_error(tmp_path, changes, named):
    from pipeline.config.errors import ConfigError

    path = own_copy(DEMO_LM_EXPERIMENT, tmp_path, **changes)
    if "autoencoder" in changes:  # the fsq bottleneck replaces the rvq one, not merged into it
        document = yaml.safe_load(path.read_text())
        document["autoencoder"]["model"]["bottleneck"] = FSQ
        path.write_text(yaml.safe_dump(document))
    with pytest.raises(ConfigError) as caught:
        load_experiment(path)
    text = str(caught.value)
    assert len(caught.value.problems) == 1, text
    for name in named:
        assert name in text


def test_an_lm_over_a_continuous_autoencoder_is_a_config_error(tmp_path):
    """The demo's VAE makes latents: an LM over them fails at validation (exit 2 at `pipeline train`)."""
    path = own_copy(DEMO_EXPERIMENT, tmp_path)
    document = yaml.safe_load(path.read_text())
    document["train"]["model"] = TINY_LM  # replaced outright, not merged into the demo's diffusion model
    path.write_text(yaml.safe_dump(document))
    assert_user_error(pipeline_train(path), 2, "train.model.type", "vae", "discrete codes", "rvq or fsq")
