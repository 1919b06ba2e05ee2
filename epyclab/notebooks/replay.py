"""Replaying journal records: making a notebook in memory what it was after the commits they record.

Opening an HDF5 notebook loads what its file holds, then replays the journal
records the file does not include yet (see :mod:`epyclab.notebooks.hdf5`). A
record holds what one commit changed: the notebook's state (result sets,
descriptions, attributes, locks, selection) when it changed, the rows added to
each result set, the pending results added and removed, and the dtypes
declared with ``setDtype`` (under ``"dtypes"``, in the records that have any).

Damage costs only the damaged commit. Records are replayed in sequence order;
where a commit is missing (its bytes were damaged, or it was set aside), the
later records are replayed after the gap: the rows of a result set are a
sequence of results, so a record's rows go after the rows before them, and the
rows the missing commit held are all that is lost (:class:`Replay` numbers
them, for the warning). Nothing else of a later record depends on a missing
one in a way that could make it wrong: a record's state is whole (every result
set's description, lock and attributes), a pending job is added or removed by
its id (removing one whose addition is missing removes nothing), and a row's
kinds come from its values. What truly cannot be applied (rows of a result set
whose making is missing, columns whose roles only the missing commit named,
rows that do not follow the rows before them and have no missing commit
between) is cut out of its record and set aside, the rest applied.

This module knows result sets and records only, not the notebook that replays
them: the notebook gives its result sets by identity and a way to adopt new
ones, and applies the state a record returns.
"""

from __future__ import annotations

import bisect
import copy
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from epyclab.errors import NotebookFormatError
from epyclab.notebooks.columns import MISSING
from epyclab.notebooks.jsonvalues import decode_value
from epyclab.notebooks.resultset import ResultSet

__all__ = ["NotebookState", "Lost", "Placement", "Replay", "apply_record"]


@dataclass
class NotebookState:
    """A notebook's state as a record gives it: its result sets by tag (in order), description, lock, selection."""

    sets: dict[str, ResultSet]
    description: str
    locked: bool
    current: str | None


@dataclass(frozen=True)
class Lost:
    """Rows of one result set that no intact record holds: a missing commit held them.

    ``first`` is the first one's row number as it was committed (counted from the
    set's first row); ``commits`` are the sequence numbers of the commits missing
    where they were (one of them, or several, held the rows).
    """

    uid: str
    first: int
    count: int
    commits: tuple[int, ...]


@dataclass
class _Cursor:
    """Where a result set's rows stand in the replay."""

    #: The last commit whose rows were placed in the set (the file's last commit at first).
    seq: int
    #: Row numbers as committed minus row numbers here: the rows of missing commits before.
    shift: int = 0


@dataclass
class Placement:
    """What of one record can be applied (``apply``) and what cannot (``aside``, None if nothing).

    ``apply`` is the record with its rows numbered as the notebook numbers them;
    ``changed`` is True if that differs from the record as written (renumbered
    after a missing commit, or with a part cut out). ``why`` says why ``aside``
    cannot be applied.
    """

    apply: dict[str, Any]
    aside: dict[str, Any] | None
    why: str
    changed: bool
    lost: list[Lost]
    cursors: dict[str, _Cursor]


@dataclass
class Replay:
    """Places the records of a journal, in sequence order, in a notebook whose file holds commits up to ``file_seq``.

    :meth:`place` says what of a record can be applied, given the result sets as
    they stand; :meth:`accept` notes that it was. ``lost`` gathers the rows that
    missing commits held, as found.
    """

    file_seq: int
    _cursors: dict[str, _Cursor] = field(default_factory=dict)
    #: Sequence numbers of the records applied whole, ascending.
    _done: list[int] = field(default_factory=list)
    lost: list[Lost] = field(default_factory=list)

    def copy(self) -> Replay:
        """A copy to replay on from here (``lost`` starts empty)."""
        return Replay(self.file_seq, copy.deepcopy(self._cursors), list(self._done), [])

    def _missing(self, after: int, before: int) -> list[int]:
        """The commits between ``after`` and ``before`` (both excluded) not applied whole."""
        lo, hi = bisect.bisect_right(self._done, after), bisect.bisect_left(self._done, before)
        if hi - lo == before - after - 1:
            return []
        done = set(self._done[lo:hi])
        return [s for s in range(after + 1, before) if s not in done]

    def place(self, record: dict[str, Any], by_uid: dict[str, ResultSet]) -> Placement:
        """What of ``record`` can be applied to the result sets ``by_uid`` (by uid, as they stand)."""
        seq = record["seq"]
        state = record.get("state")
        have = {uid: rs.numberOfResults() for uid, rs in by_uid.items()}
        made = {uid for uid, *_ in state["sets"]} if state is not None else set()
        rows, aside_rows, pending, aside_pending, why = [], [], [], [], []
        lost: list[Lost] = []
        cursors: dict[str, _Cursor] = {}
        changed = False
        for entry in record["rows"]:
            uid, start, roles, columns = entry
            if uid not in have and uid not in made:
                aside_rows.append(entry)
                why.append(f"rows of result set {uid}, which a missing commit made")
                continue
            named = roles if roles is not None else (by_uid[uid].roles() if uid in by_uid else {})
            unnamed = sorted(set(columns) - {n for names in named.values() for n in names})
            if unnamed:
                aside_rows.append(entry)
                why.append(f"rows with columns {', '.join(unnamed)} whose roles only a missing commit held")
                continue
            cur = self._cursors.get(uid, _Cursor(self.file_seq))
            expected = have.get(uid, 0) + cur.shift
            shift = cur.shift
            if start != expected:
                missing = self._missing(cur.seq, seq) if start > expected else []
                if not missing:
                    aside_rows.append(entry)
                    why.append(
                        f"rows numbered from {start} as committed, where the rows before end at {expected} "
                        f"and no commit between is missing"
                    )
                    continue
                lost.append(Lost(uid, expected, start - expected, tuple(missing)))
                shift += start - expected
            changed = changed or shift != 0
            cursors[uid] = _Cursor(seq, shift)
            rows.append((uid, start - shift, roles, columns))
        for entry in record["pending"]:
            if entry[0] not in have and entry[0] not in made:
                aside_pending.append(entry)
                why.append(f"pending-result changes of result set {entry[0]}, which a missing commit made")
            else:
                pending.append(entry)
        declared = [e for e in record.get("dtypes", []) if e[0] in have or e[0] in made]
        aside_dtypes = [e for e in record.get("dtypes", []) if not (e[0] in have or e[0] in made)]
        if aside_dtypes:
            why.append("dtypes declared for result sets a missing commit made")
        apply = {**record, "rows": rows, "pending": pending}
        if declared:
            apply["dtypes"] = declared
        else:
            apply.pop("dtypes", None)
        aside = None
        if aside_rows or aside_pending or aside_dtypes:
            aside = {"seq": seq, "state": None, "rows": aside_rows, "pending": aside_pending}
            if aside_dtypes:
                aside["dtypes"] = aside_dtypes
            changed = True
        return Placement(apply, aside, "; ".join(why), changed, lost, cursors)

    def accept(self, placement: Placement) -> None:
        """Note that ``placement.apply`` was applied (records are accepted in sequence order)."""
        self._cursors.update(placement.cursors)
        self.lost.extend(placement.lost)
        if placement.aside is None:
            self._done.append(placement.apply["seq"])


def apply_record(
    record: dict[str, Any],
    by_uid: dict[str, ResultSet],
    adopt: Callable[[str, str], ResultSet],
    where: str,
) -> NotebookState | None:
    """Apply to the result sets ``by_uid`` what the commit that wrote ``record`` changed.

    ``record`` is as :meth:`Replay.place` gives it: its rows follow the rows each
    result set has. ``adopt(uid, description)`` makes a new, empty result set for
    a uid first met here (it is added to ``by_uid``). Returns the notebook's new
    state if the record changed it, else None. ``where`` names the notebook in errors.

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
    unknown = [u for u, *_ in record["rows"] + record["pending"] + record.get("dtypes", []) if u not in by_uid]
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
    # After the commit's rows: a declared dtype widens what is there (and widening commutes with rows).
    for uid, declared in record.get("dtypes", []):
        for dtype in declared:
            by_uid[uid].setDtype(dtype)
    if state is None:
        return None
    for _, tag, description, locked, attributes in state["sets"]:
        sets[tag].restoreState(description, locked, decode_value(json.loads(attributes)))
    return NotebookState(sets, state["description"], state["locked"], state["current"])


def _add_rows(rs: ResultSet, start: int, roles: Any, columns: dict[str, list[Any]]) -> None:
    """Add to ``rs`` the rows of a record, which start where its rows end."""
    have = rs.numberOfResults()
    if have != start:
        raise NotebookFormatError(
            f"a journal record's rows start at row {start} of a result set that has {have}; "
            f"it does not match the file"
        )
    roles = roles if roles is not None else rs.roles()
    names = [roles["parameter"], roles["result"], roles["metadata"]]
    n = len(next(iter(columns.values()))) if columns else 0
    for i in range(n):
        # A column the record lacks has no cell in its rows (a missing cell).
        p, r, m = ({k: columns[k][i] for k in part if k in columns and columns[k][i] is not MISSING} for part in names)
        rs.addSingleResult({"parameters": p, "results": r, "metadata": m})
