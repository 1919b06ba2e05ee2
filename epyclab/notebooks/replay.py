"""Replaying journal records: making a notebook in memory what it was after the commits they record.

Opening an HDF5 notebook loads what its file holds, then replays the journal
records the file does not include yet (see :mod:`epyclab.notebooks.hdf5`). A
record holds what one commit changed: the notebook's state (result sets,
descriptions, attributes, locks, selection) when it changed, the rows added to
each result set, and the pending results added and removed.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from epyclab.errors import NotebookFormatError
from epyclab.notebooks.columns import MISSING
from epyclab.notebooks.jsonvalues import decode_value
from epyclab.notebooks.resultset import ResultSet

if TYPE_CHECKING:
    from epyclab.notebooks.hdf5 import HDF5LabNotebook

__all__ = ["apply_record"]


def apply_record(nb: HDF5LabNotebook, record: dict[str, Any]) -> None:
    """Make ``nb`` in memory what it was after the commit that wrote ``record``."""
    by_uid = {nb._uid(rs): rs for rs in nb._resultsets.values()}
    state = record.get("state")
    sets: dict[str, ResultSet] = {}
    if state is not None:
        for uid, tag, description, _, _ in state["sets"]:
            if uid not in by_uid:
                by_uid[uid] = nb._adopt(uid, description)
            sets[tag] = by_uid[uid]
    unknown = [u for u, *_ in record["rows"] + record["pending"] if u not in by_uid]
    if unknown:
        raise NotebookFormatError(
            f"journal record {record['seq']} of {nb.name()} refers to result sets the notebook "
            f"does not have ({unknown}); the journal does not match the file"
        )
    # Rows before locks: a result set finished in this commit got its last rows first.
    for uid, start, roles, columns in record["rows"]:
        _add_rows(by_uid[uid], start, roles, columns)
    for uid, added, removed in record["pending"]:
        rs = by_uid[uid]
        for jobid in removed:
            rs._pending.pop(jobid, None)
        for jobid, params in added.items():
            rs._pending[jobid] = decode_value(json.loads(params))
        rs._pending_version += 1
    if state is not None:
        nb._resultsets = sets
        for _, tag, description, locked, attributes in state["sets"]:
            rs = sets[tag]
            rs._description, rs._locked = description, locked
            rs._attributes = decode_value(json.loads(attributes))
        nb._description, nb._locked, nb._current = state["description"], state["locked"], state["current"]
    nb._seq = record["seq"]


def _add_rows(rs: ResultSet, start: int, roles: Any, columns: dict[str, list[Any]]) -> None:
    """Add to ``rs`` the rows of a record it does not have yet."""
    roles = roles if roles is not None else rs._roles()
    names = [roles["parameter"], roles["result"], roles["metadata"]]
    n = len(next(iter(columns.values()))) if columns else 0
    have = rs.numberOfResults()
    if have < start:
        raise NotebookFormatError(
            f"the journal of this notebook skips rows {have} to {start - 1}; it does not match the file"
        )
    for i in range(have - start, n):
        p, r, m = ({k: columns[k][i] for k in part if columns[k][i] is not MISSING} for part in names)
        rs.addSingleResult({"parameters": p, "results": r, "metadata": m})
