"""Oobleck encoder/decoder and the continuous bottlenecks: shapes, rates, registry, state-dict layout."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from pipeline.config.registry import build, registered
from pipeline.models.autoencoder.bottlenecks import TanhBottleneckConfig, VAEBottleneckConfig
from pipeline.models.autoencoder.oobleck import OobleckDecoderConfig, OobleckEncoderConfig

SAO_VAE = dict(channels=128, c_mults=(1, 2, 4, 8, 16), strides=(2, 4, 4, 8, 8), use_snake=True)


@pytest.mark.parametrize(
    "geometry, channels, latent",
    [
        (dict(channels=8, c_mults=(1, 2), strides=(2, 4)), 1, 4),
        (dict(channels=16, c_mults=(1, 2, 4), strides=(2, 4, 8), use_snake=True), 2, 8),
        (dict(channels=4, c_mults=(1, 1, 2, 2), strides=(2, 2, 2, 2)), 2, 3),
        (SAO_VAE, 2, 64),
    ],
    ids=["mono-x8", "stereo-snake-x64", "deep-x16", "stable-audio-open-vae-x2048"],
)
def test_encode_decode_shapes(geometry, channels, latent):
    torch.manual_seed(0)
    encoder = build("encoder", OobleckEncoderConfig(in_channels=channels, latent_dim=2 * latent, **geometry))
    decoder = build("decoder", OobleckDecoderConfig(out_channels=channels, latent_dim=latent, **geometry))
    ratio = encoder.config.downsampling_ratio
    frames = 3
    audio = torch.randn(2, channels, ratio * frames)
    with torch.inference_mode():
        encoded = encoder(audio)
        latents, info = build("bottleneck", VAEBottleneckConfig(), dim=latent).encode(encoded, sample=False)
        decoded = decoder(latents)
    assert encoded.shape == (2, 2 * latent, frames)
    assert latents.shape == (2, latent, frames)
    assert torch.equal(latents, info["mean"])
    assert decoded.shape == audio.shape
    assert decoded.abs().max() <= 1.0  # final tanh


def test_stable_audio_open_vae_parameter_count():
    encoder = build("encoder", OobleckEncoderConfig(in_channels=2, latent_dim=128, **SAO_VAE))
    decoder = build("decoder", OobleckDecoderConfig(out_channels=2, latent_dim=64, final_tanh=False, **SAO_VAE))
    assert encoder.config.downsampling_ratio == 2048
    total = sum(p.numel() for p in encoder.parameters()) + sum(p.numel() for p in decoder.parameters())
    assert total == 156_112_514


def test_state_dict_layout_follows_stable_audio_tools():
    encoder = build("encoder", OobleckEncoderConfig(channels=4, c_mults=(1, 2), strides=(2, 2), use_snake=True))
    keys = set(encoder.state_dict())
    assert {
        "layers.0.bias",
        "layers.0.parametrizations.weight.original0",
        "layers.1.layers.0.layers.0.alpha",
        "layers.1.layers.0.layers.1.parametrizations.weight.original1",
        "layers.1.layers.4.bias",
        "layers.4.parametrizations.weight.original1",
    } <= keys


def test_vae_bottleneck_sampling_and_kl():
    torch.manual_seed(0)
    x = torch.randn(4, 8, 50)
    bottleneck = build("bottleneck", VAEBottleneckConfig(), dim=4)
    drawn, info = bottleneck.encode(x, sample=True)
    mean, scale_logit = x.chunk(2, dim=1)
    assert torch.equal(info["mean"], mean)
    assert torch.allclose(info["scale"], torch.nn.functional.softplus(scale_logit) + 1e-4)
    assert not torch.equal(drawn, mean)
    assert info["kl"].ndim == 0 and info["kl"] > 0
    zero_kl_input = torch.cat([torch.zeros(1, 4, 10), torch.full((1, 4, 10), 0.5413)], dim=1)  # softplus -> ~1
    assert bottleneck.encode(zero_kl_input)[1]["kl"].abs() < 1e-2


def test_tanh_and_identity_bottlenecks():
    x = torch.linspace(-100, 100, 11).reshape(1, 1, 11)
    bounded, _ = build("bottleneck", TanhBottleneckConfig(scale=3.0), dim=1).encode(x)
    assert bounded.abs().max() <= 3.0
    identity = build("bottleneck", registered("bottleneck")["identity"].config(), dim=1)
    assert torch.equal(identity.encode(x)[0], x)


def test_geometry_errors():
    with pytest.raises(ValidationError, match="same length"):
        OobleckEncoderConfig(c_mults=(1, 2), strides=(2,))
    with pytest.raises(ValidationError):
        OobleckEncoderConfig(antialias_activation=True)
