"""Collecting a notebook's pending cluster jobs: results in, lost jobs found, dead engines' work run again.

:class:`Collector` does one pass over every pending job of a notebook (see
:meth:`Collector.update`). It works from any process: what it needs is the
job ids in the notebook and the hub's task records. The process that
submitted a task knows a little more (the task's future, and the experiment),
and uses it: a finished future is read without asking the hub, and a lost task
can be submitted again from the experiment it holds.

Each task ends in exactly one of these ways, so every point gets one result:

- its reply holds the chunk's results dicts, which resolve the points;
- it failed on the engine for another reason (it never fails because of the
  experiment, whose failures are results): failed results carrying the error;
- its engine died: it is resubmitted (up to ``retries`` times, counting
  every resubmission of its points; then failed results carrying the
  EngineError), one point per task if this process has the experiment, so a
  point that kills its engine takes no other point with it; an engine ended
  from outside (the ``outside`` callback has a witness) is not counted, but
  bounded apart: after ``outside_retries`` such resubmissions the points are
  failed results saying so;
- the hub knows it but it can never finish (the controller restarted while it
  was queued or running), or the hub has no record of it and is not running
  it (culled from the task store, or lost with the controller) once the
  grace period has passed, or it was assigned to an engine that never
  received it: by the lab's ``lost`` policy, resubmitted (up to
  ``lost_retries`` times) or
  recorded as failed results carrying a :class:`~epyclab.labs.remote.jobs.LostJobError`
  that says why and how to re-run it;
- someone else resubmitted it: its points follow the new task;
- this process resubmitted it, and the task scheduler never received it (the
  hub never listed it within :attr:`StrandedFinder.delivery` seconds; until
  then it is not judged at all): sent again from this process's own client,
  not counted against its points; if the scheduler does not take even a test
  task, :class:`~epyclab.labs.remote.hub.SchedulerDown` is raised and every
  point stays pending, for a restarted cluster.

``purge=True`` cancels (instead of resubmitting) tasks that died or were lost;
a task that is queued, running, or finished but not yet read is never
dropped. Collected tasks are purged from the hub, so a long sweep does not
fill its task store.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from time import monotonic
from typing import Any

from ipyparallel import AsyncResult
from ipyparallel.error import EngineError

from epyclab.errors import ResultsStructureException
from epyclab.experiment import Experiment, ResultsDict, exception_text
from epyclab.labs.engine import worker
from epyclab.labs.engine.wire import decode_reply
from epyclab.labs.remote.hub import Hub, NoAnswer, SchedulerDown
from epyclab.labs.remote.jobs import (
    JobRef,
    LostJobError,
    Observation,
    TaskState,
    TaskTable,
    group_by_task,
    job_id,
    observe_error,
    observe_record,
    record_keys,
)
from epyclab.labs.remote.stranded import StrandedFinder
from epyclab.labs.transports.deaths import CLUSTER_OUTSIDE_RETRIES, RETRIES, DeathPolicy
from epyclab.log import logger
from epyclab.notebooks.labnotebook import LabNotebook

__all__ = ["Tally", "Collector", "SUBMITTED_ATTRIBUTE"]

#: The result set attribute holding when points were last submitted into it (seconds since the epoch).
SUBMITTED_ATTRIBUTE = "epyclab.cluster.submitted"  # stored in notebooks: never renamed

#: What a resubmission charges to its points (see ``Collector._rename``): a death or loss, a death
#: from outside, or nothing.
DEATH, OUTSIDE, NOT_CHARGED = "death", "outside", "none"

#: What the lab's ``lost`` option accepts.
LOST_POLICIES = ("resubmit", "fail")

_WHY = {
    TaskState.DIED: "the engine running it died",
    TaskState.ORPHAN: (
        "the controller is not running it and never will (it restarted while the task was queued or running, "
        "or dropped it with the engine it was on)"
    ),
    TaskState.STUCK: (
        "the controller assigned it to an engine that never received it (a message lost while the engine "
        "reconnected, as happens right after a controller restart)"
    ),
    TaskState.MISSING: (
        "the controller has no record of it and is not running it: it was culled from the hub's task store "
        "(the default in-memory store keeps only 1024 tasks) or lost when the controller stopped"
    ),
}


@dataclass
class Tally:
    """What one pass did: results added (of which failed), and whether the notebook changed."""

    collected: int = 0
    failed: int = 0
    changed: bool = False
    #: Points resubmitted, by reason.
    resubmitted: dict[str, int] = field(default_factory=dict)

    def add(self, other: "Tally") -> None:
        """Add another pass's counts to these."""
        self.collected += other.collected
        self.failed += other.failed
        self.changed = self.changed or other.changed
        for why, n in other.resubmitted.items():
            self.resubmitted[why] = self.resubmitted.get(why, 0) + n


class Collector:
    """One pass at a time over a notebook's pending cluster jobs (see the module docstring).

    :param hub: returns the connected :class:`Hub` (the lab may reconnect between passes)
    :param submit: submits a chunk of points of an experiment key; returns the new task id

    The collector owns :attr:`tasks`, the :class:`~epyclab.labs.remote.jobs.TaskTable`
    of what this process submitted; the lab records its submissions there.
    """

    #: Times a task's points are sent again, uncounted, after a resubmission that never reached the scheduler.
    RedeliveryAttempts = 2
    #: Times a hub purge is retried for a task it still calls pending before giving up on purging it.
    PurgeAttempts = 20
    #: Purge collected tasks from the hub in batches: when this many are waiting...
    PurgeBatch = 100
    #: ...or this many seconds after the last purge.
    PurgeSeconds = 2.0

    def __init__(
        self,
        notebook: LabNotebook,
        hub: Callable[[], Hub],
        submit: Callable[[str, list[dict[str, Any]]], str],
        lost: str = "resubmit",
        retries: int = RETRIES,
        grace: float = 20.0,
        lost_retries: int = 3,
        settle: Callable[[ResultsDict], ResultsDict] | None = None,
        outside: Callable[[str], str | None] | None = None,
        outside_retries: int = CLUSTER_OUTSIDE_RETRIES,
    ) -> None:
        if lost not in LOST_POLICIES:
            raise ValueError(f"lost must be one of {LOST_POLICIES}, not {lost!r}")
        self._nb = notebook
        self._hub = hub
        #: The tasks this process submitted and the experiments it holds.
        self.tasks = TaskTable()
        self._submit = submit
        # What the lab does with a run's captured output (store, replay) as its result arrives.
        self._settle = settle or (lambda rc: rc)
        self.lost = lost
        self.retries = int(retries)
        self.lost_retries = int(lost_retries)
        self.grace = float(grace)
        self._missing_since: dict[str, float] = {}
        self._to_purge: dict[str, int] = {}
        self._last_purge = monotonic()
        # Tasks resubmitted from here: new id -> when (monotonic), and how often its points went undelivered.
        self._sent: dict[str, float] = {}
        self._undelivered: dict[str, int] = {}
        # Whether the task scheduler took a test task, asked once per pass that needs to know.
        self._takes: bool | None = None
        #: Finds the tasks the hub will never finish (see :class:`~epyclab.labs.remote.stranded.StrandedFinder`).
        self.stranded = StrandedFinder(self._finished_here, self._purge_later, self._sent.get)
        self._where: dict[str, str] | None = None
        # Engine uuid -> why it was ended from outside, or None (see epyclab.clustersetup.outside).
        self._outside = outside
        #: Times a point is resubmitted, uncounted, after its engine was ended from outside, before it fails.
        self.outside_retries = int(outside_retries)

    # ---- one pass --------------------------------------------------------------------------

    def update(self, purge: bool = False, full: bool = True, flush: bool = True) -> Tally:
        """Collect every finished job, deal with dead and lost ones; return what changed.

        ``full=False`` skips asking the hub about tasks this process submitted
        whose futures have not finished (their futures will say when they do);
        the lab's ``wait()`` makes a full pass every few seconds.
        ``flush=False`` purges collected tasks from the hub only once enough
        of them wait (see :attr:`PurgeBatch`), not at every pass.
        """
        tally = Tally()
        hub = self._hub()
        pending = self._nb.allPendingResults()
        self._where = None
        self._takes = None
        if pending:
            tasks = group_by_task(pending)
            observations = self._observe(hub, tasks, full)
            for msg_id, ob in observations.items():
                self._apply(hub, msg_id, tasks[msg_id], ob, purge, tally)
            for why, n in tally.resubmitted.items():
                logger.warning("resubmitted %d points: %s", n, why)
        if flush or len(self._to_purge) >= self.PurgeBatch or monotonic() - self._last_purge >= self.PurgeSeconds:
            self.flushPurges(hub)
        return tally

    def act(self, hub: Hub, msg_id: str, ob: Observation, purge: bool = False) -> Tally:
        """Do with task ``msg_id`` what a pass does once it has seen the task in state ``ob``; return what changed.

        A pass (:meth:`update`) first observes every pending task, then acts on
        each; this is the second half for one task whose state the caller knows.
        ``hub`` is asked only to resubmit a task that died or was lost.

        Raises:
            KeyError: the notebook has no pending job of task ``msg_id``.
        """
        refs = group_by_task(self._nb.allPendingResults())[msg_id]
        tally = Tally()
        self._where = None
        self._apply(hub, msg_id, refs, ob, purge, tally)
        return tally

    def _observe(self, hub: Hub, tasks: dict[str, list[JobRef]], full: bool) -> dict[str, Observation]:
        observations: dict[str, Observation] = {}
        query = []
        for msg_id in tasks:
            own = self.tasks.get(msg_id)
            if own is not None and own.ar is not None:
                if own.ar.done():
                    observations[msg_id] = _from_future(own.ar)
                    continue
                if not full:
                    continue
            query.append(msg_id)
        if not query:
            return observations
        records = hub.records(query, record_keys())
        waiting = []
        for msg_id in query:
            ob = observe_record(records.get(msg_id))
            observations[msg_id] = ob
            if ob.state is TaskState.PENDING or (ob.state is TaskState.MISSING and self._past_grace(msg_id, tasks)):
                waiting.append(msg_id)
            elif ob.state is TaskState.MISSING:
                # Within the grace period a missing record may just not be written yet.
                observations[msg_id] = Observation(TaskState.PENDING)
        if waiting:
            self.stranded.find(hub, waiting, observations)
        return observations

    def _finished_here(self, msg_id: str) -> bool:
        """True if this process holds the task's future and it has finished."""
        own = self.tasks.get(msg_id)
        return own is not None and own.ar is not None and own.ar.done()

    def reset(self) -> None:
        """Forget what belongs to a client that is gone (probes in flight)."""
        self.stranded.reset()

    def _past_grace(self, msg_id: str, tasks: dict[str, list[JobRef]]) -> bool:
        """True once a task missing from the hub cannot be one the hub has not recorded yet."""
        now = monotonic()
        own = self.tasks.get(msg_id)
        if own is not None:
            return now - own.submitted > self.grace
        first = self._missing_since.setdefault(msg_id, now)
        if now - first > self.grace:
            return True
        # Another process submitted it: the notebook says when the result set last got points.
        tag = self._tag(tasks[msg_id][0].jobid)
        rs = self._nb.resultSet(tag)
        stamp = rs[SUBMITTED_ATTRIBUTE] if SUBMITTED_ATTRIBUTE in rs else None
        return isinstance(stamp, (int, float)) and time.time() - float(stamp) > self.grace

    # ---- acting on what was seen -----------------------------------------------------------

    def _apply(self, hub: Hub, msg_id: str, refs: list[JobRef], ob: Observation, purge: bool, tally: Tally) -> None:
        state = ob.state
        if state is TaskState.PENDING:
            return
        self._missing_since.pop(msg_id, None)
        if state is TaskState.DONE:
            self._resolve(msg_id, refs, ob.reply, tally)
            self._forget(msg_id)
        elif state is TaskState.FAILED:
            exc = ob.error
            assert exc is not None
            logger.warning("task %s (%d points) failed on the engine: %s", msg_id, len(refs), exc)
            self._fail(msg_id, refs, exc, getattr(exc, "traceback", "") or "", tally)
            self._forget(msg_id)
        elif state is TaskState.UNDELIVERED:
            self._redeliver(hub, msg_id, refs, purge, tally)
        elif state is TaskState.MOVED:
            assert ob.moved_to is not None
            self._rename(refs, ob.moved_to, keep_index=True)
            tally.changed = True
            self._forget(msg_id, moved_to=ob.moved_to)
        else:
            self._recover(hub, msg_id, refs, ob, purge, tally)

    def _resolve(self, msg_id: str, refs: list[JobRef], reply: Any, tally: Tally) -> None:
        classname = self._classname(msg_id)
        try:
            rcs, _ = decode_reply(reply, classname)
        except Exception as exc:
            logger.warning("could not read the results of task %s: %s", msg_id, exception_text(exc))
            self._fail(msg_id, refs, exc, "", tally)
            return
        for ref in refs:
            if 0 <= ref.index < len(rcs):
                rc = rcs[ref.index]
            else:
                why = ResultsStructureException(
                    f"task {msg_id} returned {len(rcs)} results, so job {ref.jobid} has none"
                )
                rc = worker.failed_result(self._nb.pendingResultParameters(ref.jobid), why, "", classname)
            self._nb.resolvePendingResult(self._settle(rc), ref.jobid)
            tally.collected += 1
            tally.failed += not _succeeded(rc)
        tally.changed = True

    def _fail(self, msg_id: str, refs: list[JobRef], exc: BaseException, trace: str, tally: Tally) -> None:
        classname = self._classname(msg_id)
        for ref in refs:
            rc = worker.failed_result(self._nb.pendingResultParameters(ref.jobid), exc, trace, classname)
            self._nb.resolvePendingResult(rc, ref.jobid)
            tally.collected += 1
            tally.failed += 1
        tally.changed = True

    def _recover(self, hub: Hub, msg_id: str, refs: list[JobRef], ob: Observation, purge: bool, tally: Tally) -> None:
        """A task that died or was lost: cancel it, run it again, or record why its points failed."""
        state = ob.state
        why = _WHY[state] + (f" ({ob.error})" if ob.error is not None else "")
        if purge:
            logger.warning("cancelling %d jobs of task %s: %s", len(refs), msg_id, why)
            for ref in refs:
                self._nb.cancelPendingResult(ref.jobid)
                tally.collected += 1
                tally.failed += 1
            tally.changed = True
            self._forget(msg_id)
            return
        attempt = max(r.attempt for r in refs)
        died = state is TaskState.DIED
        outside = self._ended_from_outside(hub, msg_id) if died else None
        policy = DeathPolicy(self.retries, self.outside_retries)
        if outside is not None and not policy.after(0, outside=max(r.outside for r in refs) + 1).again:
            self._outside_exhausted(msg_id, refs, outside, tally)
            return
        if outside is not None:
            # Not the points' doing: run again, and the death is not counted against them.
            hub.settle()
            new = self._resubmit(hub, msg_id, refs, state, charge=OUTSIDE)
            if new is not None:
                logger.info("task %s (%d points): its engine was ended from outside (%s); resubmitted, not "
                            "counted (now %s)", msg_id, len(refs), outside, new)
                tally.changed = True
                tally.resubmitted["its engine was ended from outside"] = (
                    tally.resubmitted.get("its engine was ended from outside", 0) + len(refs))
                return
        # A death: the policy ParallelLab's scheduler follows too (this death is the attempt's + 1st).
        again = policy.after(attempt + 1).again if died else attempt < self.lost_retries
        if not died and self.lost == "fail":
            reason = "the lab was told not to resubmit lost jobs (lost='fail')"
        elif not again:
            reason = f"it was already resubmitted {attempt} times (the lab's {'Retries' if died else 'LostRetries'})"
        else:
            hub.settle()
            new = self._resubmit(hub, msg_id, refs, state)
            if new is not None:
                logger.info("task %s (%d points): %s; resubmitted (now %s)", msg_id, len(refs), why, new)
                tally.changed = True
                tally.resubmitted[_WHY[state]] = tally.resubmitted.get(_WHY[state], 0) + len(refs)
                return
            reason = "this process does not have the experiment to submit it again"
        message = (
            f"task {msg_id} did not complete: {why}. It was not run again because {reason}. "
            f"Run the sweep again with runExperiment(e, resume=True) to re-run the points that failed"
        )
        logger.error("%s (%d points)", message, len(refs))
        exc: BaseException = EngineError(message) if state is TaskState.DIED else LostJobError(message)
        self._fail(msg_id, refs, exc, "", tally)
        self._forget(msg_id)

    def _outside_exhausted(self, msg_id: str, refs: list[JobRef], outside: str, tally: Tally) -> None:
        """Fail the points of a task whose engine was ended from outside once more than the bound allows."""
        ended = max(r.outside for r in refs) + 1
        message = (
            f"task {msg_id} did not complete: its engine was ended from outside ({outside}), and its points' "
            f"engines have now been ended from outside {ended} times. It was not run again because "
            f"ClusterLab.OutsideRetries is {self.outside_retries}: "
            f"if the cluster ends engines this often (preemption, failing nodes), raise it (lab.OutsideRetries = "
            f"{max(2 * self.outside_retries, 20)}), or find what ends the engines (their jobs' states: `epyclab "
            f"cluster status PROFILE`); then runExperiment(e, resume=True) re-runs the points that failed"
        )
        logger.error("%s (%d points)", message, len(refs))
        self._fail(msg_id, refs, EngineError(message), "", tally)
        self._forget(msg_id)

    def _redeliver(self, hub: Hub, msg_id: str, refs: list[JobRef], purge: bool, tally: Tally) -> None:
        """A task resubmitted from here that never reached the task scheduler: send it again, from here.

        Not the points' doing, so not counted against them (at most
        :attr:`RedeliveryAttempts` times; then it is an orphan like any other).
        First the scheduler is tried with a test task from this client: if it
        takes none, nothing can run, and :class:`SchedulerDown` says so; the
        points stay pending, for a restarted cluster.

        Raises:
            SchedulerDown: the task scheduler takes no tasks.
        """
        if self._takes is None:
            probe = hub.takesTasks()
            self._takes = probe is not None
            if probe is not None:
                self._purge_later(probe)
        if not self._takes:
            raise SchedulerDown(
                f"the task scheduler of {hub.where} takes no tasks: {len(refs)} point(s) resubmitted to it never "
                f"arrived, nor did a test task sent by this process within {hub.timeout:g} s, while the hub "
                f"answers (a scheduler that died, or that could not bind its port when the controller started: "
                f"its log says which). The pending results stay in the notebook. Restart the cluster (for an "
                f"epyclab profile: `epyclab cluster stop PROFILE`, then `epyclab cluster start PROFILE`) and "
                f"collect them with wait()"
            )
        tries = self._undelivered.pop(msg_id, 0) + 1
        if tries > self.RedeliveryAttempts:
            self._recover(hub, msg_id, refs, Observation(TaskState.ORPHAN), purge, tally)
            return
        logger.warning("task %s (%d points) was resubmitted but never reached the task scheduler; sending it "
                       "again from this process (not counted against its points)", msg_id, len(refs))
        new = self._send_here(hub, msg_id, refs)
        if new is None:
            self._recover(hub, msg_id, refs, Observation(TaskState.ORPHAN), purge, tally)
            return
        self._undelivered[new] = tries
        tally.changed = True
        why = "it never reached the task scheduler"
        tally.resubmitted[why] = tally.resubmitted.get(why, 0) + len(refs)

    def _send_here(self, hub: Hub, msg_id: str, refs: list[JobRef]) -> str | None:
        """Submit a task again through this process's client (not the hub's socket); return its new id."""
        key = self.tasks.keyHeld(msg_id)
        if key is not None:
            return self._resubmit_here(msg_id, refs, key, one_by_one=False, charge=NOT_CHARGED)
        try:
            ar = hub.resend(msg_id)
        except NoAnswer:
            raise
        except Exception as exc:
            # Not recorded, placed, or a request this process cannot read: only the hub can send it.
            logger.info("task %s cannot be sent again from this process (%s)", msg_id, exception_text(exc))
            return None
        new = ar.msg_ids[0]
        self._rename(refs, new, keep_index=True, charge=NOT_CHARGED)
        self._forget(msg_id)
        self.tasks.submitted(new, "", ar)
        self._sent[new] = monotonic()
        return new

    def _ended_from_outside(self, hub: Hub, msg_id: str) -> str | None:
        """Why the engine that died under task ``msg_id`` was ended from outside, or None (no witness)."""
        if self._outside is None:
            return None
        try:
            engine = (hub.records([msg_id], ["engine_uuid"]).get(msg_id) or {}).get("engine_uuid")
        except NoAnswer:
            raise
        except Exception as exc:  # a store that cannot be asked: the death counts, as without a witness
            logger.debug("the hub could not say which engine ran task %s (%s)", msg_id, exc)
            return None
        return self._outside(str(engine)) if engine else None

    def _resubmit(
        self, hub: Hub, msg_id: str, refs: list[JobRef], state: TaskState, charge: str = DEATH
    ) -> str | None:
        """Run a task again: by the hub from its stored request if it has it, else from our experiment.

        A chunk whose engine died, if this process has its experiment, runs
        again one point per task, so that a point that kills its engine takes
        no other point with it.
        """
        key = self.tasks.keyHeld(msg_id)
        if state is TaskState.DIED and key is not None and len(refs) > 1 and charge == DEATH:
            return self._resubmit_here(msg_id, refs, key, one_by_one=True)
        if state is not TaskState.MISSING:
            try:
                new = hub.resubmit([msg_id])[msg_id]
            except NoAnswer:
                raise
            except Exception as exc:
                logger.info("the hub could not resubmit task %s (%s)", msg_id, exc)
            else:
                self._rename(refs, new, keep_index=True, charge=charge)
                self._forget(msg_id, moved_to=new)
                self._sent[new] = monotonic()
                return new
        if key is not None:
            return self._resubmit_here(msg_id, refs, key, one_by_one=False, charge=charge)
        return None

    def _resubmit_here(self, msg_id: str, refs: list[JobRef], key: str, one_by_one: bool, charge: str = DEATH) -> str:
        """Submit a task's pending points again from the experiment this process holds."""
        ordered = sorted(refs, key=lambda r: r.index)
        groups = [[r] for r in ordered] if one_by_one else [ordered]
        new = ""
        for group in groups:
            new = self._submit(key, [self._nb.pendingResultParameters(r.jobid) for r in group])
            self._rename(group, new, keep_index=False, charge=charge)
            self._sent[new] = monotonic()
        self._forget(msg_id)
        return new

    def _rename(self, refs: list[JobRef], new_msg_id: str, keep_index: bool, charge: str = DEATH) -> None:
        """Move pending points to the task that now runs them; ``charge`` says which count of the id goes up.

        :data:`DEATH`: one more attempt (bounded by Retries/LostRetries); :data:`OUTSIDE`: one more death
        from outside (bounded apart, by OutsideRetries); :data:`NOT_CHARGED`: neither (a resubmission
        that never reached the scheduler is nobody's doing).
        """
        for i, ref in enumerate(refs):
            tag = self._tag(ref.jobid)
            rs = self._nb.resultSet(tag)
            params = rs.pendingResultParameters(ref.jobid)
            rs.resolveSinglePendingResult(ref.jobid)
            new = job_id(new_msg_id, ref.index if keep_index else i, ref.attempt + int(charge == DEATH),
                         ref.outside + int(charge == OUTSIDE))
            self._nb.addPendingResult(params, new, tag)
            if self._where is not None:
                self._where.pop(ref.jobid, None)
                self._where[new] = tag

    def _forget(self, msg_id: str, moved_to: str | None = None) -> None:
        self.tasks.forget(msg_id, moved_to)
        self._sent.pop(msg_id, None)
        self._undelivered.pop(msg_id, None)
        self._purge_later(msg_id)

    # ---- bookkeeping ------------------------------------------------------------------------

    def _tag(self, jobid: str) -> str:
        if self._where is None or jobid not in self._where:
            self._where = {j: tag for tag in self._nb.keys() for j in self._nb.pendingResults(tag)}
        return self._where[jobid]

    def _classname(self, msg_id: str) -> str:
        return self.tasks.classname(msg_id)

    def _purge_later(self, msg_id: str) -> None:
        self._to_purge.setdefault(msg_id, 0)

    def flushPurges(self, hub: Hub) -> None:
        """Drop collected tasks from the hub; one it still calls pending (it just finished) is tried again later."""
        self._last_purge = monotonic()
        if not self._to_purge:
            return
        ids = list(self._to_purge)
        still = set(hub.purge(ids))
        for msg_id in ids:
            if msg_id not in still:
                del self._to_purge[msg_id]
                continue
            self._to_purge[msg_id] += 1
            if self._to_purge[msg_id] >= self.PurgeAttempts:
                logger.debug("giving up purging task %s from the hub: it stays pending there", msg_id)
                del self._to_purge[msg_id]

    def purgesOutstanding(self) -> int:
        """How many collected tasks are still to be purged from the hub."""
        return len(self._to_purge)


def _from_future(ar: AsyncResult) -> Observation:
    # The Future's own result: AsyncResult.get() can still say "not ready" for a moment after done().
    exc = ar.exception(timeout=0)
    if exc is not None:
        return observe_error(exc)
    return Observation(TaskState.DONE, reply=ar.result(timeout=0))


def _succeeded(rc: ResultsDict) -> bool:
    return bool(rc[Experiment.METADATA].get(Experiment.STATUS, True))
