"""The layout of an epyclab HDF5 notebook file (format version '2'), read and written.

::

    /                                   version='2', creator, description, locked,
                                        current-resultset, file-id, journal-seq
    /resultsets/<tag>                   one group per result set: tag, uid,
                                        description, locked, rows, roles (JSON),
                                        attributes (JSON)
    /resultsets/<tag>/columns/<name>    one 1-D chunked, resizable dataset per column,
                                        ``rows`` long; attributes name, kind (, unit)
    /resultsets/<tag>/shapes/<name>     for array and list columns: each cell's shape
    /resultsets/<tag>/missing/<name>    for int columns: 1 where the cell is missing (its 0 is a fill)
    /resultsets/<tag>/pending/jobid     pending results: job ids (text) and
    /resultsets/<tag>/pending/parameters    their parameters (JSON text)

A tag or column name holding ``/`` (or ``%``, or starting with ``.``) is
escaped in the group or dataset name (``%2F``); the ``tag`` and ``name``
attributes hold it as it is. How each kind of value is stored is decided in
:mod:`epyclab.notebooks.kinds` (the table of kinds). docs/hdf5-layout.md shows how to read a file
with plain h5py.
"""

from __future__ import annotations

import json
from typing import Any

import h5py
import numpy as np

from epyclab.errors import NotebookFormatError, NotebookVersionException
from epyclab.notebooks.epyc1 import VERSION as EPYC1_VERSION
from epyclab.notebooks.epyc1 import read_epyc1
from epyclab.notebooks.jsonvalues import decode_value
from epyclab.notebooks.kinds import ColumnState, kind_named
from epyclab.notebooks.stored import Later, StoredNotebook, StoredResultSet, StoredRows
from epyclab.notebooks.types import StoredColumn

__all__ = [
    "VERSION",
    "read_notebook",
    "escape",
    "write_column",
    "append_column",
    "read_stored",
    "write_pending",
    "init_empty",
    "write_resultset_attributes",
    "resultset_group",
]

VERSION = "2"
CREATOR = "epyclab, computational experiments over parameter spaces"
_ROLE_NAMES = ("parameter", "result", "metadata")
_MIN_CHUNK, _MAX_CHUNK = 1024, 16384


def escape(name: str) -> str:
    """The HDF5 link name for a tag or column name: itself, unless it holds ``/`` or ``%`` or starts with ``.``."""
    text = name.replace("%", "%25").replace("/", "%2F").replace("\x00", "%00")
    if text.startswith("."):
        text = "%2E" + text[1:]
    return text or "%"


# ---- reading ---------------------------------------------------------------------------


def open_file(path: str) -> h5py.File:
    """Open ``path`` for reading, with a clear error if it is not an HDF5 file."""
    try:
        return h5py.File(path, "r")
    except FileNotFoundError:
        raise
    except OSError as exc:
        if not h5py.is_hdf5(path):
            raise NotebookFormatError(
                f"{path} is not a notebook: it is not an HDF5 file; "
                f"give the name of an epyclab or epyc notebook, or a new file name"
            ) from None
        raise NotebookFormatError(f"cannot open notebook {path}: {exc}") from None


def read_notebook(path: str) -> StoredNotebook:
    """Everything a notebook file holds (an epyclab file, or an epyc 1.x one)."""
    with open_file(path) as f:
        if "version" not in f.attrs:
            raise NotebookFormatError(
                f"{path} is an HDF5 file but not a notebook (it has no 'version' attribute); "
                f"give the name of an epyclab or epyc notebook, or a new file name"
            )
        version = _text(f.attrs["version"])
        if version == VERSION:
            return _read_v2(f)
        if version == EPYC1_VERSION:
            return read_epyc1(f)
        raise NotebookVersionException(f"'{EPYC1_VERSION}' (epyc) and '{VERSION}'", version, path)


def _read_v2(f: h5py.File) -> StoredNotebook:
    sets = [_read_resultset(g) for g in f["resultsets"].values()]
    return StoredNotebook(
        version=VERSION,
        description=_text(f.attrs["description"]),
        locked=bool(f.attrs["locked"]),
        current=_text(f.attrs["current-resultset"]) or None,
        resultsets=sets,
        file_id=_text(f.attrs["file-id"]),
        seq=int(f.attrs["journal-seq"]),
    )


def _read_resultset(g: h5py.Group) -> StoredResultSet:
    rows = int(g.attrs["rows"])
    roles = json.loads(_text(g.attrs["roles"]))
    columns: dict[str, Any] = {}
    kinds: dict[str, ColumnState] = {}
    dtypes: dict[str, Any] = {}
    for name in (n for role in _ROLE_NAMES for n in roles[role]):
        stored = read_stored(g, name, rows)
        kind = kind_named(stored.kind)
        kinds[name], cells = kind.read_state(stored)
        # The stored arrays are read now (the file closes); typing them waits for the DataFrame.
        columns[name] = Later(kind.from_storage, stored) if cells is None else cells
        dtypes[name] = kinds[name].dtype
    missing = {}
    if "missing" in g:
        for name in kinds:
            link = escape(name)
            if kinds[name].kind.masks_missing and link in g["missing"]:
                missing[name] = g["missing"][link][:rows].astype(bool)
    pending = {}
    if "pending" in g:
        jobids = g["pending"]["jobid"].asstr()[...]
        params = g["pending"]["parameters"].asstr()[...]
        pending = {j: decode_value(json.loads(p)) for j, p in zip(jobids, params)}
    return StoredResultSet(
        tag=_text(g.attrs["tag"]),
        uid=_text(g.attrs["uid"]),
        description=_text(g.attrs["description"]),
        locked=bool(g.attrs["locked"]),
        attributes=decode_value(json.loads(_text(g.attrs["attributes"]))),
        roles=roles,
        rows=StoredRows(rows, columns),
        kinds=kinds,
        pending=pending,
        dtypes=dtypes,
        missing=missing,
    )


def read_stored(g: h5py.Group, name: str, rows: int) -> StoredColumn:
    """The first ``rows`` cells of column ``name`` of result set group ``g``."""
    ds = g["columns"][escape(name)]
    kind = _text(ds.attrs["kind"])
    if h5py.check_string_dtype(ds.dtype) is not None:
        return StoredColumn(kind, ds.asstr()[:rows])
    element = h5py.check_vlen_dtype(ds.dtype)
    if element is not None:
        return StoredColumn(kind, ds[:rows], shapes=g["shapes"][escape(name)][:rows], element=element)
    unit = ds.attrs.get("unit")
    return StoredColumn(kind, ds[:rows], unit=None if unit is None else _text(unit))


# ---- writing -------------------------------------------------------------------------------


def init_empty(f: h5py.File, file_id: str, description: str) -> None:
    """Make the new, empty HDF5 file ``f`` a notebook with no result sets."""
    f.attrs["version"] = VERSION
    f.attrs["creator"] = CREATOR
    f.attrs["description"] = description
    f.attrs["locked"] = False
    f.attrs["current-resultset"] = ""
    f.attrs["file-id"] = file_id
    f.attrs["journal-seq"] = 0
    # Creation order is kept, so result sets read back in the order they were added.
    f.create_group("resultsets", track_order=True)


def resultset_group(f: h5py.File, tag: str, uid: str) -> h5py.Group:
    """The group of result set ``tag`` (incarnation ``uid``), created empty if absent or stale."""
    parent = f["resultsets"]
    link = escape(tag)
    if link in parent and _text(parent[link].attrs["uid"]) != uid:
        # The tag was deleted and created again: the old rows are not this set's.
        del parent[link]
    if link not in parent:
        g = parent.create_group(link)
        g.create_group("columns")
        g.create_group("shapes")
        g.create_group("missing")
        g.attrs["tag"] = tag
        g.attrs["uid"] = uid
        g.attrs["rows"] = 0
        g.attrs["roles"] = json.dumps({r: [] for r in _ROLE_NAMES})
        g.attrs["attributes"] = "{}"
        g.attrs["description"] = ""
        g.attrs["locked"] = False
    return parent[link]


def write_resultset_attributes(
    g: h5py.Group, description: str, locked: bool, attributes_json: str
) -> None:
    """Write a result set's description, lock flag and user attributes."""
    g.attrs["description"] = description
    g.attrs["locked"] = locked
    g.attrs["attributes"] = attributes_json


def write_pending(g: h5py.Group, pending_json: dict[str, str]) -> None:
    """Replace the pending results of a result set (job id -> parameters as JSON)."""
    if "pending" in g:
        del g["pending"]
    p = g.create_group("pending")
    text = h5py.string_dtype()
    p.create_dataset("jobid", data=np.array(list(pending_json), dtype=object), dtype=text)
    p.create_dataset("parameters", data=np.array(list(pending_json.values()), dtype=object), dtype=text)


def _chunk(n: int) -> int:
    size = _MIN_CHUNK
    while size < n and size < _MAX_CHUNK:
        size *= 2
    return size


def write_column(g: h5py.Group, name: str, col: StoredColumn, missing: np.ndarray | None = None) -> None:
    """Create (or replace) column ``name`` holding ``col`` (``missing``: its missing cells, if kept)."""
    link = escape(name)
    g.require_group("missing")
    for sub in ("columns", "shapes", "missing"):
        if link in g[sub]:
            del g[sub][link]
    n = len(col)
    ds = g["columns"].create_dataset(
        link, shape=(n,), maxshape=(None,), chunks=(_chunk(n),), dtype=kind_named(col.kind).h5_dtype(col)
    )
    if n:
        _write(ds, 0, col.data)
    ds.attrs["name"] = name
    ds.attrs["kind"] = col.kind
    if col.unit is not None:
        ds.attrs["unit"] = col.unit
    if col.shapes is not None:
        shapes = g["shapes"].create_dataset(
            link, shape=(n,), maxshape=(None,), chunks=(_chunk(n),), dtype=h5py.vlen_dtype(np.int64)
        )
        if n:
            _write(shapes, 0, col.shapes)
    if missing is not None:
        mask = g["missing"].create_dataset(
            link, shape=(n,), maxshape=(None,), chunks=(_chunk(n),), dtype=np.uint8
        )
        if n:
            mask[:] = missing.astype(np.uint8)


def append_column(
    g: h5py.Group, name: str, start: int, col: StoredColumn, missing: np.ndarray | None = None
) -> None:
    """Write ``col`` (and ``missing``, if kept) as rows ``start`` onwards of column ``name``."""
    link = escape(name)
    ds = g["columns"][link]
    end = start + len(col)
    ds.resize((end,))
    _write(ds, start, col.data)
    if col.shapes is not None:
        shapes = g["shapes"][link]
        shapes.resize((end,))
        _write(shapes, start, col.shapes)
    if missing is not None:
        masks = g.require_group("missing")
        if link not in masks:
            # Written by an epyclab that kept no mask: its cells were values (0 is what it showed).
            masks.create_dataset(link, shape=(start,), maxshape=(None,), chunks=(_chunk(start),), dtype=np.uint8)
        mask = masks[link]
        mask.resize((end,))
        mask[start:end] = missing.astype(np.uint8)


def _write(ds: h5py.Dataset, start: int, data: np.ndarray) -> None:
    if data.dtype == object and isinstance(h5py.check_vlen_dtype(ds.dtype), np.dtype):
        # h5py turns an object array of equal-length arrays into a 2-D array
        # when assigned with [], and refuses it; write_direct keeps the cells.
        ds.write_direct(data, dest_sel=np.s_[start : start + len(data)])
    else:
        try:
            ds[start : start + len(data)] = data
        except (ValueError, UnicodeEncodeError):
            if h5py.check_string_dtype(ds.dtype) is None:
                raise
            # Exception text is stored unchecked: make it storable rather than
            # leave a row that no checkpoint can ever write.
            ds[start : start + len(data)] = np.array([_storable_text(t) for t in data], dtype=object)


def _storable_text(text: str) -> str:
    return text.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")


def _text(v: Any) -> str:
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)
