"""Strict loading of stable-audio-tools diffusion checkpoints: a file in its layout (written here from
our modules with its key names: the wrappers' `model.model.` prefix, the number conditioners under
`conditioner.conditioners.`, the VAE under `pretransform.model.` with legacy weight_g/weight_v keys)
loads both halves from the one file; a key removed, added or reshaped is refused, named as in the file."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from pipeline.config.registry import build
from pipeline.models.autoencoder.checkpoints import CheckpointMismatch, load_autoencoder
from pipeline.models.autoencoder.config import AutoencoderModelConfig
from pipeline.models.autoencoder.model import Autoencoder
from pipeline.models.diffusion.checkpoints import load_diffusion_weights
from pipeline.models.diffusion.diffusion_config import DiffusionModelConfig
from tests.models.test_checkpoints import legacy_weight_norm
from tests.models.test_diffusion_model import CHANNELS, config_dict

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models, shared cores

VAE = {
    "encoder": {"type": "oobleck", "in_channels": 2, "channels": 4, "c_mults": [1, 2], "strides": [2, 4],
                "latent_dim": 2 * CHANNELS, "use_snake": True},
    "decoder": {"type": "oobleck", "out_channels": 2, "channels": 4, "c_mults": [1, 2], "strides": [2, 4],
                "latent_dim": CHANNELS, "use_snake": True, "final_tanh": False},
    "bottleneck": {"type": "vae"},
}  # fmt: skip
# The number conditioners of stable-audio-tools (Stable Audio Open's timing) and a DiT, no label table.
NUMBERS_ONLY = config_dict(
    conditioners=[{"type": "number", "id": "seconds_start"}, {"type": "number", "id": "seconds_total"}],
    cross_attention_cond_ids=["seconds_start", "seconds_total"],
)


def diffusion(seed: int):
    torch.manual_seed(seed)
    model = build("model", DiffusionModelConfig.model_validate(NUMBERS_ONLY), io_channels=CHANNELS)
    with torch.no_grad():
        for parameter in model.parameters():  # no zero-init branch: every weight matters
            parameter.normal_(0, 0.1)
    return model.eval()


def sat_checkpoint(seed: int = 1) -> tuple[dict[str, torch.Tensor], torch.nn.Module, Autoencoder]:
    """(state dict in stable-audio-tools' layout, the diffusion model and the VAE it holds)."""
    model = diffusion(seed)
    torch.manual_seed(seed + 1)
    legacy = legacy_weight_norm(Autoencoder(AutoencoderModelConfig.model_validate(VAE), 44100))
    state = {}
    for key, value in model.state_dict().items():
        state[("model.model." + key[len("model.") :]) if key.startswith("model.") else key] = value.clone()
    for key, value in legacy.state_dict().items():
        state["pretransform.model." + key] = value.clone()
    assert (
        any(key.endswith("weight_g") for key in state)
        and "conditioner.conditioners.seconds_start.embedder.embedding.0.weights" in state
    )
    return state, model, legacy.eval()


def outputs(model) -> torch.Tensor:
    generator = torch.Generator().manual_seed(5)
    x, t = torch.randn(2, CHANNELS, 12, generator=generator), torch.rand(2, generator=generator)
    cond = model.conditioning({"seconds_start": [0.0, 30.0], "seconds_total": [60.0, 90.0]})
    with torch.no_grad():
        return model.model(x, t, **cond)


@pytest.mark.parametrize("suffix", [".ckpt", ".safetensors"])
def test_both_halves_load_strictly_from_one_file(tmp_path, suffix):
    state, reference, vae = sat_checkpoint()
    path = tmp_path / f"model{suffix}"
    if suffix == ".ckpt":
        torch.save({"state_dict": state}, path)
    else:
        save_file(state, str(path))
    model = diffusion(seed=9)
    assert load_diffusion_weights(model, path) == "stable-audio-tools"
    assert torch.equal(outputs(model), outputs(reference))
    loaded_vae = load_autoencoder(
        AutoencoderModelConfig.model_validate(VAE), 44100, path, strip_prefix="pretransform.model."
    )
    audio = torch.randn(1, 2, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(loaded_vae.decode(loaded_vae.encode(audio)), vae.decode(vae.encode(audio)))


def test_a_training_checkpoints_outer_prefix_is_recognised(tmp_path):
    state, reference, _ = sat_checkpoint()
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": {f"diffusion.{key}": value for key, value in state.items()}}, path)
    model = diffusion(seed=9)
    load_diffusion_weights(model, path)
    assert torch.equal(outputs(model), outputs(reference))


DIT_KEY = "model.model.transformer.layers.0.self_attn.to_qkv.weight"
NUMBER_KEY = "conditioner.conditioners.seconds_total.embedder.embedding.1.weight"


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda s: s.pop(DIT_KEY), f"missing (1): {DIT_KEY}"),
        (lambda s: s.pop(NUMBER_KEY), f"missing (1): {NUMBER_KEY}"),
        (
            lambda s: s.update({"model.model.transformer.spare.weight": torch.zeros(3)}),
            "unexpected (1): model.model.transformer.spare.weight",
        ),
        (lambda s: s.update({"stray.weight": torch.zeros(3)}), "unexpected (1): stray.weight"),
        (lambda s: s.update({DIT_KEY: torch.zeros(3, 3)}), f"wrong shape (1): {DIT_KEY}: checkpoint (3, 3), model"),
    ],
    ids=["dit-removed", "conditioner-removed", "added", "stray", "reshaped"],
)
def test_one_key_removed_added_or_reshaped_is_refused_by_name(tmp_path, change, expected):
    state, _, _ = sat_checkpoint()
    change(state)
    path = tmp_path / "model.safetensors"
    save_file(state, str(path))
    with pytest.raises(CheckpointMismatch) as caught:
        load_diffusion_weights(diffusion(seed=9), path)
    assert expected in str(caught.value)
    assert str(path) in str(caught.value)


def test_an_autoencoder_checkpoint_is_not_a_diffusion_model(tmp_path):
    state, _, _ = sat_checkpoint()
    path = tmp_path / "vae.safetensors"
    save_file({k: v for k, v in state.items() if k.startswith("pretransform.")}, str(path))
    with pytest.raises(CheckpointMismatch, match="no diffusion weights"):
        load_diffusion_weights(diffusion(seed=9), path)


def test_a_model_this_pipeline_exported_loads_under_its_own_names(tmp_path):
    reference = diffusion(seed=4)
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path), metadata={"stage_hash": "x"})
    model = diffusion(seed=9)
    assert load_diffusion_weights(model, path) == "exported"
    assert torch.equal(outputs(model), outputs(reference))
