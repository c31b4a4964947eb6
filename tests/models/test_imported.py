"""`type: import` end to end: the lab's own encoder/decoder (waveform and 2-D spectrogram) and a whole
autoencoder pre-encode a shard and decode it back; a class that lies about its geometry fails once,
in one line, before any shard is encoded."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from pipeline.config import load_experiment, stage_hash
from pipeline.encode.pre_encode import pre_encode_all
from pipeline.latents.verify import verify
from pipeline.layout import layout_of
from pipeline.models.autoencoder.checkpoints import save_autoencoder
from pipeline.models.autoencoder.imported import ContractError
from pipeline.models.autoencoder.model import Autoencoder
from pipeline.models.autoencoder.whole import WholeAutoencoder
from pipeline.shards.reader import read_items
from tests.byo import byo_experiment, write_lab

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models, shared cores
ENCODER = {"type": "import", "target": "my_lab.models.Encoder", "params": {"in_channels": 1, "latent_dim": 4}}
DECODER = {"type": "import", "target": "my_lab.models.Decoder", "params": {"out_channels": 1, "latent_dim": 4}}
COMPOSITE = {"encoder": ENCODER, "decoder": DECODER, "bottleneck": {"type": "identity"}}
SPECTROGRAM = {
    "transform": {"type": "stft", "n_fft": 32, "hop_length": 8, "magnitude": "power", "exponent": 0.5},
    "encoder": {"_target_": "my_lab.models.SEANetEncoder2d", "in_channels": 2, "latent_dim": 6, "bins": 17},
    "decoder": {"_target_": "my_lab.models.SEANetDecoder2d", "out_channels": 2, "latent_dim": 3, "bins": 17},
    "bottleneck": {"type": "vae"},
}
TRAINING = {"training": {"kl_weight": 0.0}}


@pytest.fixture
def lab(tmp_path):
    return write_lab(tmp_path)


def _trained(path):
    """The experiment, with random weights saved where train_autoencoder puts them."""
    experiment = load_experiment(path)
    torch.manual_seed(0)
    model = Autoencoder(experiment.autoencoder.model, experiment.data.sample_rate).eval()
    save_autoencoder(model, layout_of(experiment).autoencoder_weights, stage_hash(experiment, "train_autoencoder"))
    return experiment, model


def _check_stores(experiment, model, width):
    results = pre_encode_all(experiment, progress=False)
    assert results and not any(result.skipped for result in results)
    layout = layout_of(experiment)
    for result in results:
        store = layout.store(result.index)
        assert verify(store) == []
        items = list(read_items([layout.shard_tar(result.index)]))
        with h5py.File(store, "r") as file:
            data = file["codes"] if model.is_discrete else file["latents"]
            assert data.shape[1] == width
            assert file.attrs["downsampling_ratio"] == model.downsampling_ratio
            offsets, lengths = file["index/offset"][()], file["index/length"][()]
            assert list(lengths) == [-(-item.audio.shape[1] // model.downsampling_ratio) for item in items]
            values = torch.from_numpy(data[offsets[0] : offsets[0] + lengths[0]][()].T[None])
        decoded = model.decode(values if model.is_discrete else values.float())
        assert decoded.shape == (1, 1, lengths[0] * model.downsampling_ratio)
    return results


def test_imported_encoder_decoder_pre_encode_and_decode(tmp_path, lab, training_audio):
    experiment, model = _trained(byo_experiment(tmp_path, training_audio, COMPOSITE, autoencoder=TRAINING))
    _check_stores(experiment, model, width=4)
    again = pre_encode_all(experiment, progress=False)
    assert all(result.skipped for result in again)  # the stage hash and the weights are unchanged


def test_spectrogram_autoencoder_pre_encodes_like_a_waveform_one(tmp_path, lab, training_audio):
    experiment, model = _trained(byo_experiment(tmp_path, training_audio, SPECTROGRAM, autoencoder=TRAINING))
    assert model.downsampling_ratio == 16 and model.io_channels == 1  # hop 8 x the encoder's 2 frames
    _check_stores(experiment, model, width=3)


def test_whole_imported_autoencoder(tmp_path, lab, training_audio):
    weights = tmp_path / "codec.safetensors"
    torch.manual_seed(0)
    from my_lab.models import TinyCodec

    save_file(TinyCodec().state_dict(), str(weights))
    model_config = {"type": "import", "target": "my_lab.models.TinyCodec"}
    path = byo_experiment(tmp_path, training_audio, model_config, autoencoder={"checkpoint": str(weights)})
    experiment = load_experiment(path)
    from pipeline.autoencoder import experiment_autoencoder

    model = experiment_autoencoder(experiment)
    assert isinstance(model, WholeAutoencoder) and model.latent_dim == 4 and model.downsampling_ratio == 8
    _check_stores(experiment, model, width=4)
    # new weights: the store records other weights, so it is re-encoded
    save_file({k: v + 1 for k, v in TinyCodec().state_dict().items()}, str(weights))
    assert not any(result.skipped for result in pre_encode_all(experiment, progress=False))


def test_a_class_that_breaks_its_stated_geometry_fails_at_build(tmp_path, lab, write_yaml):
    from pipeline.models.autoencoder.config import parse_model_config

    liar = {**COMPOSITE, "encoder": {**ENCODER, "target": "my_lab.models.Liar"}}
    with pytest.raises(ContractError) as error:
        Autoencoder(parse_model_config(liar), 16000)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("autoencoder.model.encoder: my_lab.models.Liar returned shape (1, 8, 2)")


def test_stft_round_trip_and_channel_check(lab):
    from pipeline.models.autoencoder.config import parse_model_config

    for magnitude in ("linear", "power", "log"):
        config = {**SPECTROGRAM, "transform": {**SPECTROGRAM["transform"], "magnitude": magnitude}}
        model = Autoencoder(parse_model_config(config), 16000)
        audio = torch.randn(2, 1, 16 * 25)
        spectrogram = model.transform(audio)
        assert spectrogram.shape == (2, 2, 17, 50)
        np.testing.assert_allclose(model.transform.inverse(spectrogram).numpy(), audio.numpy(), atol=2e-6)
