"""Property: the row check's quick path decides exactly as checking every value in full.

The check a result set runs on each row keeps, per signature (keys and value
types), a plan that tests the values kind by kind in a few C calls
(:mod:`epyclab.notebooks.rowcheck`). Hypothesis draws sweeps whose rows repeat
signatures (so plans are used) while their values vary across every kind,
edges included: ints past a column's span and past 64 bits, dates outside
datetime64[ns], aware datetimes, NUL and lone surrogates in text, arrays and
lists, values no format stores, and rows that add or drop keys. Each row goes
to a check that uses plans and to one that checks every value in full
(:meth:`RowCheck.full`): both must accept it or refuse it with the same error,
and leave every column in the same state, reporting the same changes.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_kinds_property import VALUES

from epyclab import Experiment
from epyclab.errors import UnstorableValueError
from epyclab.notebooks.rowcheck import RowCheck

EDGES = st.one_of(
    st.integers(-(2**65), 2**65),
    st.sampled_from([2**11, 2**11 + 1, -(2**24) - 1, 2**53 + 1, 2**63 - 1, -(2**63), 2**63, 2**64 - 1]),
    st.sampled_from([np.int8(-128), np.int64(2**40), np.uint64(2**64 - 1), np.int32(-(2**31))]),
    st.sampled_from([datetime(1600, 1, 1), datetime(2300, 1, 1), datetime(2020, 1, 1, tzinfo=timezone.utc)]),
    st.sampled_from(["ok", "é", "a\x00b", "\ud800", "", 1.5, None, {"a": 1}, object()]),
)
#: Ints either side of the spans a column of ints keeps (the floats that hold them exactly).
SPANS = st.tuples(st.sampled_from([11, 24, 53, 63]), st.sampled_from([-1, 0, 1, 2**9]), st.booleans()).map(
    lambda t: ((1 << t[0]) + t[1]) * (-1 if t[2] else 1))
SPAN_INTS = st.one_of(SPANS, SPANS.filter(lambda n: -(2**63) <= n < 2**63).map(np.int64), st.integers(-9, 9))
#: A few values per key, drawn once: rows draw from them, so types repeat and plans are used.
POOL = st.lists(st.one_of(VALUES, EDGES, SPAN_INTS, SPAN_INTS), min_size=1, max_size=4)


@st.composite
def sweeps(draw: Any) -> list[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]:
    names = {"parameter": ["p", "q"], "result": ["r", "s"], "metadata": ["m", Experiment.EXCEPTION]}
    pools = {k: draw(POOL) for role in names.values() for k in role}
    pools[Experiment.EXCEPTION] += [None, ValueError("bad")]
    rows = []
    for _ in range(draw(st.integers(1, 12))):
        parts = []
        for role in ("parameter", "result", "metadata"):
            # Mostly every key (the common case), sometimes one dropped.
            keys = [k for k in names[role] if draw(st.integers(0, 7)) > 0]
            parts.append({k: draw(st.sampled_from(pools[k])) for k in keys})
        rows.append(tuple(parts))
    return rows


def _outcome(check: RowCheck, use_full: bool, row: tuple[dict[str, Any], ...]) -> str | None:
    try:
        if use_full:
            check.full(*row)
        else:
            check(*row)
    except UnstorableValueError as exc:
        return str(exc)
    return None


@given(sweeps())
def test_plans_decide_as_the_full_check(rows: list[tuple[dict[str, Any], ...]]) -> None:
    quick, full = RowCheck(), RowCheck()
    for row in rows:
        assert _outcome(quick, False, row) == _outcome(full, True, row)
        assert quick.states == full.states
        assert quick.changes == full.changes


#: Values of one kind, edges included: a column that takes many of them widens, or refuses some.
FAMILIES = st.sampled_from([
    SPAN_INTS,
    SPANS,
    st.sampled_from([np.int8, np.int16, np.uint32, np.int64, np.uint64]).flatmap(
        lambda t: st.integers(int(np.iinfo(t).min), int(np.iinfo(t).max)).map(t)),
    st.one_of(st.text(max_size=3), st.sampled_from(["é", "a\x00b", "\ud800", ""])),
    st.one_of(
        st.datetimes(min_value=datetime(1, 1, 1)),
        st.sampled_from([datetime(1677, 9, 21), datetime(2262, 4, 12), datetime(2020, 1, 1, tzinfo=timezone.utc)]),
    ),
    VALUES,
])


@given(FAMILIES.flatmap(lambda values: st.lists(values, min_size=1, max_size=30)))
def test_one_column_decides_as_the_full_check(values: list[Any]) -> None:
    quick, full = RowCheck(), RowCheck()
    for v in values:
        row = ({"x": v}, {"y": 0.5}, {"m": "same"})
        assert _outcome(quick, False, row) == _outcome(full, True, row)
        assert quick.states == full.states
        assert quick.changes == full.changes


def test_a_repeated_signature_still_refuses_a_bad_value() -> None:
    """The hundredth row like the others is checked as the first was: a NUL, a too-big int, an aware date."""
    check = RowCheck()
    row = ({"x": 1}, {"y": "text", "t": datetime(2000, 1, 1)}, {"n": 3})
    for _ in range(100):
        check(*row)
    with pytest.raises(UnstorableValueError, match=r"result 'y' = 'a\\x00b'"):
        check({"x": 1}, {"y": "a\x00b", "t": datetime(2000, 1, 1)}, {"n": 3})
    with pytest.raises(UnstorableValueError, match=r"parameter 'x' = 2\*\*70|parameter 'x' = 1180591620717411303424"):
        check({"x": 2**70}, {"y": "ok", "t": datetime(2000, 1, 1)}, {"n": 3})
    with pytest.raises(UnstorableValueError, match="result 't'.*time zone"):
        check({"x": 1}, {"y": "ok", "t": datetime(2000, 1, 1, tzinfo=timezone.utc)}, {"n": 3})
    # Nothing refused changed a column; a row that widens one is accepted and says so.
    assert check.changes == []
    check({"x": 2**40}, {"y": "ok", "t": datetime(2000, 1, 1)}, {"n": 3})
    assert [k for k, _, _ in check.changes] == ["x"]
