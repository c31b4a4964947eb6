"""Codebook interleaving patterns: interleave then de-interleave is the identity (a property test over
random codes, codebook counts and lengths), and where each pattern puts a codebook's frames."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.models.lm import patterns
from pipeline.models.lm.lm_config import PATTERNS


@settings(max_examples=300, deadline=None)
@given(
    pattern=st.sampled_from(PATTERNS),
    batch=st.integers(1, 3),
    n_codebooks=st.integers(1, 9),
    frames=st.integers(1, 40),
    vocabulary=st.integers(2, 2**15),
    seed=st.integers(0, 2**31 - 1),
)
def test_interleave_then_deinterleave_is_the_identity(pattern, batch, n_codebooks, frames, vocabulary, seed):
    generator = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, vocabulary, (batch, n_codebooks, frames), generator=generator)
    sequence = patterns.interleave(codes, pattern, filler=vocabulary)
    length = patterns.sequence_length(pattern, n_codebooks, frames)
    assert sequence.shape == (batch, n_codebooks, length)
    assert torch.equal(patterns.deinterleave(sequence, pattern, frames), codes)
    valid = patterns.valid(pattern, n_codebooks, frames)
    assert torch.equal(sequence != vocabulary, valid.expand_as(sequence))  # fillers exactly off the valid places
    assert int(valid.sum()) == n_codebooks * frames


def test_the_delay_pattern_shifts_codebook_k_by_k_and_parallel_shifts_none():
    codes = torch.arange(2 * 3 * 4).view(2, 3, 4)
    delayed = patterns.interleave(codes, "delay", filler=-1)
    assert delayed.shape == (2, 3, 6)
    assert delayed[0].tolist() == [[0, 1, 2, 3, -1, -1], [-1, 4, 5, 6, 7, -1], [-1, -1, 8, 9, 10, 11]]
    assert torch.equal(patterns.interleave(codes, "parallel", filler=-1), codes)


def test_patterns_are_the_configs_and_an_unknown_one_or_length_is_refused():
    assert patterns.PATTERNS == PATTERNS
    with pytest.raises(ValueError, match="unknown codebook pattern"):
        patterns.delays("zigzag", 2)
    with pytest.raises(ValueError, match="is not 5 long"):
        patterns.deinterleave(torch.zeros(1, 2, 5), "delay", 5)
