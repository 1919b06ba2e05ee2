"""The change feed: what changed in a result set since a persistent notebook last saved it.

``commit()`` is a template (DESIGN.md): the notebook keeps a :class:`ChangeMark`
per result set, asks :func:`changes_since` for the rows, new columns, pending
jobs added and removed and state changes after it, and hands those to its
format's save hook. A commit so costs what it adds. The feed reads a result set
through its public methods only (:class:`ChangeSource`), so it can be tested
with any object that has them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["ChangeMark", "Changes", "ChangeSource", "change_mark", "changes_since"]


@dataclass(frozen=True)
class ChangeMark:
    """Where a result set stood: rows, column counts by role, pending results and state counters."""

    rows: int
    sizes: tuple[int, int, int]
    pending_version: int
    pending: dict[str, dict[str, Any]]
    state_version: int


@dataclass(frozen=True)
class Changes:
    """What changed in a result set since a :class:`ChangeMark` (see :func:`changes_since`).

    ``rows`` holds the raw cells of the rows added, by column (``MISSING`` marks an
    absent cell), from row ``start``; ``roles`` is given only when a column was added.
    """

    start: int
    rows: dict[str, list[Any]]
    roles: dict[str, list[str]] | None
    pending_added: dict[str, dict[str, Any]]
    pending_removed: list[str]
    pending_changed: bool
    state_changed: bool
    mark: ChangeMark


class ChangeSource(Protocol):
    """What the feed asks of a result set."""

    def numberOfResults(self) -> int: ...

    def roleSizes(self) -> tuple[int, int, int]: ...

    def versions(self) -> tuple[int, int]: ...

    def pendingItems(self) -> dict[str, dict[str, Any]]: ...

    def bufferedRows(self, start: int) -> dict[str, list[Any]]: ...

    def roles(self) -> dict[str, list[str]]: ...


def change_mark(rs: ChangeSource) -> ChangeMark:
    """Where ``rs`` stands now."""
    state_version, pending_version = rs.versions()
    return ChangeMark(
        rows=rs.numberOfResults(),
        sizes=rs.roleSizes(),
        pending_version=pending_version,
        pending=rs.pendingItems(),
        state_version=state_version,
    )


def changes_since(rs: ChangeSource, mark: ChangeMark) -> Changes:
    """The rows, new columns, pending jobs added and removed, and state changes of ``rs`` since ``mark``.

    ``mark`` is not changed: the result's ``mark`` is where ``rs`` stands now.
    """
    state_version, pending_version = rs.versions()
    same_pending = pending_version == mark.pending_version
    now = ChangeMark(
        rows=rs.numberOfResults(),
        sizes=rs.roleSizes(),
        pending_version=pending_version,
        # Unchanged pending results are not copied again: a commit costs what changed.
        pending=mark.pending if same_pending else rs.pendingItems(),
        state_version=state_version,
    )
    rows = rs.bufferedRows(mark.rows) if now.rows > mark.rows else {}
    added: dict[str, dict[str, Any]] = {}
    removed: list[str] = []
    if not same_pending:
        added = {j: p for j, p in now.pending.items() if j not in mark.pending}
        removed = [j for j in mark.pending if j not in now.pending]
    return Changes(
        start=mark.rows,
        rows=rows,
        roles=rs.roles() if now.sizes != mark.sizes else None,
        pending_added=added,
        pending_removed=removed,
        pending_changed=not same_pending,
        state_changed=now.state_version != mark.state_version,
        mark=now,
    )
