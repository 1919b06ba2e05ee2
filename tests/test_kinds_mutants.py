"""The table of kinds' widening rules, checked value by value against what a user is promised.

docs/hdf5-layout.md and the module docstring of epyclab/notebooks/kinds.py
promise: a column keeps the dtype of its values (int8 stays int8, float32 stays
float32), widens only as far as it must to hold a new value exactly, and
refuses a value no dtype of the column's kind holds exactly, rather than
changing it. These tests fold values into a column state one by one
(``admit``, as ``addResult`` does) and compare each step with those promises;
benchmarks/mutation.sh kinds runs them against the planted bugs of kinds.py.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from epyclab.notebooks.kinds import (
    INT64_MAX,
    INT64_MIN,
    NUMERIC_DTYPES,
    NotStorable,
    admit,
    int_span,
    promote,
    state_of_value,
)

UINT64_MAX = 2**64 - 1
INT_DTYPES = [np.dtype(c) for c in ("i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8")]
FLOAT_DTYPES = [np.dtype(c) for c in ("f2", "f4", "f8", "c8", "c16")]
#: Mantissa bits (with the implicit one): a float of this dtype holds every int up to 2**bits exactly.
BITS = {"f2": 11, "f4": 24, "f8": 53, "c8": 24, "c16": 53}


def holds(dtype: np.dtype, v: int) -> bool:
    """Whether ``dtype`` holds the int ``v`` exactly (the definition a user has in mind)."""
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return info.min <= v <= info.max
    return abs(v) <= 2 ** BITS[dtype.str[1:]]


def column(values: list[Any]) -> Any:
    """The state of a column after ``values`` were added in order."""
    state = None
    for v in values:
        state = admit(state, v)
    return state


# ---- ints: as narrow as the column, wider only when they must be ---------------------------------------

edge_ints = st.sampled_from(
    sorted({s * 2**b + d for b in (7, 8, 11, 15, 16, 24, 31, 32, 53, 63) for s in (1, -1) for d in (-1, 0, 1)}
           | {0, 1, -1, UINT64_MAX, UINT64_MAX - 1})
)
python_ints = st.one_of(edge_ints, st.integers(INT64_MIN, UINT64_MAX))


@given(dtype=st.sampled_from(INT_DTYPES), v=python_ints)
def test_a_python_int_keeps_an_int_columns_dtype_when_it_fits_and_widens_it_least_when_not(dtype, v):
    start = state_of_value(np.array(0, dtype=dtype)[()])
    if holds(dtype, v):
        assert admit(start, v).dtype == dtype
        return
    # The narrowest int dtype of numpy's promotion holding both; none when uint64 meets a negative
    # int or a signed column meets an int beyond int64.
    want = [d for d in INT_DTYPES if holds(d, v) and holds(d, int(np.iinfo(dtype).min))
            and holds(d, int(np.iinfo(dtype).max))]
    if not want:
        with pytest.raises(NotStorable):
            admit(start, v)
        return
    got = admit(start, v).dtype
    assert got in want and got.itemsize == min(d.itemsize for d in want)
    assert np.array([v, np.iinfo(dtype).min, np.iinfo(dtype).max], dtype=got).tolist() == [
        v, int(np.iinfo(dtype).min), int(np.iinfo(dtype).max)]


@given(dtype=st.sampled_from(FLOAT_DTYPES), v=python_ints)
def test_a_float_column_takes_a_python_int_only_while_it_stays_exact(dtype, v):
    start = state_of_value(np.array(1.5, dtype=dtype)[()])
    if holds(dtype, v):
        assert admit(start, v).dtype == dtype
    else:
        with pytest.raises(NotStorable):
            admit(start, v)


@given(dtype=st.sampled_from(FLOAT_DTYPES), ints=st.lists(python_ints, min_size=1, max_size=4))
def test_ints_already_in_a_column_must_stay_exact_when_a_float_joins(dtype, ints):
    ints = [v for v in ints if INT64_MIN <= v <= INT64_MAX]
    if not ints:
        return
    state = column(ints)
    joined = np.array(1.5, dtype=dtype)[()]
    # An int64 column meeting a float becomes float64 (complex128 for a complex): 53 bits of mantissa.
    target = np.result_type(np.int64, dtype)
    if all(holds(target, v) for v in ints):
        after = admit(state, joined)
        assert after.dtype == target
        assert [int(x) for x in np.array(ints, dtype=after.dtype).real] == ints
    else:
        with pytest.raises(NotStorable):
            admit(state, joined)


@pytest.mark.parametrize(
    ("lo", "hi", "bits"),
    [(0, 0, 11), (0, 2**11, 11), (0, 2**11 + 1, 24), (-(2**11), 0, 11), (-(2**11) - 1, 0, 24),
     (0, 2**24, 24), (0, 2**24 + 1, 53), (-(2**53), 2**53, 53), (0, 2**53 + 1, 64), (-(2**53) - 1, 0, 64)],
)
def test_int_span_is_the_fewest_mantissa_bits_holding_the_range(lo, hi, bits):
    assert int_span(lo, hi) == bits


@given(a=st.sampled_from(sorted(NUMERIC_DTYPES, key=str)), b=st.sampled_from(sorted(NUMERIC_DTYPES, key=str)))
def test_promotion_keeps_both_dtypes_values_or_says_none_does(a, b):
    got = promote(a, b)
    assert got == promote(b, a)
    if (a.kind == "b") != (b.kind == "b") or (a.kind in "iu" and b.kind in "iu" and np.result_type(a, b).kind == "f"):
        assert got is None
        return
    assert got == (a if a == b else np.result_type(a, b))


# ---- datetimes: microseconds from year 1, nanoseconds only inside 1677..2262 ----------------------------

dates = st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31))
in_ns = st.datetimes(min_value=datetime(1677, 9, 22), max_value=datetime(2262, 4, 10))


@given(values=st.lists(st.one_of(dates, in_ns.map(lambda d: pd.Timestamp(d) + pd.Timedelta(nanoseconds=7))),
                       min_size=1, max_size=5))
def test_a_datetime_column_is_us_until_nanoseconds_come_and_refuses_dates_ns_cannot_hold(values):
    def fits(d: Any) -> bool:
        return datetime(1677, 9, 22) <= pd.Timestamp(d).to_pydatetime(warn=False).replace(tzinfo=None) < datetime(
            2262, 4, 11)

    nanos = [isinstance(v, pd.Timestamp) and v.nanosecond != 0 for v in values]
    try:
        state = column(values)
    except NotStorable:
        # Refused only where a nanosecond timestamp meets a date outside ns's range.
        assert any(nanos) and not all(fits(v) for v in values)
        return
    assert not (any(nanos) and not all(fits(v) for v in values))
    assert state.dtype == np.dtype("datetime64[ns]" if any(nanos) else "datetime64[us]")


@pytest.mark.parametrize("fmt", ["h5", "json"])
def test_an_int8_column_then_a_python_int_beyond_32_bits_widens_to_int64_in_every_format(fmt, tmp_path):
    # Refused before (numpy pairs int8 with uint64 as float64): the row's value was lost.
    from epyclab import Experiment, HDF5LabNotebook, JSONLabNotebook

    cls = HDF5LabNotebook if fmt == "h5" else JSONLabNotebook
    path = str(tmp_path / f"nb.{fmt}")
    nb = cls(path, create=True)
    for i, y in enumerate([np.int8(-3), 2**32, -(2**40)]):
        nb.addResult({Experiment.PARAMETERS: {"i": i}, Experiment.RESULTS: {"y": y},
                      Experiment.METADATA: {Experiment.STATUS: True}})
    nb.commit()
    nb.close()
    df = cls(path).dataframe()
    assert df["y"].dtype == np.dtype("int64")
    assert df["y"].tolist() == [-3, 2**32, -(2**40)]


# ---- cells: arrays keep shape, element dtype and values through storage ----------------------------------

cell_dtypes = st.sampled_from([np.dtype(c) for c in ("?", "i1", "u2", "i8", "f4", "f8", "c8")])
shapes = st.sampled_from([(0,), (1,), (3,), (2, 2), (1, 3, 2), ()])


@st.composite
def cells(draw: Any) -> Any:
    dtype, shape = draw(cell_dtypes), draw(shapes)
    flat = draw(st.lists(st.integers(0, 100), min_size=int(np.prod(shape)), max_size=int(np.prod(shape))))
    return np.array(flat, dtype=np.int64).astype(dtype).reshape(shape)


@given(values=st.lists(st.one_of(st.none(), cells()), min_size=1, max_size=5))
def test_array_cells_come_back_from_storage_with_their_shape_and_exact_elements(values):
    try:
        state = column(values)
    except NotStorable:
        # Refused only where bool elements meet numbers (nothing else here mixes).
        kinds = {v.dtype.kind == "b" for v in values if v is not None}
        assert kinds == {True, False}
        return
    if state.kind.name == "missing":
        return
    kind = state.kind
    stored = kind.to_storage(kind.column(values, state), state)
    back = kind.from_storage(stored)
    assert len(back) == len(values)
    for got, want in zip(back, values):
        if want is None:
            assert got is None
            continue
        assert got.shape == want.shape
        assert got.dtype == state.dtype
        assert got.tolist() == want.astype(state.dtype).tolist() == want.tolist()


@given(values=st.lists(st.one_of(st.none(), dates, in_ns.map(pd.Timestamp)), min_size=1, max_size=4))
def test_datetime_columns_come_back_from_storage_exactly(values):
    state = column(values)
    if state.kind.name == "missing":
        return
    kind = state.kind
    back = kind.from_storage(kind.to_storage(kind.column(values, state), state))
    got = [None if np.isnat(t) else pd.Timestamp(t) for t in back]
    assert got == [None if v is None else pd.Timestamp(v) for v in values]


# ---- a refused dtype names the fix ------------------------------------------------------------------------

SWAPPED = ">" if np.little_endian else "<"
STORABLE = ("only bool, int8..int64, uint8..uint64, float16/32/64 and complex64/128 can be stored "
            "(store a timedelta as a float of seconds, text as str)")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (np.array([1.0, 2.0], dtype=SWAPPED + "f8"),
         "its dtype {dtype.str} is byte-swapped; convert it with .astype('{native.str}')"),
        (np.array([1, 2], dtype=SWAPPED + "i4"),
         "its dtype {dtype.str} is byte-swapped; convert it with .astype('{native.str}')"),
        (np.longdouble(1.5),
         "its dtype is {dtype}, which no notebook format keeps exactly; convert it to float64 or complex128"),
        (np.array([1 + 2j], dtype=np.clongdouble),
         "its dtype is {dtype}, which no notebook format keeps exactly; convert it to float64 or complex128"),
        (np.array([1], dtype="m8[s]"), "its dtype is {dtype}; " + STORABLE),
        (np.array([b"ab"]), "its dtype is {dtype}; " + STORABLE),
    ],
)
def test_a_refused_dtype_is_told_how_to_convert_it(value, message):
    with pytest.raises(NotStorable) as refused:
        admit(None, value)
    dtype = value.dtype
    want = message.format(dtype=dtype, native=dtype.newbyteorder("="))
    # Alone, or after what a notebook stores (for a numpy scalar of a type no kind accepts).
    assert str(refused.value) == want or str(refused.value).endswith("numbers; " + want)


# ---- every edge, not a draw of them: the ints at each dtype's bounds, in every column ---------------------
# benchmarks/mutation.sh runs hypothesis with 10 examples, which rarely draw the one bound a planted bug
# moves; these tables try each of them.

EDGE_INTS = sorted({s * 2**b + d for b in (7, 8, 11, 15, 16, 24, 31, 32, 53, 63, 64) for s in (1, -1)
                    for d in (-1, 0, 1)} | {0, 1, -1})
IN_64_BITS = [v for v in EDGE_INTS if INT64_MIN <= v <= UINT64_MAX]


def least_int_dtype(dtype: np.dtype, v: int) -> np.dtype | None:
    """The narrowest int dtype holding every value of ``dtype`` and ``v`` (None: none does)."""
    want = [d for d in INT_DTYPES if holds(d, v) and holds(d, int(np.iinfo(dtype).min))
            and holds(d, int(np.iinfo(dtype).max))]
    return min(want, key=lambda d: (d.itemsize, d.kind != "i")) if want else None


@pytest.mark.parametrize("dtype", INT_DTYPES, ids=str)
def test_every_edge_python_int_in_an_int_column_keeps_its_value_in_the_least_wider_dtype(dtype):
    start = state_of_value(np.array(0, dtype=dtype)[()])
    for v in EDGE_INTS:
        want = dtype if holds(dtype, v) else least_int_dtype(dtype, v)
        if want is None:
            with pytest.raises(NotStorable) as refused:
                admit(start, v)
            # Only a value beyond 64 bits is told so; the others are told no int dtype holds both.
            assert ("does not fit in 64 bits" in str(refused.value)) == (not INT64_MIN <= v <= UINT64_MAX), v
            continue
        got = admit(start, v).dtype
        assert got == want or (got.itemsize == want.itemsize and holds(got, v)), (dtype, v, got)
        assert np.array([v], dtype=got).tolist() == [v]


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_every_edge_python_int_in_a_float_column_is_kept_exactly_or_refused_saying_why(dtype):
    start = state_of_value(np.array(1.5, dtype=dtype)[()])
    for v in EDGE_INTS:
        if holds(dtype, v):
            assert admit(start, v) == start, v
            continue
        with pytest.raises(NotStorable) as refused:
            admit(start, v)
        beyond = not INT64_MIN <= v <= UINT64_MAX
        assert ("does not fit in 64 bits" in str(refused.value)) == beyond, (v, str(refused.value))
        if not beyond:
            assert f"the column would become {dtype}" in str(refused.value)


def test_a_new_column_of_a_python_int_is_int64_up_to_its_top_then_uint64_then_refused():
    assert state_of_value(INT64_MIN).dtype == np.dtype("int64")
    assert state_of_value(INT64_MAX).dtype == np.dtype("int64")
    assert state_of_value(INT64_MAX + 1).dtype == np.dtype("uint64")
    assert state_of_value(UINT64_MAX).dtype == np.dtype("uint64")
    for v in (INT64_MIN - 1, UINT64_MAX + 1):
        with pytest.raises(NotStorable, match="does not fit in 64 bits"):
            state_of_value(v)


@pytest.mark.parametrize("v", IN_64_BITS)
def test_the_state_of_a_value_is_the_state_its_stored_column_reads_back_as(v):
    # A later session appends to what it reads: the column must mean the same there.
    state = state_of_value(v)
    stored = state.kind.to_storage(state.kind.column([v], state), state)
    assert state.kind.read_state(stored)[0] == state


PAIRS = [(a, b) for a in INT_DTYPES for b in INT_DTYPES]


@pytest.mark.parametrize(("a", "b"), PAIRS, ids=[f"{a}-{b}" for a, b in PAIRS])
def test_a_numpy_int_of_another_dtype_widens_the_column_to_hold_both_or_is_refused(a, b):
    for first in (np.iinfo(a).min, np.iinfo(a).max):
        for then in (np.iinfo(b).min, np.iinfo(b).max, 0):
            values = [a.type(first), b.type(then)]
            want = promote(a, b)
            if want is None:
                with pytest.raises(NotStorable):
                    column(values)
                continue
            state = column(values)
            assert state.dtype == want
            stored = state.kind.to_storage(state.kind.column(values, state), state)
            assert state.kind.from_storage(stored).tolist() == [int(first), int(then)]


@pytest.mark.parametrize("cells", [False, True], ids=["numbers", "array-cells"])
def test_ints_beyond_53_bits_already_in_a_column_refuse_a_float64(cells):
    # The second int has the column's dtype: the column's dtype is unchanged but its ints need 64 bits.
    def value(x: Any) -> Any:
        return np.array([x]) if cells else x

    state = column([value(np.int64(1)), value(np.int64(2**60 + 1))])
    with pytest.raises(NotStorable):
        admit(state, value(np.float64(0.5)))
    small = column([value(np.int64(1)), value(np.int64(2**40 + 1))])
    assert admit(small, value(np.float64(0.5))).dtype == np.dtype("float64")


def test_array_cells_of_a_wider_int_dtype_widen_the_column_and_keep_their_values():
    values = [np.array([1, -1], dtype=np.int8), np.array([300, -300], dtype=np.int16)]
    state = column(values)
    assert state.dtype == np.dtype("int16")
    stored = state.kind.to_storage(state.kind.column(values, state), state)
    back = state.kind.from_storage(stored)
    assert [c.tolist() for c in back] == [[1, -1], [300, -300]]
    assert [c.dtype for c in back] == [np.dtype("int16")] * 2


NS_EDGES = [datetime(1677, 9, 22), datetime(2262, 4, 11)]
NANO = pd.Timestamp("2000-01-01 00:00:00.000000001")


@pytest.mark.parametrize("first", [None, *NS_EDGES], ids=["NaT", "first-ns-day", "last-ns-day"])
def test_a_nanosecond_timestamp_joins_a_column_of_nat_or_of_dates_at_the_ends_of_its_range(first):
    state = column([pd.NaT if first is None else first, NANO])
    assert state.dtype == np.dtype("datetime64[ns]")
    values = [first, NANO]
    back = state.kind.from_storage(state.kind.to_storage(state.kind.column(values, state), state))
    assert [None if np.isnat(t) else pd.Timestamp(t) for t in back] == [
        None if first is None else pd.Timestamp(first), NANO]


@pytest.mark.parametrize("outside", [datetime(1677, 9, 21, 23, 59, 59, 999999), datetime(2262, 4, 12)])
def test_a_nanosecond_timestamp_never_joins_a_date_outside_its_range(outside):
    with pytest.raises(NotStorable):
        column([outside, NANO])
    with pytest.raises(NotStorable):
        column([NANO, outside])


def test_a_time_zone_aware_datetime_is_refused_after_naive_ones_too():
    from datetime import timezone

    state = column([datetime(2020, 1, 1)])
    with pytest.raises(NotStorable, match="time zone"):
        admit(state, datetime(2020, 1, 2, tzinfo=timezone.utc))


DATE_COLUMNS = [
    [datetime(1677, 9, 22)], [datetime(2262, 4, 11)], [datetime(1677, 9, 21, 23, 59, 59, 999999)],
    [datetime(2262, 4, 11, 0, 0, 0, 1)], [datetime(1, 1, 1), None], [None, datetime(9999, 12, 31, 23, 59, 59)],
    [pd.NaT], [NANO, None, datetime(2000, 1, 1)], [datetime(2020, 5, 17, 13, 1, 2, 345678)],
]


@pytest.mark.parametrize("values", DATE_COLUMNS, ids=str)
def test_a_datetime_column_reads_back_with_its_instants_and_the_state_that_wrote_it(values):
    state = column(values)
    kind = state.kind
    stored = kind.to_storage(kind.column(values, state), state)
    read, cells = kind.read_state(stored)
    # The same dtype and range: a later session widens (or refuses) as this one would.
    assert read == state
    back = kind.from_storage(stored)
    assert back.dtype == state.dtype
    assert [None if np.isnat(t) else pd.Timestamp(t) for t in back] == [
        None if v is None or v is pd.NaT else pd.Timestamp(v) for v in values]


@pytest.mark.parametrize("unit", ["us", "ns"])
def test_a_column_of_missing_cells_that_becomes_a_datetime_column_is_all_nat(unit):
    missing = state_of_value(None)
    target = state_of_value(NANO if unit == "ns" else datetime(2000, 1, 1))
    cells = target.kind.cast(missing.kind.column([None, None], missing), missing, target)
    assert cells.dtype == np.dtype(f"datetime64[{unit}]") and np.isnat(cells).all()
    # A us column becoming ns keeps its instants.
    us = state_of_value(datetime(2000, 1, 1, 0, 0, 0, 7))
    col = us.kind.column([datetime(2000, 1, 1, 0, 0, 0, 7)], us)
    assert pd.Timestamp(us.kind.cast(col, us, target)[0]) == pd.Timestamp("2000-01-01 00:00:00.000007")


@pytest.mark.parametrize("values", [[1], [[1, 2], [3, 4]], [True], [2.5], [], [[]], [1, True], [1, "a"]],
                         ids=str)
def test_a_list_is_stored_with_its_element_dtype_or_refused(values):
    from epyclab.notebooks.kinds import KINDS

    kind = KINDS["list"]
    mixed = any(isinstance(x, bool) for x in values) and not all(isinstance(x, bool) for x in values)
    if mixed or "a" in values:
        with pytest.raises(NotStorable):
            state_of_value(values)
        return
    state = state_of_value(values)
    assert state.dtype == (None if np.size(values) == 0 else np.asarray(values).dtype)
    back = kind.from_storage(kind.to_storage(kind.column([values], state), state))
    assert back.tolist() == [values] and [type(x) for x in np.ravel(back[0]).tolist()] == [
        type(x) for x in np.ravel(values).tolist()]


def test_an_array_of_a_dtype_no_format_keeps_is_refused_saying_why():
    with pytest.raises(NotStorable, match="timedelta"):
        state_of_value(np.array([1], dtype="m8[s]"))


def test_nat_is_a_missing_date_in_a_datetime_column_and_refused_in_any_other():
    state = column([datetime(2020, 1, 1), pd.NaT, None])
    back = state.kind.from_storage(state.kind.to_storage(state.kind.column([datetime(2020, 1, 1), pd.NaT, None],
                                                                           state), state))
    assert pd.Timestamp(back[0]) == pd.Timestamp(2020, 1, 1) and np.isnat(back[1:]).all()
    for first in (1, 2.5, "text", np.array([1])):
        with pytest.raises(NotStorable):
            column([first, pd.NaT])


@pytest.mark.parametrize("dtype", [np.dtype(c) for c in ("?", "i1", "u2", "i8", "f4", "c8")], ids=str)
def test_array_cells_with_missing_ones_go_through_an_hdf5_file_with_their_dtype_shape_and_values(dtype, tmp_path):
    from epyclab import Experiment, HDF5LabNotebook

    cells = [np.arange(6).astype(dtype).reshape(2, 3), None, np.ones(1, dtype=dtype), None]
    path = str(tmp_path / "cells.h5")
    nb = HDF5LabNotebook(path, create=True)
    for i, c in enumerate(cells):
        nb.addResult({Experiment.PARAMETERS: {"i": i}, Experiment.RESULTS: {"a": c},
                      Experiment.METADATA: {Experiment.STATUS: True}})
    nb.commit()
    nb.close()
    got = HDF5LabNotebook(path).dataframe().sort_values("i")["a"].tolist()
    for g, want in zip(got, cells):
        if want is None:
            assert g is None
        else:
            assert (g.dtype, g.shape, g.tolist()) == (dtype, want.shape, want.tolist())
