"""LanguageModel on a tiny transformer: config errors name their fields, decoding with the key/value
cache equals decoding without it (same seed, same codes) and is faster, the loss ignores pattern
fillers and padded frames and averages codebooks, CFG dropout and guidance use the null condition,
token sampling honours temperature, top-k and top-p, and 60 Adam steps on one batch learn it."""

from __future__ import annotations

import time

import pytest
import torch
from pydantic import ValidationError

from pipeline.config.registry import build
from pipeline.models.blocks import KVCache
from pipeline.models.lm import patterns
from pipeline.models.lm.lm_config import LMConfig
from pipeline.models.lm.model import sample_tokens

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models, shared cores

COND_DIM = 16
VOCABULARY = 32
VALUES = {"seconds_total": [3.0, 50.0], "genre": ["rock", None]}


def config_dict(**changes) -> dict:
    base = {
        "type": "lm",
        "embed_dim": 64,
        "depth": 2,
        "num_heads": 2,
        "conditioners": [
            {"type": "number", "id": "seconds_total"},
            {"type": "label", "id": "genre", "values": ["rock", "jazz"]},
        ],
        "cond_dim": COND_DIM,
        "cross_attention_cond_ids": ["genre"],
        "prepend_cond_ids": ["seconds_total"],
    }
    return {**base, **changes}


def make(seed: int = 0, n_codebooks: int = 3, randomised: bool = True, **changes):
    """A tiny LM; `randomised`: every weight redrawn so that no zero-initialised branch hides a path."""
    torch.manual_seed(seed)
    model = build(
        "model", LMConfig.model_validate(config_dict(**changes)), n_codebooks=n_codebooks, codebook_size=VOCABULARY
    )
    if randomised:
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.normal_(0.0, 0.3)
    return model.eval()


def test_config_errors_name_their_fields():
    with pytest.raises(ValidationError) as caught:
        LMConfig.model_validate(config_dict(embed_dim=96, num_heads=4, prepend_cond_ids=["genre", "tempo"]))
    found = {error["loc"]: error["msg"] for error in caught.value.errors()}
    assert found[("num_heads",)].startswith("heads of 24 channels")
    assert found[("prepend_cond_ids", 1)] == "'tempo' names no conditioner (conditioners: seconds_total, genre)"
    assert found[("conditioners", 0, "id")] == (
        "'seconds_total' is used by neither cross_attention_cond_ids nor prepend_cond_ids"
    )


@pytest.mark.parametrize("pattern", ["delay", "parallel"])
def test_cached_logits_equal_the_full_pass_position_by_position(pattern):
    model = make(pattern=pattern)
    cond = model.conditioning(VALUES)
    inputs = torch.randint(0, VOCABULARY + 1, (2, 3, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = model.logits(inputs, cond)
        cache = KVCache(2, model.prepended(cond) + 9)
        steps = [model.logits(inputs[..., :4], cond, cache)]
        steps += [model.logits(inputs[..., s : s + 1], cond, cache) for s in range(4, 9)]
    torch.testing.assert_close(torch.cat(steps, dim=2), full, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="holds 10 positions"):
        model.logits(inputs[..., :1], cond, cache)  # the cache was made for 1 prepended + 9


@pytest.mark.parametrize("pattern", ["delay", "parallel"])
@pytest.mark.parametrize("cfg_scale", [1.0, 3.0])
def test_sampling_with_the_cache_equals_sampling_without_it(pattern, cfg_scale):
    model = make(pattern=pattern)
    frames = 12
    length = patterns.sequence_length(pattern, 3, frames)
    for seed in range(3):
        uniforms = torch.rand(2, length, 3, generator=torch.Generator().manual_seed(seed))
        settings = {"temperature": 1.0, "top_k": 20, "top_p": 0.95, "cfg_scale": cfg_scale}
        cached = model.generate(VALUES, frames, uniforms, use_cache=True, **settings)
        uncached = model.generate(VALUES, frames, uniforms, use_cache=False, **settings)
        assert cached.shape == (2, 3, frames) and cached.dtype == torch.int64
        assert torch.equal(cached, uncached)
        assert 0 <= int(cached.min()) and int(cached.max()) < VOCABULARY


def test_the_cache_makes_sampling_faster():
    """Measured on 2 shared CPU cores (embed_dim 256, 200 frames x 3 codebooks): 0.5 s with the cache,
    2.5 s without; each step without it recomputes the whole prefix."""
    model = make(embed_dim=256, num_heads=4)
    frames = 200
    uniforms = torch.rand(
        1, patterns.sequence_length("delay", 3, frames), 3, generator=torch.Generator().manual_seed(0)
    )
    values = {name: value[:1] for name, value in VALUES.items()}
    seconds, codes = {}, {}
    for use_cache in (True, False):
        started = time.perf_counter()
        codes[use_cache] = model.generate(values, frames, uniforms, use_cache=use_cache)
        seconds[use_cache] = time.perf_counter() - started
    assert torch.equal(codes[True], codes[False])
    assert seconds[True] < seconds[False] / 2, seconds


def test_a_sample_depends_on_its_own_uniforms_alone():
    model = make()
    uniforms = torch.rand(2, 12, 3, generator=torch.Generator().manual_seed(4))
    both = model.generate(VALUES, 10, uniforms)
    alone = model.generate({name: value[1:] for name, value in VALUES.items()}, 10, uniforms[1:])
    assert torch.equal(both[1:], alone)


def test_the_loss_ignores_fillers_and_padding_and_averages_codebooks():
    model = make(pattern="delay")
    generator = torch.Generator().manual_seed(2)
    codes = torch.randint(0, VOCABULARY, (2, 3, 8), generator=generator)
    mask = torch.ones(2, 8, dtype=torch.bool)
    mask[1, 5:] = False
    loss, parts = model.loss(codes, mask, VALUES)
    changed = codes.clone()
    changed[1, :, 5:] = (changed[1, :, 5:] + 7) % VOCABULARY  # padded frames: whatever they hold
    assert torch.equal(model.loss(changed, mask, VALUES)[0], loss)

    # By hand: padded frames are fed as the filler token; per codebook, the mean cross-entropy over its
    # real positions; then the mean over codebooks.
    fed = torch.where(mask[:, None], codes, model.special)
    targets = patterns.interleave(fed, "delay", model.special)
    inputs = torch.cat([torch.full((2, 3, 1), model.special), targets[..., :-1]], dim=-1)
    with torch.no_grad():
        logits = model.logits(inputs, model.conditioning(VALUES))
    per_codebook = []
    for k in range(3):
        terms = [
            torch.nn.functional.cross_entropy(logits[b, k, s], codes[b, k, s - k])
            for b in range(2)
            for s in range(k, k + 8)
            if mask[b, s - k]
        ]
        per_codebook.append(torch.stack(terms).mean())
    torch.testing.assert_close(loss, torch.stack(per_codebook).mean())
    assert parts["ce"] == pytest.approx(float(loss.detach())) and parts["cfg_dropped"] == 0.0


def test_dropped_samples_lose_their_cross_attention_condition_and_keep_the_prepended_one():
    model = make()
    codes = torch.randint(0, VOCABULARY, (2, 3, 6), generator=torch.Generator().manual_seed(3))
    drop_first = torch.tensor([False, True])
    _, parts = model.loss(codes, None, VALUES, keep=drop_first)
    assert parts["cfg_dropped"] == 0.5
    cond = model.null_conditioning(model.conditioning(VALUES), ~drop_first)
    assert torch.equal(cond["cross_attn_cond"][0], torch.zeros_like(cond["cross_attn_cond"][0]))
    assert cond["cross_attn_cond"][1].abs().sum() > 0
    assert torch.equal(cond["prepend_cond"], model.conditioning(VALUES)["prepend_cond"])


def test_guidance_draws_from_null_plus_scaled_difference():
    model = make()
    length = patterns.sequence_length("delay", 3, 1)
    uniforms = torch.rand(2, length, 3, generator=torch.Generator().manual_seed(5))
    cond = model.conditioning(VALUES)
    null = model.null_conditioning(cond)
    start = torch.full((2, 3, 1), model.special)
    with torch.no_grad():
        expected_logits = (
            model.logits(start, null)[:, :, -1]
            + (model.logits(start, cond)[:, :, -1] - model.logits(start, null)[:, :, -1]) * 2.5
        )
    first = sample_tokens(expected_logits.flatten(0, 1), uniforms[:, 0].flatten(), 1.0).view(2, 3)
    codes = model.generate(VALUES, 1, uniforms, cfg_scale=2.5)
    assert torch.equal(codes[:, 0, 0], first[:, 0])  # the delay pattern's first step draws codebook 0


def test_sample_tokens_honours_temperature_top_k_and_top_p():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    draws = (torch.arange(1000) + 0.5) / 1000  # midpoints: no draw on a boundary of the CDF
    rows = logits.expand(1000, -1)
    counts = lambda tokens: torch.bincount(tokens, minlength=4).tolist()  # noqa: E731
    assert counts(sample_tokens(rows, draws, 1.0)) == [500, 300, 150, 50]
    assert counts(sample_tokens(rows, draws, 1.0, top_k=2)) == [625, 375, 0, 0]
    assert counts(sample_tokens(rows, draws, 1.0, top_p=0.7)) == [625, 375, 0, 0]  # 0.5 < 0.7 <= 0.8
    assert counts(sample_tokens(rows, draws, 0.0)) == [1000, 0, 0, 0]
    sharp = counts(sample_tokens(rows, draws, 0.25))
    assert sharp[0] > 800


def test_sixty_adam_steps_on_one_batch_learn_it():
    model = make(randomised=False).train()
    codes = torch.randint(0, VOCABULARY, (2, 3, 16), generator=torch.Generator().manual_seed(6))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        optimizer.zero_grad()
        loss, _ = model.loss(codes, None, VALUES)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0] / 4, losses[::10]
