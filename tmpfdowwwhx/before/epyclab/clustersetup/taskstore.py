"""A durable task store for the ipyparallel hub: its SQLite store, fixed to survive restarts.

ipyparallel's :class:`~ipyparallel.controller.sqlitedb.SQLiteDB` keeps task
records in a fixed table of ``tasks.db`` in the profile, so a restarted
controller could still answer for tasks submitted before. In ipyparallel 9.2
its schema check compares the declared column types ('TEXT', as SQLite reports
them) with its own ('text') case-sensitively, decides the table is of an old
format, and creates a new one: every restart silently forgets all earlier
results. :class:`TaskStore` compares case-insensitively, so the table is reused.

It also commits every write as it is made, where the base class commits every
2 s: a record not yet committed is lost if the controller is killed, and a task
whose record is lost can be run again only by the process that submitted it,
which may have exited (``epyclab`` submits a sweep, then collects it from
another shell). The database is in write-ahead-log mode with ``synchronous =
NORMAL``, so a commit costs no ``fsync``; a committed record survives the
controller being killed (only a power loss can take the last few).

Profiles made by ``epyclab cluster init`` select it with
``c.IPController.db_class = 'epyclab.clustersetup.taskstore.TaskStore'``.
"""

from __future__ import annotations

from typing import Any

from ipyparallel.controller.sqlitedb import SQLiteDB

__all__ = ["TaskStore"]


class TaskStore(SQLiteDB):
    """SQLite task records that a restarted controller still finds (see the module docstring)."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        # Every write commits itself (below): the base class's 2 s periodic commit has nothing left to do.
        self._commit_callback.stop()

    def _init_db(self) -> None:
        super()._init_db()
        # WAL: a commit appends to the log without an fsync (synchronous=NORMAL), so committing every
        # write is cheap; readers of the file (sqlite3 by hand) never block the hub.
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")

    def add_record(self, msg_id: str, rec: dict[str, Any]) -> None:
        super().add_record(msg_id, rec)
        self._db.commit()

    def update_record(self, msg_id: str, rec: dict[str, Any]) -> None:
        super().update_record(msg_id, rec)
        self._db.commit()

    def drop_record(self, msg_id: str) -> None:
        super().drop_record(msg_id)
        self._db.commit()

    def drop_matching_records(self, check: dict[str, Any]) -> None:
        super().drop_matching_records(check)
        self._db.commit()

    def _check_table(self) -> bool:
        """True if the table is absent or has the expected columns and types (case ignored)."""
        lines = self._db.execute(f"PRAGMA table_info('{self.table}')").fetchall()
        if not lines:
            return True
        declared = {line[1]: str(line[2]).lower() for line in lines}
        if [line[1] for line in lines] != list(self._keys):
            self.log.warning("task table %s has columns %s, not %s", self.table, list(declared), list(self._keys))
            return False
        for key in self._keys:
            if declared[key] != self._types[key].lower():
                self.log.warning(
                    "task table %s: column %s is %s, not %s", self.table, key, declared[key], self._types[key]
                )
                return False
        return True
