"""A durable task store for the ipyparallel hub: its SQLite store, fixed to survive restarts.

ipyparallel's :class:`~ipyparallel.controller.sqlitedb.SQLiteDB` keeps task
records in a fixed table of ``tasks.db`` in the profile, so a restarted
controller could still answer for tasks submitted before. In ipyparallel 9.2
its schema check compares the declared column types ('TEXT', as SQLite reports
them) with its own ('text') case-sensitively, decides the table is of an old
format, and creates a new one: every restart silently forgets all earlier
results. :class:`TaskStore` compares case-insensitively, so the table is reused.

It also commits more often (every ``commit_interval`` ms instead of every 2 s):
records not yet committed are lost if the controller is killed, and the
shorter the window, the fewer tasks a client has to resubmit.

Profiles made by ``epyclab cluster init`` select it with
``c.IPController.db_class = 'epyclab.cluster.taskstore.TaskStore'``.
"""

from __future__ import annotations

from ipyparallel.controller.sqlitedb import SQLiteDB
from tornado import ioloop
from traitlets import Integer

__all__ = ["TaskStore"]


class TaskStore(SQLiteDB):
    """SQLite task records that a restarted controller still finds (see the module docstring)."""

    commit_interval = Integer(
        500,
        config=True,
        help="Milliseconds between commits of the task database; a killed controller loses at most this much.",
    )

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        # The base class starts a 2 s periodic commit; replace it by ours.
        self._commit_callback.stop()
        self._commit_callback = ioloop.PeriodicCallback(self._db.commit, self.commit_interval)
        self._commit_callback.start()

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
