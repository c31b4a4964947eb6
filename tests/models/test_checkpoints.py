"""Strict loading: stable-audio-tools key names (legacy weight norm, prefixes), mismatches listed."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from pipeline.config.registry import build
from pipeline.errors import UserFacingError
from pipeline.models.autoencoder.checkpoints import CheckpointMismatch, load_strict, normalise_keys, read_state_dict
from pipeline.models.autoencoder.oobleck import OobleckEncoderConfig

GEOMETRY = dict(in_channels=2, channels=4, latent_dim=6, c_mults=(1, 2), strides=(2, 4), use_snake=True)


def legacy_weight_norm(model: nn.Module) -> nn.Module:
    """Rebuild every weight-normed conv with the legacy `torch.nn.utils.weight_norm`, as stable-audio-tools
    builds them (state-dict keys `weight_g` / `weight_v`); the computed weights do not change."""
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, (nn.Conv1d, nn.ConvTranspose1d)) and hasattr(child, "parametrizations"):
                torch.nn.utils.parametrize.remove_parametrizations(child, "weight", leave_parametrized=True)
                child._load_state_dict_pre_hooks.clear()  # the parametrization's key-compat hook outlives it
                setattr(module, name, torch.nn.utils.weight_norm(child))
    return model


def _legacy_encoder_state(seed: int) -> tuple[dict[str, torch.Tensor], nn.Module]:
    """Weights as stable-audio-tools writes them: the same layout built with the legacy weight_norm."""
    torch.manual_seed(seed)
    model = legacy_weight_norm(build("encoder", OobleckEncoderConfig(**GEOMETRY)))
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith(("alpha", "beta")):
                parameter.normal_(0, 0.1)
            elif name.endswith("weight_g"):
                parameter.mul_(1.5)  # differ from a fresh init
    return {f"pretransform.model.encoder.{key}": value for key, value in model.state_dict().items()}, model


def test_legacy_checkpoint_loads_strictly_and_reproduces_outputs(tmp_path):
    state, reference = _legacy_encoder_state(seed=1)
    assert any(key.endswith("weight_g") for key in state)
    path = tmp_path / "sat.ckpt"
    torch.save({"state_dict": state}, path)
    loaded = normalise_keys(read_state_dict(path), strip_prefixes=["pretransform.model.encoder."])
    model = build("encoder", OobleckEncoderConfig(**GEOMETRY))
    load_strict(model, loaded, source=str(path))
    audio = torch.randn(1, 2, 64)
    with torch.inference_mode():
        torch.testing.assert_close(model(audio), reference(audio), rtol=1e-5, atol=1e-6)


def test_safetensors_round_trip_is_bit_exact(tmp_path):
    torch.manual_seed(0)
    model = build("encoder", OobleckEncoderConfig(**GEOMETRY))
    save_file(model.state_dict(), tmp_path / "w.safetensors")
    other = build("encoder", OobleckEncoderConfig(**GEOMETRY))
    load_strict(other, read_state_dict(tmp_path / "w.safetensors"))
    for key, value in model.state_dict().items():
        assert torch.equal(value, other.state_dict()[key]), key


def test_wrong_geometry_lists_every_mismatch(tmp_path):
    state, _ = _legacy_encoder_state(seed=2)
    wrong = build(
        "encoder", OobleckEncoderConfig(**{**GEOMETRY, "channels": 8, "c_mults": (1, 2, 2), "strides": (2, 4, 2)})
    )
    with pytest.raises(CheckpointMismatch) as caught:
        load_strict(wrong, normalise_keys(state, ["pretransform.model.encoder."]), source="sat.ckpt")
    message = str(caught.value)
    assert "sat.ckpt does not fit the model" in message
    assert "missing (" in message and "wrong shape (" in message
    assert "pretransform.model.encoder.layers.0.weight_v: checkpoint (4, 2, 7), model (8, 2, 7)" in message
    assert "parametrizations" not in message  # keys named as in the user's file


def test_unexpected_keys_and_unstripped_prefix_are_errors():
    state, _ = _legacy_encoder_state(seed=3)
    model = build("encoder", OobleckEncoderConfig(**GEOMETRY))
    with pytest.raises(CheckpointMismatch, match="unexpected"):
        load_strict(model, normalise_keys(state))  # prefix not stripped: nothing matches
    extra = {**normalise_keys(state, ["pretransform.model.encoder."]), "spare.weight": torch.zeros(1)}
    with pytest.raises(CheckpointMismatch, match=r"unexpected \(1\): spare.weight"):
        load_strict(model, extra)


def test_missing_file():
    with pytest.raises(UserFacingError, match="checkpoint not found"):
        read_state_dict("/nonexistent/vae.safetensors")
