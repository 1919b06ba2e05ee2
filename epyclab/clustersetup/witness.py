"""The batch system as the witness of engines ended from outside.

An engine that a signal ends leaves a marker itself (see
:mod:`epyclab.clustersetup.outside`). One lost with its node, or killed at
once by a preemption or a walltime, cannot: the scheduler says what happened
instead, in its job's state. Two readers ask it:

- the keeper, at each pass over the jobs (:func:`witnessJob`): a job that
  ended in one of its row's :attr:`~epyclab.clustersetup.batchsystems.BatchSystem.outsideStates`,
  or that ran and is queued again (requeued after its node failed), has
  every engine that ran in it marked as ended from outside, naming the state;
  a job requeued and already running again (Slurm's ``Restarts``) has the
  engines of its earlier runs marked;
- ClusterLab's collector, for an engine that died under a task and left no
  marker (:func:`askScheduler`): it asks about the engine's job (the one the
  engine named at start-up), so the witness does not depend on a keeper
  running, nor on the keeper's pass coming before the collector's.

Either way the marker is the same file, and the collector runs the points
again without counting the death (up to ``ClusterLab.OutsideRetries`` times).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from epyclab.clustersetup.batchsystems import SYSTEMS, JobInfo
from epyclab.clustersetup.outside import engineJob, engineRun, enginesOfJob, markEnded
from epyclab.log import logger

__all__ = ["witnessJob", "askScheduler", "outsideState", "SETTLE_SECONDS"]

#: Seconds the collector waits for a job that is ending (COMPLETING) to reach its final state.
SETTLE_SECONDS = 15.0


def outsideState(record: Mapping[str, Any], info: JobInfo, ran: bool | None = None) -> str | None:
    """The state, if ``info`` (what the scheduler says of ``record``'s job now) means the scheduler ended
    the job's engines: a final state of its row's outside states, or, for a job that had run, requeued.

    ``ran``: whether the job had run (None: as the keeper recorded, ``record["running"]``).
    """
    row = SYSTEMS.get(str(record.get("kind")))
    if row is None or not row.batch:
        return None
    if info.state in row.outsideStates:
        return info.state
    ran = bool(record.get("running")) if ran is None else ran
    if ran and info.state in row.requeuedStates:
        return "REQUEUED"
    return None


def witnessJob(directory: Path, record: Mapping[str, Any], info: JobInfo, ran: bool | None = None) -> list[str]:
    """Mark the engines of ``record``'s job that the scheduler ended as ended from outside; return the uuids
    newly marked.

    All of them if ``info`` says the scheduler ended the job or requeued it
    (``ran`` as for :func:`outsideState`); else, for a job requeued and
    running again, those of its earlier runs (each engine said which run it
    belongs to).
    """
    job = str(record.get("launcher", {}).get("job_id", ""))
    state = outsideState(record, info, ran)
    if not job:
        return []
    if state is not None:
        uuids = enginesOfJob(directory, job)
    elif info.restarts:
        state, uuids = "REQUEUED", enginesOfJob(directory, job, before=info.restarts)
    else:
        return []
    marked = [uuid for uuid in uuids if markEnded(directory, uuid, state, job)]
    if marked:
        logger.info("%s job %s ended (%s): %d engine(s) marked as ended from outside", record.get("kind"), job,
                    state, len(marked))
    return marked


def askScheduler(directory: Path, engineUuid: str, settle: float = SETTLE_SECONDS) -> bool:
    """For an engine of the profile in ``directory`` that died without a marker: ask the scheduler about its
    job, and mark the engine if the scheduler ended it; True if it is marked now.

    The job is found from what the engine said at start-up and the
    profile's state (its launcher record, whose row says how to ask). A job
    the state no longer holds was dropped by the keeper after its pass,
    which marked its engines already if it ended from outside. A job still
    ending is asked again for at most ``settle`` seconds.
    """
    from epyclab.clustersetup.launchers import batchInfo
    from epyclab.clustersetup.state import loadProcesses

    job = engineJob(directory, engineUuid)
    if job is None:
        return False
    base = job.split(".")[0]
    record = next((r for r in loadProcesses(directory).launchers
                   if str(r.get("launcher", {}).get("job_id", "")).split(".")[0] == base), None)
    if record is None:
        return False
    deadline = time.monotonic() + settle
    info = batchInfo(record)
    while info.state == "COMPLETING" and time.monotonic() < deadline:
        time.sleep(0.5)
        info = batchInfo(record)
    # The engine registered, so its job had run: pending again means requeued; so does a later run.
    if outsideState(record, info, ran=True) is None and engineRun(directory, engineUuid) >= info.restarts:
        logger.debug("engine %s died in %s job %s, which is %s: not ended from outside", engineUuid,
                     record.get("kind"), job, info.state)
        return False
    witnessJob(directory, record, info, ran=True)
    return True
