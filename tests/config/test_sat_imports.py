"""`pipeline import-sat` for stable-audio-tools' dac_2048_32_vae and encodec_musicgen_rvq: their dac and
seanet encoders/decoders become `type: import` of the classes stable-audio-tools builds (parameters as
it passes them, the geometry written into the block), and what cannot be checked here is named."""

from __future__ import annotations

import pytest
import yaml

from pipeline.config import load_experiment
from pipeline.config.sat import import_sat_config
from tests.conftest import SAT_CONFIGS

DAC_VAE = SAT_CONFIGS / "model_configs__autoencoders__dac_2048_32_vae.json"
MUSICGEN_RVQ = SAT_CONFIGS / "model_configs__autoencoders__encodec_musicgen_rvq.json"


def test_dac_vae_maps_to_imported_dac_wrappers():
    sections, notes = import_sat_config(DAC_VAE)
    model = sections["autoencoder"]["model"]
    assert model["encoder"] == {
        "type": "import",
        "target": "stable_audio_tools.models.autoencoders.DACEncoderWrapper",
        "params": {"latent_dim": 64, "d_model": 128, "strides": [4, 8, 8, 8]},
        "in_channels": 1,
        "latent_dim": 64,
        "downsampling_ratio": 2048,
    }
    assert model["decoder"]["target"] == "stable_audio_tools.models.autoencoders.DACDecoderWrapper"
    assert model["decoder"]["params"] == {"latent_dim": 32, "channels": 1536, "rates": [8, 8, 8, 4]}
    assert (model["decoder"]["latent_dim"], model["decoder"]["downsampling_ratio"]) == (32, 2048)
    assert model["bottleneck"] == {"type": "vae"}
    assert sections["data"] == {"sample_rate": 44100, "channels": 1}
    assert any("not importable here" in note and "descript-audio-codec" in note for note in notes)
    assert any("adversarial discriminator" in note for note in notes)  # what is not carried over, named


def test_musicgen_rvq_maps_to_seanet_and_our_rvq():
    sections, notes = import_sat_config(MUSICGEN_RVQ)
    model = sections["autoencoder"]["model"]
    assert model["encoder"]["target"] == "encodec.modules.SEANetEncoder"
    assert model["encoder"]["params"]["ratios"] == [8, 5, 4, 4]  # stable-audio-tools reverses the encoder's
    assert model["decoder"]["params"]["ratios"] == [4, 4, 5, 8]
    assert (model["encoder"]["latent_dim"], model["encoder"]["downsampling_ratio"]) == (128, 640)
    assert model["bottleneck"] == {
        "type": "rvq",
        "num_quantizers": 4,
        "codebook_size": 2048,
        "decay": 0.99,
        "threshold_ema_dead_code": 2,
    }
    assert any("MusicGen's EnCodec" in note and "type: encodec" in note for note in notes)


def test_imported_musicgen_rvq_validates_and_builds_where_encodec_is_installed(write_yaml):
    pytest.importorskip("encodec")
    import torch

    from pipeline.models.autoencoder.model import Autoencoder

    sections, notes = import_sat_config(MUSICGEN_RVQ)
    assert not any("not importable" in note for note in notes)
    document = {"name": "musicgen", "paths": {"audio_dir": "a"}, **sections}
    experiment = load_experiment(write_yaml("exp.yaml", yaml.safe_load(yaml.safe_dump(document))))
    assert experiment.autoencoder.model.n_codebooks == 4
    model = Autoencoder(experiment.autoencoder.model, 32000).eval()
    with torch.no_grad():
        codes = model.encode(torch.zeros(1, 1, 640 * 3))
    assert codes.shape == (1, 4, 3)
