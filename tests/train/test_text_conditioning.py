"""Text conditioning through training and sampling, on a tiny T5 the test builds and saves: two items
with different captions (`.txt` sidecars -> the `prompt` metadata field), a tiny DiT that overfits
them so that sampling with each caption lands nearer its own item; pre-computed prompt embeddings
(stored beside the latents, keyed by the text's hash, with provenance) equal the encoder's; and
`pipeline sample --prompt`."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest
import soundfile
import torch
import yaml

pytest.importorskip("transformers")

from pipeline.config import load_experiment, stage_hash  # noqa: E402
from pipeline.latents.dataset import collate  # noqa: E402
from pipeline.layout import layout_of  # noqa: E402
from pipeline.train.diffusion import DiffusionFamily, conditioning_values  # noqa: E402
from pipeline.train.distributed import DistEnv  # noqa: E402
from pipeline.train.stage import run_files, train_stage  # noqa: E402
from tests.conftest import DEMO_EXPERIMENT, REPO_ROOT, deep_merge  # noqa: E402
from tests.text import write_tiny_t5  # noqa: E402
from tests.train.conftest import TINY_TRAIN, encode_document  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models, shared cores

CPU = torch.device("cpu")
CAPTIONS = {"a": "soft piano", "b": "loud drum loop"}
STEPS = 400


@pytest.fixture(scope="module")
def captioned_work(tmp_path_factory):
    """Stores of two 0.256 s items (32 latent frames each): a low tone captioned 'soft piano' and
    noise bursts captioned 'loud drum loop'; and a tiny T5 (width 16)."""
    base = tmp_path_factory.mktemp("captioned")
    audio = base / "audio"
    audio.mkdir()
    rate, seconds = 16000, 0.3
    time = np.arange(int(rate * seconds)) / rate
    tone = 0.5 * np.sin(2 * np.pi * 220 * time)
    bursts = 0.5 * np.random.default_rng(0).standard_normal(time.size) * (np.sin(2 * np.pi * 8 * time) > 0)
    for stem, signal in (("a", tone), ("b", bursts)):
        soundfile.write(audio / f"{stem}.wav", signal.astype(np.float32), rate)
        (audio / f"{stem}.txt").write_text(CAPTIONS[stem] + "\n", encoding="utf-8")
    # The demo without its sample section's label value (this model has no label conditioner).
    demo = DEMO_EXPERIMENT.read_text(encoding="utf-8").replace(
        "../presets/", f"{DEMO_EXPERIMENT.parent.parent}/presets/"
    )
    (base / "demo.yaml").write_text(demo.replace("conditioning: {label: flute}", "conditioning: {}"), encoding="utf-8")
    document = {
        "extends": str(base / "demo.yaml"),
        "name": "captioned",
        "paths": {"audio_dir": str(audio), "work_dir": str(base / "work")},
        "data": {"max_item_seconds": 0.256, "min_item_seconds": 0.1, "long_items": "truncate"},
    }
    return encode_document(base, document), document, write_tiny_t5(base / "tiny-t5", d_model=16)


def text_train(t5_dir, precompute: bool) -> dict:
    return {
        "model": {
            "timestep_sampler": "logit_normal",
            "backbone": {"embed_dim": 64, "num_heads": 2},
            "conditioners": [
                {"type": "t5", "id": "prompt", "model_dir": str(t5_dir), "max_length": 8, "dtype": "float32",
                 "precompute": precompute},
                {"type": "number", "id": "seconds_start", "min_val": 0, "max_val": 60},
                {"type": "number", "id": "seconds_total", "min_val": 0, "max_val": 60},
            ],
            "cross_attention_cond_ids": ["prompt", "seconds_start", "seconds_total"],
        },
        "data": {"holdout_items": 0},
        "steps": STEPS,
        "grad_clip": None,
        "optimizer": {"lr": 3e-3},
        "eval_every": STEPS,
        "checkpoint_every": STEPS,
        "log_every": 10,
    }  # fmt: skip


def experiment_for(captioned_work, tmp_path, precompute: bool, name: str = "text"):
    work, document, t5_dir = captioned_work
    copy = tmp_path / f"work-{name}"
    if not copy.exists():
        shutil.copytree(work, copy, symlinks=True)
    train = deep_merge(TINY_TRAIN, text_train(t5_dir, precompute))
    train["model"]["cross_attention_cond_ids"] = text_train(t5_dir, precompute)["model"]["cross_attention_cond_ids"]
    path = tmp_path / f"{name}.yaml"
    changes = {"paths": {"work_dir": str(copy)}, "train": train}
    path.write_text(yaml.safe_dump(deep_merge(document, changes)), encoding="utf-8")
    return load_experiment(path)


def mean_squared_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a[:, None] - b[None]).square().flatten(2).mean(2)


@pytest.fixture(scope="module")
def trained_at(captioned_work, tmp_path_factory):
    """(the trained experiment, its file): 400 steps on pre-computed prompt embeddings."""
    base = tmp_path_factory.mktemp("trained")
    experiment = experiment_for(captioned_work, base, precompute=True)
    result = train_stage(experiment, progress=False)
    assert result.exported is not None
    return experiment, base / "text.yaml"


@pytest.fixture
def trained(trained_at):
    return trained_at[0]


def test_precompute_is_runtime_only_and_its_store_has_provenance(captioned_work, tmp_path, trained):
    other = experiment_for(captioned_work, tmp_path, precompute=False)
    assert stage_hash(other, "train") == stage_hash(trained, "train")  # how, not what: same run
    store = layout_of(trained).prompt_embeddings("prompt")
    with h5py.File(store, "r") as handle:
        assert handle["tokens"].shape == (2, 8, 16) and handle["mask"].shape == (2, 8)
        assert handle.attrs["format"] == "pipeline-prompt-embeddings" and handle.attrs["conditioner_id"] == "prompt"
        identity = json.loads(handle.attrs["encoder_identity"])
        assert identity["max_length"] == 8 and "model.safetensors" in identity["files_sha256"]


def test_precomputed_embeddings_equal_the_encoders(captioned_work, tmp_path, trained):
    from pipeline.sample.generate import exported_description, load_exported

    model = load_exported(exported_description(trained), layout_of(trained).exported_model).eval()
    batches = {}
    for precompute in (True, False):
        experiment = experiment_for(captioned_work, tmp_path, precompute, name=f"p{precompute}")
        batches[precompute] = next(iter(DiffusionFamily(experiment, DistEnv(), CPU).batches(0, CPU)))
    assert "text_tokens.prompt" in batches[True] and "text_tokens.prompt" not in batches[False]
    with torch.no_grad():
        stored = model.conditioning(conditioning_values(model, batches[True]))
        encoded = model.conditioning(conditioning_values(model, batches[False]))
    # The same prompts, encoded once (2 at a time) or every step (8 at a time): equal up to the float32
    # rounding of other batch shapes.
    torch.testing.assert_close(stored["cross_attn_cond"], encoded["cross_attn_cond"], rtol=1e-6, atol=1e-6)
    assert torch.equal(stored["cross_attn_mask"], encoded["cross_attn_mask"])


@pytest.mark.slow
def test_a_text_conditioned_dit_overfits_two_captions(trained):
    from pipeline.sample.generate import exported_description, load_exported

    lines = [json.loads(line) for line in run_files(trained).metrics.read_text().splitlines()]
    losses = [line["loss"] for line in lines if "loss" in line]
    assert np.mean(losses[:3]) / np.mean(losses[-3:]) > 3.0, losses

    family = DiffusionFamily(trained, DistEnv(), CPU)
    dataset = family.dataset(family.training_items, True, trained.seed)
    crops = [dataset[(item, 0)] for item in range(2)]
    assert [crop["metadata"]["prompt"] for crop in crops] == [CAPTIONS["a"], CAPTIONS["b"]]
    data = torch.stack([crop["latents"] for crop in crops])
    model = load_exported(exported_description(trained), layout_of(trained).exported_model).eval()
    values = conditioning_values(model, collate(crops))  # the captions as text: the encoder runs here
    noise = torch.randn((4, *data.shape[1:]), generator=torch.Generator().manual_seed(5))
    doubled = {name: list(value) * 2 for name, value in values.items()}
    # With guidance 3 every sample lands nearer its own item; without guidance one of the four was
    # halfway between (measured: own 1.56 vs other 1.49), the others 0.63-0.84 vs 1.40-1.53.
    generated = model.generate(noise, doubled, steps=30, cfg_scale=3.0)
    distances = mean_squared_distance(generated, data)  # (4 generated, 2 items): rows a, b, a, b
    own = distances[[0, 1, 2, 3], [0, 1, 0, 1]]
    other = distances[[0, 1, 2, 3], [1, 0, 1, 0]]
    assert (own < other).all(), f"own item {own.tolist()}, other item {other.tolist()}"


def test_sample_with_a_prompt(trained_at):
    trained, path = trained_at
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "sample", str(path), "--prompt", CAPTIONS["b"],
         "--count", "1", "--seconds", "0.25", "--steps", "4", "--quiet"],
        capture_output=True, text=True, cwd=REPO_ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    record = json.loads(layout_of(trained).samples_settings.read_text())
    assert record["settings"]["conditioning"]["prompt"] == CAPTIONS["b"]
    assert soundfile.info(str(layout_of(trained).sample_wav(0))).frames == 4000
    bad = subprocess.run(
        [sys.executable, "-m", "pipeline", "sample", str(DEMO_EXPERIMENT), "--prompt", "x"],
        capture_output=True, text=True, cwd=REPO_ROOT,
    )  # fmt: skip
    assert bad.returncode != 0 and "Traceback" not in bad.stderr and "--prompt: train.model has no text" in bad.stderr
