"""`type: import` (and Hydra's `_target_`) in the autoencoder block: the class is imported, its
params checked against its constructor, and the contract against what the class states; every
mistake is one line naming its YAML path, with no traceback from the command line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pipeline.config import ConfigError, load_experiment, stage_hash
from tests.byo import lab_env, write_lab

ENCODER = {"type": "import", "target": "my_lab.models.Encoder", "params": {"in_channels": 1, "latent_dim": 4}}
DECODER = {"type": "import", "target": "my_lab.models.Decoder", "params": {"out_channels": 1, "latent_dim": 4}}


@pytest.fixture
def lab(tmp_path):
    return write_lab(tmp_path)


def _experiment(model: dict, **autoencoder) -> dict:
    section = {
        "model": model,
        **({"training": {"kl_weight": 0.0}} if "checkpoint" not in autoencoder else {}),
        **autoencoder,
    }
    return {
        "name": "byo",
        "paths": {"audio_dir": "audio"},
        "data": {"sample_rate": 16000, "channels": 1},
        "autoencoder": section,
    }


def _composite(**parts) -> dict:
    return {"encoder": ENCODER, "decoder": DECODER, "bottleneck": {"type": "identity"}, **parts}


def _problems(write_yaml, document) -> dict[str, str]:
    with pytest.raises(ConfigError) as error:
        load_experiment(write_yaml("exp.yaml", document))
    for problem in error.value.problems:
        assert "\n" not in str(problem)  # one line each
    return {problem.path: problem.message for problem in error.value.problems}


def test_imported_encoder_and_decoder_validate_with_their_stated_geometry(write_yaml, lab):
    experiment = load_experiment(write_yaml("exp.yaml", _experiment(_composite())))
    model = experiment.autoencoder.model
    assert model.encoder.latent_dim == 4 and model.encoder.downsampling_ratio == 4  # argument, then its default
    assert model.downsampling_ratio == 4 and model.latent_dim == 4 and model.in_channels == 1


def test_hydra_target_is_the_same_component(write_yaml, lab):
    hydra = {"_target_": "my_lab.models.Encoder", "in_channels": 1, "latent_dim": 4}
    ours = load_experiment(write_yaml("a.yaml", _experiment(_composite())))
    theirs = load_experiment(write_yaml("b.yaml", _experiment(_composite(encoder=hydra))))
    assert theirs.autoencoder.model.encoder.model_dump() == ours.autoencoder.model.encoder.model_dump()
    assert stage_hash(theirs, "pre_encode") == stage_hash(ours, "pre_encode")


@pytest.mark.parametrize(
    "encoder, path, fragment",
    [
        (
            {**ENCODER, "params": {"in_channels": 1, "latnt_dim": 4, "latent_dim": 4}},
            "autoencoder.model.encoder.params.latnt_dim",
            "unknown argument of my_lab.models.Encoder (did you mean 'latent_dim'?)",
        ),
        (
            {**ENCODER, "params": {"latent_dim": 4}},
            "autoencoder.model.encoder.params",
            "missing required argument 'in_channels' of my_lab.models.Encoder",
        ),
        (
            {**ENCODER, "params": {**ENCODER["params"], "width": "eight"}},
            "autoencoder.model.encoder.params.width",
            "my_lab.models.Encoder takes an integer here, got 'eight'",
        ),
        (
            {**ENCODER, "params": {**ENCODER["params"], "width": True}},
            "autoencoder.model.encoder.params.width",
            "takes an integer here, got true",
        ),
        (
            {"_target_": "my_lab.models.Encoder", "in_channels": 1, "latent_dim": 4, "widht": 8},
            "autoencoder.model.encoder.widht",
            "unknown argument of my_lab.models.Encoder (did you mean 'width'?)",
        ),
        (
            {**ENCODER, "target": "my_lab.models.Missing"},
            "autoencoder.model.encoder.target",
            "cannot import my_lab.models.Missing: my_lab.models has no attribute 'Missing'",
        ),
        (
            {**ENCODER, "target": "not_a_lab.models.Encoder"},
            "autoencoder.model.encoder.target",
            "no module 'not_a_lab'",
        ),
        (
            {"type": "import", "target": "my_lab.models.Unstated", "params": {"in_channels": 1}},
            "autoencoder.model.encoder",
            "my_lab.models.Unstated does not state its latent_dim",
        ),
    ],
)
def test_import_mistakes_name_their_yaml_path(write_yaml, lab, encoder, path, fragment):
    problems = _problems(write_yaml, _experiment(_composite(encoder=encoder)))
    assert fragment in problems[path], problems


def test_whole_autoencoder_that_breaks_the_contract(write_yaml, lab, tmp_path):
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"")
    broken = {"type": "import", "target": "my_lab.models.NoDecode"}
    problems = _problems(write_yaml, _experiment(broken, checkpoint=str(weights)))
    assert "breaks the contract of an imported autoencoder: it has no decode() method" in problems["autoencoder.model"]
    wrong_rate = {"type": "import", "target": "my_lab.models.TinyCodec", "sample_rate": 44100}
    problems = _problems(write_yaml, _experiment(wrong_rate, checkpoint=str(weights)))
    assert problems == {"autoencoder.model.sample_rate": "the model works at 44100 Hz; data.sample_rate is 16000"}
    problems = _problems(write_yaml, _experiment({"type": "import", "target": "my_lab.models.TinyCodec"}))
    assert "is not trained here" in problems["autoencoder.training"]


def test_channel_mismatch_of_imported_parts(write_yaml, lab):
    encoder = {**ENCODER, "params": {"in_channels": 2, "latent_dim": 4}}
    problems = _problems(write_yaml, _experiment(_composite(encoder=encoder)))
    assert problems == {"autoencoder.model.encoder.in_channels": "must equal data.channels (1), got 2"}


def test_stage_hash_covers_target_and_params(write_yaml, lab):
    base = load_experiment(write_yaml("a.yaml", _experiment(_composite())))
    wider = {**ENCODER, "params": {**ENCODER["params"], "width": 16}}
    other = load_experiment(write_yaml("b.yaml", _experiment(_composite(encoder=wider))))
    moved = {**ENCODER, "target": "my_lab.models.Liar"}
    liar = load_experiment(write_yaml("c.yaml", _experiment(_composite(encoder=moved))))
    hashes = {stage_hash(e, "pre_encode") for e in (base, other, liar)}
    assert len(hashes) == 3


def test_cli_reports_import_mistakes_without_traceback(write_yaml, lab):
    bad = {**ENCODER, "params": {"in_channels": 1, "latent_dim": 4, "strides": [2]}}
    path = write_yaml("exp.yaml", _experiment(_composite(encoder=bad)))
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "validate", str(path)], capture_output=True, text=True, env=lab_env(lab)
    )
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "autoencoder.model.encoder.params.strides: unknown argument of my_lab.models.Encoder" in result.stderr


def test_stft_channel_arithmetic_is_a_cross_field_check(write_yaml, lab):
    transform = {"type": "stft", "n_fft": 32, "hop_length": 8}
    spectrogram = {
        "transform": transform,
        "encoder": {**ENCODER, "params": {"in_channels": 2, "latent_dim": 4}},
        "decoder": {**DECODER, "params": {"out_channels": 2, "latent_dim": 4}},
        "bottleneck": {"type": "identity"},
    }
    experiment = load_experiment(write_yaml("ok.yaml", _experiment(spectrogram)))
    assert experiment.autoencoder.model.downsampling_ratio == 32 and experiment.autoencoder.model.in_channels == 1
    waveform_encoder = {**spectrogram, "encoder": ENCODER}  # 1 input channel: the audio's, not the spectrogram's
    problems = _problems(write_yaml, _experiment(waveform_encoder))
    assert problems["autoencoder.model.encoder.in_channels"].startswith(
        "must be 2 x the audio channels with the stft transform (real and imaginary parts as channels), got 1"
    )
    assert "must equal encoder.in_channels (1)" in problems["autoencoder.model.decoder.out_channels"]
    stereo = _experiment(spectrogram)
    stereo["data"]["channels"] = 2
    problems = _problems(write_yaml, stereo)
    assert problems["autoencoder.model.encoder.in_channels"] == (
        "must equal 2 x data.channels (2) = 4: the stft transform gives real and imaginary parts as channels, got 2"
    )
    bad_hop = _problems(write_yaml, _experiment({**spectrogram, "transform": {**transform, "hop_length": 20}}))
    assert "at most n_fft / 2 = 16 with a hann window" in bad_hop["autoencoder.model.transform.hop_length"]
