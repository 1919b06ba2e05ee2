"""Cluster jobs: their ids, how points are grouped into tasks, and what a hub record says about a task.

A :class:`~epyclab.labs.clusterlab.ClusterLab` submits points in chunks, one
ipyparallel task per chunk. Each point becomes a pending result in the
notebook under a *job id* that names its task and its place in the chunk:
``"<msg_id>/<index>"``, or ``"<msg_id>/<index>/<attempt>"`` once the chunk has
been resubmitted (after its engine died, or the controller lost it), or
``"<msg_id>/<index>/<attempt>/<outside>"`` once its engine was ended from
outside (resubmissions not counted as attempts, bounded apart). The id is
plain text, so it survives reopening the notebook, and collecting one task
resolves every point of its chunk. Ids of another form (epyc used the bare
task id) are read as index 0 of their task.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache
from time import monotonic
from typing import Any

from ipyparallel import AsyncResult
from ipyparallel.error import RemoteError
from ipyparallel.serialize import deserialize_object

from epyclab.errors import EpyclabError
from epyclab.labs.engine.wire import Payload, is_engine_death

__all__ = [
    "JobRef",
    "OwnTask",
    "TaskTable",
    "LostJobError",
    "HubCapacityError",
    "HUB_RECORD_LIMIT",
    "fit_to_hub",
    "job_id",
    "parse_job_id",
    "group_by_task",
    "chunk_size",
    "split",
    "TaskState",
    "Observation",
    "record_keys",
    "observe_record",
    "observe_error",
]


class LostJobError(EpyclabError):
    """Recorded as the exception of a point whose job the cluster lost and that was not run again."""


class HubCapacityError(EpyclabError, ValueError):
    """A sweep would submit more tasks than the controller's culling task store keeps until collection."""


@dataclass(frozen=True)
class JobRef:
    """One pending point: its job id, its task, its place in the task's chunk, and its attempt."""

    jobid: str
    msg_id: str
    index: int
    attempt: int = 0
    #: Times its engine was ended from outside (resubmissions that do not count as attempts).
    outside: int = 0


def job_id(msg_id: str, index: int, attempt: int = 0, outside: int = 0) -> str:
    """The job id of point ``index`` of task ``msg_id`` (``attempt`` counts resubmissions, ``outside`` the
    resubmissions after its engine was ended from outside)."""
    if outside:
        return f"{msg_id}/{index}/{attempt}/{outside}"
    return f"{msg_id}/{index}" if attempt == 0 else f"{msg_id}/{index}/{attempt}"


@lru_cache(maxsize=1 << 17)
def parse_job_id(jobid: str) -> JobRef:
    """The task, index and attempt named by ``jobid`` (see the module docstring)."""
    # Called for every pending job at every collection pass: kept cheap, and cached.
    msg_id, sep, rest = jobid.partition("/")
    if sep and msg_id:
        index, sep, attempt = rest.partition("/")
        if index.isdigit() and (not sep or attempt.isdigit()):
            return JobRef(jobid, msg_id, int(index), int(attempt) if sep else 0)
        attempt, sep, outside = attempt.partition("/")
        if index.isdigit() and attempt.isdigit() and outside.isdigit():
            return JobRef(jobid, msg_id, int(index), int(attempt), int(outside))
    return JobRef(jobid, jobid, 0, 0)


def group_by_task(jobids: Iterable[str]) -> dict[str, list[JobRef]]:
    """Pending job ids grouped by the task that will give their results."""
    tasks: dict[str, list[JobRef]] = defaultdict(list)
    for j in jobids:
        ref = parse_job_id(j)
        tasks[ref.msg_id].append(ref)
    return dict(tasks)


@dataclass
class OwnTask:
    """A task this lab submitted: its experiment's key, when, and its future (None once unusable)."""

    key: str
    submitted: float
    ar: AsyncResult | None = None


class TaskTable:
    """What this process knows beyond the hub: the tasks it submitted (with futures) and the experiments it holds.

    Owned by the :class:`~epyclab.labs.remote.collect.Collector`; the lab records
    what it submits here through these methods. A collector in another
    process has an empty table and works from the hub's records alone.
    """

    def __init__(self) -> None:
        self._tasks: dict[str, OwnTask] = {}
        self._payloads: dict[str, Payload] = {}

    def addPayloads(self, payloads: Mapping[str, Payload]) -> None:
        """Hold these experiments (by sweep key), so their points can be submitted again from here."""
        self._payloads.update(payloads)

    def payload(self, key: str) -> Payload:
        """The experiment held under ``key`` (KeyError if this process does not hold it)."""
        return self._payloads[key]

    def submitted(self, msg_id: str, key: str, ar: AsyncResult | None) -> None:
        """Record a task just submitted from here, with its future."""
        self._tasks[msg_id] = OwnTask(key, monotonic(), ar)

    def get(self, msg_id: str) -> OwnTask | None:
        """The task ``msg_id`` if this process submitted it (or follows it since a resubmission)."""
        return self._tasks.get(msg_id)

    def keyHeld(self, msg_id: str) -> str | None:
        """The experiment key of task ``msg_id`` if this process holds that experiment, else None."""
        own = self._tasks.get(msg_id)
        return own.key if own is not None and own.key in self._payloads else None

    def classname(self, msg_id: str) -> str:
        """The experiment class of task ``msg_id``, or '' when this process does not know it."""
        key = self.keyHeld(msg_id)
        return self._payloads[key].classname if key is not None else ""

    def forget(self, msg_id: str, moved_to: str | None = None) -> None:
        """Stop following ``msg_id``; follow ``moved_to`` instead (no future) if the hub resubmitted it."""
        own = self._tasks.pop(msg_id, None)
        if moved_to is not None and own is not None:
            self._tasks[moved_to] = OwnTask(own.key, monotonic(), None)

    def detach(self) -> None:
        """The client is gone: its futures will never fire, so follow every task through the hub."""
        for own in self._tasks.values():
            own.ar = None

    def __len__(self) -> int:
        return len(self._tasks)



# ---- chunks ----------------------------------------------------------------------------------

#: The most points in one task when the lab chooses.
LARGEST_CHUNK = 50
#: Aim for at least this many tasks per engine, so the load stays balanced.
CHUNKS_PER_ENGINE = 8


def chunk_size(total: int, engines: int, largest: int = LARGEST_CHUNK) -> int:
    """Points per task for a cluster sweep of ``total`` points on ``engines`` engines.

    The rule: at least :data:`CHUNKS_PER_ENGINE` tasks per engine, and at most
    ``largest`` points per task, so ``ceil(total / (8 * engines))`` capped at
    50. A cluster sweep is submitted before any point has run, so unlike
    ParallelLab it cannot time points first: the cap keeps a task of cheap
    points well above the per-task cost (a few ms) while bounding what an
    engine's death costs (one chunk is run again) and how coarse progress is.
    Points that take seconds each are best run one per task (``chunkSize=1``).
    """
    per_engine = max(1, engines) * CHUNKS_PER_ENGINE
    return max(1, min(int(largest), -(-int(total) // per_engine)))


#: The records ipyparallel's in-memory task store (DictDB) keeps by default (``c.DictDB.record_limit``).
HUB_RECORD_LIMIT = 1024
#: The share of a culling store a sweep leaves free: for probes, resubmissions and other clients.
HUB_MARGIN = 0.1


def fit_to_hub(points: int, size: int, limit: int, used: int, explicit: bool, where: str) -> int:
    """The chunk size that keeps a sweep of ``points`` within a culling task store; refuse if none does.

    The in-memory store culls its oldest records (finished or not) once it
    holds more than ``limit``; it holds ``used`` now. A sweep's tasks all wait
    there until collected, so they must fit in ``limit * (1 - HUB_MARGIN) -
    used``. A chunk size the lab chose (``explicit=False``) is raised to fit;
    one the user gave is kept if it fits. Raises :class:`HubCapacityError`
    (naming the controller ``where`` and the ways out) otherwise.
    """
    free = int(limit * (1 - HUB_MARGIN)) - int(used)
    tasks = -(-int(points) // max(1, int(size)))
    if tasks <= free:
        return size
    durable = (
        "start a controller with a durable task store instead: `epyclab cluster init PROFILE` and "
        "`epyclab cluster start PROFILE` (SQLite, kept over restarts, never culled), or by hand "
        "`ipcontroller --reuse --restore --IPController.db_class=epyclab.clustersetup.taskstore.TaskStore`"
    )
    told = f"if its c.DictDB.record_limit is not {limit}, give it to the lab as ClusterLab(..., hubRecordLimit=N)"
    if free < 1:
        raise HubCapacityError(
            f"{where} keeps task records in ipyparallel's in-memory store, which culls the oldest (finished or "
            f"not) beyond {limit} records, and it holds {used} already: a sweep submitted now could lose its "
            f"tasks before they are collected. Collect or purge what is there, or {durable}; {told}"
        )
    needed = -(-int(points) // free)
    if explicit:
        raise HubCapacityError(
            f"{where} keeps task records in ipyparallel's in-memory store, which culls the oldest (finished or "
            f"not) beyond {limit} records ({used} held now): {points} points in chunks of {size} are {tasks} "
            f"tasks, more than the {free} it can keep until they are collected. Give chunkSize={needed} or more "
            f"(or chunkSize=None to let the lab choose), or {durable}; {told}"
        )
    return needed


def split(items: list[tuple[str, dict[str, Any]]], size: int) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """Consecutive chunks of at most ``size`` points that share an experiment key."""
    size = max(1, int(size))
    chunk: list[dict[str, Any]] = []
    key = None
    for k, p in items:
        if chunk and (k != key or len(chunk) >= size):
            yield key, chunk  # type: ignore[misc]
            chunk = []
        key = k
        chunk.append(p)
    if chunk:
        yield key, chunk  # type: ignore[misc]


# ---- what the hub knows about a task --------------------------------------------------------


class TaskState(Enum):
    """What became of a task, as far as the hub (or this client) can tell."""

    #: Still queued or running.
    PENDING = "pending"
    #: Finished; its reply holds the chunk's results.
    DONE = "done"
    #: Failed on the engine for another reason than the experiment (which never raises there).
    FAILED = "failed"
    #: Its engine died while running it.
    DIED = "died"
    #: The hub has its record but it can never finish (the controller restarted while it was queued or running).
    ORPHAN = "orphan"
    #: Assigned to an engine that has run everything it received since, without it (lost in transit).
    STUCK = "stuck"
    #: The hub has no record of it (not recorded yet, culled from the store, or lost with the controller).
    MISSING = "missing"
    #: Someone resubmitted it; the work continues under another task id.
    MOVED = "moved"
    #: Resubmitted from this process, but the controller's task scheduler never received it.
    UNDELIVERED = "undelivered"


@dataclass
class Observation:
    """A task's state, with the reply (DONE), the error (FAILED, DIED) or the new id (MOVED)."""

    state: TaskState
    reply: Any = None
    error: BaseException | None = None
    moved_to: str | None = None


def record_keys(with_results: bool = True) -> list[str]:
    """The hub record fields :func:`observe_record` reads."""
    keys = ["completed", "resubmitted", "result_content"]
    return keys + ["result_buffers"] if with_results else keys


def observe_record(rec: dict[str, Any] | None) -> Observation:
    """What a hub task record (from ``db_query`` with :func:`record_keys`) says about its task."""
    if rec is None:
        return Observation(TaskState.MISSING)
    if rec.get("resubmitted"):
        return Observation(TaskState.MOVED, moved_to=rec["resubmitted"])
    if rec.get("completed") is None:
        return Observation(TaskState.PENDING)
    content = rec.get("result_content") or {}
    if content.get("status") == "ok":
        reply, _ = deserialize_object(list(rec.get("result_buffers") or []))
        return Observation(TaskState.DONE, reply=reply)
    status = content.get("status")
    trace = content.get("traceback") or ""
    if isinstance(trace, list):
        trace = "\n".join(trace)
    exc = RemoteError(
        content.get("ename", "TaskAborted" if status == "aborted" else "UnknownError"),
        content.get("evalue", f"the task ended with status {status!r}"),
        trace,
    )
    return observe_error(exc)


def observe_error(exc: BaseException) -> Observation:
    """The state of a task that ended with ``exc``: DIED for an engine's death, FAILED otherwise."""
    return Observation(TaskState.DIED if is_engine_death(exc) else TaskState.FAILED, error=exc)
