"""Plan pieces: shard assignment, segments, keys."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.shards.keys import item_key
from pipeline.shards.plan import assign_shards, segments_of


@settings(max_examples=200, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 5000), max_size=200),
    max_items=st.integers(1, 40),
    max_bytes=st.integers(1, 40000),
)
def test_assignment_keeps_order_and_budgets(sizes, max_items, max_bytes):
    groups = assign_shards(sizes, max_items, max_bytes)
    assert [i for group in groups for i in group] == list(range(len(sizes)))  # every item once, in order
    for group in groups:
        assert group and len(group) <= max_items
        assert len(group) == 1 or sum(sizes[i] for i in group) <= max_bytes


def test_assignment_is_balanced():
    rng = random.Random(0)
    sizes = [rng.randint(100, 200) for _ in range(1000)]
    groups = assign_shards(sizes, max_items=300, max_bytes=10**9)
    assert len(groups) == 4  # the fewest shards the item budget allows
    counts = [len(group) for group in groups]
    assert max(counts) - min(counts) <= 10  # not 300, 300, 300, 100


def test_oversized_item_gets_its_own_shard():
    assert assign_shards([10, 10_000, 10], max_items=10, max_bytes=100) == [[0], [1], [2]]


class _Data:
    def __init__(self, **fields):
        defaults = dict(min_item_seconds=1.0, max_item_seconds=10.0, long_items="split", segment_overlap_seconds=0.0)
        self.__dict__.update(defaults, **fields)


class _Experiment:
    def __init__(self, **fields):
        self.data = _Data(**fields)


@pytest.mark.parametrize(
    "seconds, fields, expected, reason",
    [
        (5.0, {}, [(0.0, 5.0)], None),
        (0.5, {}, [], "too short"),
        (25.0, {}, [(0.0, 10.0), (10.0, 10.0), (20.0, 5.0)], None),
        (20.5, {}, [(0.0, 10.0), (10.0, 10.0)], None),  # a 0.5 s tail is below min_item_seconds
        (25.0, {"long_items": "truncate"}, [(0.0, 10.0)], None),
        (25.0, {"long_items": "reject"}, [], "too long"),
        (18.0, {"segment_overlap_seconds": 2.0}, [(0.0, 10.0), (8.0, 10.0)], None),
        (50.0, {"max_item_seconds": None}, [(0.0, 50.0)], None),
    ],
)
def test_segments(seconds, fields, expected, reason):
    segments, why = segments_of(seconds, _Experiment(**fields))
    assert segments == expected
    assert (why is None) if reason is None else (reason in why)


@given(relpath=st.text(min_size=1, max_size=300), segment=st.integers(0, 9999))
def test_keys_are_safe(relpath, segment):
    key = item_key(relpath, segment)
    assert "." not in key and "/" not in key
    assert all(c.isascii() and (c.isalnum() or c in "_-") for c in key)
    assert len(key) <= 80 + 1 + 10 + 6
    assert item_key(relpath, segment) == key


def test_keys_differ_for_paths_that_sanitise_alike():
    keys = {item_key(p, 0) for p in ["a b.wav", "a_b.wav", "a.b.wav", "a/b.wav", "a  b.wav"]}
    assert len(keys) == 5
    assert item_key("x.wav", 0) != item_key("x.wav", 1)
