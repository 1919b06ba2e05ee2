"""A sweep's parameters are checked before it runs: once per distinct value, with the answer of a check per point.

check_points checks each distinct value once in its column (a factorial design
repeats each value at many points) and, if that refuses, checks point by point
to name the first point that cannot be stored. A user relies on the answer
being the one the point-by-point check gives: the same points refused with the
same message, and no sweep started whose parameters a row could not keep.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from test_kinds_property import VALUES

from epyclab import Experiment, LabNotebook, ResultsStructureException, UnstorableValueError
from epyclab.notebooks.resultsdicts import _check_each, check_points
from epyclab.notebooks.rowbuffer import RowBuffer

NAMES = st.sampled_from(["a", "b", Experiment.STATUS])
# Few distinct values, so that points repeat them as a design's do; and any value at all.
SMALL = st.sampled_from([0, 1, 2**40, 2**70, -1, 0.5, 1.0, float("nan"), "x", "é", "\x00", True, False, None])
POINTS = st.lists(st.dictionaries(NAMES, st.one_of(SMALL, VALUES), min_size=1, max_size=3), min_size=1, max_size=12)


def outcome(check: Any, rows: Any, points: list[dict[str, Any]]) -> tuple[Any, str]:
    try:
        check(rows, points, "the set")
    except (UnstorableValueError, ResultsStructureException) as exc:
        return type(exc), str(exc)
    return None, ""


@settings(max_examples=200)
@given(st.lists(st.one_of(SMALL, VALUES), max_size=3), POINTS)
# Equal values of other types: a bool after an int (refused), a float after an int (kept), tuples of each.
@example([], [{"a": 1}, {"a": True}])
@example([], [{"a": True}, {"a": 1}])
@example([], [{"a": 1}, {"a": 1.0}, {"a": 2**70}])
@example([], [{"a": (1, 2)}, {"a": (1.0, 2.0)}, {"a": (True, 2)}])
@example([1], [{"a": 0.5}, {"a": 0.5, "b": 1}, {"a": 2**70}])
def test_checking_each_distinct_value_once_answers_as_checking_every_point(
    earlier: list[Any], points: list[dict[str, Any]]
) -> None:
    rows = RowBuffer()
    # Rows already stored give the columns their kinds (when they could be stored at all).
    for v in earlier:
        try:
            rows.add({"a": v}, {}, {})
        except (UnstorableValueError, ResultsStructureException):
            pass
    assert outcome(check_points, rows, points) == outcome(_check_each, rows, points)


def test_a_factorial_sweep_refused_names_its_first_bad_point() -> None:
    points = [{"n": n, "s": s} for n in [1, 2, "three", 4] for s in [0, 1]]
    with pytest.raises(UnstorableValueError, match=r"point 5 of 8 \(\{'n': 'three', 's': 0\}\)"):
        LabNotebook().current().checkParameters(points)
