"""EnCodec and DAC through transformers (tiny, random weights, saved by the test with save_pretrained):
`pipeline pre-encode` writes stores with the codec's codebook count and latent rate, `pipeline verify`
passes, codes decode to audio of the right length; their continuous latents feed the diffusion path."""

from __future__ import annotations

import subprocess
import sys

import h5py
import pytest
import torch

from pipeline.autoencoder import experiment_autoencoder
from pipeline.config import ConfigError, load_experiment
from pipeline.layout import layout_of
from pipeline.shards.reader import read_items
from tests.byo import LM_TRAIN, byo_experiment, write_codec
from tests.conftest import REPO_ROOT

pytest.importorskip("transformers")
pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models, shared cores


def _run(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *arguments], capture_output=True, text=True, cwd=REPO_ROOT, timeout=600
    )


@pytest.mark.parametrize(
    "kind, settings, codebooks",
    [("encodec", {"bandwidth": 16.0}, 2), ("encodec", {"bandwidth": 32.0}, 4), ("dac", {"n_codebooks": 2}, 2)],
)
def test_codec_codes_pre_encode_verify_and_decode(tmp_path, training_audio, kind, settings, codebooks):
    directory = write_codec(tmp_path / kind, kind)
    model = {"type": kind, "path": str(directory), **settings}
    path = byo_experiment(tmp_path, training_audio, model, train=LM_TRAIN)
    experiment = load_experiment(path)
    assert experiment.autoencoder.model.n_codebooks == codebooks
    assert (
        experiment.train.model.autoencoder_problems(experiment.autoencoder.model) == []
    )  # the LM path takes the codes
    result = _run("pre-encode", str(path), "--all", "--quiet")
    assert result.returncode == 0, result.stderr
    layout = layout_of(experiment)
    store = layout.store(0)
    checked = _run("verify", str(store), "--experiment", str(path))
    assert checked.returncode == 0 and checked.stdout.startswith("ok:"), checked.stdout + checked.stderr
    with h5py.File(store, "r") as file:
        assert file["codes"].shape[1] == codebooks and file.attrs["n_codebooks"] == codebooks
        assert file.attrs["latent_rate"] == 16000 / 8 and file.attrs["downsampling_ratio"] == 8
        first = file["codes"][: file["index/length"][0]][()]
    item = next(iter(read_items([layout.shard_tar(0)])))
    assert len(first) == -(-item.audio.shape[1] // 8)
    assert 0 <= first.min() and first.max() < 16
    autoencoder = experiment_autoencoder(experiment)
    with torch.no_grad():
        audio = autoencoder.decode(torch.from_numpy(first.T[None]).long())
    assert audio.shape == (1, 1, len(first) * 8)


def test_codec_latents_feed_the_diffusion_path(tmp_path, training_audio):
    directory = write_codec(tmp_path / "dac", "dac")
    model = {"type": "dac", "path": str(directory), "output": "latents"}
    experiment = load_experiment(byo_experiment(tmp_path, training_audio, model))
    assert not experiment.autoencoder.model.is_discrete and experiment.autoencoder.model.latent_dim == 8
    autoencoder = experiment_autoencoder(experiment)
    with torch.no_grad():
        latents = autoencoder.encode(torch.randn(1, 1, 8 * 10))
        assert latents.shape == (1, 8, 10) and autoencoder.decode(latents).shape == (1, 1, 80)


def test_codec_mistakes_name_their_yaml_path(tmp_path, write_yaml):
    directory = write_codec(tmp_path / "encodec", "encodec")
    document = {
        "name": "codec",
        "paths": {"audio_dir": "audio"},
        "data": {"sample_rate": 32000, "channels": 2},
        "autoencoder": {"model": {"type": "encodec", "path": str(directory), "bandwidth": 3.0}, "checkpoint": "x.ckpt"},
    }
    with pytest.raises(ConfigError) as error:
        load_experiment(write_yaml("exp.yaml", document))
    problems = {problem.path: problem.message for problem in error.value.problems}
    assert (
        problems["autoencoder.model.bandwidth"]
        == "must be one of the model's target_bandwidths [8.0, 16.0, 32.0], got 3.0"
    )
    document["autoencoder"]["model"]["bandwidth"] = 8.0
    with pytest.raises(ConfigError) as error:
        load_experiment(write_yaml("exp.yaml", document))
    problems = {problem.path: problem.message for problem in error.value.problems}
    assert problems["autoencoder.checkpoint"].startswith("the encodec model's weights come from autoencoder.model.path")
    del document["autoencoder"]["checkpoint"]
    with pytest.raises(ConfigError) as error:
        load_experiment(write_yaml("exp.yaml", document))
    messages = [str(problem) for problem in error.value.problems]
    assert any("autoencoder.model.path: the model takes 1 channel(s); data.channels is 2" in m for m in messages)
    assert any("autoencoder.model.path: the model works at 16000 Hz; data.sample_rate is 32000" in m for m in messages)
    document["autoencoder"]["model"]["path"] = str(tmp_path)
    with pytest.raises(ConfigError) as error:
        load_experiment(write_yaml("exp.yaml", document))
    assert "no " + str(tmp_path / "config.json") in str(error.value)


def test_encodec_codes_train_an_lm_that_samples_audio(tmp_path, training_audio):
    """The LM path end to end on a codec's codes: pre-encode, index, a few LM steps, sampled WAVs
    decoded by the codec at its rate and length."""
    import soundfile as sf

    from pipeline.encode.pre_encode import pre_encode_all
    from pipeline.latents.index import build_index
    from pipeline.sample.generate import sample_stage
    from pipeline.train.stage import train_stage
    from tests.train.conftest import TINY_LM_TRAIN

    directory = write_codec(tmp_path / "encodec", "encodec")
    train = {**TINY_LM_TRAIN, "steps": 4, "eval_every": 2, "checkpoint_every": 2, "batch_size": 4}
    sample = {"count": 2, "seconds": 0.05, "top_k": 8}
    path = byo_experiment(
        tmp_path,
        training_audio,
        {"type": "encodec", "path": str(directory), "bandwidth": 16.0},
        train=train,
        sample=sample,
    )
    experiment = load_experiment(path)
    pre_encode_all(experiment, progress=False)
    build_index(experiment)
    assert train_stage(experiment, progress=False).exported is not None
    samples = sample_stage(experiment, experiment.sample, progress=False)
    files = sorted(layout_of(experiment).samples_dir.glob("*.wav"))
    assert len(files) == 2, samples
    audio, rate = sf.read(files[0])
    assert rate == 16000 and len(audio) == 800  # 0.05 s: 100 frames of 8 samples, cut to the seconds asked
