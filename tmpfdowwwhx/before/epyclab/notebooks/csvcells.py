"""The text of a result set's cells in a CSV file, written so that each reads back exactly.

``epyclab export`` writes every cell through :func:`cellText`, chosen by the
column's DataFrame dtype, and :func:`parseCell` reads a cell back given that
dtype. The rules (also in docs/cli.md):

* a missing cell (None, NaT) is an empty field; a str column's missing cell is
  ``''`` already, an int column's is ``0``, a float column's is ``nan``;
* bool: ``True`` / ``False``; int: decimal digits;
* float: the shortest text that reads back to the same value in the column's
  dtype (``0.1`` in a float32 column is float32(0.1)), ``nan``, ``inf``, ``-inf``;
* complex: Python's form, ``(1+2j)``, each part as a float of the column's dtype;
* datetime: ISO 8601 with every digit of the column's unit
  (``2024-01-02T03:04:05.000000`` for microseconds, nine digits for nanoseconds);
* str: as it is (the CSV quoting keeps commas, quotes and newlines);
* numpy array: numpy's ``repr`` in full, never elided, every element at its
  shortest exact text, with its dtype when not the default and its shape when
  empty: ``array([[1, 2], [3, 4]], dtype=int8)``, ``array([], shape=(0, 3), dtype=int8)``;
* list and tuple: Python's form, ``[0.25, 1]``, ``(0.5,)``, floats at their shortest.

:func:`parseCell` reads these without ever evaluating the text as code: it
walks the syntax tree and accepts numbers, ``nan``/``inf``, lists, tuples and
``array(...)`` only.
"""

from __future__ import annotations

import ast
import csv
import math
import sys
from collections.abc import Sequence
from typing import IO, Any

import numpy as np
import pandas as pd

__all__ = ["cellText", "parseCell", "columnTexts", "writeCSV"]

#: Arrays in full: no elision, one line, each float at its shortest unique digits.
_FULL = {"threshold": sys.maxsize, "linewidth": sys.maxsize, "floatmode": "unique", "legacy": False}


def _number_text(v: Any) -> str:
    """A number's shortest exact text: numpy's for numpy scalars (shortest for their own dtype), Python's otherwise."""
    if isinstance(v, np.generic):
        return str(v)
    return repr(v)


def _literal(v: Any) -> str:
    """A list or tuple (nested, of numbers and bools) in Python's syntax, numbers at their shortest."""
    if isinstance(v, list):
        return "[" + ", ".join(_literal(x) for x in v) + "]"
    if isinstance(v, tuple):
        inner = ", ".join(_literal(x) for x in v)
        return "(" + inner + ("," if len(v) == 1 else "") + ")"
    if isinstance(v, (bool, np.bool_)):
        return repr(bool(v))
    if isinstance(v, str):
        return repr(v)
    return _number_text(v)


def cellText(value: Any) -> str:
    """The text of one cell of an object (cell) column, or of a scalar: see the module docstring.

    Raises:
        TypeError: ``value`` is of a type no notebook stores.
    """
    if value is None or value is pd.NaT:
        return ""
    if isinstance(value, np.ndarray):
        with np.printoptions(**_FULL):
            return repr(value)
    if isinstance(value, (list, tuple, bool, np.bool_)):
        return _literal(value)
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float, complex, np.number)):
        return _number_text(value)
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    raise TypeError(f"a cell of type {type(value).__name__} cannot be written to CSV: {value!r}")


def columnTexts(column: pd.Series) -> list[str]:
    """The text of every cell of ``column``, by its dtype (see the module docstring)."""
    dtype = column.dtype
    if isinstance(dtype, np.dtype) and dtype.kind == "M":
        unit = np.datetime_data(dtype)[0]
        texts = np.datetime_as_string(column.to_numpy(), unit=unit)
        return ["" if t == "NaT" else str(t) for t in texts]
    if isinstance(dtype, np.dtype) and dtype.kind in "biufc":
        # Numpy scalars of the column's dtype: their str is the shortest text of that dtype.
        return [cellText(v) for v in column.to_numpy()]
    if not (isinstance(dtype, np.dtype) and dtype.kind == "O"):
        # Text columns (pandas' str dtype): a missing value, however pandas marks it, is an empty field.
        return ["" if v is None or (not isinstance(v, str) and pd.isna(v)) else v for v in column.array]
    return [cellText(v) for v in column.array]


def writeCSV(frame: pd.DataFrame, f: IO[str], columns: Sequence[str] | None = None) -> None:
    """Write ``frame`` as CSV to the text stream ``f``: a header of column names, then one line per row.

    ``columns`` is the header of a frame with no rows (the set's parameter,
    result and metadata names); a frame with rows writes its own columns.
    """
    names = list(frame.columns) if len(frame.columns) or columns is None else list(columns)
    writer = csv.writer(f, lineterminator="\n")
    writer.writerow(names)
    if not len(frame):
        return
    texts = [columnTexts(frame[name]) for name in names]
    writer.writerows(zip(*texts))


# ---- reading back ---------------------------------------------------------------------------

_NAMES = {"nan": math.nan, "inf": math.inf, "nanj": complex(0.0, math.nan), "infj": complex(0.0, math.inf),
          "True": True, "False": False, "None": None}


def _imaginary(node: ast.expr) -> bool:
    """True for a pure imaginary literal (``2j``, ``nanj``), possibly signed."""
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        node = node.operand
    if isinstance(node, ast.Constant):
        return isinstance(node.value, complex)
    return isinstance(node, ast.Name) and node.id in ("nanj", "infj")


def _is_array_call(node: ast.expr) -> bool:
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "array"
            and len(node.args) == 1)


def _eval(node: ast.expr) -> Any:
    """The value of a literal cell's syntax tree; anything but literals is refused."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, complex, bool, str, type(None))):
        return node.value
    if isinstance(node, ast.Name) and node.id in _NAMES:
        return _NAMES[node.id]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        v = _eval(node.operand)
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub)) and _imaginary(node.right):
        # Built part by part: ``-0. + 0.j`` keeps its negative zero (arithmetic would lose it).
        real, imag = _eval(node.left), _eval(node.right)
        return complex(real.real if isinstance(real, complex) else real,
                       imag.imag if isinstance(node.op, ast.Add) else -imag.imag)
    if isinstance(node, ast.List):
        return [_eval(e) for e in node.elts]
    if isinstance(node, ast.Tuple):
        return tuple(_eval(e) for e in node.elts)
    if isinstance(node, ast.Call) and _is_array_call(node):
        kw = {k.arg: k.value for k in node.keywords}
        if not set(kw) <= {"dtype", "shape"}:
            raise ValueError(f"unexpected argument(s) {sorted(set(kw) - {'dtype', 'shape'})} in array(...)")
        dtype = np.dtype(kw["dtype"].id) if "dtype" in kw and isinstance(kw["dtype"], ast.Name) else None
        if "dtype" in kw and dtype is None:
            raise ValueError("array(...)'s dtype must be a name such as int8")
        values = _eval(node.args[0])
        if dtype is None:
            dtype = np.asarray(values).dtype if values != [] else np.dtype(np.float64)
        out = np.array(values, dtype=dtype)
        return out.reshape(_eval(kw["shape"])) if "shape" in kw else out
    raise ValueError(f"not a literal cell: {ast.dump(node)[:80]}")


def _literal_value(text: str) -> Any:
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as e:
        raise ValueError(f"{text[:80]!r} is not a cell epyclab writes: {e.msg}") from None
    return _eval(tree.body)


def parseCell(text: str, dtype: Any) -> Any:
    """The value of a cell written by :func:`cellText`, in a column of DataFrame dtype ``dtype``.

    Returns a numpy scalar of ``dtype`` for bool, int, float and complex
    columns, a ``pandas.Timestamp`` (or NaT) for datetime columns, ``str`` for
    str columns, and for object columns None, a numpy array, a list or a tuple.

    Raises:
        ValueError: ``text`` is not a cell of that dtype.
    """
    if isinstance(dtype, np.dtype) and dtype.kind == "b":
        return np.bool_({"True": True, "False": False}[text])
    if isinstance(dtype, np.dtype) and dtype.kind in "iu":
        return dtype.type(int(text))
    if isinstance(dtype, np.dtype) and dtype.kind == "f":
        return dtype.type(float(text))
    if isinstance(dtype, np.dtype) and dtype.kind == "c":
        return dtype.type(complex(text))
    if isinstance(dtype, np.dtype) and dtype.kind == "M":
        return pd.NaT if text == "" else pd.Timestamp(np.datetime64(text, np.datetime_data(dtype)[0]))
    if not (isinstance(dtype, np.dtype) and dtype.kind == "O"):
        return text  # text columns
    if text == "":
        return None
    value = _literal_value(text)
    if isinstance(value, (list, tuple, np.ndarray)):
        return value
    raise ValueError(f"{text[:80]!r} is not an array, list or tuple cell")

