"""Bringing a result set's columns in an HDF5 file up to date with its rows in memory.

A result set in memory is the rows loaded from the file (its *base*) plus the
rows added since (this *session*'s rows, as raw cells). A checkpoint appends
the session rows the file lacks, column by column, so it costs what it adds.

What is stored must read back as the DataFrame the result set shows. Each
column has a state in the table of kinds (:mod:`epyclab.notebooks.kinds`):
its kind and dtype. While the state the file holds is the column's state, new
cells are appended; when the column widened (ints, then a float; uint32, then
-1), or the file lacks the column for rows it already has, that one column is
rewritten from the DataFrame. That is rare, and costs the column, not the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import repeat
from operator import is_
from typing import Any

import h5py
import numpy as np

from epyclab.notebooks.columns import MISSING
from epyclab.notebooks.hdf5layout import append_column, write_column
from epyclab.notebooks.kinds import KINDS, ColumnState
from epyclab.notebooks.resultset import ResultSet

__all__ = ["ColumnTrack", "RowsTrack", "write_rows", "write_base"]

_MISSING = ColumnState(KINDS["missing"], KINDS["missing"].state(None).dtype)


@dataclass
class ColumnTrack:
    """What the file holds of one column: its state's key (kind name, dtype)."""

    key: tuple[str, Any]


@dataclass
class RowsTrack:
    """What the file holds of one result set's rows."""

    base_len: int
    stored_rows: int
    columns: dict[str, ColumnTrack] = field(default_factory=dict)
    #: False for rows loaded from an epyc file: the file being written lacks them.
    base_written: bool = True


def write_base(g: h5py.Group, rs: ResultSet, track: RowsTrack, states: dict[str, ColumnState]) -> None:
    """Write the rows ``rs`` loaded (from another file) as the first rows of its columns."""
    if track.base_len:
        frame = rs.storedFrame()
        for name in frame.columns:
            st = states.get(name, _MISSING)
            mask = rs.missingMask(name)[: track.base_len] if st.kind.masks_missing else None
            write_column(g, name, st.kind.to_storage(frame[name].array[: track.base_len], st), mask)
            track.columns[name] = ColumnTrack(st.key())
    track.base_written = True
    track.stored_rows = track.base_len


def write_rows(g: h5py.Group, rs: ResultSet, track: RowsTrack, states: dict[str, ColumnState]) -> None:
    """Append the rows of ``rs`` the file lacks (``states``: each column's state in the table of kinds)."""
    n = rs.numberOfResults()
    start = track.stored_rows
    if n == start:
        return
    batch = rs.bufferedRows(start)
    frame = None
    for name, values in batch.items():
        st = states.get(name, _MISSING)
        col = track.columns.get(name)
        if col is not None and col.key == st.key():
            mask = _missing(values) if st.kind.masks_missing else None
            append_column(g, name, start, st.kind.stored(values, st), mask)
        else:
            # A new or widened column: write it whole, as the DataFrame shows it.
            if start == 0:
                # No row was loaded: the column is these cells, typed as the DataFrame types them
                # (the whole DataFrame was built for this, a tenth of the first checkpoint's time).
                stored = st.kind.stored(values, st)
            else:
                if frame is None:
                    frame = rs.storedFrame()
                stored = st.kind.to_storage(frame[name].array[:n], st)
            mask = rs.missingMask(name)[:n] if st.kind.masks_missing else None
            write_column(g, name, stored, mask)
        track.columns[name] = ColumnTrack(st.key())
    track.stored_rows = n
    g.attrs["rows"] = n


def _missing(values: list[Any]) -> np.ndarray:
    if not (any(map(is_, values, repeat(None))) or any(map(is_, values, repeat(MISSING)))):
        return np.zeros(len(values), dtype=bool)
    return np.fromiter((v is None or v is MISSING for v in values), dtype=bool, count=len(values))
