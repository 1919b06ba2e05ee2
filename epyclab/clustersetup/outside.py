"""Engines ended from outside: the marker an engine leaves when a signal ends it, read by ClusterLab.

A batch system ends a job's engines with SIGTERM (then SIGKILL) at its
walltime, on preemption and on ``scancel``/``qdel``; ``cluster stop`` does the
same. Such a death is not the doing of the point the engine was running, and
must not count against it (the death policy in :mod:`epyclab.labs`). The
engine is the one that knows, so it says so. The contract, kept small:

- **where**: ``<profile directory>/ended/``, private to the user; the compute
  nodes write it on the file system they share with the login node, where
  the profile lives (as for every batch launcher);
- **what**: an engine that receives SIGTERM writes ``ended/<engine uuid>``
  (the uuid the hub's task records give as ``engine_uuid``) before it stops,
  one line: ``SIGTERM <seconds since the epoch> <batch job id or ->``;
- **who writes**: :func:`install`, run on each engine at start-up by the
  profile's ``ipengine_config.py`` (``c.IPEngine.startup_command``, written
  by ``epyclab cluster init``); it chains to the engine's own SIGTERM handler;
- **who reads**: :func:`endedFromOutside`, which ClusterLab's collector asks
  about an engine that died under a task.

**Draining.** An engine of a batch job started with a drain time
(:data:`DRAIN_VARIABLE`, from ``--drain``) asks the scheduler when its job
ends and, that many seconds before, writes its marker (``DRAINED``) and
stops as SIGTERM stops it: after the chunk it is running, so it takes no new
one and no chunk is cut by the walltime; the keeper has submitted its
replacement by then.

**The batch system as witness.** An engine lost with its node, or killed
at once (SIGKILL) by a preemption or a walltime, gets no signal it can act
on and leaves no marker itself. Its job's final state says who ended it
(``NODE_FAIL``, ``PREEMPTED``...): the keeper, and ClusterLab's collector
when it finds no marker, ask the scheduler and write the marker for every
engine of such a job (:func:`markEnded`, :mod:`epyclab.clustersetup.witness`),
naming the state instead of ``SIGTERM``. An engine that dies while its job
runs on (the point crashed it) has no witness, and its death counts.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

__all__ = [
    "ENDED_DIRECTORY", "JOBS_DIRECTORY", "STARTUP_COMMAND", "KIND_VARIABLE", "DRAIN_VARIABLE", "install",
    "endedFromOutside", "engineJob", "engineRun", "enginesOfJob", "markEnded",
]

#: The engine's launcher kind (a row of batchsystems.SYSTEMS), set in its job's environment (engines.WORKER_VARIABLE).
KIND_VARIABLE = "EPYCLAB_WORKER"
#: Seconds before its job's end at which an engine drains (finishes its chunk and stops); unset: no drain.
DRAIN_VARIABLE = "EPYCLAB_DRAIN_SECONDS"
#: The directory of markers, in the profile directory.
ENDED_DIRECTORY = "ended"
#: Where each engine of a batch job says, at start-up, which job it runs in (``engine-jobs/<uuid>``: the job id),
#: so that a restarted controller is told to restore exactly the engines of the jobs still running.
JOBS_DIRECTORY = "engine-jobs"
#: What the profile's engine config runs at start-up (an engine without epyclab goes on without markers).
STARTUP_COMMAND = (
    "try:\n    from epyclab.clustersetup.outside import install as _epyclab_install\nexcept ImportError:\n"
    "    pass\nelse:\n    _epyclab_install()\n    del _epyclab_install"
)
# Batch job id variables, of every system a row of batchsystems.SYSTEMS names (kept here: the engine imports no more).
_JOB_VARIABLES = ("SLURM_JOB_ID", "PBS_JOBID", "LSB_JOBID", "JOB_ID")
# How many times the job was requeued before this run (Slurm sets it in a requeued job).
_RESTART_VARIABLES = ("SLURM_RESTART_COUNT",)


def install() -> None:
    """On an engine at start-up: leave a marker when SIGTERM ends it, then stop as the engine would."""
    from ipyparallel.engine.app import IPEngine

    if not IPEngine.initialized():
        return
    app = IPEngine.instance()
    ident = str(app.ident)
    directory = Path(app.profile_dir.location) / ENDED_DIRECTORY
    previous = signal.getsignal(signal.SIGTERM)
    job = next((os.environ[v] for v in _JOB_VARIABLES if os.environ.get(v)), "-")

    def ended(sig: int, frame: Any) -> None:
        if (directory / ident).exists():  # drained: the marker is there already
            if callable(previous):
                previous(sig, frame)
            return
        try:
            _put(directory / ident, f"SIGTERM {time.time():.3f} {job}", replace=True)
        except OSError as error:  # the engine stops anyway; its log says why there is no marker
            app.log.warning("could not leave the marker of an engine ended from outside: %s", error)
        if callable(previous):
            previous(sig, frame)

    signal.signal(signal.SIGTERM, ended)
    if job != "-":
        # "<job>", or "<job> <run>" in a run after a requeue: the witness knows the engines of earlier runs dead.
        run = next((os.environ[v] for v in _RESTART_VARIABLES if os.environ.get(v, "").isdigit()), "0")
        _write(Path(app.profile_dir.location) / JOBS_DIRECTORY / ident, job if run == "0" else f"{job} {run}")
    kind, drain = os.environ.get(KIND_VARIABLE, ""), float(os.environ.get(DRAIN_VARIABLE) or 0)
    if job != "-" and drain > 0:
        threading.Thread(target=_drain, args=(kind, job, drain, directory / ident), daemon=True,
                         name="epyclab-drain").start()


def _drain(kind: str, job: str, drain: float, marker: Path) -> None:
    """On an engine: before its job's time ends, finish the current chunk and stop (SIGTERM to itself).

    The job's end is asked of the scheduler once it runs (the row's query,
    see :mod:`epyclab.clustersetup.batchsystems`); the engine stops ``drain``
    seconds before it, or a sixth of the job's time before it for a short job.
    The marker says ``DRAINED``: a chunk sent to the engine as it stopped runs
    again elsewhere, not counted against its points.
    """
    from epyclab.clustersetup.batchsystems import SYSTEMS, jobInfo

    row = SYSTEMS.get(kind)
    if row is None or not row.batch:
        return
    left = None
    for _ in range(30):
        left = jobInfo(row, job).left
        if left is not None:
            break
        time.sleep(2)
    if left is None:  # no time limit known: nothing to drain before
        return
    time.sleep(max(0.0, left - min(drain, left / 6)))
    try:
        marker.parent.mkdir(mode=0o700, exist_ok=True)
        fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(f"DRAINED {time.time():.3f} {job}\n")
    except OSError:
        return  # no marker, no drain: the walltime ends the engine, and its SIGTERM leaves the marker
    # The engine's own SIGTERM handling: it finishes the chunk it runs, then stops (so takes no new one).
    os.kill(os.getpid(), signal.SIGTERM)


def _write(path: Path, text: str) -> None:
    """Write a small private file (its directory made private); an engine goes on without it if it cannot."""
    try:
        _put(path, text, replace=True)
    except OSError:
        return


def _put(path: Path, text: str, replace: bool) -> bool:
    """Make ``path`` hold ``text`` and a newline, whole or not at all; False if it exists and not ``replace``.

    A reader must never see a marker half written: SIGKILL can follow SIGTERM
    at once, and an engine killed between creating its marker and writing it
    left an empty file, which said nothing, so its death counted. The text goes
    into a private file of its own beside ``path``'s directory (never a link
    followed: ``O_EXCL | O_NOFOLLOW``), then takes ``path``'s name in one step:
    ``rename`` (``replace``) or ``link``, which fails if ``path`` exists.

    Raises:
        OSError: the directory cannot be made or written.
    """
    path.parent.mkdir(mode=0o700, exist_ok=True)
    # In the directory's parent, so that a listing of the directory never shows it.
    unique = f"{os.getpid()}-{threading.get_ident()}-{time.monotonic_ns()}"
    part = path.parent.parent / f".epyclab-{path.parent.name}-{unique}"
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w") as file:
            file.write(text + "\n")
        if replace:
            os.replace(part, path)
            return True
        try:
            os.link(part, path)
        except FileExistsError:
            return False
        return True
    finally:
        try:
            os.unlink(part)
        except FileNotFoundError:
            pass  # renamed into place


def engineJob(profileDirectory: str | os.PathLike[str], engineUuid: str) -> str | None:
    """The batch job the engine ``engineUuid`` of the profile runs in (as it said at start-up), or None."""
    said = _job_said(profileDirectory, engineUuid)
    return said[0] if said else None


def engineRun(profileDirectory: str | os.PathLike[str], engineUuid: str) -> int:
    """Which run of its job the engine belongs to: 0, or the times the job had been requeued when it started."""
    said = _job_said(profileDirectory, engineUuid)
    return int(said[1]) if len(said) > 1 and said[1].isdigit() else 0


def _job_said(profileDirectory: str | os.PathLike[str], engineUuid: str) -> list[str]:
    """What the engine wrote at start-up: ``[job]`` or ``[job, run]`` (empty if nothing)."""
    if not engineUuid or "/" in str(engineUuid):
        return []
    try:
        return (Path(profileDirectory) / JOBS_DIRECTORY / str(engineUuid)).read_text().split()
    except (FileNotFoundError, NotADirectoryError):
        return []


def enginesOfJob(profileDirectory: str | os.PathLike[str], job: str, before: int | None = None) -> list[str]:
    """The uuids of the engines that said, at start-up, that they run in batch job ``job`` (``12`` matches
    ``12.server``, as PBS writes its ids); with ``before``, only those of its runs before that one."""
    base = str(job).split(".")[0]
    found = []
    try:
        paths = list((Path(profileDirectory) / JOBS_DIRECTORY).iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []
    for path in paths:
        try:
            said = path.read_text().split()
        except OSError:
            continue  # one unreadable file does not hide the others
        if not said or said[0].split(".")[0] != base:
            continue
        run = int(said[1]) if len(said) > 1 and said[1].isdigit() else 0
        if before is None or run < before:
            found.append(path.name)
    return sorted(found)


def markEnded(profileDirectory: str | os.PathLike[str], engineUuid: str, why: str, job: str) -> bool:
    """Record that the scheduler ended engine ``engineUuid`` (``why``: one word, its job's state); True if
    written, False if the engine had left its own marker (that one is kept)."""
    path = Path(profileDirectory) / ENDED_DIRECTORY / str(engineUuid)
    if path.exists():
        return False
    # Linked into place: an engine writing its own marker at the same moment wins, and nothing is written twice.
    return _put(path, f"{why.split()[0]} {time.time():.3f} {job or '-'}", replace=False)


def endedFromOutside(profileDirectory: str | os.PathLike[str], engineUuid: str) -> str | None:
    """Why the engine ``engineUuid`` of the profile was ended from outside (``"SIGTERM at ... in job 12"``),
    or None if it left no marker."""
    path = Path(profileDirectory) / ENDED_DIRECTORY / str(engineUuid)
    if not engineUuid or "/" in str(engineUuid):
        return None
    try:
        words = path.read_text().split()
    except (FileNotFoundError, NotADirectoryError):
        return None
    if len(words) != 3:
        # Only an engine's SIGTERM or the batch system's end of its job makes a marker: one that says less (damaged,
        # or left by an older epyclab that wrote in place) still witnesses a death from outside.
        return "ended from outside (its marker says no more)"
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(words[1])))
    return f"{words[0]} at {when}" + ("" if words[2] == "-" else f" in batch job {words[2]}")
