"""dtypes: epyc's numpy type API, from the table of kinds, alone."""

from __future__ import annotations

import math
from datetime import datetime

import numpy as np
import pandas as pd
import pytest

from epyclab.errors import UnstorableValueError
from epyclab.notebooks import dtypes
from epyclab.notebooks.kinds import KINDS, ColumnState, state_of_value


def test_zero_is_the_missing_cell_of_each_dtype():
    assert dtypes.zero(np.int64) == 0 and not dtypes.zero(bool)
    assert math.isnan(dtypes.zero(np.float64)) and math.isnan(dtypes.zero(np.complex128).real)
    assert dtypes.zero(object) == "" and dtypes.zero("U5") == ""
    assert dtypes.zero("datetime64[us]") is pd.NaT
    with pytest.raises(TypeError, match="no notebook column"):
        dtypes.zero("timedelta64[s]")


def test_zero_agrees_with_the_zero_mapping():
    for kind, value in dtypes.ZERO_MAPPING.items():
        dtype = {"i": "i8", "u": "u8", "f": "f8", "c": "c16", "b": "?", "U": "U1", "S": "S1", "O": "O"}[kind]
        got = dtypes.zero(dtype)
        assert (isinstance(value, (float, complex)) and np.isnan(got) and np.isnan(value)) or got == value


def test_types_and_values_give_their_column_dtype():
    assert dtypes.type_to_dtype(int) == np.int64 and dtypes.type_to_dtype(np.int16) == np.int16
    assert dtypes.type_to_dtype(str) == np.dtype(object)
    assert dtypes.type_to_dtype(datetime) == np.dtype("datetime64[us]")
    with pytest.raises(TypeError, match="dict"):
        dtypes.type_to_dtype(dict)
    assert dtypes.value_to_dtype(1.5) == np.float64 and dtypes.value_to_dtype(True) == np.dtype(bool)
    with pytest.raises(UnstorableValueError):
        dtypes.value_to_dtype({"a": 1})


def test_a_row_dtype_names_every_column_in_order():
    states = {"a": state_of_value(1), "x": state_of_value(0.5)}
    row = dtypes.row_dtype(["a", "x", "never"], states)
    assert row.names == ("a", "x", "never")
    assert row["a"] == np.int64 and row["x"] == np.float64 and row["never"] == np.dtype(object)


def test_widening_to_a_declared_dtype_reports_only_what_changed():
    states = {"a": state_of_value(1)}
    declared = np.dtype([("a", np.float64), ("s", object), ("n", np.int32)])
    new, changes = dtypes.widen_to(states, declared)
    assert new["a"].kind is KINDS["float"] and new["n"] == ColumnState(KINDS["int"], np.dtype(np.int32))
    assert "s" not in new and {name for name, _, _ in changes} == {"a", "n"}
    assert states == {"a": state_of_value(1)}  # the input is not changed
    again, none = dtypes.widen_to(new, declared)
    assert none == [] and again == new


def test_a_declared_dtype_narrower_than_the_column_keeps_the_column():
    states = {"x": state_of_value(0.5)}
    assert dtypes.widen_to(states, np.dtype([("x", np.int8)])) == (states, [])


def test_a_declared_dtype_that_cannot_hold_the_column_is_refused_naming_it():
    with pytest.raises(UnstorableValueError, match="'x'.*bool"):
        dtypes.widen_to({"x": state_of_value(True)}, np.dtype([("x", np.float64)]))
