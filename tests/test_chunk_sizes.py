"""ParallelLab's chunk sizes on their own (ChunkSizer in epyclab/labs/transports/scheduler.py), as documented.

A chunk holds at most ``total // (4 * engines)`` points (at least 1), at first
exactly that; each chunk's engine time teaches a per-point estimate (each new
chunk weighs half), and later chunks hold as many points as run in 0.1 s, at
least 1; a chunk starts no new point after 0.2 s. A costly transport (one
whose tasks cost ``overhead`` seconds) aims at 120 times that, and its
end-game (from the first chunks on) holds at most ``remaining // (2 * engines)``.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from epyclab.labs.transports.scheduler import ChunkSizer


def test_the_documented_constants() -> None:
    assert (ChunkSizer.TargetSeconds, ChunkSizer.BudgetSeconds) == (0.1, 0.2)
    assert (ChunkSizer.ChunksPerEngine, ChunkSizer.Smoothing) == (4, 0.5)
    sizer = ChunkSizer(100, 2)
    assert (sizer.target, sizer.budget) == (0.1, 0.2)
    other = ChunkSizer(100, 2, target=0.5, budget=3)
    assert (other.target, other.budget) == (0.5, 3.0)


@given(total=st.integers(-5, 10_000), engines=st.integers(-2, 64))
def test_the_first_chunks_have_the_largest_size(total: int, engines: int) -> None:
    sizer = ChunkSizer(total, engines)
    expected = max(1, max(0, total) // (4 * max(1, engines)))
    assert sizer.size() == sizer.largest == expected
    assert isinstance(sizer.size(), int)
    assert not sizer.estimated()


@pytest.mark.parametrize("total, engines, largest", [(7, 1, 1), (8, 1, 2), (9, 1, 2), (99, 3, 8), (1000, 1, 250)])
def test_largest_examples(total: int, engines: int, largest: int) -> None:
    assert ChunkSizer(total, engines).largest == largest


def test_an_explicit_largest_is_capped_by_the_rule() -> None:
    assert ChunkSizer(1000, 1, largest=10).largest == 10
    assert ChunkSizer(1000, 1, largest=500).largest == 250
    assert ChunkSizer(1000, 1, largest=0).largest == 1


def test_later_chunks_hold_what_runs_in_the_target_time() -> None:
    sizer = ChunkSizer(10_000, 1)  # largest 2500
    sizer.record(10, 0.01)  # 1 ms per point
    assert sizer.estimated() and sizer.per_point == pytest.approx(0.001)
    assert sizer.size() == 100
    sizer.record(10, 0.03)  # 3 ms per point, weighing half: 2 ms
    assert sizer.per_point == pytest.approx(0.002)
    assert sizer.size() == 50
    sizer.record(1, 1.0)  # an expensive point: one per chunk
    assert sizer.size() == 1


def test_nothing_is_learned_from_an_empty_chunk_or_a_negative_time() -> None:
    sizer = ChunkSizer(10_000, 1)
    sizer.record(0, 5.0)
    assert not sizer.estimated() and sizer.size() == 2500
    sizer.record(10, -1.0)
    assert sizer.per_point == 0.0
    assert sizer.size() == 2500  # no time measured: the largest size
    sizer.record(10, 0.0001)
    assert sizer.size() == 2500  # capped by the rule


def test_a_costly_transport_raises_the_target_and_the_budget() -> None:
    sizer = ChunkSizer(100, 2)
    sizer.expect_overhead(0.0)
    sizer.expect_overhead(-1.0)
    assert (sizer.target, sizer.budget) == (0.1, 0.2)
    sizer.expect_overhead(0.01)  # ipyparallel's round trip: chunks of 1.2 s, starting no point after 1.2 s
    assert ChunkSizer.OverheadRatio == 120
    assert sizer.target == pytest.approx(1.2) and sizer.budget == sizer.target
    sizer.record(1, 0.25)
    assert sizer.size() == 4  # four points of 0.25 s a task, not one: a quarter of the tasks' cost


def test_the_end_game_hands_the_last_costly_points_out_one_by_one() -> None:
    sizer = ChunkSizer(40, 2)
    sizer.expect_overhead(0.01)
    sizer.record(1, 0.25)
    assert [sizer.size(r) for r in (40, 16, 12, 8, 7, 4, 1)] == [4, 4, 3, 2, 1, 1, 1]
    plain = ChunkSizer(40, 2)  # a cheap transport's chunks are not changed
    plain.record(1, 0.25)
    assert [plain.size(r) for r in (40, 7, 1)] == [1, 1, 1]


def test_before_any_time_is_known_a_costly_transport_holds_the_first_chunks_back_too() -> None:
    # 40 points on 2 engines, handed out by a window of 8 chunks before any has run: 5, 5, 5, 5, 5, 3, 3, 2
    # and 7 points left for chunks sized by what the first ones took, not 8 chunks of 5 and nothing left.
    sizer = ChunkSizer(40, 2)
    sizer.expect_overhead(0.01)
    remaining, sizes = 40, []
    for _ in range(8):
        sizes.append(sizer.size(remaining))
        remaining -= sizes[-1]
    assert sizes == [5, 5, 5, 5, 5, 3, 3, 2] and remaining == 7
    assert sizer.size() == sizer.largest == 5  # without the points left: the largest size, as before
    plain = ChunkSizer(40, 2)  # a cheap transport's first chunks are not changed
    assert [plain.size(r) for r in (40, 9, 1)] == [5, 5, 5]


@given(total=st.integers(0, 10_000), engines=st.integers(1, 64), overhead=st.floats(1e-4, 0.05),
       remaining=st.integers(0, 10_000))
def test_the_first_chunks_of_a_costly_transport_stay_between_one_point_and_the_largest(
    total: int, engines: int, overhead: float, remaining: int
) -> None:
    sizer = ChunkSizer(total, engines)
    sizer.expect_overhead(overhead)
    size = sizer.size(remaining)
    assert 1 <= size <= sizer.largest
    assert size == sizer.largest or size == max(1, remaining // (2 * engines))


@given(per_point=st.floats(1e-6, 10.0), overhead=st.floats(0.0, 0.05), remaining=st.integers(0, 10_000),
       engines=st.integers(1, 64))
def test_the_end_game_stays_between_the_least_target_and_the_raised_one(
    per_point: float, overhead: float, remaining: int, engines: int
) -> None:
    least = ChunkSizer(10_000, engines)
    least.record(1, per_point)
    sizer = ChunkSizer(10_000, engines)
    sizer.expect_overhead(overhead)
    sizer.record(1, per_point)
    assert least.size() <= sizer.size(remaining) <= sizer.size()
    if remaining // (2 * engines) >= sizer.size():
        assert sizer.size(remaining) == sizer.size()  # far from the end: the raised target's size
