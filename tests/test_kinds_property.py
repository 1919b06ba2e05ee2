"""Property: whatever addResult accepts reads back equal, in value and dtype, in every format.

Hypothesis generates sweeps whose values mix every kind across rows and
sessions (numpy ints of every width and sign, Python ints beyond 64 bits, NaN
and infinities, empty and non-ASCII text, nanosecond timestamps, dates from
year 1 to 9999, empty, nested and ragged lists, arrays of several shapes and
dtypes, None, and values no format can store). Each row is added to an
in-memory notebook, an HDF5 notebook and a JSON notebook; the files are closed
and reopened for writing between sessions. Then:

* a row is accepted by all three notebooks or refused by all three, at
  addResult, with an error naming the key, and ``checkResult`` says so first;
* every file reopens for writing, and reads back the in-memory notebook's
  DataFrame exactly: same columns, dtypes, values, and cell types;
* a column's dtype is the dtype of the user's values (float32 stays float32)
  when they all had one; each stored value is the user's value, converted
  only as its column's dtype says.
"""

from __future__ import annotations

import math
from datetime import date, datetime
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from epyclab import Experiment, HDF5LabNotebook, JSONLabNotebook, LabNotebook, UnstorableValueError

KEYS = ["a", "b", "c"]
_INT_DTYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64]


@st.composite
def numpy_ints(draw: Any) -> Any:
    t = draw(st.sampled_from(_INT_DTYPES))
    info = np.iinfo(t)
    return t(draw(st.integers(int(info.min), int(info.max))))


def timestamps_ns() -> Any:
    # pandas Timestamps with nanoseconds, within datetime64[ns]'s range.
    return st.integers(-(2**62), 2**62).map(lambda n: pd.Timestamp(n, unit="ns"))


def arrays() -> Any:
    dtypes = st.sampled_from([np.int8, np.int32, np.uint64, np.float32, np.float64, np.complex64, np.bool_])
    return dtypes.flatmap(
        lambda d: hnp.arrays(d, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=3))
    )


#: Every dtype numpy has: its scalar types (aliases too), hypothesis's scalar, byte and text dtypes
#: (datetime64 and timedelta64 of every unit), extended precision, byte-swapped and record dtypes.
_FIXED = sorted({np.dtype(t) for t in np.sctypeDict.values() if np.dtype(t).itemsize}, key=str)
EVERY_DTYPE = st.one_of(
    st.sampled_from(_FIXED + [np.dtype(">f8"), np.dtype(">i4"), np.dtype(">c8"), np.dtype([("x", "i4")])]),
    hnp.scalar_dtypes(),
    hnp.byte_string_dtypes(max_len=3),
    hnp.unicode_string_dtypes(max_len=3),
)


def numpy_scalars() -> Any:
    # from_dtype draws Python values for many dtypes: make each a numpy scalar of its dtype.
    return EVERY_DTYPE.flatmap(lambda d: hnp.from_dtype(d).map(lambda x: np.array(x, dtype=d)[()]))


def arrays_of_every_dtype() -> Any:
    return EVERY_DTYPE.flatmap(lambda d: hnp.arrays(d, hnp.array_shapes(min_dims=0, max_dims=2, max_side=2)))


#: Ints around the largest a float16, float32 and float64 keep exactly, and floats to meet them.
EDGE_INTS = st.one_of(
    st.tuples(st.sampled_from([53, 24, 11, 62]), st.sampled_from([1, 0, -1]), st.booleans()).map(
        lambda t: ((1 << t[0]) + t[1]) * (-1 if t[2] else 1)),
    st.sampled_from([np.int64(2**62 + 1), np.uint64(2**64 - 1), np.int32(2**24 + 1), np.int16(2**11 + 1),
                     np.int64(2**53 + 1), np.uint32(2**32 - 1)]),
)
EDGE_NUMBERS = st.one_of(
    EDGE_INTS,
    st.sampled_from([0.5, np.float32(0.5), np.float16(0.5), 1j, np.complex64(1j), None]),
    st.one_of(EDGE_INTS.map(lambda n: [int(n)]), st.just([0.5])),
)

NUMBERS = st.one_of(st.integers(-5, 5), st.floats(allow_nan=False, allow_infinity=False, width=32), st.booleans())

VALUES = st.one_of(
    st.none(),
    numpy_ints(),
    st.integers(-(2**70), 2**70),
    st.integers(-3, 3),
    st.floats(),
    st.floats(width=32).map(np.float32),
    st.floats(width=16).map(np.float16),
    st.complex_numbers(allow_nan=True, allow_infinity=True),
    st.complex_numbers(width=64, allow_nan=False, allow_infinity=False).map(np.complex64),
    st.booleans(),
    st.booleans().map(np.bool_),
    st.text(max_size=5),
    st.sampled_from(["", "é✓ 日本", "a\x00b", "\ud800"]),
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59, 999999)),
    timestamps_ns(),
    st.just(pd.NaT),
    st.lists(NUMBERS, max_size=3),
    st.lists(st.lists(st.integers(-9, 9), min_size=2, max_size=2), max_size=2),
    st.lists(st.lists(st.integers(-9, 9), max_size=2), min_size=2, max_size=2),  # often ragged
    st.tuples(st.integers(-9, 9), st.floats(allow_nan=False, width=32)),
    # Lists, nested lists and tuples of fractions: an earlier empty cell must not decide their elements.
    st.lists(st.floats(-4, 4).map(lambda x: x + 0.25), min_size=1, max_size=3),
    st.lists(st.lists(st.floats(-4, 4).map(lambda x: x + 0.5), min_size=1, max_size=1), min_size=1, max_size=1),
    st.tuples(st.floats(-4, 4).map(lambda x: x + 0.5)),
    st.sampled_from([[], [[]], (), [True, 2], ["x"], [None]]),
    arrays(),
    numpy_scalars(),
    arrays_of_every_dtype(),
    st.sampled_from([{"k": 1}, {1, 2}, object(), date(2020, 1, 2), np.longdouble(1), np.array(["s"]),
                     np.ma.masked_array([1, 2], mask=[0, 1]), np.array([1, "x"], dtype=object)]),
)


#: Cells only (lists, tuples, arrays, their empty forms, None): columns where an empty cell comes first.
CELLS = st.one_of(
    st.none(),
    st.sampled_from([[], (), [[]], np.zeros(0)]),
    st.lists(st.one_of(st.integers(-9, 9), st.floats(-4, 4).map(lambda x: x + 0.25)), max_size=3),
    st.lists(st.lists(st.floats(-4, 4).map(lambda x: x + 0.5), min_size=1, max_size=1), min_size=1, max_size=1),
    st.tuples(st.floats(-4, 4).map(lambda x: x + 0.5)),
    st.tuples(),
    st.lists(st.booleans(), max_size=2),
    arrays(),
)


@st.composite
def rows(draw: Any, values: Any = VALUES) -> dict[str, Any]:
    keys = draw(st.lists(st.sampled_from(KEYS), unique=True, max_size=len(KEYS)))
    ok = draw(st.booleans().map(lambda b: b or draw(st.integers(0, 4)) > 0))
    return {
        Experiment.PARAMETERS: {"p": draw(st.one_of(st.integers(0, 3), st.sampled_from(["x", "y"])))},
        Experiment.METADATA: {Experiment.STATUS: ok, Experiment.EXCEPTION: "" if ok else "boom"},
        Experiment.RESULTS: {k: draw(values) for k in keys} if ok else {},
    }


def sessions_of(values: Any) -> Any:
    return st.lists(st.lists(rows(values), min_size=1, max_size=4), min_size=1, max_size=3)


SESSIONS = sessions_of(VALUES)


def _add_everywhere(notebooks: list[Any], rc: dict[str, Any]) -> bool:
    """Add ``rc`` to every notebook; True if accepted. All must agree, and checkResult must foresee it."""
    foreseen = notebooks[0].current().checkResult(rc)
    verdicts = []
    for nb in notebooks:
        try:
            nb.addResult(rc)
            verdicts.append(None)
        except UnstorableValueError as exc:
            verdicts.append(str(exc))
    assert len({v is None for v in verdicts}) == 1, verdicts
    accepted = verdicts[0] is None
    assert (foreseen is None) == accepted, (foreseen, verdicts)
    if not accepted:
        text = verdicts[0]
        assert any(f"'{k}'" in text for k in [*KEYS, "p"]), text
        assert verdicts[1:] == verdicts[:1] * (len(verdicts) - 1)
    return accepted


def _assert_same_cell(x: Any, y: Any, what: Any) -> None:
    """``x`` is ``y``: same type all the way down (a list of floats is not a list of bools), same values."""
    assert type(x) is type(y), (what, x, y)
    if isinstance(y, np.ndarray):
        assert x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y, equal_nan=True), (what, x, y)
    elif isinstance(y, (list, tuple)):
        assert len(x) == len(y), (what, x, y)
        for a, b in zip(x, y):
            _assert_same_cell(a, b, what)
    elif y is not None:
        assert x == y or (x != x and y != y), (what, x, y)


def _assert_same_frame(got: pd.DataFrame, want: pd.DataFrame, what: str) -> None:
    pd.testing.assert_frame_equal(got, want, obj=what)
    for name in want.columns:
        if want[name].dtype != object:
            continue
        for x, y in zip(got[name], want[name]):
            _assert_same_cell(x, y, (what, name))


def _leaves(v: Any) -> list[Any]:
    return [x for c in v for x in _leaves(c)] if isinstance(v, (list, tuple)) else [v]


def _natural_dtype(v: Any) -> np.dtype | None:
    """The dtype a value asks for, when it alone says (numpy scalars, Python floats, bools)."""
    if isinstance(v, np.generic) and not isinstance(v, np.str_):  # numpy text is a str column
        return v.dtype
    if type(v) is float:
        return np.dtype(np.float64)
    if type(v) is complex:
        return np.dtype(np.complex128)
    if type(v) is bool:
        return np.dtype(bool)
    return None


def _assert_exact(cell: Any, v: Any, key: str) -> None:
    """``cell`` holds ``v`` exactly, compared as Python numbers (NaN holds NaN)."""
    x = cell.item() if isinstance(cell, np.generic) else cell
    y = v.item() if isinstance(v, np.generic) else v
    assert x == y or (x != x and y != y), (key, cell, v)


def _assert_user_values_kept(frame: pd.DataFrame, added: list[dict[str, Any]]) -> None:
    """Each column's dtype is its values' own dtype when they share one; each value is kept as its column says."""
    results = [rc[Experiment.RESULTS] for rc in added]
    for key in KEYS:
        if key not in frame.columns:
            continue
        col = frame[key]
        given_values = [(i, r[key]) for i, r in enumerate(results) if key in r and r[key] is not None]
        natural = {_natural_dtype(v) for _, v in given_values}
        if len(natural) == 1 and None not in natural:
            assert col.dtype == natural.pop(), (key, col.dtype, given_values)
        for i, v in given_values:
            cell = col.iloc[i]
            if isinstance(v, (np.ndarray, list, tuple)):
                assert np.array_equal(np.asarray(cell), np.asarray(v), equal_nan=v is not None and np.asarray(
                    v).dtype.kind in "fc"), (key, cell, v)
                assert np.shape(cell) == np.shape(v)
                if isinstance(v, (list, tuple)):
                    # Elements keep their kind: numbers never come back as bools, fractions never as ints.
                    for x, y in zip(_leaves(cell), _leaves(v)):
                        assert isinstance(x, bool) == isinstance(y, (bool, np.bool_)), (key, cell, v)
                        _assert_exact(x, y, key)
                else:
                    for x, y in zip(np.asarray(cell).reshape(-1).tolist(), v.reshape(-1).tolist()):
                        _assert_exact(x, y, key)
            elif v is pd.NaT:
                assert cell is pd.NaT or cell is None, (key, cell, v)  # a missing datetime
            elif isinstance(v, datetime):
                assert pd.Timestamp(cell) == pd.Timestamp(v), (key, cell, v)
            elif isinstance(v, str):
                assert cell == v
            else:
                # Compared as Python numbers, exactly: 2**53+1 is not 2**53 (numpy would compare them
                # as float64 and call them equal).
                _assert_exact(cell, v, key)


@given(sessions=SESSIONS)
def test_every_format_keeps_what_addresult_accepts(sessions, tmp_path_factory):
    _check_sessions(sessions, tmp_path_factory)


@given(sessions=sessions_of(st.one_of(st.none(), numpy_scalars(), arrays_of_every_dtype())))
def test_numpy_values_of_every_dtype(sessions, tmp_path_factory):
    # Every numpy dtype, as scalars and arrays: each is kept through every format, or refused at addResult.
    _check_sessions(sessions, tmp_path_factory)


@given(sessions=sessions_of(EDGE_NUMBERS))
def test_ints_never_round_when_floats_join(sessions, tmp_path_factory):
    # Ints at the edge of what each float keeps exactly, meeting floats in one column across sessions.
    _check_sessions(sessions, tmp_path_factory)


@given(sessions=sessions_of(st.one_of(
    st.none(), st.just(pd.NaT), timestamps_ns(),
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59, 999999)),
)))
def test_datetime_columns_with_missing_dates(sessions, tmp_path_factory):
    # NaT and None are missing datetimes, first or later, in any session.
    _check_sessions(sessions, tmp_path_factory)


@given(sessions=sessions_of(CELLS))
def test_cell_columns_keep_their_elements(sessions, tmp_path_factory):
    # Cells only, so that empty cells often come before the ones that say the element dtype.
    _check_sessions(sessions, tmp_path_factory)


def _check_sessions(sessions: list[list[dict[str, Any]]], tmp_path_factory: Any) -> None:
    d = tmp_path_factory.mktemp("nb")
    paths = {HDF5LabNotebook: d / "nb.h5", JSONLabNotebook: d / "nb.json"}
    memory = LabNotebook()
    files = {cls: cls(path, create=True) for cls, path in paths.items()}
    added: list[dict[str, Any]] = []
    try:
        for rows_of_session in sessions:
            for rc in rows_of_session:
                if _add_everywhere([memory, *files.values()], rc):
                    added.append(rc)
            # Close and reopen for writing: it must always work, and show what memory shows.
            for cls in files:
                files[cls].close()
                files[cls] = cls(paths[cls])
                _assert_same_frame(files[cls].dataframe(only_successful=False),
                                   memory.dataframe(only_successful=False), cls.__name__)
        want = memory.dataframe(only_successful=False)
        assert len(want) == len(added)
        _assert_user_values_kept(want, added)
        for cls in files:
            files[cls].addResult({
                Experiment.PARAMETERS: {},
                Experiment.METADATA: {Experiment.STATUS: False, Experiment.EXCEPTION: "extended"},
                Experiment.RESULTS: {},
            })
            files[cls].close()
            files[cls] = cls(paths[cls], readonly=True)
            got = files[cls].dataframe(only_successful=False)
            # The extension's row may bring the status columns to a set that had no row.
            head = got.iloc[: len(want)].reset_index(drop=True).reindex(columns=want.columns)
            _assert_same_frame(head, want, cls.__name__)
            assert len(got) == len(want) + 1
    finally:
        for nb in files.values():
            nb.close()


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_nan_and_infinities_in_float32_columns(value, tmp_path):
    for cls, name in ((HDF5LabNotebook, "nb.h5"), (JSONLabNotebook, "nb.json")):
        nb = cls(tmp_path / name, create=True)
        nb.addResult({Experiment.PARAMETERS: {}, Experiment.METADATA: {},
                      Experiment.RESULTS: {"f": np.float32(value)}})
        nb.close()
        col = cls(tmp_path / name, readonly=True).dataframe()["f"]
        assert col.dtype == np.float32
        assert (math.isnan(col[0]) and math.isnan(value)) or col[0] == value
