"""A cluster sweep counted in points, per result set: queued, running, finished not collected, done, failed.

What users count is points, not ipyparallel tasks (a task carries a chunk of
points, and a collected task is purged from the hub). The notebook knows
which points are done or failed (its rows) and which are pending (its
pending job ids, ``"<task id>/<index>"``, see :mod:`epyclab.labs.remote.jobs`); the
hub knows which tasks an engine is running now, and which have finished there
but are not collected yet (their results wait at the controller until
``wait()``, ``updateResults()`` or a collector writes them). :func:`hubTasks`
reads the hub's answers (its queue status and task records) into those two
sets, :func:`pointCounts` puts them together with the notebook;
``ClusterLab.pointCounts`` and ``epyclab cluster status PROFILE NOTEBOOK``
both use the two, so they agree.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from epyclab.labs.remote.jobs import parse_job_id
from epyclab.notebooks.labnotebook import LabNotebook

__all__ = ["PointCounts", "pointCounts", "describeCounts", "hubTasks"]


@dataclass(frozen=True)
class PointCounts:
    """The points of one result set: pending (queued, in a running chunk, or finished on an engine but not
    collected) and recorded in the notebook (done, of which failed)."""

    queued: int = 0
    running: int = 0
    done: int = 0
    failed: int = 0
    #: Pending in the notebook, but their chunk finished on an engine: the result waits at the controller.
    uncollected: int = 0

    def line(self) -> str:
        """``"12 queued, 4 running, 180 done (2 failed)"``, with ``"8 finished not collected, "`` before done."""
        waiting = f"{self.uncollected} finished not collected, " if self.uncollected else ""
        return f"{self.queued} queued, {self.running} running, {waiting}{self.done} done ({self.failed} failed)"


def hubTasks(queues: Mapping[Any, Any], records: Iterable[Mapping[str, Any]]) -> tuple[set[str], set[str]]:
    """What the hub says of its tasks: ``(running, finished)``, the ids of pointCounts' two sets.

    :param queues: the hub's verbose queue status (``Client.queue_status(verbose=True)``, or the content of
        a ``queue_request``): engine id -> ``{"tasks": [...], "queue": [...], ...}``; a task assigned to an
        engine runs there (the hub fills a record's ``started`` only when its result arrives, so the
        records cannot tell running from queued)
    :param records: task records with ``msg_id`` and ``completed``: a completed one has finished (a
        collected task is purged from the hub, so one still there is not collected)
    """
    running = {str(t) for q in queues.values() if isinstance(q, Mapping)
               for t in (*(q.get("tasks") or ()), *(q.get("queue") or ()))}
    finished = {str(r["msg_id"]) for r in records if r.get("completed") is not None}
    return running, finished


def pointCounts(
    notebook: LabNotebook, running: Collection[str] = (), finished: Collection[str] = ()
) -> dict[str, PointCounts]:
    """Result set tag -> its points, for every result set with a row or a pending point.

    :param running: ids of the tasks an engine is running now (from the hub);
        a pending point of such a task counts as running
    :param finished: ids of the tasks the hub holds finished (from the hub);
        a pending point of such a task counts as finished not collected,
        any other pending point as queued. Done counts every row, failed the
        rows whose run failed.
    """
    running, finished = set(running), set(finished)
    counts = {}
    for tag in notebook.keys():
        rs = notebook.resultSet(tag)
        pending = rs.pendingResults()
        tasks = [parse_job_id(j).msg_id for j in pending]
        ended = sum(1 for t in tasks if t in finished)
        busy = sum(1 for t in tasks if t in running and t not in finished)
        done = rs.numberOfResults()
        if done or pending:
            counts[tag] = PointCounts(len(pending) - busy - ended, busy, done, rs.numberOfFailedResults(), ended)
    return counts


#: Said under the counts when some points finished but are not collected.
UNCOLLECTED_HINT = ("  finished, not collected: their results wait at the controller; run wait() or "
                    "updateResults() on a ClusterLab of this notebook, or a collector")


def describeCounts(counts: dict[str, PointCounts]) -> list[str]:
    """One line per result set: ``"  TAG: 12 queued, 4 running, 180 done (2 failed)"``; then how to collect,
    if some points finished but are not collected."""
    lines = [f"  {tag}: {c.line()}" for tag, c in counts.items()]
    if any(c.uncollected for c in counts.values()):
        lines.append(UNCOLLECTED_HINT)
    return lines
