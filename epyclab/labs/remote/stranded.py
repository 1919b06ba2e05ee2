"""Finding the tasks a hub will never finish, though it may still list them.

Used by :class:`~epyclab.labs.remote.collect.Collector` for the tasks that look
pending: an incomplete record the hub is not running (an orphan of a
controller restart), a task whose engine died, a record that is missing
(lost), and a task assigned to an engine that never received it (*stuck*:
the scheduler drops messages to an engine that is reconnecting).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from time import monotonic

from ipyparallel import AsyncResult
from ipyparallel.error import EngineError

from epyclab.labs.engine.wire import is_engine_death
from epyclab.labs.remote.hub import Hub, NoAnswer
from epyclab.labs.remote.jobs import Observation, TaskState
from epyclab.log import logger

__all__ = ["StrandedFinder"]

#: What a task that never reached the task scheduler looks like: a record never assigned, or none at all.
_UNSEEN = (TaskState.PENDING, TaskState.MISSING)


@dataclass
class _Probe:
    """A trivial task sent to an engine to learn whether it holds ``tasks`` (see StrandedFinder._probe)."""

    ar: AsyncResult
    tasks: set[str]
    finished: bool = False


class StrandedFinder:
    """Marks pending-looking tasks that will never finish (see :meth:`find`).

    :param finished_here: True for a task whose future, held by this process, has finished
    :param purge_later: asks for a (probe) task to be purged from the hub
    :param sent_at: when this process resubmitted a task (``time.monotonic()``), or None
    """

    def __init__(self, finished_here: Callable[[str], bool], purge_later: Callable[[str], None],
                 sent_at: Callable[[str], float | None] = lambda msg_id: None) -> None:
        #: Seconds between checks (each lists every task the hub finished since it started).
        self.interval = 5.0
        #: Seconds a task resubmitted from here has to reach the task scheduler (the hub then lists it)
        #: before it is taken as undelivered; until then it is not judged at all.
        self.delivery = 10.0
        self._finished_here = finished_here
        self._purge_later = purge_later
        self._sent_at = sent_at
        self._last_check: float | None = None
        self._seen_on: dict[str, int] = {}
        # Per engine: the probe's future, the tasks it tests, and whether it was seen finished at a check.
        self._probes: dict[int, _Probe] = {}

    def find(self, hub: Hub, waiting: list[str], observations: dict[str, Observation]) -> None:
        """Mark the tasks the hub will never finish: orphans, lost ones, and those stuck on an engine.

        Asked at most every :attr:`interval` seconds. The hub's lists of
        tasks it waits for are read after the records, and the candidates'
        records are read again after that, so a task that finished in between
        is not mistaken for a stranded one. An incomplete record the hub does
        not wait for is an orphan (or, if the engine it was given to is gone,
        a task whose engine died); a missing one (past the grace period) is
        lost. A task the hub has had assigned to the same engine at two checks
        in a row is *probed*: the engine is sent a trivial task, which it runs
        only after everything it received before; if that has come back and,
        at the next check, the task is still assigned to the engine, the
        engine never got it (the task is *stuck*). A task this process
        resubmitted that no engine was given and the hub lists nowhere is not
        judged until :attr:`delivery` seconds have passed (the scheduler may not
        have received it yet); after that it is *undelivered*: it never reached
        the scheduler.
        """
        now = monotonic()
        if self._last_check is not None and now - self._last_check < self.interval:
            for msg_id in waiting:
                if observations[msg_id].state is TaskState.MISSING:
                    observations[msg_id] = Observation(TaskState.PENDING)
            return
        self._last_check = now
        unassigned, by_engine = hub.live()
        engine_of = {m: e for e, tasks in by_engine.items() for m in tasks}
        live = unassigned | set(engine_of)
        candidates = [m for m in waiting if m not in live]
        again = hub.records(candidates, ["completed", "resubmitted", "engine_uuid"]) if candidates else {}
        registered = hub.engine_uuids() if candidates else set()
        alive = set(hub.client.ids)  # the hub lists a dead engine's tasks until its scheduler fails them
        for msg_id in waiting:
            ob = observations[msg_id]
            finished_here = self._finished_here(msg_id)
            engine = engine_of.get(msg_id)
            if engine is not None and engine not in alive and not finished_here:
                observations[msg_id] = Observation(TaskState.DIED, error=EngineError(f"engine {engine} died"))
                continue
            if msg_id in live or finished_here:
                # Still running (a missing record was culled while queued), or just finished here.
                observations[msg_id] = Observation(TaskState.PENDING)
                continue
            rec = again.get(msg_id)
            sent = self._sent_at(msg_id)
            if sent is not None and (rec is None or not rec.get("engine_uuid")) and ob.state in _UNSEEN:
                # Resubmitted from here and never seen by the scheduler (no engine was given it, the hub
                # lists it nowhere): not an orphan of a restart, whatever it looks like, until the
                # scheduler had time to receive it; then it went nowhere (see Collector).
                if rec is not None and (rec.get("completed") is not None or rec.get("resubmitted")):
                    observations[msg_id] = Observation(TaskState.PENDING)  # it finished meanwhile: next pass
                elif now - sent < self.delivery:
                    observations[msg_id] = Observation(TaskState.PENDING)
                else:
                    observations[msg_id] = Observation(TaskState.UNDELIVERED)
                continue
            if ob.state is TaskState.PENDING:
                if rec is not None and rec.get("completed") is None and not rec.get("resubmitted"):
                    engine = rec.get("engine_uuid")
                    if engine and engine not in registered:
                        # Its engine is gone (the scheduler says so a few seconds later): it died.
                        gone = EngineError(f"engine {engine} is gone")
                        observations[msg_id] = Observation(TaskState.DIED, error=gone)
                    else:
                        observations[msg_id] = Observation(TaskState.ORPHAN)
                        # The controller restarted, maybe before this connection: let its engines come
                        # back before anything is resubmitted to them.
                        hub.noteRestart()
            elif rec is not None:
                observations[msg_id] = Observation(TaskState.PENDING)  # it appeared: read it next pass
        self._probe(hub, waiting, engine_of, observations)

    def _probe(self, hub: Hub, waiting: list[str], engine_of: dict[str, int],
               observations: dict[str, Observation]) -> None:
        """Find tasks stuck on engines that never received them (see :meth:`find`)."""
        for engine, probe in list(self._probes.items()):
            if not probe.finished:
                # Judged only at the next check: the hub records a task's end a moment after the engine
                # has moved on, so a task that ran just before the probe may still be listed now.
                probe.finished = probe.ar.done()
                continue
            del self._probes[engine]
            self._purge_later(probe.ar.msg_ids[0])
            failure = probe.ar.exception(timeout=0)
            # A probe that failed because the engine died says the engine died, not that tasks are stuck.
            verdict = (Observation(TaskState.DIED, error=failure) if failure is not None and is_engine_death(failure)
                       else Observation(TaskState.STUCK))
            for msg_id in probe.tasks:
                ob = observations.get(msg_id)
                if engine_of.get(msg_id) == engine and ob is not None and ob.state is TaskState.PENDING:
                    observations[msg_id] = verdict
        suspects: dict[int, set[str]] = {}
        for msg_id in waiting:
            engine = engine_of.get(msg_id)
            if engine is not None and self._seen_on.get(msg_id) == engine and engine not in self._probes:
                suspects.setdefault(engine, set()).add(msg_id)
        for engine, tasks in suspects.items():
            try:
                self._probes[engine] = _Probe(hub.probe(engine), tasks)
            except NoAnswer:
                raise
            except Exception as exc:
                logger.debug("could not probe engine %s: %s", engine, exc)
        self._seen_on = {m: engine_of[m] for m in waiting if m in engine_of}

    def reset(self) -> None:
        """Forget the probes in flight (their client is gone)."""
        self._probes.clear()
        self._seen_on.clear()

