"""Reading HDF5 notebooks written by epyc 1.x (format version '1').

epyc's layout: one group per result set at the root, named by its tag, with
string attributes ``description`` and ``locked`` (and the user's attributes);
a compound dataset ``results`` with one field per column, its attributes
``parameters``, ``results`` and ``metadata`` listing the names by role; and a
compound dataset ``pending`` of the pending results' parameters plus a
job-id field. The root carries ``version`` ('1'), ``description``,
``current-resultset``, ``locked`` and ``creator``. Strings are variable-length
UTF-8, datetimes ISO text, list results variable-length float arrays.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import h5py
import numpy as np

from epyclab.experiment import Experiment
from epyclab.notebooks.hdf5check import check_attribute_types, safe_type
from epyclab.notebooks.kinds import ColumnState, column_state, kind_named, kind_of_dtype
from epyclab.notebooks.resultset import ResultSet
from epyclab.notebooks.stored import Later, StoredNotebook, StoredResultSet, StoredRows
from epyclab.notebooks.types import StoredColumn, from_storage
from epyclab.notebooks.untrusted import check_storage

__all__ = ["VERSION", "read_epyc1"]

VERSION = "1"

_TIME_COLUMNS = {k for k, t in Experiment.StandardMetadataTypes.items() if t.__name__ == "datetime"}
_GROUP_ATTRIBUTES = {"description", "locked"}


def read_epyc1(f: h5py.File) -> StoredNotebook:
    """The notebook in an open epyc 1.x file."""
    check_attribute_types(f.filename, f)
    sets = [_read_resultset(tag, g) for tag, g in f.items() if isinstance(g, h5py.Group)]
    current = _text(f.attrs.get("current-resultset")) if "current-resultset" in f.attrs else None
    return StoredNotebook(
        version=VERSION,
        description=_text(f.attrs.get("description", "")),
        locked=bool(f.attrs.get("locked", False)),
        current=current,
        resultsets=sets,
    )


def _read_resultset(tag: str, g: h5py.Group) -> StoredResultSet:
    check_attribute_types(g.file.filename, g)
    others = sorted(set(g) - {"results", "pending"})
    if others:
        # epyc keeps nothing else in a result set's group: a damaged name would hide its rows.
        raise ValueError(f"group {g.name} holds {others[:3]}, which epyc never writes")
    attributes = {k: _python(v) for k, v in g.attrs.items() if k not in _GROUP_ATTRIBUTES}
    roles: dict[str, list[str]] = {"parameter": [], "result": [], "metadata": []}
    columns: dict[str, Any] = {}
    kinds: dict[str, ColumnState] = {}
    if "results" in g:
        ds = g["results"]
        check_attribute_types(g.file.filename, ds)
        for role, attr in (("parameter", "parameters"), ("result", "results"), ("metadata", "metadata")):
            # epyc writes all three: one missing (or unreadable) is damage, not a result set without columns.
            roles[role] = [_text(n) for n in ds.attrs[attr]]
        fields = ds.dtype.names or ()
        if sorted(fields) != sorted(roles["parameter"] + roles["result"] + roles["metadata"]):
            raise ValueError(f"the columns of dataset {ds.name} are not those its attributes name")
        check_storage(g.file.filename, ds, ds.size)
        _check_members(ds)
        data = ds[...]
        for name in roles["parameter"] + roles["result"] + roles["metadata"]:
            columns[name], kinds[name] = _column(name, data[name], ds.dtype.fields[name][0])
    pending: dict[str, dict[str, Any]] = {}
    if "pending" in g:
        check_storage(g.file.filename, g["pending"], g["pending"].size)
        _check_members(g["pending"])
        rows = g["pending"][...]
        names = [n for n in rows.dtype.names if n != ResultSet.JOBID]
        for row in rows:
            pending[_text(row[ResultSet.JOBID])] = {n: _python(row[n]) for n in names}
    return StoredResultSet(
        tag=tag,
        uid=uuid.uuid4().hex,
        description=_text(g.attrs.get("description", "")),
        locked=bool(g.attrs.get("locked", False)),
        attributes=attributes,
        roles=roles,
        rows=StoredRows(len(next(iter(columns.values()), [])), columns),
        kinds=kinds,
        pending=pending,
    )


def _check_members(ds: h5py.Dataset) -> None:
    """Refuse a dataset of records whose fields are not of a type epyc writes (see :func:`safe_type`).

    Raises:
        ValueError: naming the dataset and field (the reader names the file).
    """
    t = ds.id.get_type()
    if t.get_class() != h5py.h5t.COMPOUND:
        raise ValueError(f"dataset {ds.name} is not a table of records")
    for i in range(t.get_nmembers()):
        if not safe_type(t.get_member_type(i)):
            name = t.get_member_name(i).decode("utf-8", "replace")
            raise ValueError(f"field {name!r} of dataset {ds.name} is of a type epyc never writes")


def _column(name: str, values: np.ndarray, dtype: np.dtype) -> tuple[Any, ColumnState]:
    """A typed column (or a :class:`Later` making it) and its state from one field of epyc's compound dataset."""
    if h5py.check_string_dtype(dtype) is not None:
        text = [_text(v) for v in values]
        if name in _TIME_COLUMNS:
            times = _times(text)
            return times, column_state("datetime", times)
        stored = StoredColumn("str", np.array(text, dtype=object))
        kind = kind_named("str")
        state, cells = kind.read_state(stored)
        return (Later(kind.from_storage, stored) if cells is None else cells), state
    if h5py.check_vlen_dtype(dtype) is not None:
        shapes = np.empty(len(values), dtype=object)
        for i, v in enumerate(values):
            shapes[i] = np.asarray(np.shape(v), dtype=np.int64)
        cells = from_storage(StoredColumn("list", values, shapes=shapes))
        return cells, column_state("list", cells)
    arr = np.asarray(values)
    kind = kind_of_dtype(arr.dtype).name if arr.dtype.kind in "biufc" else "str"
    return arr, column_state(kind, arr)


#: The ISO times numpy reads exactly as pandas does: no time zone, at most microseconds.
_PLAIN_ISO = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?")


def _times(text: list[str]) -> np.ndarray:
    """epyc's ISO time texts ('' for none) as datetime64[us]."""
    if all(not t or _PLAIN_ISO.fullmatch(t) for t in text):
        # What epyc writes (datetime.isoformat()): read without importing pandas.
        try:
            return np.array([t or "NaT" for t in text], dtype="datetime64[us]")
        except ValueError:
            pass  # not a date (month 13): pandas says which, as it always did
    import pandas as pd

    times = pd.to_datetime(pd.Series(text, dtype=object).replace("", None), format="ISO8601")
    return times.to_numpy().astype("datetime64[us]")


def _text(v: Any) -> str:
    if isinstance(v, bytes):
        return v.decode("utf-8")
    return str(v)


def _python(v: Any) -> Any:
    """A plain Python value from what h5py gives back."""
    if isinstance(v, bytes):
        return v.decode("utf-8")
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return [_python(x) for x in v.tolist()]
    return v
