"""epyc 1.7's type API for result sets, answered from the table of kinds.

epyc describes a result set's rows by a structured numpy dtype, one field per
column. epyclab keeps columns as states of the table of kinds
(:mod:`epyclab.notebooks.kinds`); the functions here translate between the two:
the numpy dtype of a Python type or value, the value of a missing cell of a
dtype, the row dtype of a set of column states, and the states a declared dtype
widens columns to.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import numpy as np

from epyclab.errors import UnstorableValueError
from epyclab.notebooks.kinds import KINDS, ColumnState, NotStorable, kind_of_dtype, kind_of_type, state_of_value
from epyclab.notebooks.rowbuffer import MISSING_STATE
from epyclab.notebooks.rowcheck import value_message

__all__ = [
    "TYPE_MAPPING",
    "ZERO_MAPPING",
    "zero",
    "type_to_dtype",
    "value_to_dtype",
    "row_dtype",
    "widen_to",
]

#: Python type -> the numpy dtype a column of such values has (text, cells: object).
TYPE_MAPPING: dict[type, np.dtype] = {
    bool: np.dtype(bool),
    int: np.dtype(np.int64),
    float: np.dtype(np.float64),
    complex: np.dtype(np.complex128),
    str: np.dtype(object),
    datetime: np.dtype("datetime64[us]"),
    list: np.dtype(object),
    tuple: np.dtype(object),
    np.ndarray: np.dtype(object),
}

#: numpy dtype kind -> the value of a missing cell of that kind, as :func:`zero` gives it.
#: epyc's table has 0.0 and 0j for floats and complex; epyclab has NaN, so that a missing
#: value is not taken for a measured 0.0 (docs/migrating.md).
ZERO_MAPPING: dict[str, Any] = {
    "i": 0, "u": 0, "f": float("nan"), "c": complex(float("nan"), 0.0), "b": False, "U": "", "S": "", "O": "",
}


def zero(dtype: Any) -> Any:
    """The value of a missing cell in a column of numpy ``dtype`` (NaN for floats, as documented).

    Raises:
        TypeError: ``dtype`` is not a numpy dtype a notebook column has.
    """
    dtype = np.dtype(dtype)
    if dtype.kind in "biufc":
        kind = kind_of_dtype(dtype)
        return kind.fill(ColumnState(kind, dtype))
    if dtype.kind == "M":
        import pandas as pd

        return pd.NaT
    if dtype.kind in "OUS":
        return ""
    raise TypeError(f"no notebook column has dtype {dtype}")


def type_to_dtype(t: type) -> np.dtype:
    """The numpy dtype of a column of values of type ``t`` (numpy scalar types keep their width).

    Raises:
        TypeError: no notebook can store values of type ``t``.
    """
    if isinstance(t, type) and issubclass(t, np.generic) and not issubclass(t, np.str_):
        return np.dtype(t)
    kind = kind_of_type(t)
    if kind is None or kind is KINDS["missing"]:
        raise TypeError(f"a notebook cannot store values of type {t.__name__}")
    for base, dtype in TYPE_MAPPING.items():
        if issubclass(t, base):
            return dtype
    return np.dtype(object)


def value_to_dtype(v: Any) -> np.dtype:
    """The numpy dtype of a column holding ``v`` (a Python int as narrow as int64 allows).

    Raises:
        UnstorableValueError: no notebook can store ``v``.
    """
    try:
        st = state_of_value(v)
    except NotStorable as exc:
        raise UnstorableValueError(value_message("value", "", v, str(exc))) from None
    return st.kind.numpy_dtype(st)


def row_dtype(names: list[str], states: Mapping[str, ColumnState]) -> np.dtype:
    """The structured dtype of a row with columns ``names`` in ``states`` (object for a column with no value)."""
    fields = []
    for k in names:
        st = states.get(k, MISSING_STATE)
        fields.append((k, st.kind.numpy_dtype(st)))
    return np.dtype(fields)


def widen_to(
    states: Mapping[str, ColumnState], dtype: np.dtype
) -> tuple[dict[str, ColumnState], list[tuple[str, ColumnState | None, ColumnState]]]:
    """The column states once widened to hold structured ``dtype``'s numeric fields, and what changed.

    Text, object and datetime fields take their values' kind, so they change nothing.

    Raises:
        UnstorableValueError: a field's dtype cannot hold a column's values exactly.
    """
    new_states = dict(states)
    changes: list[tuple[str, ColumnState | None, ColumnState]] = []
    for name in dtype.names or ():
        ft = dtype.fields[name][0]
        if ft.kind not in "biufc":
            continue  # text, objects and datetimes take their values' kind
        kind = kind_of_dtype(ft)
        wanted = ColumnState(kind, ft)
        old = new_states.get(name)
        try:
            new = wanted if old is None else old.kind.widen(old, wanted)
        except NotStorable as exc:
            raise UnstorableValueError(f"cannot give column {name!r} dtype {ft}: {exc}") from None
        if new != old:
            changes.append((name, old, new))
            new_states[name] = new
    return new_states, changes
