"""Turning column buffers (Python lists) into typed pandas columns.

A result set appends each row's values to one list per column. A cell that a
row did not have (a failed run's results, or a key that appeared later) holds
the :data:`MISSING` marker until the DataFrame is built, when it becomes the
default of the column's type:

=========================  ===================
column type                missing cell
=========================  ===================
float, complex             NaN
int                        0
bool                       False
str                        '' (empty string)
datetime                   NaT
anything else              None
=========================  ===================

NaN rather than epyc's 0.0 for floats, because a mean over a column that holds
zeros for runs that produced nothing would be silently wrong.
"""

from __future__ import annotations

import numbers
from datetime import datetime
from typing import Any, Callable

import numpy as np
import pandas as pd

__all__ = [
    "MISSING",
    "default_for_value",
    "default_for_dtype",
    "missing_default",
    "is_float_value",
    "build_column",
    "empty_column",
]


class _Missing:
    """The marker for a cell that a row did not have."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"

    def __reduce__(self) -> str:
        # Keep the marker a singleton through pickling (it crosses to engines).
        return "MISSING"


MISSING = _Missing()


def default_for_value(v: Any) -> Any:
    """The missing-cell default for a column whose values look like ``v``."""
    if isinstance(v, (bool, np.bool_)):
        return False
    if isinstance(v, numbers.Integral):
        return 0
    if isinstance(v, numbers.Real):
        return float("nan")
    if isinstance(v, numbers.Complex):
        return complex(float("nan"), 0.0)
    if isinstance(v, str):
        return ""
    if isinstance(v, datetime):
        return pd.NaT
    return None


def default_for_dtype(dtype: Any) -> Any:
    """The missing-cell default for a column already of pandas/numpy ``dtype``."""
    kind = getattr(dtype, "kind", "O")
    if kind == "b":
        return False
    if kind in "iu":
        return 0
    if kind == "f":
        return float("nan")
    if kind == "c":
        return complex(float("nan"), 0.0)
    if kind == "M":
        return pd.NaT
    if isinstance(dtype, pd.StringDtype) or (pd.api.types.is_string_dtype(dtype) and not kind == "O"):
        # pandas' str dtype reports kind 'O', like object columns: tell them apart by type.
        return ""
    return None


def build_column(values: list[Any], n_missing: int, like: Any = None) -> Any:
    """Return ``values`` ready for a DataFrame column, missing cells filled.

    ``like`` is the dtype of the same column in rows loaded earlier: it decides
    the default when every value here is missing.
    """
    if n_missing == 0:
        return _infer(values)
    first = next((v for v in values if v is not MISSING), MISSING)
    default = missing_default(first, lambda: any(is_float_value(v) for v in values), like)
    return _infer([default if v is MISSING else v for v in values])


def missing_default(first: Any, holds_float: Callable[[], bool], like: Any = None) -> Any:
    """The fill for the missing cells of a column (the rule :func:`build_column` applies).

    ``first`` is the column's first value present (:data:`MISSING` if none),
    ``holds_float()`` says whether any value is a non-integral real, ``like``
    is the dtype of the column's rows loaded earlier (or None). Persistent
    notebooks call this with what they track, to store the same fill.
    """
    if first is MISSING:
        return default_for_dtype(like) if like is not None else None
    default = default_for_value(first)
    if default == 0 and type(default) is int and (getattr(like, "kind", "") == "f" or holds_float()):
        # A column of ints and floats is a float column: its missing cells are NaN, not 0.
        return float("nan")
    return default


def is_float_value(v: Any) -> bool:
    """True for a real number that is not an integer (a value that makes a column float)."""
    return v is not MISSING and isinstance(v, numbers.Real) and not isinstance(v, numbers.Integral)


def empty_column(length: int, like: Any) -> pd.Series:
    """A column of ``length`` missing cells for a column whose other rows have dtype ``like``."""
    default = default_for_dtype(like)
    return pd.Series([default] * length, dtype=like if default is not None else object)


def _infer(values: list[Any]) -> Any:
    # pandas infers int, float, bool, str and datetime columns from lists fast,
    # but it would try to broadcast a column of equal-length lists or arrays:
    # wrap those in an object array so each cell keeps its value.
    if values and isinstance(values[0], (list, tuple, np.ndarray)):
        out = np.empty(len(values), dtype=object)
        out[:] = [None] * len(values)
        for i, v in enumerate(values):
            out[i] = v
        return out
    return values
