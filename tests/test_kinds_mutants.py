"""The table of kinds' widening rules, checked value by value against what a user is promised.

docs/hdf5-layout.md and the module docstring of epyclab/notebooks/kinds.py
promise: a column keeps the dtype of its values (int8 stays int8, float32 stays
float32), widens only as far as it must to hold a new value exactly, and
refuses a value no dtype of the column's kind holds exactly, rather than
changing it. These tests fold values into a column state one by one
(``admit``, as ``addResult`` does) and compare each step with those promises;
benchmarks/mutation.py runs them against the planted bugs of kinds.py.
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
