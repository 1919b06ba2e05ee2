"""The JSON notebook: the same content as an HDF5 notebook, in one readable JSON file.

Each commit that changed something writes the whole notebook to a temporary
file beside it and renames that over the notebook, so the file is always
either the old notebook or the new one, whatever happens. That costs the size
of the notebook per commit: JSON notebooks suit small notebooks (thousands of
rows); use :class:`~epyclab.HDF5LabNotebook` for large ones.

Layout (``version`` '2')::

    {"format": "epyclab-notebook", "version": "2", "description": ..., "locked": false,
     "current": "<tag>",
     "resultsets": [
        {"tag": ..., "description": ..., "locked": false, "attributes": {...},
         "roles": {"parameter": [...], "result": [...], "metadata": [...]},
         "rows": 3,
         "columns": {"<name>": {"kind": "float", "dtype": "<f8", "values": [...]}, ...},
         "pending": {"<jobid>": {<parameters>}, ...}}]}

Column values by kind: bool, int and str as JSON values; float as numbers,
with NaN and infinities as ``{"__float__": "nan"}`` (``"inf"``, ``"-inf"``);
complex as ``[re, im]`` pairs; datetime as ISO 8601 text (``null`` for a
missing one) with the column's ``unit``; array, list and tuple cells as
tagged values (:mod:`epyclab.notebooks.jsonvalues`), ``null`` for missing;
``"dtype"`` is the column's dtype (the element dtype for cells), and an int
column's ``"missing"`` lists the rows whose 0 is a missing cell. Each kind's
encoding is its entry in the table of kinds (:mod:`epyclab.notebooks.kinds`).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from typing import Any, Callable

import numpy as np

from epyclab.errors import NotebookFormatError, NotebookReadOnlyError, NotebookVersionException
from epyclab.log import logger
from epyclab.notebooks.epyc1json import is_epyc_json, read_epyc_json
from epyclab.notebooks.jsonvalues import decode_value, encode_value
from epyclab.notebooks.kinds import KINDS, ColumnState, kind_named
from epyclab.notebooks.paths import open_regular
from epyclab.notebooks.persistent import PersistentLabNotebook
from epyclab.notebooks.resultset import ResultSet
from epyclab.notebooks.sidefiles import notebook_key, safe_write
from epyclab.notebooks.stored import Later, StoredNotebook, StoredResultSet, StoredRows
from epyclab.notebooks.untrusted import (
    check_bare_rows,
    check_count,
    check_roles,
    check_version,
    checked_later,
    damaged,
    file_dtype,
    reading,
)

__all__ = ["JSONLabNotebook"]

FORMAT = "epyclab-notebook"
VERSION = "2"


class JSONLabNotebook(PersistentLabNotebook):
    """A notebook persisted as JSON, rewritten atomically (temporary file, then rename) on each commit.

    Arguments as :class:`~epyclab.HDF5LabNotebook`.
    """

    def __init__(
        self,
        name: str | os.PathLike[str],
        create: bool = False,
        description: str | None = None,
        readonly: bool = False,
        force: bool = False,
    ) -> None:
        self._from_epyc = False
        self._backup = ""
        super().__init__(name, create, description, readonly, force)

    def _read_json(self) -> StoredNotebook:
        try:
            with os.fdopen(open_regular(self._path), encoding="utf-8") as f:
                doc = json.load(f)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise NotebookFormatError(f"{self._path} is not a JSON notebook: {type(exc).__name__}: {exc}") from None
        self._from_epyc = is_epyc_json(doc)
        if self._from_epyc:
            with reading(self._path, "an epyc 1.x JSON notebook"):
                return read_epyc_json(doc, self._path)
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise NotebookFormatError(
                f"{self._path} is JSON but not an epyclab notebook (no \"format\": \"{FORMAT}\"); "
                f"give the name of a JSON notebook, or a new file name"
            )
        check_version(self._path, 'key "version"', doc.get("version"))
        if doc.get("version") != VERSION:
            raise NotebookVersionException(f"'{VERSION}'", str(doc.get("version")), self._path)
        size = os.path.getsize(self._path)
        with reading(self._path, 'key "resultsets"'):
            sets = doc["resultsets"]
            if not isinstance(sets, list):
                raise TypeError(f"it is a {type(sets).__name__}, not a list")
        resultsets = [_read_resultset(self._path, i, s, size) for i, s in enumerate(sets)]
        with reading(self._path, 'keys "description", "locked" and "current"'):
            return StoredNotebook(
                version=VERSION,
                description=_typed(doc["description"], str),
                locked=_typed(doc["locked"], bool),
                current=_typed(doc["current"], (str, type(None))),
                resultsets=resultsets,
            )

    def _create_file(self, description: str) -> None:
        self._from_epyc = False
        self._write({"format": FORMAT, "version": VERSION, "description": description, "locked": False,
                     "current": None, "resultsets": []})

    def _read_file(self, writer: bool) -> StoredNotebook:
        if writer:
            names = os.stat(self._path).st_nlink
            if names > 1:
                # Each commit writes a new file renamed over this name: the other names would keep
                # the old one, and two writers could each think they write "the" notebook.
                raise NotebookReadOnlyError(
                    f"JSON notebook {self._path} has {names} names (hard links); a commit replaces the file, "
                    f"which would split them into separate notebooks. Copy it to a file of its own "
                    f"(cp {self._path} NEW.json) and write that, or open it with readonly=True"
                )
        return self._read_json()

    def _save(self) -> None:
        """Write the whole notebook (JSON has no cheaper way); an epyc file is kept aside first."""
        if self._from_epyc:
            self._keep_epyc_original()
        doc = {
            "format": FORMAT,
            "version": VERSION,
            "description": self._description,
            "locked": self._locked,
            "current": self._current,
            "resultsets": [self._resultset_doc(tag, rs) for tag, rs in self._resultsets.items()],
        }
        self._write(doc)
        if self._from_epyc:
            self._from_epyc = False
            logger.warning(
                "%s was an epyc 1.x JSON notebook; it is now in epyclab's format (the original is kept as %s)",
                self._path, self._backup,
            )

    def _keep_epyc_original(self) -> None:
        target = notebook_key(self._path)
        backup, n = f"{target}.epyc1.bak", 0
        while os.path.exists(backup):
            n += 1
            backup = f"{target}.epyc1.bak{n}"
        try:
            os.link(target, backup)
        except OSError:  # a file system without hard links
            shutil.copy2(target, backup)
        self._backup = backup

    def _resultset_doc(self, tag: str, rs: ResultSet) -> dict[str, Any]:
        frame = rs.storedFrame()
        states = rs.columnStates()
        return {
            "tag": tag,
            "description": rs.description(),
            "locked": rs.isLocked(),
            "attributes": encode_value(rs.attributes(), what=f"an attribute of result set {tag!r}"),
            "roles": rs.roles(),
            "rows": len(frame),
            "columns": {
                name: _column_doc(frame[name].array, states.get(name), lambda n=name: rs.missingMask(n))
                for name in frame.columns
            },
            "pending": {
                j: encode_value(p, what=f"the parameters of pending job {j!r}") for j, p in rs.pendingItems().items()
            },
        }

    def _write(self, doc: dict[str, Any]) -> None:
        """Replace the file with ``doc`` in one step (a temporary file renamed over it)."""
        text = json.dumps(doc, ensure_ascii=False, allow_nan=False)
        # Into the file a symbolic link names, so the link stays a link.
        safe_write(notebook_key(self._path), lambda f: f.write(text), what="saving the notebook")
        # The file is a new inode now: the writer's lock on the old one is moved to it.
        self._lock.lock_file()


def _column_doc(col: Any, state: ColumnState | None, missing_mask: Callable[[], np.ndarray]) -> dict[str, Any]:
    """A column's JSON: its kind, the dtype its values keep, and its cells as the table of kinds encodes them."""
    if state is None:
        state = KINDS["missing"].state(None)
    stored = state.kind.to_storage(col, state)
    dtype = state.kind.storage_dtype(stored)
    doc: dict[str, Any] = {"kind": state.kind.name, "dtype": None if dtype is None else dtype.str}
    if stored.unit is not None:
        doc["unit"] = stored.unit
    doc["values"] = state.kind.json_values(stored)
    if state.kind.masks_missing:
        # The rows whose 0 is a fill, not a value (they become NaN if the column widens).
        doc["missing"] = np.flatnonzero(missing_mask()).tolist()
    return doc


def _typed(value: Any, types: type | tuple[type, ...]) -> Any:
    """``value``, if of ``types`` (read from a file: not trusted to be)."""
    if not isinstance(value, types):
        raise TypeError(f"{value!r:.60} is a {type(value).__name__}, not what a notebook stores there")
    return value


def _read_column(path: str, where: str, doc: dict[str, Any], rows: int) -> tuple[Any, ColumnState, Any]:
    """The typed column (or a :class:`Later` making it), state and storage dtype of a column's JSON.

    Its ``"missing"`` rows are read apart.
    """
    kind = kind_named(doc["kind"])
    dtype = doc.get("dtype")
    values = _typed(doc["values"], list)
    if len(values) != rows:
        raise damaged(path, where, f"it holds {len(values)} value(s) for {rows} row(s)")
    dtype = None if dtype is None else file_dtype(path, where, dtype)
    stored = kind.json_column(values, dtype, _typed(doc.get("unit"), (str, type(None))))
    state, col = kind.read_state(stored)
    made = Later(checked_later(path, where, kind.from_storage), stored)
    return made if col is None else col, state, state.dtype


def _read_resultset(path: str, i: int, doc: Any, file_size: int) -> StoredResultSet:
    where = f'result set {i} of "resultsets"'
    with reading(path, where):
        _typed(doc, dict)
        tag = _typed(doc["tag"], str)
        where = f"result set {tag!r}"
        rows = check_count(path, f'key "rows" of {where}', doc["rows"])
        columns_doc = _typed(doc["columns"], dict)
        roles = check_roles(path, where, doc["roles"], columns_doc)
    columns, kinds, dtypes, missing = {}, {}, {}, {}
    for name, col in columns_doc.items():
        column = f"column {name!r} of {where}"
        with reading(path, column):
            columns[name], kinds[name], dtypes[name] = _read_column(path, column, _typed(col, dict), rows)
            if col.get("missing"):
                cells = _typed(col["missing"], list)
                if not all(isinstance(r, int) and not isinstance(r, bool) and 0 <= r < rows for r in cells):
                    raise damaged(path, column, f'its "missing" rows are not rows of its {rows}')
                mask = np.zeros(rows, dtype=bool)
                mask[cells] = True
                missing[name] = mask
    if not columns:
        check_bare_rows(path, where, rows, file_size)
    with reading(path, where):
        return StoredResultSet(
            tag=tag,
            uid=uuid.uuid4().hex,
            description=_typed(doc["description"], str),
            locked=_typed(doc["locked"], bool),
            attributes=_typed(decode_value(doc["attributes"]), dict),
            roles=roles,
            rows=StoredRows(rows, columns),
            kinds=kinds,
            pending={j: _typed(decode_value(p), dict) for j, p in _typed(doc["pending"], dict).items()},
            dtypes=dtypes,
            missing=missing,
        )
