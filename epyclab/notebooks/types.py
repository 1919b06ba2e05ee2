"""How each value a results dict can hold is stored in a notebook file, and read back.

This is the one place that decides it. Every column of a stored result set has
a *kind*, decided by the first value the column gets:

==========  =============================================  ==============================
kind        values                                         stored as
==========  =============================================  ==============================
bool        ``bool``, ``numpy.bool_``                      bool
int         ``int`` (64-bit range), numpy integers         the integer dtype pandas infers
float       ``float``, numpy floats (NaN, inf included)    the float dtype pandas infers
complex     ``complex``, numpy complex numbers             complex dtype
str         ``str`` (any length, any Unicode text)         UTF-8 text
datetime    ``datetime.datetime`` without a time zone      int64 ticks of a unit (us, ns)
array       numeric ``numpy.ndarray`` of any shape          flat values + shape, per cell
list        a list of numbers (nested lists if regular)    flat values + shape, per cell
tuple       a tuple of numbers                             flat values + shape, per cell
==========  =============================================  ==============================

A column keeps its kind; ints may widen to floats and complex numbers, floats
to complex numbers, as pandas does. Anything else (``None``, dicts, objects,
strings mixed with numbers, ...) is refused with an
:class:`~epyclab.errors.UnstorableValueError` naming the key and the type,
before the row is stored.

Stored columns are format-neutral here (:class:`StoredColumn`, numpy arrays);
the HDF5 and JSON notebooks only decide how to lay those arrays out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from itertools import repeat
from operator import is_
from typing import Any

import numpy as np
import pandas as pd

from epyclab.notebooks.columns import MISSING, default_for_dtype

__all__ = [
    "CELL_KINDS",
    "INT64_MIN",
    "INT64_MAX",
    "StoredColumn",
    "kind_of_type",
    "merge_kinds",
    "value_problem",
    "typed_column",
    "kind_of_column",
    "to_storage",
    "from_storage",
    "needs_value_check",
    "storage_dtype",
    "cast",
    "concat",
    "widest",
    "fill_for",
]

#: Kinds whose cells are numeric arrays of their own (object columns in pandas).
CELL_KINDS = frozenset({"array", "list", "tuple"})

_NUMERIC_ORDER = {"int": 0, "float": 1, "complex": 2}
_TYPE_KINDS: dict[type, str | None] = {}


def kind_of_type(t: type) -> str | None:
    """The kind of values of type ``t``, or None if such values cannot be stored."""
    if t in _TYPE_KINDS:
        return _TYPE_KINDS[t]
    kind: str | None
    if issubclass(t, (bool, np.bool_)):
        kind = "bool"
    elif issubclass(t, (int, np.integer)):
        kind = "int"
    elif issubclass(t, (float, np.floating)):
        kind = "float"
    elif issubclass(t, (complex, np.complexfloating)):
        kind = "complex"
    elif issubclass(t, str):
        kind = "str"
    elif issubclass(t, datetime):
        kind = "datetime"
    elif issubclass(t, np.ndarray):
        kind = "array"
    elif t is list:
        kind = "list"
    elif t is tuple:
        kind = "tuple"
    else:
        kind = None
    _TYPE_KINDS[t] = kind
    return kind


def merge_kinds(known: str | None, new: str) -> str | None:
    """The kind of a column of kind ``known`` that gets a value of kind ``new`` (None: refused)."""
    if known is None or known == new:
        return new
    if known in _NUMERIC_ORDER and new in _NUMERIC_ORDER:
        return known if _NUMERIC_ORDER[known] >= _NUMERIC_ORDER[new] else new
    return None


def needs_value_check(t: type, kind: str) -> bool:
    """True if values of type ``t`` (of ``kind``) can be unstorable whatever their type says."""
    return kind in ("str", "datetime", "array", "list", "tuple") or (kind == "int" and issubclass(t, int))


#: The ints a notebook stores as ints.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def value_problem(v: Any, kind: str) -> str | None:
    """Why value ``v`` of ``kind`` cannot be stored, or None if it can."""
    if kind == "int":
        if isinstance(v, int) and not INT64_MIN <= v <= INT64_MAX:
            return "it does not fit in 64 bits; store it as a float or a str"
        return None
    if kind == "str":
        if "\x00" in v:
            return "it holds NUL characters ('\\x00'), which HDF5 text cannot; remove them"
        if v.isascii():
            return None
        try:
            v.encode("utf-8")
        except UnicodeEncodeError:
            return "it holds characters UTF-8 cannot encode (lone surrogates); clean the text"
        return None
    if kind == "datetime":
        if v.tzinfo is not None:
            return "it has a time zone; store naive datetimes (e.g. converted to UTC with .replace(tzinfo=None))"
        return None
    if kind == "array":
        if v.dtype.kind not in "biufc":
            return f"its dtype is {v.dtype}; only numeric (bool, int, float, complex) arrays can be stored"
        return None
    try:
        a = np.asarray(v)
    except ValueError:
        return "it is ragged; only regular lists of numbers can be stored"
    if a.dtype.kind not in "biufc":
        return "only lists of numbers (or regular nested lists of numbers) can be stored"
    return None


# ---- raw cells -> typed column ----------------------------------------------------------


def typed_column(values: list[Any], default: Any) -> Any:
    """The column pandas makes of ``values`` (MISSING cells filled with ``default``).

    This is what a result set's DataFrame holds for the same cells, so what is
    stored reads back to the same DataFrame.
    """
    if any(map(is_, values, repeat(MISSING))):
        values = [default if v is MISSING else v for v in values]
    first = next((v for v in values if v is not None), None)
    if isinstance(first, (list, tuple, np.ndarray)) or (first is None and values):
        out = np.empty(len(values), dtype=object)
        out[:] = [None] * len(values)
        for i, v in enumerate(values):
            out[i] = v
        return out
    return pd.Series(values).array


def kind_of_column(col: Any) -> str:
    """The kind of a typed column (as :func:`typed_column` or a DataFrame gives it)."""
    dtype = col.dtype
    kind = getattr(dtype, "kind", "O")
    if kind == "b":
        return "bool"
    if kind in "iu":
        return "int"
    if kind == "f":
        return "float"
    if kind == "c":
        return "complex"
    if kind == "M":
        return "datetime"
    if isinstance(dtype, pd.StringDtype):
        return "str"
    first = next((v for v in col if v is not None), None)
    if first is None:
        return "array"
    found = kind_of_type(type(first))
    if found in CELL_KINDS:
        return found
    if found == "str":
        return "str"
    raise TypeError(f"a column of {type(first).__name__} values has no storable kind")


# ---- typed column <-> stored arrays -----------------------------------------------------


@dataclass
class StoredColumn:
    """A column in the arrays a notebook file holds.

    ``data`` is 1-D: numbers, bools, str objects, int64 ticks (datetime), or
    for cell kinds an object array of flat 1-D arrays of ``element`` dtype,
    with ``shapes`` an object array of int64 shapes (``[-1]`` marks an empty
    cell, None).
    """

    kind: str
    data: np.ndarray
    shapes: np.ndarray | None = None
    unit: str | None = None
    element: np.dtype | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.data)


_NONE_SHAPE = np.array([-1], dtype=np.int64)


def to_storage(col: Any, kind: str | None = None) -> StoredColumn:
    """The stored form of a typed column (``kind`` as found by :func:`kind_of_column` if not given)."""
    kind = kind or kind_of_column(col)
    if kind == "str":
        return StoredColumn("str", np.asarray(col, dtype=object))
    if kind == "datetime":
        arr = np.asarray(col)
        unit = np.datetime_data(arr.dtype)[0]
        return StoredColumn("datetime", arr.view(np.int64), unit=unit)
    if kind in CELL_KINDS:
        cells = np.asarray(col, dtype=object)
        flats = np.empty(len(cells), dtype=object)
        shapes = np.empty(len(cells), dtype=object)
        arrays = [None if c is None else np.asarray(c) for c in cells]
        present = [a for a in arrays if a is not None]
        # With no array to go by, bool: it widens to whatever the column's arrays are.
        element = np.result_type(*{a.dtype for a in present}) if present else np.dtype(bool)
        empty = np.empty(0, dtype=element)
        for i, a in enumerate(arrays):
            if a is None:
                flats[i], shapes[i] = empty, _NONE_SHAPE
            else:
                flats[i] = a.astype(element, copy=False).reshape(-1)
                shapes[i] = np.asarray(a.shape, dtype=np.int64)
        return StoredColumn(kind, flats, shapes=shapes, element=element)
    return StoredColumn(kind, np.asarray(col))


def from_storage(stored: StoredColumn) -> Any:
    """The typed column (as a DataFrame holds it) of a stored column."""
    kind, data = stored.kind, stored.data
    if kind == "str":
        return pd.array(data, dtype="str")
    if kind == "datetime":
        return np.asarray(data, dtype=np.int64).view(f"datetime64[{stored.unit}]")
    if kind in CELL_KINDS:
        out = np.empty(len(data), dtype=object)
        shapes = stored.shapes
        assert shapes is not None
        for i, (flat, shape) in enumerate(zip(data, shapes)):
            if len(shape) == 1 and shape[0] == -1:
                continue
            a = np.asarray(flat).reshape(tuple(shape))
            if kind == "array":
                out[i] = a
            elif kind == "list":
                out[i] = a.tolist()
            else:
                out[i] = tuple(a.tolist())
        return out
    return data


def storage_dtype(col: StoredColumn) -> np.dtype:
    """The dtype that decides whether two stored columns can be joined as they are.

    Numbers: their dtype; datetimes: their datetime64 dtype; cells: the element
    dtype; text: object.
    """
    if col.kind == "datetime":
        return np.dtype(f"datetime64[{col.unit}]")
    if col.kind in CELL_KINDS:
        assert col.element is not None
        return np.dtype(col.element)
    if col.kind == "str":
        return np.dtype(object)
    return col.data.dtype


def cast(col: StoredColumn, kind: str, dtype: np.dtype) -> StoredColumn:
    """``col`` widened to ``kind`` and ``dtype`` (as :func:`storage_dtype` gives them)."""
    if col.kind == kind and storage_dtype(col) == dtype:
        return col
    if kind == "datetime":
        unit = np.datetime_data(dtype)[0]
        data = col.data.view(f"datetime64[{col.unit}]").astype(dtype).view(np.int64)
        return StoredColumn(kind, data, unit=unit)
    if kind in CELL_KINDS:
        flats = np.empty(len(col.data), dtype=object)
        for i, flat in enumerate(col.data):
            flats[i] = np.asarray(flat).astype(dtype)
        return StoredColumn(kind, flats, shapes=col.shapes, element=dtype)
    if kind == "str":
        return StoredColumn(kind, col.data)
    return StoredColumn(kind, col.data.astype(dtype))


def concat(a: StoredColumn, b: StoredColumn) -> StoredColumn:
    """``a`` then ``b``, both already of the same kind and dtype."""
    shapes = None if a.shapes is None else np.concatenate([a.shapes, b.shapes])
    return StoredColumn(a.kind, np.concatenate([a.data, b.data]), shapes=shapes, unit=a.unit, element=a.element)


def widest(kind_a: str, dtype_a: np.dtype, kind_b: str, dtype_b: np.dtype) -> tuple[str, np.dtype]:
    """The kind and dtype a column takes when values of both are joined (pandas' promotion)."""
    if kind_a == "str" or kind_b == "str":
        return "str", np.dtype(object)
    dtype = np.result_type(dtype_a, dtype_b)
    if kind_a in CELL_KINDS or kind_a == "datetime":
        return kind_a, dtype
    return {"b": "bool", "i": "int", "u": "int", "f": "float", "c": "complex"}[dtype.kind], dtype


def fill_for(kind: str, dtype: np.dtype) -> Any:
    """The missing-cell default of a column of ``kind`` and storage ``dtype``."""
    if kind == "str":
        return ""
    if kind in CELL_KINDS:
        return None
    if kind == "datetime":
        return pd.NaT
    return default_for_dtype(dtype)
