"""The DiT backbone and its blocks: stable-audio-tools' state-dict layout, masks, patches, causality."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from pipeline.config.registry import build
from pipeline.models.blocks import ContinuousTransformer, attention_mask
from pipeline.models.diffusion.dit import DiffusionTransformer
from pipeline.models.diffusion.dit_config import DiTConfig

DATA = Path(__file__).parent / "data"
# Written from stable-audio-tools' own DiffusionTransformer (commit and configs inside the files).
SAT_SMALL = json.loads((DATA / "sat_dit_small_keys.json").read_text())
SAT_SAO = json.loads((DATA / "sat_dit_sao_keys.json").read_text())
# sum(p.numel() for p in SAT's DiffusionTransformer(**SAT_SAO["config"]).parameters()), built on the
# meta device at stable-audio-tools 50049e3 (Stable Audio Open's DiT; its paper says 1057M).
SAO_PARAMETERS = 1_056_828_544

SMALL = dict(io_channels=8, embed_dim=64, depth=2, num_heads=2, cond_token_dim=16, global_cond_dim=12)


def shapes(module: torch.nn.Module) -> dict[str, list[int]]:
    return {key: list(value.shape) for key, value in module.state_dict().items()}


def randomized(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random weights everywhere: the zero-init branches would hide what attention sees."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            noise = torch.randn(parameter.shape, generator=generator) * 0.1
            parameter.copy_(noise + (1.0 if name.endswith("gamma") else 0.0))
    return model.eval()


def dit(**overrides) -> DiffusionTransformer:
    return randomized(DiffusionTransformer(DiTConfig(**{**SMALL, **overrides})))


def conditions(batch: int = 2, tokens: int = 5, seed: int = 1) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        "cross_attn_cond": torch.randn(batch, tokens, SMALL["cond_token_dim"], generator=generator),
        "global_cond": torch.randn(batch, SMALL["global_cond_dim"], generator=generator),
    }


@pytest.mark.parametrize("entry", SAT_SMALL["configs"], ids=lambda entry: json.dumps(entry["config"]))
def test_state_dict_keys_and_shapes_are_sats(entry):
    model = DiffusionTransformer(DiTConfig(**entry["config"]))
    assert list(shapes(model).items()) == list(entry["state_dict"].items())


def test_stable_audio_open_geometry_matches_sat():
    with torch.device("meta"):
        model = DiffusionTransformer(DiTConfig(**SAT_SAO["config"]))
    assert shapes(model) == SAT_SAO["state_dict"]
    assert sum(p.numel() for p in model.parameters()) == SAO_PARAMETERS == SAT_SAO["parameters"]


def test_output_shape_and_dtype():
    model = dit()
    x, t = torch.randn(2, 8, 12), torch.rand(2)
    out = model(x, t, **conditions(), cross_attn_mask=torch.ones(2, 5, dtype=torch.bool))
    assert out.shape == x.shape and out.dtype == torch.float32
    assert model(x.double(), t, **conditions()).dtype == torch.float32  # inputs take the model's dtype


@pytest.mark.parametrize("overrides", [{}, {"patch_size": 2}, {"global_cond_type": "adaLN"}])
def test_padded_frames_do_not_change_real_frames(overrides):
    model = dit(**overrides)
    x, t, cond = torch.randn(2, 8, 12), torch.rand(2), conditions()
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[0, 8:], mask[1, 6:] = False, False
    other = torch.where(mask[:, None, :], x, torch.randn_like(x) * 10)
    with torch.no_grad():
        out, out_other = model(x, t, **cond, mask=mask), model(other, t, **cond, mask=mask)
        unmasked = model(other, t, **cond)
    assert torch.allclose(out[0, :, :8], out_other[0, :, :8], atol=1e-6)
    assert torch.allclose(out[1, :, :6], out_other[1, :, :6], atol=1e-6)
    assert not torch.allclose(out[0, :, :8], unmasked[0, :, :8], atol=1e-4)  # without the mask they would


def test_masked_condition_tokens_are_ignored():
    model = dit()
    x, t, cond = torch.randn(2, 8, 12), torch.rand(2), conditions()
    cross_mask = torch.tensor([[True, True, True, False, False], [False] * 5])  # the second: no tokens at all
    other = dict(cond, cross_attn_cond=torch.where(cross_mask[..., None], cond["cross_attn_cond"], 5.0))
    with torch.no_grad():
        out = model(x, t, **cond, cross_attn_mask=cross_mask)
        out_other = model(x, t, **other, cross_attn_mask=cross_mask)
    assert torch.allclose(out[0], out_other[0], atol=1e-6)
    assert torch.isfinite(out).all()


def test_patch_size_two_groups_neighbouring_frames():
    model = dit(patch_size=2)
    assert model.transformer.project_in.in_features == 16
    x, t = torch.randn(1, 8, 12), torch.rand(1)
    assert model(x, t, **conditions(batch=1)).shape == x.shape
    with pytest.raises(ValueError, match="multiple of patch_size 2"):
        model(torch.randn(1, 8, 11), t)


def causal_transformer() -> ContinuousTransformer:
    model = ContinuousTransformer(64, 2, dim_in=6, dim_out=6, dim_heads=32, causal=True)
    return randomized(model)


def test_causal_outputs_do_not_depend_on_later_inputs():
    model = causal_transformer()
    x = torch.randn(2, 10, 6)
    changed = x.clone()
    changed[:, 6:] = torch.randn(2, 4, 6)
    with torch.no_grad():
        out, out_changed = model(x), model(changed)
    assert torch.allclose(out[:, :6], out_changed[:, :6], atol=1e-6)
    assert not torch.allclose(out[:, 6:], out_changed[:, 6:], atol=1e-4)


def test_causal_with_left_padding_stays_finite():
    model = causal_transformer()
    x, mask = torch.randn(1, 10, 6), torch.arange(10)[None] >= 3  # first three frames padded
    with torch.no_grad():
        out = model(x, mask=mask)
        out_other = model(torch.cat((torch.randn(1, 3, 6), x[:, 3:]), dim=1), mask=mask)
    assert torch.isfinite(out).all()
    assert torch.allclose(out[:, 3:], out_other[:, 3:], atol=1e-6)


def test_causal_mask_path_agrees_with_the_fused_one():
    model = causal_transformer()
    x = torch.randn(2, 10, 6)
    with torch.no_grad():
        fused, masked = model(x), model(x, mask=torch.ones(2, 10, dtype=torch.bool))
    assert torch.allclose(fused, masked, atol=1e-6)


def test_attention_mask_aligns_causal_queries_with_the_last_keys():
    mask = attention_mask(torch.tensor([[False, True, True, True]]), True, 2, 4, torch.device("cpu"))
    assert mask.squeeze().tolist() == [[False, True, True, False], [False, True, True, True]]


def test_io_channels_come_from_the_argument_when_the_config_has_none():
    config = DiTConfig(**{**SMALL, "io_channels": None})
    assert build("backbone", config, io_channels=4).transformer.project_in.in_features == 4
    with pytest.raises(ValueError, match="latent_dim"):
        DiffusionTransformer(config)


def test_unbuilt_conditions_are_refused():
    model = DiffusionTransformer(DiTConfig(io_channels=8, embed_dim=64, depth=1, num_heads=2))
    with pytest.raises(ValueError, match="cond_token_dim 0"):
        model(torch.randn(1, 8, 4), torch.rand(1), cross_attn_cond=torch.randn(1, 2, 16))


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"embed_dim": 100, "num_heads": 3}, "embed_dim", "not divisible by num_heads 3"),
        ({"embed_dim": 64, "num_heads": 4}, "num_heads", "at least 32"),
        (
            {"embed_dim": 64, "num_heads": 2, "cond_token_dim": 48, "project_cond_tokens": False},
            "cond_token_dim",
            "key/value",
        ),
        (
            {"embed_dim": 64, "num_heads": 2, "global_cond_dim": 12, "project_global_cond": False},
            "global_cond_dim",
            "must equal embed_dim",
        ),
    ],
)
def test_config_errors_name_the_field(fields, field, message):
    with pytest.raises(ValidationError, match=message) as raised:
        DiTConfig(**fields)
    assert [error["loc"] for error in raised.value.errors()] == [(field,)]


def test_config_refuses_unknown_keys():
    with pytest.raises(ValidationError, match="extra"):
        DiTConfig(dim_heads=64)
