"""Conditioners: number normalisation and clamping against an independent computation, label rows
(unknown and missing -> 0), the null of a missing value, stable-audio-tools' key names, config errors."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError

from pipeline.config.registry import build
from pipeline.models.conditioners_config import LabelConditionerConfig, NumberConditionerConfig


def number(output_dim: int = 16, **fields) -> torch.nn.Module:
    torch.manual_seed(0)
    return build("conditioner", NumberConditionerConfig(id="seconds_total", **fields), output_dim=output_dim)


def label(values=("rock", "jazz", "folk"), output_dim: int = 8) -> torch.nn.Module:
    torch.manual_seed(0)
    return build("conditioner", LabelConditionerConfig(id="genre", values=values), output_dim=output_dim)


def test_number_embeds_the_clamped_normalised_value():
    conditioner = number(min_val=10.0, max_val=30.0)
    values = [5, 10, 17.5, 30, 400]
    tokens, mask = conditioner(values)
    assert tokens.shape == (5, 1, 16) and mask.shape == (5, 1) and mask.dtype == torch.bool and mask.all()

    frequencies = conditioner.embedder.embedding[0].weights.detach().double()
    linear = conditioner.embedder.embedding[1]
    for row, value in enumerate(values):
        x = (min(max(value, 10.0), 30.0) - 10.0) / 20.0
        features = (
            [x]
            + [math.sin(2 * math.pi * w * x) for w in frequencies]
            + [math.cos(2 * math.pi * w * x) for w in frequencies]
        )
        expected = linear.weight.detach().double() @ torch.tensor(features, dtype=torch.float64) + linear.bias.detach()
        torch.testing.assert_close(tokens[row, 0].double(), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(conditioner.normalise(values)[0], torch.tensor([0.0, 0.0, 0.375, 1.0, 1.0]))


def test_number_keys_and_shapes_are_stable_audio_tools():
    shapes = {key: tuple(value.shape) for key, value in number(output_dim=768).state_dict().items()}
    assert shapes == {
        "embedder.embedding.0.weights": (128,),
        "embedder.embedding.1.weight": (768, 257),
        "embedder.embedding.1.bias": (768,),
    }


def test_a_missing_number_is_the_zero_token_and_others_are_unchanged():
    conditioner = number()
    tokens, mask = conditioner([3.0, None, 7.0])
    alone, _ = conditioner([3.0, 7.0])
    assert torch.equal(tokens[1], torch.zeros(1, 16)) and mask.all()
    torch.testing.assert_close(tokens[[0, 2]], alone)


def test_a_non_finite_number_is_refused_naming_the_conditioner():
    with pytest.raises(ValueError, match="seconds_total.*finite"):
        number()([1.0, float("nan")])


def test_label_rows_unknown_and_missing_are_zero():
    conditioner = label()
    torch.testing.assert_close(
        conditioner.indices(["jazz", "pop", None, "rock", 3, "folk"]), torch.tensor([2, 0, 0, 1, 0, 3])
    )
    tokens, mask = conditioner(["jazz", "pop", None])
    table = conditioner.embedder.weight.detach()
    assert tokens.shape == (3, 1, 8) and mask.shape == (3, 1) and mask.all()
    assert torch.equal(tokens[:, 0].detach(), table[[2, 0, 0]])
    assert {key: tuple(value.shape) for key, value in conditioner.state_dict().items()} == {"embedder.weight": (4, 8)}


def test_outputs_are_on_the_modules_device():
    conditioner = label().to(torch.float64)
    tokens, mask = conditioner(["rock"])
    assert tokens.device == conditioner.device and tokens.dtype == torch.float64 and mask.device == tokens.device


@pytest.mark.parametrize(
    "config, fields, field, message",
    [
        (NumberConditionerConfig, {"id": "x", "min_val": 5.0, "max_val": 5.0}, "max_val", "greater than min_val"),
        (LabelConditionerConfig, {"id": "x", "values": ["a", "b", "a"]}, "values", "unique; repeated: 'a'"),
        (LabelConditionerConfig, {"id": "x", "values": []}, "values", "at least 1 item"),
        (NumberConditionerConfig, {"id": "a.b"}, "id", "should match pattern"),
    ],
)
def test_config_errors_name_their_field(config, fields, field, message):
    with pytest.raises(ValidationError) as caught:
        config(**fields)
    (error,) = caught.value.errors()
    assert error["loc"] == (field,) and message in error["msg"]


def test_field_defaults_to_the_id():
    assert NumberConditionerConfig(id="seconds_start").source_field == "seconds_start"
    assert NumberConditionerConfig(id="start", field="seconds_start").source_field == "seconds_start"
