"""A cluster sweep counted in points, per result set: queued, running, done, failed.

What users count is points, not ipyparallel tasks (a task carries a chunk of
points, and a collected task is purged from the hub). The notebook knows
which points are done or failed (its rows) and which are pending (its
pending job ids, ``"<task id>/<index>"``, see :mod:`epyclab.labs.jobs`); the
hub knows which tasks an engine is running now. :func:`pointCounts` puts the
two together; ``ClusterLab.pointCounts`` and ``epyclab cluster status PROFILE
NOTEBOOK`` both use it.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from epyclab.labs.jobs import parse_job_id
from epyclab.notebooks.labnotebook import LabNotebook

__all__ = ["PointCounts", "pointCounts", "describeCounts"]


@dataclass(frozen=True)
class PointCounts:
    """The points of one result set: pending (queued or in a running chunk) and finished (done, of which failed)."""

    queued: int = 0
    running: int = 0
    done: int = 0
    failed: int = 0

    def line(self) -> str:
        """``"12 queued, 4 running, 180 done (2 failed)"``."""
        return f"{self.queued} queued, {self.running} running, {self.done} done ({self.failed} failed)"


def pointCounts(notebook: LabNotebook, running: Collection[str] = ()) -> dict[str, PointCounts]:
    """Result set tag -> its points, for every result set with a row or a pending point.

    :param running: ids of the tasks an engine is running now (from the hub);
        a pending point of such a task counts as running, any other pending
        point as queued. Done counts every row, failed the rows whose run failed.
    """
    running = set(running)
    counts = {}
    for tag in notebook.keys():
        rs = notebook.resultSet(tag)
        pending = rs.pendingResults()
        busy = sum(1 for j in pending if parse_job_id(j).msg_id in running)
        done = rs.numberOfResults()
        if done or pending:
            counts[tag] = PointCounts(len(pending) - busy, busy, done, rs.numberOfFailedResults())
    return counts


def describeCounts(counts: dict[str, PointCounts]) -> list[str]:
    """One line per result set: ``"  TAG: 12 queued, 4 running, 180 done (2 failed)"``."""
    return [f"  {tag}: {c.line()}" for tag, c in counts.items()]
