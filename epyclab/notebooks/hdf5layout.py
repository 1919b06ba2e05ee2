"""The layout of an epyclab HDF5 notebook file (format version '2'), read and written.

::

    /                                   version='2', creator, description, locked,
                                        current-resultset, file-id, journal-seq
    /resultsets/<tag>                   one group per result set: tag, uid,
                                        description, locked, rows, roles (JSON),
                                        attributes (JSON)
    /resultsets/<tag>/columns/<name>    one 1-D dataset per column, ``rows`` long (contiguous
                                        if small, else chunked and resizable); attributes
                                        name, kind (, unit)
    /resultsets/<tag>/shapes/<name>     for array and list columns: each cell's shape
    /resultsets/<tag>/missing/<name>    for int columns with missing cells: 1 where the cell
                                        is missing (its 0 is a fill); none: no cell is missing
    /resultsets/<tag>/pending/jobid     pending results, if any: job ids (text) and
    /resultsets/<tag>/pending/parameters    their parameters (JSON text)

Every dataset's layout follows its length (:func:`_layout`), so a file is as large as its data.

A tag or column name holding ``/`` (or ``%``, or starting with ``.``) is
escaped in the group or dataset name (``%2F``); the ``tag`` and ``name``
attributes hold it as it is. How each kind of value is stored is decided in
:mod:`epyclab.notebooks.kinds` (the table of kinds). docs/hdf5-layout.md shows how to read a file
with plain h5py.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

import h5py
import numpy as np

from epyclab import PackageContactInfo
from epyclab.errors import NotebookFormatError, NotebookVersionException
from epyclab.notebooks.epyc1 import VERSION as EPYC1_VERSION
from epyclab.notebooks.epyc1 import read_epyc1
from epyclab.notebooks.hdf5check import check_attribute_types
from epyclab.notebooks.jsonvalues import decode_value
from epyclab.notebooks.kinds import NUMERIC_DTYPES, ColumnState, kind_named
from epyclab.notebooks.packedtext import PackedText
from epyclab.notebooks.stored import Later, StoredNotebook, StoredResultSet, StoredRows
from epyclab.notebooks.types import StoredColumn
from epyclab.notebooks.untrusted import (
    check_bare_rows,
    check_count,
    check_roles,
    check_rows,
    check_storage,
    check_version,
    checked_later,
    damaged,
    reading,
)

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
    "WRITE_OPTIONS",
    "CREATE_OPTIONS",
]

VERSION = "2"
CREATOR = PackageContactInfo
_ROLE_NAMES = ("parameter", "result", "metadata")
#: A column of at most this many rows is stored contiguous (no chunk index, no padding): small
#: result sets cost their data, not a chunk each. It is rewritten (a few KB) when rows are added.
_CONTIGUOUS_ROWS = 256
#: The rows of a chunk of a larger column: an eighth of its length, rounded up to a power of
#: two (so the last chunk's unused rows are at most a quarter of the column), at most
#: _MAX_CHUNK. A column that grows past _MAX_CHUNKS chunks is rewritten with chunks for its
#: new length (at least 8 times larger: rewriting costs a seventh of the column's writes, and
#: the space it frees is used again), so reading a column touches at most _MAX_CHUNKS chunks,
#: or chunks of _MAX_CHUNK rows.
_MAX_CHUNK, _MAX_CHUNKS = 16384, 64

#: How epyclab opens a notebook file to write it: objects in the HDF5 1.10 format, whose
#: resizable datasets index their chunks in a few hundred bytes (the 1.8 format's B-tree
#: takes about 2 KB per dataset). HDF5 1.10 (2016) and later read it; h5py bundles 1.12+.
WRITE_OPTIONS: dict[str, Any] = {"libver": ("v110", "latest")}
#: ...and how it creates one: the space of rewritten columns and deleted result sets is
#: kept track of in the file and used again by later checkpoints, so the file does not grow.
CREATE_OPTIONS: dict[str, Any] = {**WRITE_OPTIONS, "fs_strategy": "fsm", "fs_persist": True}


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
    """Everything a notebook file holds (an epyclab file, or an epyc 1.x one), checked as it is read.

    Raises:
        NotebookFormatError: the file is not a notebook, or is damaged: naming the file and the
            group, dataset or attribute that is wrong (see :mod:`epyclab.notebooks.untrusted`).
        NotebookVersionException: a format version this release does not read.
    """
    with open_file(path) as f:
        with reading(path, "the file's attributes (/)"):
            check_attribute_types(path, f)
            if "version" not in f.attrs:
                raise NotebookFormatError(
                    f"{path} is an HDF5 file but not a notebook (it has no 'version' attribute); "
                    f"give the name of an epyclab or epyc notebook, or a new file name"
                )
            version = check_version(path, "attribute version of /", _text(f.attrs["version"]))
        if version == VERSION:
            return _read_v2(path, f)
        if version == EPYC1_VERSION:
            with reading(path, "an epyc 1.x notebook"):
                return read_epyc1(f)
        raise NotebookVersionException(f"'{EPYC1_VERSION}' (epyc) and '{VERSION}'", version, path)


def _read_v2(path: str, f: h5py.File) -> StoredNotebook:
    size = os.path.getsize(path)
    with reading(path, "group /resultsets"):
        groups = list(f["resultsets"].items())
    sets = []
    for link, g in groups:
        with reading(path, f"result set group /resultsets/{link}"):
            if not isinstance(g, h5py.Group):
                raise TypeError("it is not a group")
            sets.append(_read_resultset(path, link, g, size))
    with reading(path, "the file's attributes (/)"):
        return StoredNotebook(
            version=VERSION,
            description=_text(f.attrs["description"]),
            locked=bool(f.attrs["locked"]),
            current=_text(f.attrs["current-resultset"]) or None,
            resultsets=sets,
            file_id=_file_id(path, _text(f.attrs["file-id"])),
            seq=check_count(path, "attribute journal-seq of /", f.attrs["journal-seq"]),
        )


def _file_id(path: str, text: str) -> str:
    """The file's identity (a uuid4's 32 hex digits, as written), which a journal's header repeats."""
    if not re.fullmatch(r"[0-9a-f]{32}", text):
        raise damaged(path, "attribute file-id of /", f"{text!r:.50} is not a file identity")
    return text


def _read_resultset(path: str, link: str, g: h5py.Group, file_size: int) -> StoredResultSet:
    where = f"result set group {g.name}"
    check_attribute_types(path, g)
    tag = _text(g.attrs["tag"])
    if escape(tag) != link:
        raise damaged(path, where, f"its tag {tag!r} is not the one its name says")
    rows = check_count(path, f"attribute rows of {g.name}", g.attrs["rows"])
    roles = check_roles(path, where, json.loads(_text(g.attrs["roles"])))
    columns: dict[str, Any] = {}
    kinds: dict[str, ColumnState] = {}
    dtypes: dict[str, Any] = {}
    for name in (n for role in _ROLE_NAMES for n in roles[role]):
        dataset = f"dataset {g.name}/columns/{escape(name)}"
        with reading(path, dataset):
            stored = read_stored(g, name, rows, path)
            kind = kind_named(stored.kind)
            kinds[name], cells = kind.read_state(stored)
        # The stored arrays are read now (the file closes); typing them waits for the DataFrame.
        columns[name] = Later(checked_later(path, dataset, kind.from_storage), stored) if cells is None else cells
        dtypes[name] = kinds[name].dtype
    if not columns:
        check_bare_rows(path, where, rows, file_size)
    missing = {}
    if "missing" in g:
        for name in kinds:
            link = escape(name)
            if kinds[name].kind.masks_missing and link in g["missing"]:
                with reading(path, f"dataset {g.name}/missing/{link}"):
                    mask = _dataset(g["missing"], link, rows, path, np.dtype(np.uint8))
                    missing[name] = mask[:rows].astype(bool)
    pending = {}
    if "pending" in g:
        with reading(path, f"group {g.name}/pending"):
            jobids = g["pending"]["jobid"].asstr()[...]
            params = g["pending"]["parameters"].asstr()[...]
            if len(jobids) != len(params):
                raise ValueError(f"{len(jobids)} job id(s) for {len(params)} set(s) of parameters")
            pending = {j: decode_value(json.loads(p)) for j, p in zip(jobids, params)}
    with reading(path, f"attribute attributes of {g.name}"):
        attributes = decode_value(json.loads(_text(g.attrs["attributes"])))
        if not isinstance(attributes, dict):
            raise TypeError(f"the attributes are a {type(attributes).__name__}, not a dict")
    return StoredResultSet(
        tag=tag,
        uid=_text(g.attrs["uid"]),
        description=_text(g.attrs["description"]),
        locked=bool(g.attrs["locked"]),
        attributes=attributes,
        roles=roles,
        rows=StoredRows(rows, columns),
        kinds=kinds,
        pending=pending,
        dtypes=dtypes,
        missing=missing,
    )


def _dataset(group: h5py.Group, link: str, rows: int, path: str, dtype: Any = None) -> h5py.Dataset:
    """Dataset ``link`` of ``group``, checked to hold ``rows`` cells in bytes the file really has.

    ``dtype``: the (numpy) dtype it must have, if known.
    """
    ds = group[link]
    where = f"dataset {ds.name}"
    if not isinstance(ds, h5py.Dataset) or len(ds.shape) != 1:
        raise damaged(path, where, "it is not a one-dimensional dataset")
    # (A vlen dtype is numpy's object dtype with the element in its metadata: compared apart.)
    if dtype is not None and (ds.dtype != dtype or h5py.check_vlen_dtype(ds.dtype) != h5py.check_vlen_dtype(dtype)):
        raise damaged(path, where, f"its dtype is {ds.dtype}, not {dtype}")
    check_rows(path, f"result set group {group.parent.name}", rows, ds.shape[0], where)
    check_storage(path, ds, rows)
    return ds


#: The dtype of an array column's cell shapes.
_SHAPES_DTYPE = h5py.vlen_dtype(np.int64)


def read_stored(g: h5py.Group, name: str, rows: int, path: str = "") -> StoredColumn:
    """The first ``rows`` cells of column ``name`` of result set group ``g``.

    Raises:
        NotebookFormatError: the dataset (or its shapes) holds fewer cells than ``rows``.
    """
    path = path or g.file.filename
    ds = _dataset(g["columns"], escape(name), rows, path)
    check_attribute_types(path, ds)
    kind = _text(ds.attrs["kind"])
    if h5py.check_string_dtype(ds.dtype) is not None:
        if kind == "str":
            # Kept packed until the DataFrame wants it: a str object per cell would hold ~3x the frame.
            return StoredColumn(kind, PackedText.read(lambda a, b: ds[a:b], rows))
        return StoredColumn(kind, ds.asstr()[:rows])
    element = h5py.check_vlen_dtype(ds.dtype)
    # Only the dtypes a notebook writes are read: HDF5 converting cells of a damaged type (a
    # sequence of sequences, a reference) can crash the process, not only fail.
    if (element if element is not None else ds.dtype) not in NUMERIC_DTYPES:
        raise damaged(path, f"dataset {ds.name}", f"its dtype {ds.dtype} is not one a notebook stores")
    if element is not None:
        shapes = _dataset(g["shapes"], escape(name), rows, path, _SHAPES_DTYPE)[:rows]
        # A cell's shape is checked against its values when the cell is made (reshaping allocates
        # nothing, and fails on a shape that does not fit): checking 100,000 of them here would
        # double the time it takes to open a notebook of array cells.
        return StoredColumn(kind, ds[:rows], shapes=shapes, element=element)
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
    if not pending_json:
        return  # no group for none: a result set without pending results costs nothing for them
    p = g.create_group("pending")
    text = h5py.string_dtype()
    p.create_dataset("jobid", data=np.array(list(pending_json), dtype=object), dtype=text)
    p.create_dataset("parameters", data=np.array(list(pending_json.values()), dtype=object), dtype=text)


def _chunk(n: int) -> int:
    """The rows of a chunk for a column of ``n`` rows (a power of two, ``n/8`` or more, at most ``_MAX_CHUNK``)."""
    size = 1
    while size * 8 < n and size < _MAX_CHUNK:
        size *= 2
    return size


def _layout(n: int) -> dict[str, Any]:
    """The storage of a dataset of ``n`` rows: contiguous if small, else chunked and resizable."""
    if n <= _CONTIGUOUS_ROWS:
        return {"shape": (n,)}
    return {"shape": (n,), "maxshape": (None,), "chunks": (_chunk(n),)}


def _fits(ds: h5py.Dataset, end: int) -> bool:
    """True if ``ds`` can grow to ``end`` rows as it is (else it is rewritten with a new layout)."""
    if ds.chunks is None or ds.maxshape[0] is not None:
        return end <= ds.shape[0]
    return ds.chunks[0] >= _MAX_CHUNK or end <= ds.chunks[0] * _MAX_CHUNKS


def _create(parent: h5py.Group, link: str, n: int, dtype: Any) -> h5py.Dataset:
    return parent.create_dataset(link, dtype=dtype, **_layout(n))


def _grown(parent: h5py.Group, link: str, keep: int, end: int) -> h5py.Dataset:
    """Dataset ``link`` of ``parent`` able to hold ``end`` rows, its first ``keep`` rows kept.

    A small (contiguous) dataset, or one whose chunks are small for ``end`` rows, is
    written again under the same name with the layout for ``end`` rows, attributes and all.
    """
    ds = parent[link]
    if _fits(ds, end):
        if ds.shape[0] != end:
            ds.resize((end,))
        return ds
    cells = (ds.asstr() if h5py.check_string_dtype(ds.dtype) else ds)[:keep] if keep else None
    attrs = dict(ds.attrs)
    dtype = ds.dtype
    del parent[link]
    new = _create(parent, link, end, dtype)
    if keep:
        _write(new, 0, cells)
    for key, value in attrs.items():
        new.attrs[key] = value
    return new


def write_column(g: h5py.Group, name: str, col: StoredColumn, missing: np.ndarray | None = None) -> None:
    """Create (or replace) column ``name`` holding ``col`` (``missing``: its missing cells, if kept)."""
    link = escape(name)
    for sub in ("columns", "shapes", "missing"):
        if sub in g and link in g[sub]:
            del g[sub][link]
    n = len(col)
    ds = _create(g.require_group("columns"), link, n, kind_named(col.kind).h5_dtype(col))
    if n:
        _write(ds, 0, col.data)
    ds.attrs["name"] = name
    ds.attrs["kind"] = col.kind
    if col.unit is not None:
        ds.attrs["unit"] = col.unit
    if col.shapes is not None:
        shapes = _create(g.require_group("shapes"), link, n, h5py.vlen_dtype(np.int64))
        if n:
            _write(shapes, 0, col.shapes)
    if missing is not None and missing.any():
        # No mask is no missing cell (as in a file of an epyclab that kept none): most columns need none.
        mask = _create(g.require_group("missing"), link, n, np.uint8)
        mask[:] = missing.astype(np.uint8)


def append_column(
    g: h5py.Group, name: str, start: int, col: StoredColumn, missing: np.ndarray | None = None
) -> None:
    """Write ``col`` (and ``missing``, if kept) as rows ``start`` onwards of column ``name``."""
    link = escape(name)
    end = start + len(col)
    ds = _grown(g["columns"], link, start, end)
    _write(ds, start, col.data)
    if col.shapes is not None:
        shapes = _grown(g["shapes"], link, start, end)
        _write(shapes, start, col.shapes)
    if missing is not None:
        masks = g.require_group("missing")
        if link not in masks:
            if not missing.any():
                return  # still no missing cell: still no mask
            # No mask so far: none of its cells was missing (0 was a value).
            _create(masks, link, start, np.uint8)
        mask = _grown(masks, link, start, end)
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
