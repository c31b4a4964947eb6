"""DiffusionModel on a tiny DiT: config cross-field errors name their fields, conditioning joins tokens
as stable-audio-tools does, the loss is the objective's on draws from the generator, CFG dropout
zeroes cross-attention tokens at rate p (never at p = 0), generate guides with one batched pass and
is deterministic, and 50 Adam steps on one batch lower the loss."""

from __future__ import annotations

import json

import pytest
import torch
from pydantic import ValidationError

from pipeline.config.registry import build
from pipeline.models.diffusion import objectives, samplers
from pipeline.models.diffusion.diffusion_config import DiffusionModelConfig
from pipeline.models.diffusion.model import LossDraws
from tests.conftest import SAT_CONFIGS

COND_DIM = 16
CHANNELS = 4
VALUES = {
    "seconds_start": [0.0, 12.0, None, 300.0],
    "seconds_total": [30.0, 40.0, 50.0, None],
    "genre": ["rock", None, "pop", "jazz"],
}


def config_dict(**changes) -> dict:
    base = {
        "type": "diffusion",
        "backbone": {
            "type": "dit",
            "embed_dim": 64,
            "depth": 2,
            "num_heads": 2,
            "cond_token_dim": COND_DIM,
            "global_cond_dim": 2 * COND_DIM,
        },
        "conditioners": [
            {"type": "number", "id": "seconds_start"},
            {"type": "number", "id": "seconds_total"},
            {"type": "label", "id": "genre", "values": ["rock", "jazz"]},
        ],
        "cond_dim": COND_DIM,
        "cross_attention_cond_ids": ["genre", "seconds_start", "seconds_total"],
        "global_cond_ids": ["seconds_start", "seconds_total"],
    }
    return {**base, **changes}


def make(seed: int = 0, **changes):
    torch.manual_seed(seed)
    return build("model", DiffusionModelConfig.model_validate(config_dict(**changes)), io_channels=CHANNELS)


def latents(batch: int = 4, frames: int = 12, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, CHANNELS, frames, generator=torch.Generator().manual_seed(seed))


def errors_of(**changes) -> dict[tuple, str]:
    with pytest.raises(ValidationError) as caught:
        DiffusionModelConfig.model_validate(config_dict(**changes))
    return {error["loc"]: error["msg"] for error in caught.value.errors()}


def test_cross_field_errors_name_their_fields():
    conditioners = config_dict()["conditioners"]
    assert errors_of(conditioners=[*conditioners, {"type": "number", "id": "genre"}]) == {
        ("conditioners", 3, "id"): "'genre' names two conditioners"
    }
    errors = errors_of(
        cross_attention_cond_ids=["genre", "prompt", "genre"], global_cond_ids=["seconds_start", "seconds_total"]
    )
    assert errors == {
        (
            "cross_attention_cond_ids",
            1,
        ): "'prompt' names no conditioner (conditioners: seconds_start, seconds_total, genre)",
        ("cross_attention_cond_ids", 2): "'genre' is listed twice",
    }
    assert errors_of(global_cond_ids=["seconds_start"]) == {
        ("backbone", "global_cond_dim"): f"must be cond_dim x 1 global_cond_ids = {COND_DIM}, got {2 * COND_DIM}"
    }
    assert errors_of(cross_attention_cond_ids=["seconds_start", "seconds_total"]) == {
        ("conditioners", 2, "id"): "'genre' is used by neither cross_attention_cond_ids nor global_cond_ids"
    }
    errors = errors_of(cond_dim=0)
    assert errors[("cond_dim",)].startswith("must be positive") and ("backbone", "cond_token_dim") in errors
    assert errors_of(cond_dim=8)[("backbone", "cond_token_dim")] == f"must be cond_dim = 8, got {COND_DIM}"
    unconditional = {"conditioners": [], "cross_attention_cond_ids": [], "global_cond_ids": [], "cond_dim": 0}
    assert errors_of(**unconditional) == {
        ("backbone", "cond_token_dim"): f"must be 0: no cross_attention_cond_ids = 0, got {COND_DIM}",
        ("backbone", "global_cond_dim"): f"must be 0: no global_cond_ids = 0, got {2 * COND_DIM}",
    }
    assert ("cfg_dropout",) in errors_of(cfg_dropout=1.0)
    assert ("objective",) in errors_of(objective="eps")


def test_stable_audio_opens_conditioning_widths_validate():
    """SAO's DiT and number conditioners, as its model config sets them (the t5 prompt aside)."""
    sao = json.loads((SAT_CONFIGS / "model_configs__txt2audio__stable_audio_open_1_0.json").read_text())["model"]
    dit, numbers = sao["diffusion"]["config"], [c for c in sao["conditioning"]["configs"] if c["type"] == "number"]
    config = DiffusionModelConfig.model_validate(
        {
            "backbone": {
                "type": "dit",
                **{
                    key: dit[key]
                    for key in ("io_channels", "embed_dim", "depth", "num_heads", "cond_token_dim", "global_cond_dim")
                },
            },
            "conditioners": [{"type": "number", "id": c["id"], **c["config"]} for c in numbers],
            "cond_dim": sao["conditioning"]["cond_dim"],
            "cross_attention_cond_ids": [i for i in sao["diffusion"]["cross_attention_cond_ids"] if i != "prompt"],
            "global_cond_ids": sao["diffusion"]["global_cond_ids"],
        }
    )
    assert config.backbone.global_cond_dim == 1536 == 2 * config.cond_dim
    assert config.conditioning_fields == ("seconds_start", "seconds_total")


def test_state_dict_keys_follow_stable_audio_tools():
    model = make()
    keys = set(model.state_dict())
    assert {
        "conditioner.conditioners.seconds_start.embedder.embedding.0.weights",
        "conditioner.conditioners.seconds_total.embedder.embedding.1.weight",
        "conditioner.conditioners.genre.embedder.weight",
        "model.to_cond_embed.0.weight",
        "model.to_global_embed.0.weight",
    } <= keys
    assert all(key.startswith(("conditioner.conditioners.", "model.")) for key in keys)


def test_conditioning_joins_tokens_along_the_sequence_and_global_ones_along_channels():
    model = make()
    cond = model.conditioning(VALUES)
    tokens = {name: model.conditioner.conditioners[name](VALUES[name])[0] for name in VALUES}
    assert cond["cross_attn_cond"].shape == (4, 3, COND_DIM) and cond["cross_attn_mask"].shape == (4, 3)
    assert torch.equal(
        cond["cross_attn_cond"], torch.cat([tokens["genre"], tokens["seconds_start"], tokens["seconds_total"]], 1)
    )
    assert torch.equal(
        cond["global_cond"], torch.cat([tokens["seconds_start"][:, 0], tokens["seconds_total"][:, 0]], -1)
    )
    assert cond["cross_attn_mask"].all()
    with pytest.raises(KeyError, match="lack the field.*genre"):
        model.conditioning({"seconds_start": [1.0], "seconds_total": [2.0]})


def test_a_conditioner_reads_its_field():
    conditioners = [{"type": "number", "id": "start", "field": "seconds_start"}]
    model = make(
        conditioners=conditioners,
        cross_attention_cond_ids=["start"],
        global_cond_ids=[],
        backbone={"type": "dit", "embed_dim": 64, "depth": 1, "num_heads": 2, "cond_token_dim": COND_DIM},
    )
    assert model.config.conditioning_fields == ("seconds_start",)
    by_field = model.conditioning({"seconds_start": [1.0, 2.0]})["cross_attn_cond"]
    assert by_field.shape == (2, 1, COND_DIM)
    # keyed by id, the id wins over the field (SAT's MultiConditioner and its default_keys)
    by_id = model.conditioning({"start": [1.0, 2.0], "seconds_start": [5.0, 6.0]})["cross_attn_cond"]
    assert torch.equal(by_id, by_field)


@pytest.mark.parametrize("objective, sampler", [("v", "logit_normal"), ("rectified_flow", "uniform")])
def test_loss_is_the_objective_on_draws_from_the_generator(objective, sampler):
    model = make(objective=objective, timestep_sampler=sampler, cfg_dropout=0.5)
    x, mask = latents(), torch.ones(4, 12, dtype=torch.bool)
    mask[0, 8:] = False
    loss, info = model.loss(x, mask, VALUES, torch.Generator().manual_seed(7))

    g = torch.Generator().manual_seed(7)  # the documented order: t, noise, dropout
    t = objectives.sample_timesteps(sampler, 4, g)
    noise = torch.randn(x.shape, generator=g)
    drop = torch.rand(4, generator=g) < 0.5
    noised, target = objectives.noised_and_target(objective, x, noise, t)
    cond = model.conditioning(VALUES)
    cond["cross_attn_cond"] = torch.where(drop[:, None, None], 0.0, cond["cross_attn_cond"])
    expected = objectives.masked_mse(model.model(noised, t, **cond, mask=mask), target, mask)
    torch.testing.assert_close(loss, expected)
    assert info == pytest.approx(
        {"mse": expected.item(), "t_mean": t.mean().item(), "cfg_dropped": drop.float().mean().item()}
    )
    again, _ = model.loss(x, mask, VALUES, torch.Generator().manual_seed(7))
    assert torch.equal(loss, again)


def test_draws_given_by_the_caller_are_the_generators_draws():
    model = make(cfg_dropout=0.5)
    x = latents()
    draws = LossDraws.draw(torch.Generator().manual_seed(9), x.shape, "uniform", 0.5)
    from_generator, _ = model.loss(x, None, VALUES, torch.Generator().manual_seed(9))
    from_draws, info = model.loss(x, None, VALUES, draws)
    assert torch.equal(from_generator, from_draws)
    _, info = model.loss(
        x, None, VALUES, LossDraws(noise=draws.noise, t=draws.t, keep=torch.zeros(4, dtype=torch.bool))
    )
    assert info["cfg_dropped"] == 1.0
    with pytest.raises(ValueError, match="must be noise of that shape"):
        model.loss(x, None, VALUES, LossDraws(noise=draws.noise[:2], t=draws.t, keep=draws.keep))


def test_padded_frames_do_not_change_the_loss():
    model = make()
    x, mask = latents(), torch.ones(4, 12, dtype=torch.bool)
    mask[1, 5:] = False
    changed = x.clone()
    changed[1, :, 5:] = 100.0
    first, _ = model.loss(x, mask, VALUES, torch.Generator().manual_seed(3))
    second, _ = model.loss(changed, mask, VALUES, torch.Generator().manual_seed(3))
    torch.testing.assert_close(first, second)


def captured_conditions(model) -> list[dict]:
    seen: list[dict] = []
    model.model.register_forward_pre_hook(lambda module, args, kwargs: seen.append(kwargs), with_kwargs=True)
    return seen


@pytest.mark.parametrize("p", [0.0, 0.3])
def test_cfg_dropout_zeroes_cross_attention_tokens_at_rate_p(p):
    batch = 2000
    model = make(cfg_dropout=p)
    seen = captured_conditions(model)
    values = {"seconds_start": [1.0] * batch, "seconds_total": [2.0] * batch, "genre": ["rock"] * batch}
    _, info = model.loss(latents(batch, 2), None, values, torch.Generator().manual_seed(0))
    tokens, reference = seen[0]["cross_attn_cond"], model.conditioning(values)
    dropped = (tokens == 0).flatten(1).all(1)
    assert torch.equal(tokens[~dropped], reference["cross_attn_cond"][~dropped])
    assert torch.equal(seen[0]["global_cond"], reference["global_cond"])  # SAT: the global condition is never dropped
    assert torch.equal(seen[0]["cross_attn_mask"], reference["cross_attn_mask"])
    assert info["cfg_dropped"] == dropped.float().mean().item()
    if p == 0:
        assert not dropped.any()
    else:
        assert abs(dropped.float().mean().item() - p) < 0.04  # 4 standard errors at n = 2000


def test_generate_guides_with_one_batched_pass_and_is_deterministic():
    model = make().eval()
    seen = captured_conditions(model)
    noise = latents(4, 8, seed=5)
    guided = model.generate(noise, VALUES, steps=3, cfg_scale=4.0, sampler="ddim")
    assert len(seen) == 3 and seen[0]["cross_attn_cond"].shape[0] == 8
    assert torch.equal(seen[0]["cross_attn_cond"][4:], torch.zeros(4, 3, COND_DIM))
    assert torch.equal(guided, model.generate(noise, VALUES, steps=3, cfg_scale=4.0, sampler="ddim"))

    cond = model.conditioning(VALUES)
    null = model.null_conditioning(cond)

    def by_hand(x, t):
        with_cond, without = model.model(x, t, **cond), model.model(x, t, **null)
        return without + (with_cond - without) * 4.0

    expected = samplers.sample(by_hand, noise, 3, "v", "ddim")
    torch.testing.assert_close(guided, expected, atol=1e-5, rtol=1e-4)

    seen.clear()
    plain = model.generate(noise, VALUES, steps=2, cfg_scale=1.0)
    assert len(seen) == 2 and seen[0]["cross_attn_cond"].shape[0] == 4 and plain.dtype == torch.float32


def test_guidance_without_cross_attention_is_one_pass():
    model = make(
        cross_attention_cond_ids=[],
        conditioners=config_dict()["conditioners"][:2],
        backbone={"type": "dit", "embed_dim": 64, "depth": 1, "num_heads": 2, "global_cond_dim": 2 * COND_DIM},
    ).eval()
    seen = captured_conditions(model)
    values = {key: VALUES[key] for key in ("seconds_start", "seconds_total")}
    model.generate(latents(4, 8), values, steps=2, cfg_scale=5.0)
    assert len(seen) == 2 and seen[0]["global_cond"].shape == (4, 2 * COND_DIM) and seen[0]["cross_attn_cond"] is None


def test_fifty_adam_steps_on_one_batch_lower_the_loss():
    model = make(objective="rectified_flow", cfg_dropout=0.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    x, mask = latents(4, 16), torch.ones(4, 16, dtype=torch.bool)
    losses = []
    for _ in range(50):
        loss, _ = model.loss(x, mask, VALUES, torch.Generator().manual_seed(0))  # the same t and noise each step
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("generator_device", ["cuda", "cpu"])
def test_loss_on_cuda_draws_on_the_generators_device(generator_device):
    model = make().cuda()
    x = latents().cuda()
    generator = torch.Generator(device=generator_device).manual_seed(0)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss, _ = model.loss(x, None, VALUES, generator)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
