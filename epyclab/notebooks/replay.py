"""Replaying journal records: making a notebook in memory what it was after the commits they record.

Opening an HDF5 notebook loads what its file holds, then replays the journal
records the file does not include yet (see :mod:`epyclab.notebooks.hdf5`). A
record holds what one commit changed: the notebook's state (result sets,
descriptions, attributes, locks, selection) when it changed, the rows added to
each result set, and the pending results added and removed.

This module knows result sets and records only, not the notebook that replays
them: the notebook gives its result sets by identity and a way to adopt new
ones, and applies the state a record returns.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from epyclab.errors import NotebookFormatError
from epyclab.notebooks.columns import MISSING
from epyclab.notebooks.jsonvalues import decode_value
from epyclab.notebooks.resultset import ResultSet

__all__ = ["NotebookState", "apply_record", "missing_base"]


@dataclass
class NotebookState:
    """A notebook's state as a record gives it: its result sets by tag (in order), description, lock, selection."""

    sets: dict[str, ResultSet]
    description: str
    locked: bool
    current: str | None


def missing_base(record: dict[str, Any], by_uid: dict[str, ResultSet]) -> str | None:
    """What ``record`` builds on that the notebook lacks (in words), or None if it can be applied.

    A record builds on the result sets it names (known, or made by its own state)
    and, for each result set it adds rows to, on the rows before its first one:
    after a damaged record, the later records of the same result set cannot be
    placed, and are set aside rather than put at the wrong row numbers.
    """
    state = record.get("state")
    known = {uid: rs.numberOfResults() for uid, rs in by_uid.items()}
    if state is not None:
        for uid, *_ in state["sets"]:
            known.setdefault(uid, 0)
    unknown = sorted({u for u, *_ in record["rows"] + record["pending"] if u not in known})
    if unknown:
        return f"it refers to result sets the notebook does not have ({', '.join(unknown)})"
    for uid, start, _, _ in record["rows"]:
        if known[uid] < start:
            return f"its rows start at row {start} of a result set that has {known[uid]} (an earlier commit is missing)"
    return None


def apply_record(
    record: dict[str, Any],
    by_uid: dict[str, ResultSet],
    adopt: Callable[[str, str], ResultSet],
    where: str,
) -> NotebookState | None:
    """Apply to the result sets ``by_uid`` what the commit that wrote ``record`` changed.

    ``adopt(uid, description)`` makes a new, empty result set for a uid first met
    here (it is added to ``by_uid``). Returns the notebook's new state if the
    record changed it, else None. ``where`` names the notebook in errors.

    Raises:
        NotebookFormatError: the record refers to result sets or rows the notebook does not have.
    """
    state = record.get("state")
    sets: dict[str, ResultSet] = {}
    if state is not None:
        for uid, tag, description, _, _ in state["sets"]:
            if uid not in by_uid:
                by_uid[uid] = adopt(uid, description)
            sets[tag] = by_uid[uid]
    unknown = [u for u, *_ in record["rows"] + record["pending"] if u not in by_uid]
    if unknown:
        raise NotebookFormatError(
            f"journal record {record['seq']} of {where} refers to result sets the notebook "
            f"does not have ({unknown}); the journal does not match the file"
        )
    # Rows before locks: a result set finished in this commit got its last rows first.
    for uid, start, roles, columns in record["rows"]:
        _add_rows(by_uid[uid], start, roles, columns)
    for uid, added, removed in record["pending"]:
        by_uid[uid].applyPendingChanges({j: decode_value(json.loads(p)) for j, p in added.items()}, removed)
    if state is None:
        return None
    for _, tag, description, locked, attributes in state["sets"]:
        sets[tag].restoreState(description, locked, decode_value(json.loads(attributes)))
    return NotebookState(sets, state["description"], state["locked"], state["current"])


def _add_rows(rs: ResultSet, start: int, roles: Any, columns: dict[str, list[Any]]) -> None:
    """Add to ``rs`` the rows of a record it does not have yet."""
    roles = roles if roles is not None else rs.roles()
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
