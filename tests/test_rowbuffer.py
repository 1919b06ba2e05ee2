"""RowBuffer: a result set's rows and columns, alone (no locks, no notebook, no pandas needed to count)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from epyclab.errors import ResultsStructureException, UnstorableValueError
from epyclab.experiment import Experiment
from epyclab.notebooks.columns import MISSING
from epyclab.notebooks.kinds import KINDS, ColumnState
from epyclab.notebooks.rowbuffer import RowBuffer, missing_cell
from epyclab.notebooks.rowcheck import RowCheck
from epyclab.notebooks.stored import StoredRows


def test_rows_are_appended_by_column_and_role():
    rows = RowBuffer()
    rows.add({"a": 1}, {"x": 1.5}, {"m": "one"})
    rows.add({"a": 2}, {"x": 2.5}, {"m": "two"})
    assert len(rows) == 2 and rows.numberOfBuffered() == 2 and rows.numberOfLoaded() == 0
    assert rows.roles() == {"parameter": ["a"], "result": ["x"], "metadata": ["m"]}
    assert rows.names() == ["a", "x", "m"] and rows.roleSizes() == (1, 1, 1)
    assert rows.bufferedRows(0) == {"a": [1, 2], "x": [1.5, 2.5], "m": ["one", "two"]}
    assert rows.bufferedRows(1) == {"a": [2], "x": [2.5], "m": ["two"]}


def test_a_new_column_is_missing_in_earlier_rows_and_an_absent_key_in_later_ones():
    rows = RowBuffer()
    rows.add({"a": 1}, {}, {})
    rows.add({"a": 2}, {"x": 1.0}, {})
    rows.add({"a": 3}, {}, {})
    assert rows.bufferedRows(0) == {"a": [1, 2, 3], "x": [MISSING, 1.0, MISSING]}
    assert rows.missingMask("x").tolist() == [True, False, True]
    assert rows.missingMask("a").tolist() == [False, False, False]


def test_add_reports_the_column_states_a_row_changed():
    rows = RowBuffer()
    first = list(rows.add({"a": 1}, {"x": 1}, {}))
    assert {name for name, old, _ in first} == {"a", "x"} and all(old is None for _, old, _ in first)
    assert list(rows.add({"a": 2}, {"x": 2}, {})) == []  # same kinds: nothing changed
    widened = list(rows.add({"a": 3}, {"x": 2.5}, {}))
    assert [(name, new.kind.name) for name, _, new in widened] == [("x", "float")]
    assert rows.states()["x"].kind is KINDS["float"]


def test_a_key_in_two_roles_is_refused_and_nothing_is_added():
    rows = RowBuffer()
    rows.add({"a": 1}, {"x": 1.0}, {})
    with pytest.raises(ResultsStructureException, match="'a' is a parameter column"):
        rows.add({}, {"a": 2.0}, {})
    with pytest.raises(ResultsStructureException, match="both a parameter and a result"):
        rows.add({"b": 1}, {"b": 1.0}, {})
    with pytest.raises(ResultsStructureException, match="must be strings"):
        rows.add({1: 1}, {}, {})
    assert len(rows) == 1 and rows.names() == ["a", "x"]


def test_an_unstorable_value_is_refused_and_nothing_is_added():
    rows = RowBuffer()
    rows.add({"a": 1}, {"x": 1.0}, {})
    with pytest.raises(UnstorableValueError, match="'x'"):
        rows.add({"a": 2}, {"x": {"a": "dict"}}, {})
    assert len(rows) == 1 and rows.bufferedRows(0) == {"a": [1], "x": [1.0]}


def test_exceptions_are_kept_as_their_text_and_none_as_a_missing_cell():
    rows = RowBuffer()
    rows.add({"a": 1}, {}, {Experiment.EXCEPTION: ValueError("bad")})
    rows.add({"a": 2}, {}, {Experiment.EXCEPTION: None})
    assert rows.buffered(Experiment.EXCEPTION) == ["ValueError: bad", None]
    assert rows.missingMask(Experiment.EXCEPTION).tolist() == [False, True]


def test_a_trial_check_changes_nothing():
    rows = RowBuffer()
    rows.add({"a": 1}, {}, {})
    trial = rows.trialCheck()
    trial({"a": 2.5}, {"new": "text"}, {})
    assert rows.states()["a"].kind is KINDS["int"] and "new" not in rows.states()


def test_loaded_rows_come_first_and_widen_with_the_column():
    rows = RowBuffer()
    rows.add({"a": 1}, {"x": 1}, {})  # gives the check the loaded columns' states
    stored = StoredRows(2, {"a": np.array([1, 2]), "x": np.array([10, 0])})
    rows.load(stored, {"parameter": ["a"], "result": ["x"]}, {"x": np.array([False, True])})
    assert len(rows) == 2 and rows.numberOfLoaded() == 2 and rows.numberOfBuffered() == 0
    assert rows.loaded() is stored
    with pytest.raises(ValueError, match="loaded"):
        rows.bufferedRows(1)
    rows.add({"a": 3}, {"x": 0.5}, {})
    assert rows.bufferedRows(2) == {"a": [3], "x": [0.5]}
    float_state = rows.states()["x"]
    assert not rows.loadedAsStored("x", float_state)
    widened = rows.loadedColumn("x", float_state)
    assert widened[0] == 10.0 and np.isnan(widened[1])  # the missing int cell becomes NaN
    assert rows.missingMask("x").tolist() == [False, True, False]
    assert rows.loadedAsStored("a", rows.states()["a"])


def test_missing_cells_are_none_missing_nat_and_nan():
    assert all(missing_cell(v) for v in (None, MISSING, float("nan"), np.float32("nan"), pd.NaT))
    assert not any(missing_cell(v) for v in (0, 0.0, "", False))


def test_set_states_widens_the_columns():
    rows = RowBuffer()
    rows.add({"a": 1}, {}, {})
    states = dict(rows.states())
    states["a"] = ColumnState(KINDS["float"], np.dtype(np.float64))
    rows.setStates(states)
    assert rows.states()["a"].kind is KINDS["float"]


_names = st.sampled_from(["p", "q", "r"])
_row = st.tuples(
    st.dictionaries(st.sampled_from(["a", "b"]), st.integers(-5, 5)),
    st.dictionaries(_names, st.one_of(st.floats(allow_nan=False), st.none())),
)


@settings(max_examples=100)
@given(st.lists(_row, max_size=12))
def test_every_row_reads_back_cell_by_cell_whatever_keys_each_row_has(data):
    rows = RowBuffer()
    for params, res in data:
        rows.add(params, res, {})
    assert len(rows) == len(data)
    got = rows.bufferedRows(0)
    for name, cells in got.items():
        assert len(cells) == len(data)
        for i, (params, res) in enumerate(data):
            given_value = {**params, **res}.get(name, MISSING)
            assert cells[i] is given_value or cells[i] == given_value
        assert rows.missingMask(name).tolist() == [missing_cell({**p, **r}.get(name)) for p, r in data]


@settings(max_examples=60)
@given(rows=st.lists(st.sets(st.sampled_from(["a", "b", "c"])), min_size=1, max_size=12))
def test_rows_lacking_columns_are_padded_however_their_keys_repeat(rows):
    # Rows with the keys of the row before take the quick path, padded where they lack a column.
    buf = RowBuffer()
    for i, keys in enumerate(rows):
        buf.add({"i": i}, {k: float(i) for k in sorted(keys)}, {})
    seen = [k for k in ["a", "b", "c"] if any(k in keys for keys in rows)]
    assert set(buf.resultNames()) == set(seen)
    for k in seen:
        assert buf.buffered(k) == [float(i) if k in keys else MISSING for i, keys in enumerate(rows)]
    assert buf.buffered("i") == list(range(len(rows)))


_VALUES = st.one_of(st.integers(-(2**70), 2**70), st.floats(allow_nan=False), st.text(max_size=3), st.none(),
                    st.booleans())


@settings(max_examples=150, deadline=None)
@given(rows=st.lists(st.tuples(st.dictionaries(st.sampled_from("ab"), _VALUES, max_size=2), st.booleans()),
                     max_size=12))
def test_the_trial_check_kept_between_rows_decides_as_a_fresh_one(rows):
    """The trial check is given again while the columns stand (it keeps its plans): whatever it admitted or
    widened in trial, and whichever rows were then added, it decides every row as one made afresh would."""
    buffer = RowBuffer()
    for results, add in rows:
        fresh = RowCheck(buffer.states())
        before = dict(buffer.states())
        outcomes = []
        for check in (fresh, buffer.trialCheck()):
            try:
                check({"p": 1}, results, {})
                outcomes.append("ok")
            except UnstorableValueError as exc:
                outcomes.append(str(exc))
        assert outcomes[0] == outcomes[1]
        assert buffer.states() == before  # the trials changed nothing here
        if add and outcomes[0] == "ok":
            buffer.add({"p": 1}, results, {})


def _cells_so_far(added: list[dict[str, object]], name: str) -> list[object]:
    return [row.get(name, MISSING) for row in added]


@settings(max_examples=80, deadline=None)
@given(steps=st.lists(st.one_of(st.sets(st.sampled_from(["a", "b"])), st.sampled_from(["read", "rows", "mask"])),
                      max_size=25))
def test_reads_between_rows_see_every_row_added_before_them(steps):
    # Rows with the last row's keys are kept as rows and moved into the columns later: any read in
    # between (a column, the rows from some point, the missing cells) sees them all, in order.
    buf = RowBuffer()
    added: list[dict[str, object]] = []
    for i, step in enumerate(steps):
        if isinstance(step, (set, frozenset)):
            res = {k: float(i) for k in sorted(step)}
            buf.add({"i": i}, res, {})
            added.append({"i": i, **res})
            continue
        names = buf.names()
        if step == "read":
            for name in names:
                assert buf.buffered(name) == _cells_so_far(added, name)
        elif step == "rows":
            got = buf.bufferedRows(len(added) // 2)
            assert got == {name: _cells_so_far(added, name)[len(added) // 2:] for name in names}
        else:
            for name in names:
                assert buf.missingMask(name).tolist() == [c is MISSING for c in _cells_so_far(added, name)]
    assert len(buf) == len(added)
    for name in buf.names():
        assert buf.buffered(name) == _cells_so_far(added, name)


def test_thousands_of_rows_with_the_same_keys_then_others_read_back_in_order():
    # More rows with the same keys than are kept as rows at once, a failure among them (its exception
    # kept as text), then rows with a new column and rows without one.
    buf = RowBuffer()
    meta = {Experiment.STATUS: True, Experiment.EXCEPTION: ""}
    for i in range(2500):
        failed = i == 1500
        buf.add({"i": i}, {"y": 2 * i}, {Experiment.STATUS: not failed,
                                          Experiment.EXCEPTION: ValueError("bad i") if failed else ""})
    buf.add({"i": 2500}, {"y": 5000, "z": 1.5}, meta)
    for i in range(2501, 2600):
        buf.add({"i": i}, {"y": 2 * i}, meta)
    assert len(buf) == 2600
    assert buf.buffered("i") == list(range(2600))
    assert buf.buffered("y") == [2 * i for i in range(2600)]
    assert buf.buffered("z") == [MISSING] * 2500 + [1.5] + [MISSING] * 99
    exceptions = buf.buffered(Experiment.EXCEPTION)
    assert exceptions[1500] == "ValueError: bad i"
    assert exceptions[:1500] == [""] * 1500 and exceptions[1501:] == [""] * 1099
    assert buf.buffered(Experiment.STATUS)[1500] is False
