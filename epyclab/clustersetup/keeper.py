"""The keeper: a process of epyclab's that keeps a profile's batch engines up across walltimes and failures.

``epyclab cluster start PROFILE --engines slurm --total-engines N --walltime T
--keep`` submits the engines' jobs, waits until they registered, and starts
the keeper (:func:`startKeeper`). Every :data:`POLL_SECONDS` it asks the
scheduler about each job of the profile's state (one row of
:mod:`epyclab.clustersetup.batchsystems`, so every batch system works the
same way); a job that has ended, whatever ended it (its walltime, preemption,
a failed node, a ``scancel``, its own failure), is dropped from the state and
as many engines are submitted again, in jobs of ``--engines-per-job``. Each
job is recorded in the state the moment it is submitted, so that ``status``
and ``stop`` see it from any shell.

**Witness.** A job that the scheduler ended (its row's outside states:
a failed node, preemption, walltime, cancellation) or requeued has its
engines marked as ended from outside (:mod:`epyclab.clustersetup.witness`)
before it is dropped: the points they ran are run again uncounted, though
no signal reached the engines.

**Back-off.** A job that ends without having run :data:`QUICK_SECONDS` (and
not by its walltime or from outside) counts as failed at once: a broken
environment, a bad module load. After each such failure in a row the keeper
waits twice as long before it submits again (:data:`BACKOFF_SECONDS`,
doubling, at most :data:`BACKOFF_MAX`), so a broken set-up cannot flood the
queue; ``status`` says so, with the job's final state and the last lines of
its output, and so does the profile's log (``log/epyclab-keeper.log``).

**Its life.** The keeper is started detached (a double fork, a session of
its own: it outlives the shell that ran ``start`` and the user's logout), and
recorded in the state (PID and start time, so that a PID given since to
another program is never taken for it). ``stop`` ends it first (SIGTERM; it
finishes its pass and exits), then cancels the jobs. After a reboot of the
login node, ``start PROFILE`` starts it again from the state. The state file
is changed under :func:`~epyclab.clustersetup.state.processesLocked`, so the
keeper and the commands take turns.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from epyclab.clustersetup.batchsystems import system
from epyclab.clustersetup.errors import ClusterSetupError
from epyclab.clustersetup.launchers import (
    BatchOptions,
    batchInfo,
    outputTail,
    recordName,
    submitEngineJob,
)
from epyclab.clustersetup.state import Processes, loadProcesses, processesLocked, saveProcesses
from epyclab.clustersetup.witness import outsideState, witnessJob
from epyclab.log import logger

__all__ = [
    "POLL_SECONDS",
    "QUICK_SECONDS",
    "BACKOFF_SECONDS",
    "BACKOFF_MAX",
    "keeperRecord",
    "startKeeper",
    "keeperRunning",
    "stopKeeper",
    "keepOnce",
]

#: Seconds between the keeper's passes over the jobs.
POLL_SECONDS = 5.0
#: A job that ends before it ran this many seconds (not by its walltime or from outside) failed at once.
QUICK_SECONDS = 30.0
#: Seconds the keeper waits after the first job in a row that failed at once; doubled after each next one.
BACKOFF_SECONDS = 30.0
#: The longest wait between submissions while jobs keep failing at once.
BACKOFF_MAX = 3600.0
_LOG = "log/epyclab-keeper.log"
# How many ended jobs the state keeps, for status.
_ENDED_KEPT = 5


def keeperRecord(kind: str, options: BatchOptions) -> dict[str, Any]:
    """The keeper's entry in the profile's state, before it runs (no PID yet)."""
    from dataclasses import asdict

    return {"pid": None, "start": "", "kind": kind, "options": asdict(options), "status": "starting",
            "replaced": 0, "failures": 0, "next": 0.0, "ended": [],
            "poll": POLL_SECONDS, "backoff": BACKOFF_SECONDS}


def _start_time(pid: int) -> str:
    """The process's start time (clock ticks since boot, /proc's field 22), '' if it does not run (or is a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as file:
            fields = file.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return ""
    return "" if fields[0] == "Z" else fields[19]


def keeperRunning(record: dict[str, Any] | None) -> bool:
    """True if the keeper of ``record`` runs (the same process: PID and start time)."""
    if not record or not record.get("pid"):
        return False
    now = _start_time(int(record["pid"]))
    return bool(now) and now == record.get("start")


def startKeeper(directory: Path) -> int:
    """Start the keeper of the profile in ``directory``, detached; record its PID; return it.

    The profile's state must hold the keeper's entry (:func:`keeperRecord`).
    The keeper is forked twice, in a session of its own, with its output in
    ``log/epyclab-keeper.log``: nothing ties it to this process or its terminal.
    """
    log = directory / _LOG
    log.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        # The middle process forks the keeper, prints its PID and exits at once (so no zombie is left here).
        done = subprocess.run(
            [sys.executable, "-c", "import sys; from epyclab.clustersetup.keeper import main; sys.exit(main())",
             "--detach", str(directory)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=fd, timeout=60, check=False,
            start_new_session=True, text=True,
        )
    finally:
        os.close(fd)
    if done.returncode != 0 or not done.stdout.strip().isdigit():
        raise ClusterSetupError(f"the keeper did not start (exit status {done.returncode}); see {log}")
    pid = int(done.stdout.strip())
    deadline = time.monotonic() + 30
    # The keeper records itself; wait until it has, so that stop finds it whatever happens next.
    while time.monotonic() < deadline:
        record = loadProcesses(directory).keeper
        if record and record.get("pid") == pid and keeperRunning(record):
            logger.info("keeper: PID %d keeps the engines up; its log: %s", pid, log)
            return pid
        if not _start_time(pid):
            break
        time.sleep(0.1)
    raise ClusterSetupError(f"the keeper (PID {pid}) did not start; see {log}")


def stopKeeper(directory: Path, timeout: float = 60.0) -> str:
    """Stop the profile's keeper (SIGTERM: it ends its pass first), forget it; say what was done."""
    record = loadProcesses(directory).keeper
    if record is None:
        return "no keeper"
    pid = int(record.get("pid") or 0)
    said = "the keeper had already exited"
    if keeperRunning(record):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _start_time(pid) == record.get("start") and time.monotonic() < deadline:
            time.sleep(0.1)
        if _start_time(pid) == record.get("start"):
            raise ClusterSetupError(f"the keeper (PID {pid}) did not stop within {timeout:g} s: stop it with "
                                    f"`kill {pid}` and run stop again")
        said = f"stopped the keeper (PID {pid})"
    with processesLocked(directory):
        recorded = loadProcesses(directory)
        recorded.keeper = None
        saveProcesses(directory, recorded)
    return said


def keepOnce(directory: Path, recorded: Processes, now: float | None = None) -> None:
    """One pass of the keeper over ``recorded`` (changed in place): drop ended jobs, submit replacements.

    Raises :class:`ClusterSetupError` only for a submission that failed; the
    keeper counts that as a job that failed at once.
    """
    keeper = recorded.keeper
    assert keeper is not None
    now = time.time() if now is None else now
    kind = str(keeper["kind"])
    options = BatchOptions(**keeper["options"])
    live = []
    for record in recorded.launchers:
        if record.get("kind") != kind or record.get("role") == "controller":
            live.append(record)
            continue
        info = batchInfo(record)
        if not info.ended and (outsideState(record, info) == "REQUEUED"
                               or info.restarts > int(record.get("restarts") or 0)):
            # It ran and was queued again (its node failed): its engines died, whatever reached them.
            witnessJob(directory, record, info)
            logger.info("keeper: %s was requeued (%s); its engines were ended from outside", recordName(record),
                        info.state)
            record["restarts"] = info.restarts
            if not info.running:
                record["running"] = None
        if info.running and not record.get("running"):
            record["running"] = now
        if info.running and info.left is not None and options.drainSeconds > 0 and not record.get("draining"):
            ran = now - float(record.get("running") or now)
            if info.left <= min(options.drainSeconds, (ran + info.left) / 6) + float(keeper.get("poll", POLL_SECONDS)):
                # Its engines drain now (see outside.py): their replacements are asked for already.
                record["draining"] = now
                logger.info("keeper: %s has %.0f s left; its engines drain, replacing them", recordName(record),
                            info.left)
        if not info.ended or info.state == "COMPLETING":
            # Ending: its final state (what ended it) is known at the next pass.
            live.append(record)
            continue
        ran = now - float(record.get("running") or now)
        drained = " after its engines drained" if record.get("draining") else ""
        what = f"{recordName(record)} ended ({info.state}{drained}) after {ran:.0f} s running"
        witnessJob(directory, record, info)
        if info.state in system(kind).outsideStates or ran >= QUICK_SECONDS or record.get("draining"):
            keeper["failures"] = 0
            logger.info("keeper: %s; %s its %d engine(s)", what,
                        "replaced" if record.get("draining") else "replacing", int(record["engines"]))
        else:
            _failed(keeper, now, f"{what}; the last lines of its output ({record.get('output')}):\n"
                                 f"{outputTail(record)}")
        keeper["ended"] = [*keeper.get("ended", []), what][-_ENDED_KEPT:]
    recorded.launchers = live
    have = sum(int(r["engines"]) for r in live
               if r.get("kind") == kind and r.get("role") != "controller" and not r.get("draining"))
    want = int(options.engines) - have
    if want <= 0:
        keeper["status"] = f"keeping {options.engines} engine(s) up in {len(live)} job(s)"
        return
    if now < float(keeper.get("next") or 0):
        keeper["status"] = (f"backing off: {keeper['failures']} job(s) in a row failed at once; next submission at "
                            f"{time.strftime('%H:%M:%S', time.localtime(float(keeper['next'])))} "
                            f"(see {directory / _LOG})")
        return
    per = int(options.enginesPerJob or options.engines)
    while want > 0:
        n = min(per, want)
        try:
            record = submitEngineJob(directory, kind, options, n)
        except ClusterSetupError as error:
            _failed(keeper, now, f"submitting a job of {n} engine(s) failed: {error}")
            keeper["status"] = f"backing off: {error}"
            return
        recorded.launchers.append(record)
        keeper["replaced"] = int(keeper.get("replaced", 0)) + 1
        want -= n
        logger.info("keeper: submitted %s (%d engine(s))", recordName(record), n)
    keeper["status"] = f"keeping {options.engines} engine(s) up; submitted replacements"


def _failed(keeper: dict[str, Any], now: float, what: str) -> None:
    """Count a job that failed at once and set when the next may be submitted (doubling back-off)."""
    keeper["failures"] = int(keeper.get("failures", 0)) + 1
    base = float(keeper.get("backoff", BACKOFF_SECONDS))
    wait = min(base * 2 ** (keeper["failures"] - 1), BACKOFF_MAX)
    keeper["next"] = now + wait
    keeper["lastFailure"] = what
    logger.warning("keeper: %s\nkeeper: %d failure(s) in a row: waiting %.0f s before submitting again",
                   what, keeper["failures"], wait)


def _run(directory: Path) -> int:
    """The keeper's loop (in the detached process): a pass every poll seconds until SIGTERM or it is forgotten."""
    handler = logging.FileHandler(directory / _LOG)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    me, start = os.getpid(), _start_time(os.getpid())
    with processesLocked(directory):
        recorded = loadProcesses(directory)
        if recorded.keeper is None:
            logger.error("keeper: no keeper is recorded in %s; exiting", directory)
            return 1
        recorded.keeper.update(pid=me, start=start, status="running")
        saveProcesses(directory, recorded)
    logger.info("keeper: PID %d keeps %s engine(s) up for %s", me, recorded.keeper["options"]["engines"], directory)
    while not stopping.is_set():
        with processesLocked(directory):
            recorded = loadProcesses(directory)
            if recorded.keeper is None or recorded.keeper.get("pid") != me:
                logger.info("keeper: no longer recorded as the keeper; exiting")
                return 0
            try:
                keepOnce(directory, recorded)
            except Exception as error:  # the keeper must outlive one bad pass; it says why in its log
                logger.exception("keeper: a pass failed: %s", error)
                recorded.keeper["status"] = f"a pass failed: {error} (see {directory / _LOG})"
            saveProcesses(directory, recorded)
        stopping.wait(float(recorded.keeper.get("poll", POLL_SECONDS)))
    logger.info("keeper: stopped (SIGTERM)")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m epyclab.clustersetup.keeper [--detach] PROFILE_DIRECTORY``."""
    parser = argparse.ArgumentParser(prog="epyclab.clustersetup.keeper")
    parser.add_argument("--detach", action="store_true", help="fork, print the keeper's PID, and return")
    parser.add_argument("directory", type=Path)
    args = parser.parse_args(argv)
    if args.detach:
        pid = os.fork()
        if pid:
            sys.stdout.write(f"{pid}\n")
            sys.stdout.flush()
            return 0
        # The keeper itself: no terminal, stdin from /dev/null, output in its log (stderr was set by startKeeper).
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        os.dup2(2, 1)
        os.close(devnull)
    return _run(args.directory.resolve())


if __name__ == "__main__":
    sys.exit(main())
