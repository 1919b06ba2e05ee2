"""Bringing a result set's columns in an HDF5 file up to date with its rows in memory.

A result set in memory is the rows loaded from the file (its *base*) plus the
rows added since (this *session*'s rows, as raw cells). A checkpoint appends
the session rows the file lacks, column by column, so it costs what it adds.

What is stored must read back as the DataFrame the result set shows. Two
things in that DataFrame can change for rows already written: a column's
dtype widens (ints, then a float), and the fill of missing cells follows the
values a column gets (see :func:`epyclab.notebooks.columns.missing_default`).
Both are tracked per column; when either changes, that one column is
rewritten. That is rare, and costs the column, not the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import h5py
import numpy as np

from epyclab.notebooks.columns import MISSING, is_float_value, missing_default
from epyclab.notebooks.hdf5layout import append_column, read_stored, write_column
from epyclab.notebooks.resultset import ResultSet
from epyclab.notebooks.types import (
    CELL_KINDS,
    cast,
    concat,
    fill_for,
    storage_dtype,
    to_storage,
    typed_column,
    widest,
)

__all__ = ["ColumnTrack", "RowsTrack", "write_rows", "write_base", "fill_for_like"]


@dataclass
class ColumnTrack:
    """What the file holds of one column, and what decides its missing cells."""

    kind: str
    dtype: np.dtype
    #: The column's dtype in the rows loaded at the start of the session (None: it had none).
    like: Any = None
    #: The session's first value present, and whether any session value is a float.
    first: Any = MISSING
    has_float: bool = False
    #: The fills written for missing session cells, and for loaded rows that lacked the column.
    fill: Any = MISSING
    prefix_fill: Any = MISSING


@dataclass
class RowsTrack:
    """What the file holds of one result set's rows."""

    base_len: int
    stored_rows: int
    columns: dict[str, ColumnTrack] = field(default_factory=dict)
    #: False for rows loaded from an epyc file: the file being written lacks them.
    base_written: bool = True


def write_base(g: h5py.Group, rs: ResultSet, track: RowsTrack, kinds: dict[str, str]) -> None:
    """Write the rows ``rs`` loaded (from another file) as the first rows of its columns."""
    frame = rs._base
    if frame is not None and len(frame.columns):
        for name in frame.columns:
            stored = to_storage(frame[name].array, kinds.get(name))
            write_column(g, name, stored)
            track.columns[name] = ColumnTrack(
                stored.kind, storage_dtype(stored), like=frame[name].dtype, fill=fill_for_like(frame[name].dtype)
            )
    track.base_written = True
    track.stored_rows = track.base_len


def fill_for_like(like: Any) -> Any:
    """The fill a session with only missing cells in a loaded column of dtype ``like`` uses."""
    return missing_default(MISSING, lambda: False, like)


def write_rows(g: h5py.Group, rs: ResultSet, track: RowsTrack, kinds: dict[str, str]) -> None:
    """Append the rows of ``rs`` the file lacks (``kinds``: the kinds the row check learned)."""
    n = rs.numberOfResults()
    start = track.stored_rows
    if n == start:
        return
    batch = rs._buffered_rows(start)
    session: dict[str, list[Any]] | None = None
    for name, values in batch.items():
        col = track.columns.get(name)
        new = col is None
        if col is None:
            col = ColumnTrack(kind="", dtype=np.dtype(object))
        fill, typed = _typed(col, values)
        stored = to_storage(typed, _kind(values, fill, kinds.get(name)))
        if new:
            kind, dtype = stored.kind, storage_dtype(stored)
        else:
            kind, dtype = widest(col.kind, col.dtype, stored.kind, storage_dtype(stored))
        prefix_fill = fill_for(kind, dtype) if col.like is None and track.base_len else MISSING
        same = not new and kind == col.kind and dtype == col.dtype
        if same and _same(fill, col.fill) and _same(prefix_fill, col.prefix_fill):
            append_column(g, name, start, stored)
        else:
            if session is None:
                session = rs._buffered_rows(track.base_len)
            _rewrite(g, name, track, col, kind, dtype, session[name], fill, prefix_fill, kinds.get(name))
        col.kind, col.dtype, col.fill, col.prefix_fill = kind, dtype, fill, prefix_fill
        track.columns[name] = col
    track.stored_rows = n
    g.attrs["rows"] = n


def _typed(col: ColumnTrack, values: list[Any]) -> tuple[Any, Any]:
    """The fill of the column's missing cells and the typed batch; notes what the values decide."""
    if col.first is MISSING:
        col.first = next((v for v in values if v is not MISSING), MISSING)
    fill = missing_default(col.first, lambda: col.has_float, col.like)
    typed = typed_column(values, fill)
    if not col.has_float and _int_fill(fill):
        # An int column's fill turns NaN once a float comes: pandas made the batch
        # float (or complex, where only a look tells whether a float did it).
        kind = typed.dtype.kind
        if kind == "f" or (kind == "c" and any(is_float_value(v) for v in values)):
            col.has_float = True
            fill = missing_default(col.first, lambda: True, col.like)
            typed = typed_column(values, fill)
    return fill, typed


def _int_fill(fill: Any) -> bool:
    return type(fill) is int and fill == 0


def _kind(values: list[Any], fill: Any, learned: str | None) -> str | None:
    """The kind to store a batch as: the learned one for cells (a batch may hold none)."""
    if learned in CELL_KINDS:
        return learned
    if fill is None and all(v is MISSING for v in values):
        return "array"
    return None


def _rewrite(
    g: h5py.Group,
    name: str,
    track: RowsTrack,
    col: ColumnTrack,
    kind: str,
    dtype: np.dtype,
    session_values: list[Any],
    fill: Any,
    prefix_fill: Any,
    learned: str | None,
) -> None:
    """Write the whole column again: the loaded rows, then every session row."""
    parts = []
    if track.base_len:
        if col.like is None:
            cells = [prefix_fill] * track.base_len
            parts.append(to_storage(typed_column(cells, prefix_fill), kind if kind in CELL_KINDS else None))
        else:
            parts.append(read_stored(g, name, track.base_len))
    parts.append(to_storage(typed_column(session_values, fill), _kind(session_values, fill, learned)))
    joined = cast(parts[0], kind, dtype)
    for part in parts[1:]:
        joined = concat(joined, cast(part, kind, dtype))
    write_column(g, name, joined)


def _same(a: Any, b: Any) -> bool:
    """Equal fills (NaN equals NaN, NaT equals NaT, 0 differs from 0.0)."""
    if a is b:
        return True
    if type(a) is not type(b):
        return False
    try:
        return bool(a == b) or bool(a != a and b != b)
    except (TypeError, ValueError):
        return False

