"""The `autoencoder` section: cross-field checks at their field paths, and `pipeline import-sat`."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from pipeline.config import ConfigError, load_experiment
from pipeline.config.sat import SatImportError, import_sat_config
from pipeline.models.autoencoder.model import Autoencoder
from tests.conftest import REPO_ROOT, SAT_CONFIGS

SAO_VAE = SAT_CONFIGS / "model_configs__autoencoders__stable_audio_2_0_vae.json"
SAO_DIFFUSION = SAT_CONFIGS / "model_configs__txt2audio__stable_audio_open_1_0.json"


def _section(**changes) -> dict:
    geometry = {"type": "oobleck", "channels": 4, "c_mults": [1, 2], "strides": [2, 4]}
    section = {
        "model": {
            "encoder": {**geometry, "in_channels": 2, "latent_dim": 8},
            "decoder": {**geometry, "out_channels": 2, "latent_dim": 4},
            "bottleneck": {"type": "vae"},
        },
        "training": {"kl_weight": 1e-4},
    }
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        target = section
        for part in parents:
            target = target[part]
        if value is None:
            target.pop(leaf)
        else:
            target[leaf] = value
    return section


def _problems(write_yaml, minimal, section, data=None) -> dict[str, str]:
    path = write_yaml("exp.yaml", {**minimal, "data": data or {"channels": 2}, "autoencoder": section})
    with pytest.raises(ConfigError) as error:
        load_experiment(path)
    return {problem.path: problem.message for problem in error.value.problems}


def test_valid_section_and_derived_values(write_yaml, minimal):
    experiment = load_experiment(
        write_yaml("exp.yaml", {**minimal, "data": {"channels": 2}, "autoencoder": _section()})
    )
    model = experiment.autoencoder.model
    assert model.downsampling_ratio == 8 and model.latent_dim == 4


@pytest.mark.parametrize(
    "changes, data, path, fragment",
    [
        ({"model__encoder__in_channels": 1}, None, "autoencoder.model.encoder.in_channels", "data.channels (2)"),
        ({"model__decoder__out_channels": 1}, None, "autoencoder.model.decoder.out_channels", "data.channels (2)"),
        ({}, {"channels": 1}, "autoencoder.model.encoder.in_channels", "data.channels (1)"),
        ({"model__encoder__latent_dim": 4}, None, "autoencoder.model.encoder.latent_dim", "2 x decoder.latent_dim"),
        (
            {"model__bottleneck": {"type": "tanh"}},
            None,
            "autoencoder.model.encoder.latent_dim",
            "must be decoder.latent_dim = 4",
        ),
        (
            {"model__decoder__strides": [4, 4]},
            None,
            "autoencoder.model.decoder.strides",
            "downsample by 16 but the encoder's by 8",
        ),
        ({"sample_rate": 48000}, None, "autoencoder.sample_rate", "data.sample_rate (44100)"),
        ({"training": None}, None, "autoencoder.training", "required when autoencoder.checkpoint is not set"),
        ({"checkpoint_prefix": "model."}, None, "autoencoder.checkpoint_prefix", "checkpoint is not"),
        (
            {"training__crop_seconds": 0.0001},
            None,
            "autoencoder.training.crop_seconds",
            "shorter than one latent frame",
        ),
        ({"training__kl_weight": None}, None, "autoencoder.training.kl_weight", "required"),
        ({"training__stft_fft_sizes": [1000]}, None, "autoencoder.training.stft_fft_sizes", "powers of two"),
        (
            {"model__bottleneck": {"type": "rvq", "levels": [3]}},
            None,
            "autoencoder.model.bottleneck.levels",
            "unknown key; allowed here: type, num_quantizers",
        ),
    ],
)
def test_cross_field_problems_name_their_field(write_yaml, minimal, changes, data, path, fragment):
    problems = _problems(write_yaml, minimal, _section(**changes), data)
    matching = {p: m for p, m in problems.items() if p.startswith(path) or p == path}
    assert matching, problems
    assert any(fragment in message for message in matching.values()), problems


def test_several_cross_field_problems_reported_together(write_yaml, minimal):
    section = _section(model__encoder__in_channels=1, model__decoder__out_channels=1, sample_rate=22050)
    problems = _problems(write_yaml, minimal, section)
    assert {
        "autoencoder.model.encoder.in_channels",
        "autoencoder.model.decoder.out_channels",
        "autoencoder.sample_rate",
    } <= set(problems)


def test_import_sat_stable_audio_open_vae(write_yaml, tmp_path):
    sections, notes = import_sat_config(SAO_VAE)
    assert sections["autoencoder"]["sample_rate"] == 44100
    assert sections["autoencoder"]["training"]["kl_weight"] == 1e-4
    assert any("discriminator" in note for note in notes)
    imported = write_yaml("sao_vae.yaml", sections)
    experiment = load_experiment(
        write_yaml("exp.yaml", {"extends": str(imported), "name": "sao", "paths": {"audio_dir": "a"}})
    )
    model = Autoencoder(experiment.autoencoder.model, experiment.data.sample_rate)
    # stable-audio-tools reports 156,112,514 parameters for this config (encoder + decoder; the VAE
    # bottleneck has none); its downsampling_ratio / latent_dim / io_channels are derived here, not copied.
    assert sum(p.numel() for p in model.parameters()) == 156_112_514
    assert (model.downsampling_ratio, model.latent_dim, model.io_channels) == (2048, 64, 2)


def test_import_sat_pretransform_of_a_diffusion_config(write_yaml):
    sections, notes = import_sat_config(
        SAO_DIFFUSION, checkpoint="/models/sao_vae.ckpt", checkpoint_prefix="pretransform.model."
    )
    assert sections["autoencoder"]["checkpoint"] == "/models/sao_vae.ckpt"
    assert "training" not in sections["autoencoder"] and not any("autoencoder.checkpoint" in note for note in notes)
    del sections["train"]  # the diffusion half: tests/config/test_sat_diffusion.py
    experiment = load_experiment(write_yaml("exp.yaml", {"name": "x", "paths": {"audio_dir": "a"}, **sections}))
    assert experiment.autoencoder.checkpoint_prefix == "pretransform.model."
    assert experiment.autoencoder.model.downsampling_ratio == 2048


@pytest.mark.parametrize(
    "name, fragment",
    [
        ("model_configs__dance_diffusion__dance_diffusion_base.json", "has no model.pretransform"),
    ],
)
def test_import_sat_unsupported_configs_say_what_and_why(name, fragment):
    with pytest.raises(SatImportError, match=fragment):
        import_sat_config(SAT_CONFIGS / name)


def test_import_sat_checks_values_stable_audio_tools_repeats(tmp_path):
    import json

    document = json.loads(SAO_VAE.read_text())
    document["model"]["downsampling_ratio"] = 1024
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(document))
    with pytest.raises(SatImportError, match="downsampling_ratio is 1024 but the encoder/decoder configs give 2048"):
        import_sat_config(broken)
    document = json.loads(SAO_VAE.read_text())
    document["model"]["decoder"]["config"]["latent_dim"] = 32
    broken.write_text(json.dumps(document))
    with pytest.raises(SatImportError, match="latent_dim"):
        import_sat_config(broken)


def test_import_sat_cli(tmp_path):
    out = tmp_path / "sao.yaml"
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "import-sat", str(SAO_VAE), "-o", str(out)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
    )
    assert result.returncode == 0, result.stderr
    text = out.read_text()
    assert text.startswith("# Imported from stable-audio-tools config")
    assert yaml.safe_load(text)["autoencoder"]["model"]["encoder"]["strides"] == [2, 4, 4, 8, 8]
    import json

    document = json.loads((SAT_CONFIGS / "model_configs__autoencoders__dac_2048_32_vae.json").read_text())
    document["model"]["encoder"]["type"] = "local_attn"
    local_attn = tmp_path / "local_attn.json"
    local_attn.write_text(json.dumps(document))
    unsupported = subprocess.run(
        [sys.executable, "-m", "pipeline", "import-sat", str(local_attn)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
    )
    assert unsupported.returncode == 1 and "Traceback" not in unsupported.stderr
    assert (
        "encoder type 'local_attn' is not supported yet; supported encoder types: import, oobleck" in unsupported.stderr
    )


def test_import_sat_with_a_checkpoint_leaves_training_out(write_yaml):
    """checkpoint and training together are ambiguous (issue 10): the import keeps the checkpoint."""
    sections, notes = import_sat_config(SAO_VAE, checkpoint="/models/sao_vae.ckpt")
    assert "training" not in sections["autoencoder"] and any("not carried over" in note for note in notes)
    experiment = load_experiment(write_yaml("exp.yaml", {"name": "x", "paths": {"audio_dir": "a"}, **sections}))
    assert experiment.autoencoder.training is None
