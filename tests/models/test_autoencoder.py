"""The Autoencoder API: shapes, rates and properties per bottleneck, chunked == whole within tolerance,
our own format round trip (bit-exact), stable-audio-tools checkpoints through the experiment loader."""

from __future__ import annotations

import json

import pytest
import torch

from pipeline.autoencoder import experiment_autoencoder
from pipeline.config import load_experiment
from pipeline.errors import UserFacingError
from pipeline.models.autoencoder.checkpoints import (
    CheckpointMismatch,
    load_saved,
    save_autoencoder,
)
from pipeline.models.autoencoder.config import AutoencoderModelConfig
from pipeline.models.autoencoder.model import Autoencoder, frames_for
from tests.models.test_checkpoints import legacy_weight_norm

SMALL = dict(channels=8, c_mults=[1, 2, 4], strides=[2, 4, 4], use_snake=True)  # 32x
SAO = dict(channels=128, c_mults=[1, 2, 4, 8, 16], strides=[2, 4, 4, 8, 8], use_snake=True)  # 2048x
BOTTLENECKS = {
    "vae": ({"type": "vae"}, 2),
    "tanh": ({"type": "tanh", "scale": 2.0}, 1),
    "identity": ({"type": "identity"}, 1),
    "rvq": ({"type": "rvq", "num_quantizers": 3, "codebook_size": 32}, 1),
    "fsq": ({"type": "fsq", "levels": [5, 5, 4], "num_codebooks": 2}, 1),
}


def model_config(
    bottleneck: dict, width_factor: int, io_channels: int = 1, latent: int = 6, **geometry
) -> AutoencoderModelConfig:
    geometry = geometry or SMALL
    return AutoencoderModelConfig.model_validate(
        {
            "encoder": {"type": "oobleck", "in_channels": io_channels, "latent_dim": width_factor * latent, **geometry},
            "decoder": {"type": "oobleck", "out_channels": io_channels, "latent_dim": latent, **geometry},
            "bottleneck": bottleneck,
        }
    )


def make(name: str, seed: int = 0, **kwargs) -> Autoencoder:
    torch.manual_seed(seed)
    return Autoencoder(model_config(*BOTTLENECKS[name], **kwargs), sample_rate=16000).eval()


@pytest.mark.parametrize("name", list(BOTTLENECKS))
def test_encode_decode_shapes_and_properties(name):
    model = make(name)
    audio = torch.randn(2, 1, 1000) * 0.3  # not a whole number of frames: padded to 32 frames
    with torch.inference_mode():
        encoded = model.encode(audio)
        decoded = model.decode(encoded)
    assert model.downsampling_ratio == 32 and model.latent_rate == 500.0 and model.io_channels == 1
    assert model.sample_rate == 16000 and model.latent_dim == 6
    frames = frames_for(1000, 32)
    assert frames == 32
    if model.is_discrete:
        n_codebooks, size = {"rvq": (3, 32), "fsq": (2, 100)}[name]
        assert (model.n_codebooks, model.codebook_size) == (n_codebooks, size)
        assert encoded.shape == (2, n_codebooks, frames) and not encoded.is_floating_point()
        assert 0 <= int(encoded.min()) and int(encoded.max()) < size
    else:
        assert model.n_codebooks is None and model.codebook_size is None
        assert encoded.shape == (2, 6, frames) and encoded.is_floating_point()
    assert decoded.shape == (2, 1, frames * 32)


def test_vae_encode_is_the_posterior_mean_and_scale_on_request():
    model = make("vae")
    audio = torch.randn(1, 1, 640)
    with torch.inference_mode():
        mean, scale = model.encode(audio, return_scale=True)
        again = model.encode(audio)
        hidden = model.encoder(audio)
    assert torch.equal(mean, again)  # deterministic: never a random draw
    assert torch.equal(mean, hidden[:, :6]) and torch.all(scale > 0)
    with pytest.raises(ValueError, match="vae"):
        make("tanh").encode(audio, return_scale=True)


def test_codes_decode_like_the_quantised_latents():
    for name in ("rvq", "fsq"):
        model = make(name)
        with torch.inference_mode():
            audio = torch.randn(1, 1, 640)
            codes = model.encode(audio)
            quantised, _ = model.bottleneck.encode(model.encoder(audio), sample=False)
            assert torch.allclose(model.decode(codes), model.decode(quantised), atol=1e-5)
    with pytest.raises(ValueError, match="continuous"):
        make("vae").decode(torch.zeros(1, 6, 4, dtype=torch.long))


def test_wrong_audio_shape_names_the_expected_one():
    with pytest.raises(ValueError, match=r"\(batch, 1, samples\)"):
        make("vae").encode(torch.zeros(1, 2, 640))


# Chunked encode/decode: windows of `chunk_frames` with `overlap_frames` of context each side. Stated
# tolerance (docs/formats.md): max |chunked - whole| <= 1e-4 x the RMS of the whole-signal result with
# the default 16 frames of overlap; discrete codes are identical.
@pytest.mark.parametrize("name", ["vae", "rvq"])
def test_chunked_equals_whole_within_tolerance(name):
    model = make(name, seed=3, io_channels=2, **dict(SMALL, c_mults=[1, 2, 4, 8], strides=[2, 4, 4, 4]))
    audio = torch.randn(2, 2, 128 * 200) * 0.3
    with torch.inference_mode():
        whole = model.encode(audio)
        chunked = model.encode(audio, chunk_frames=37)
        if name == "rvq":
            assert torch.equal(whole, chunked)
            return
        assert (chunked - whole).abs().max() <= 1e-4 * whole.pow(2).mean().sqrt()
        decoded_whole = model.decode(whole)
        decoded_chunked = model.decode(whole, chunk_frames=37)
        assert (decoded_chunked - decoded_whole).abs().max() <= 1e-4 * decoded_whole.pow(2).mean().sqrt()
        no_overlap = model.encode(audio, chunk_frames=37, overlap_frames=0)
    assert (no_overlap - whole).abs().max() > 1e-3 * whole.pow(2).mean().sqrt()  # the overlap is what makes it work


def test_stable_audio_open_geometry_rates():
    model = make("vae", io_channels=2, latent=64, **SAO)
    assert model.downsampling_ratio == 2048 and model.latent_dim == 64
    assert sum(p.numel() for p in model.parameters()) == 156_112_514
    with torch.inference_mode():
        latents = model.encode(torch.randn(1, 2, 2048 * 4))
        audio = model.decode(latents)
    assert latents.shape == (1, 64, 4) and audio.shape == (1, 2, 2048 * 4)


@pytest.mark.parametrize("name", list(BOTTLENECKS))
def test_own_format_round_trip_is_bit_exact(tmp_path, name):
    model = make(name, seed=7)
    with torch.no_grad():  # snake parameters start at zero: make every tensor distinct from a fresh init
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.01)
    path = tmp_path / "model.safetensors"
    save_autoencoder(model, path)
    loaded = load_saved(path)
    assert loaded.state_dict().keys() == model.state_dict().keys()
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())
    audio = torch.randn(2, 1, 3200)
    with torch.inference_mode():
        assert torch.equal(loaded.encode(audio), model.encode(audio))
        assert torch.equal(loaded.decode(model.encode(audio)), model.decode(model.encode(audio)))
    described = json.loads(path.with_suffix(".json").read_text())
    assert described["format"] == "pipeline-autoencoder" and described["sample_rate"] == 16000
    assert described["model"]["bottleneck"]["type"] == name


def _experiment_with_checkpoint(tmp_path, model: Autoencoder, checkpoint, prefix=None):
    model_section = model.config.model_dump(mode="json")
    section = {"model": model_section, "checkpoint": str(checkpoint)}
    if prefix:
        section["checkpoint_prefix"] = prefix
    path = tmp_path / "exp.yaml"
    path.write_text(
        json.dumps(
            {
                "name": "ae",
                "paths": {"audio_dir": str(tmp_path)},
                "data": {"sample_rate": 16000, "channels": 1},
                "autoencoder": section,
            }
        )
    )
    return load_experiment(path)


def test_stable_audio_tools_checkpoint_loads_through_the_experiment(tmp_path):
    """A whole-autoencoder checkpoint with stable-audio-tools' key names: legacy weight norm, wrapped
    as a diffusion model's pretransform."""
    reference = make("vae", seed=11)
    with torch.no_grad():
        for parameter in reference.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.01)
    legacy = legacy_weight_norm(make("vae", seed=11))
    legacy.load_state_dict(
        {
            k.replace("parametrizations.weight.original0", "weight_g").replace(
                "parametrizations.weight.original1", "weight_v"
            ): v
            for k, v in reference.state_dict().items()
        }
    )
    state = {f"pretransform.model.{key}": value for key, value in legacy.state_dict().items()}
    state["model.some_diffusion_weight"] = torch.zeros(3)
    assert any(key.endswith("encoder.layers.0.weight_g") for key in state)
    checkpoint = tmp_path / "sat.ckpt"
    torch.save({"state_dict": state}, checkpoint)

    loaded = experiment_autoencoder(_experiment_with_checkpoint(tmp_path, reference, checkpoint, "pretransform.model."))
    audio = torch.randn(1, 1, 1600)
    with torch.inference_mode():
        assert torch.allclose(loaded.encode(audio), reference.encode(audio), atol=1e-6)
    assert not any(p.requires_grad for p in loaded.parameters())  # frozen

    with pytest.raises(CheckpointMismatch, match="unexpected") as error:  # no prefix given: nothing is guessed
        experiment_autoencoder(_experiment_with_checkpoint(tmp_path, reference, checkpoint))
    assert "missing" in str(error.value)
    assert "pretransform.model.decoder.layers.0.weight_g" in str(error.value)  # named as in the file
    assert "parametrizations" not in str(error.value)

    wrapped = tmp_path / "wrapped.ckpt"  # every key under one wrapper prefix: the hint names the field
    torch.save(
        {
            key.replace("pretransform.model.", "module.autoencoder."): value
            for key, value in state.items()
            if key.startswith("pretransform.")
        },
        wrapped,
    )
    with pytest.raises(CheckpointMismatch, match=r"every key starts with 'module.autoencoder.'.*checkpoint_prefix"):
        experiment_autoencoder(_experiment_with_checkpoint(tmp_path, reference, wrapped))


def test_own_format_with_another_config_lists_the_differences(tmp_path):
    saved = make("vae")
    path = tmp_path / "model.safetensors"
    save_autoencoder(saved, path)
    other = make("vae", latent=8)
    with pytest.raises(CheckpointMismatch, match="model.decoder.latent_dim: file 6, experiment 8"):
        experiment_autoencoder(_experiment_with_checkpoint(tmp_path, other, path))


def test_missing_weights_is_a_clear_error(tmp_path):
    with pytest.raises(UserFacingError, match="autoencoder weights not found"):
        experiment_autoencoder(_experiment_with_checkpoint(tmp_path, make("vae"), tmp_path / "nope.safetensors"))
