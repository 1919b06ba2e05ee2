"""Batch systems as data: one row per system, and asking a system about one of its jobs.

Batch systems differ in data, not in code: the command that submits, the one
that cancels, the ipyparallel launcher classes that write and submit the job
script, the directive prefix and the lines for engines per node, account and
time limit, how to ask about a job (its state, node and end time, read with
regular expressions from one command's output), and the variable that names
the job inside it. :data:`SYSTEMS` holds a :class:`BatchSystem` per system;
:mod:`epyclab.clustersetup.launchers` and the keeper read only these rows, so
another system (LSF, SGE, HTCondor: ipyparallel has launcher classes for each)
is one more row. ``mpi`` is a row too: its engines are a process
(``mpiexec``), not a job, which the row says (``batch=False``).

Job states are given in Slurm's words (``PENDING``, ``RUNNING``,
``COMPLETED``, ``TIMEOUT``...), each system's own mapped through
:attr:`BatchSystem.states` (and, for a system that tells how a job ended only
by its exit status, :attr:`BatchSystem.exitPattern`); ``gone`` is a job the
scheduler no longer knows.

**Who ended it.** :attr:`BatchSystem.outsideStates` are the final states of
a job that the scheduler ended, not its engines' work (a failed node,
preemption, its walltime, a cancellation); :attr:`BatchSystem.requeuedStates`
those of a job that ran and was put back in the queue (Slurm requeues a batch
job whose node failed). An engine of such a job died from outside, whether a
signal reached it or not: :mod:`epyclab.clustersetup.witness` records it so.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from epyclab.clustersetup.errors import ClusterSetupError
from epyclab.log import logger

__all__ = ["BatchSystem", "SYSTEMS", "system", "JobInfo", "jobInfo", "ENDED", "RUNNING_STATES", "GONE", "OUTSIDE",
           "REQUEUED"]

#: A job the scheduler no longer lists.
GONE = "gone"
#: States of a job that has ended or is ending: it runs nothing any more.
ENDED = frozenset({GONE, "COMPLETED", "COMPLETING", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL",
                   "OUT_OF_MEMORY", "BOOT_FAIL", "PREEMPTED", "DEADLINE", "SPECIAL_EXIT"})
#: States of a job whose engines run (or may run).
RUNNING_STATES = frozenset({"RUNNING", "CONFIGURING"})
#: Final states of a job the scheduler ended (not its engines' doing), in Slurm's words.
OUTSIDE = frozenset({"NODE_FAIL", "PREEMPTED", "TIMEOUT", "CANCELLED", "BOOT_FAIL", "DEADLINE"})
#: States of a job that ran and was put back in the queue, in Slurm's words.
REQUEUED = frozenset({"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "SUSPENDED"})


@dataclass(frozen=True)
class BatchSystem:
    """One batch system (or ``mpiexec``): everything epyclab needs to know of it, as data.

    Templates are ``str.format`` templates: ``{job}`` a job id, ``{n}`` engines,
    ``{perNode}`` engines per node, ``{nodes}`` nodes, ``{account}``,
    ``{walltime}``, ``{node}``.
    """

    name: str
    #: ipyparallel.cluster.launcher class names: the engines' job, and the controller's (None: not offered).
    engineClass: str
    controllerClass: str | None
    #: The command that must be on the PATH (checked first, for a clear error).
    command: str
    #: False for a process started here (mpiexec): no job id, no scheduler to ask.
    batch: bool = True
    #: The prefix of a directive line in a job script (``#SBATCH``).
    directive: str = ""
    #: Lines for engines per node (ipyparallel adds the engine count only when no line matches its pattern).
    perNodeLines: tuple[str, ...] = ()
    accountLine: str = ""
    walltimeLine: str = ""
    #: Arguments of the submit command that pin a job to a node.
    pinArgs: tuple[str, ...] = ()
    #: The command that describes one job, and patterns (group 1) for its state, node and end time in its output.
    queryCommand: tuple[str, ...] = ()
    statePattern: str = ""
    nodePattern: str = ""
    #: The job's expected end (an ISO time, local) or its seconds left, whichever the system gives.
    endPattern: str = ""
    leftPattern: str = ""
    #: The system's state words -> Slurm's (those not listed are taken as they are).
    states: Mapping[str, str] = field(default_factory=dict)
    #: The environment variable holding the job id inside the job.
    jobVariable: str = ""
    #: Whether the output file name may hold the job id as ``%j`` (else a unique name is made first).
    outputJobId: bool = False
    #: Final states (Slurm's words, after :attr:`states`) of a job the scheduler ended, not its engines.
    outsideStates: frozenset[str] = OUTSIDE
    #: States of a job that had run and is queued again (requeued): its engines were ended from outside.
    requeuedStates: frozenset[str] = REQUEUED
    #: For a system whose final state does not say how a job ended: its exit status (group 1) in the query's
    #: output, and the states it means: at least :attr:`signalledExit` (the job killed by a signal the
    #: scheduler sent: walltime, deletion, preemption) ``CANCELLED``; negative (the execution host
    #: aborted it) ``NODE_FAIL``.
    exitPattern: str = ""
    signalledExit: int = 256
    #: How many times the job was requeued (group 1) in the query's output; each run's engines say which run
    #: they belong to (see :mod:`epyclab.clustersetup.outside`), so those of an earlier run are known dead.
    restartsPattern: str = ""

    def line(self, template: str, **values: Any) -> str:
        """A directive line from one of the row's templates."""
        return template.format(**values)


SYSTEMS: dict[str, BatchSystem] = {
    "slurm": BatchSystem(
        name="slurm", engineClass="SlurmEngineSetLauncher", controllerClass="SlurmControllerLauncher",
        command="sbatch", directive="#SBATCH",
        perNodeLines=("#SBATCH --ntasks={n}", "#SBATCH --ntasks-per-node={perNode}"),
        accountLine="#SBATCH --account={account}", walltimeLine="#SBATCH --time={walltime}",
        pinArgs=("--nodelist={node}",),
        # scontrol knows a job for MinJobAge (300 s by default) after it ended, with its final state.
        queryCommand=("scontrol", "show", "job", "-o", "{job}"),
        statePattern=r"\bJobState=(\S+)", nodePattern=r"\bBatchHost=(\S+)", endPattern=r"\bEndTime=(\S+)",
        jobVariable="SLURM_JOB_ID", outputJobId=True, restartsPattern=r"\bRestarts=(\d+)",
    ),
    "pbs": BatchSystem(
        name="pbs", engineClass="PBSEngineSetLauncher", controllerClass="PBSControllerLauncher",
        command="qsub", directive="#PBS",
        perNodeLines=("#PBS -l nodes={nodes}:ppn={perNode}",),
        accountLine="#PBS -A {account}", walltimeLine="#PBS -l walltime={walltime}",
        pinArgs=("-l", "nodes={node}"),
        queryCommand=("qstat", "-f", "{job}"),
        statePattern=r"job_state\s*=\s*(\w+)", nodePattern=r"exec_host\s*=\s*([^/+\s]+)",
        leftPattern=r"Walltime\.Remaining\s*=\s*(\d+)",
        states={"Q": "PENDING", "H": "PENDING", "W": "PENDING", "T": "PENDING", "R": "RUNNING",
                "E": "COMPLETING", "C": "COMPLETED", "F": "COMPLETED", "X": "COMPLETED"},
        jobVariable="PBS_JOBID",
        # Torque and PBS Pro give 256 + the signal for a job they killed (271: SIGTERM at the walltime or on
        # qdel), a negative status for one its execution host (pbs_mom) aborted.
        exitPattern=r"[Ee]xit_status\s*=\s*(-?\d+)",
    ),
    "mpi": BatchSystem(
        name="mpi", engineClass="MPIEngineSetLauncher", controllerClass=None, command="mpiexec", batch=False,
    ),
}


def system(name: str) -> BatchSystem:
    """The row of ``name``; a :class:`ClusterSetupError` naming the known ones for any other."""
    try:
        return SYSTEMS[name]
    except KeyError:
        raise ClusterSetupError(
            f"unknown batch launcher {name!r}: use one of {', '.join(SYSTEMS)}"
        ) from None


@dataclass(frozen=True)
class JobInfo:
    """What the scheduler says of a job now: its state (Slurm's words, or ``gone``), node, seconds left."""

    state: str
    node: str | None = None
    #: Seconds until its time limit (None: not running, or no limit known).
    left: float | None = None
    #: Times the scheduler requeued it (0 where the row cannot say).
    restarts: int = 0

    @property
    def ended(self) -> bool:
        return self.state in ENDED

    @property
    def running(self) -> bool:
        return self.state in RUNNING_STATES


def jobInfo(row: BatchSystem, job: str) -> JobInfo:
    """Ask ``row``'s scheduler about ``job`` (one command); ``gone`` if it does not know it.

    A scheduler that cannot be asked (command missing, timed out) gives the
    state ``cannot be asked (...)``, which is neither running nor ended.
    """
    command = [part.format(job=job) for part in row.queryCommand]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        return JobInfo(f"cannot be asked ({' '.join(command)}: {error})")
    state = re.search(row.statePattern, done.stdout) if done.returncode == 0 else None
    if state is None:
        logger.debug("%s: %s", " ".join(command), (done.stderr or done.stdout).strip())
        return JobInfo(GONE)
    word = state.group(1)
    word = row.states.get(word, word)
    if word == "COMPLETED" and row.exitPattern:
        word = _by_exit(row, done.stdout)
    node = re.search(row.nodePattern, done.stdout) if row.nodePattern else None
    restarts = re.search(row.restartsPattern, done.stdout) if row.restartsPattern else None
    return JobInfo(word, node.group(1) if node and node.group(1) not in ("(null)", "None") else None,
                   _left(row, done.stdout) if word in RUNNING_STATES else None,
                   int(restarts.group(1)) if restarts else 0)


def _by_exit(row: BatchSystem, output: str) -> str:
    """A finished job's state from its exit status (see :attr:`BatchSystem.exitPattern`)."""
    found = re.search(row.exitPattern, output)
    if not found:
        return "COMPLETED"
    status = int(found.group(1))
    if status >= row.signalledExit:
        return "CANCELLED"
    return "NODE_FAIL" if status < 0 else ("COMPLETED" if status == 0 else "FAILED")


def _left(row: BatchSystem, output: str) -> float | None:
    if row.leftPattern:
        found = re.search(row.leftPattern, output)
        return float(found.group(1)) if found else None
    found = re.search(row.endPattern, output) if row.endPattern else None
    if not found:
        return None
    try:
        end = datetime.fromisoformat(found.group(1)).timestamp()  # the scheduler's local time, as here
    except ValueError:  # "Unknown", "None": no limit
        return None
    return max(0.0, end - time.time())
