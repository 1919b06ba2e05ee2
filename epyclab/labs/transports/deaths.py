"""What a worker's death costs the points it was running: the one policy of ParallelLab and ClusterLab.

A worker (an engine, a forked copy, an executor's process) that dies while
running a chunk takes the chunk's results with it. The points are run again,
one per task (so that a point that kills its worker cannot take the others
with it), and a point whose worker died under it more than ``retries`` times
becomes a failed result carrying the last death's error: a point that crashes
its process (``os._exit``, a segfault) costs at most ``retries + 1`` workers.

A death from outside (a signal sent to the worker, its batch job cancelled or
out of walltime, its host gone) is not the point's doing: the point is run
again without counting it, up to the lab's ``OutsideRetries`` times (so a
worker killed over and over by something else still ends the sweep).

Who ended the worker is told by how it ended (:func:`ended_from_outside`, the
one rule for every transport): killed by a signal that comes from outside a
process (SIGKILL, SIGTERM, SIGHUP, SIGINT, SIGQUIT: an admin's ``kill``, a
batch system's cancellation, a closed terminal) is an outside death; an exit
code (``os._exit``, ``sys.exit`` from C) or a crash (SIGSEGV, SIGABRT, SIGBUS,
SIGFPE, SIGILL) is the point's doing. The OOM killer's SIGKILL is the point's
doing too (its memory is the likeliest cause): a SIGKILL while the kernel's
``oom_kill`` counter (``/proc/vmstat``) rose is counted. A point that sends
itself SIGKILL or SIGTERM is taken for an outside death; the outside limit
still bounds it. Where the exit status cannot be learnt, the death counts, as
it would without this rule. Each transport learns the status its own way:
``waitpid`` for forked copies and other children of this process, loky's
exit codes, the local cluster's record of each engine's exit; Dask runs a task
whose worker died again by itself (up to its ``allowed-failures``), whatever
ended the worker. A worker that is a child of this process is watched from the
sweep's first look at it in the ledger (a quarter of a second after it starts
its first chunk): one killed before that may already be reaped by its
executor, and its death counts.

Both labs use :class:`DeathPolicy`: :class:`~epyclab.labs.transports.scheduler.Sweep`
(ParallelLab) as deaths are seen, and :class:`~epyclab.labs.remote.collect.Collector`
(ClusterLab) with the attempt counts it records in the notebook.
"""

from __future__ import annotations

import os
import signal
import threading
from dataclasses import dataclass

from epyclab.log import logger

__all__ = [
    "DeathPolicy", "Verdict", "RETRIES", "OUTSIDE_RETRIES", "CLUSTER_OUTSIDE_RETRIES", "OUTSIDE_SIGNALS",
    "ended_from_outside", "oom_kills", "child_exit_code",
    "watch_child",
]

#: Times a point whose worker died under it is run again before it fails (ParallelLab.Retries and
#: ClusterLab.Retries default to it).
RETRIES = 1

#: Deaths from outside a point may suffer on one machine before it is a failed result anyway
#: (ParallelLab.OutsideRetries): a point whose worker is SIGKILLed every time it runs it (by the point
#: itself, say) costs this many workers and one more. Dask's scheduler allows a task as many
#: (``allowed-failures``).
OUTSIDE_RETRIES = 3

#: The same on a cluster (ClusterLab.OutsideRetries): a batch system's preemptions, walltimes and failing
#: nodes end engines as a matter of course, so a point may be ended from outside more often there.
CLUSTER_OUTSIDE_RETRIES = 10


@dataclass(frozen=True)
class Verdict:
    """What to do after a death: run the point(s) again, or record them as failed, and why."""

    again: bool
    reason: str


@dataclass(frozen=True)
class DeathPolicy:
    """Decides, after a worker died, whether its points run again (see the module docstring)."""

    #: Times a point whose worker it killed is run again before it is a failed result.
    retries: int = RETRIES
    #: Deaths from outside a point may suffer before it is a failed result anyway (the lab's OutsideRetries).
    outside_retries: int = OUTSIDE_RETRIES

    def after(self, deaths: int, outside: int = 0) -> Verdict:
        """The verdict for a point whose workers died ``deaths`` times under it (``outside`` more from outside).

        ``deaths`` counts this death if the point caused it.
        """
        if outside > self.outside_retries:
            return Verdict(False, f"its worker was ended from outside {outside} times (the lab's OutsideRetries "
                                  f"is {self.outside_retries})")
        if deaths > self.retries:
            return Verdict(False, f"the workers running it died {deaths} times (the lab's Retries is {self.retries})")
        return Verdict(True, "")

    def maxDeaths(self) -> int:
        """How many workers a point that kills every worker it runs on costs before it fails."""
        return self.retries + 1


#: Signals that end a process from outside (see the module docstring).
OUTSIDE_SIGNALS = frozenset({signal.SIGKILL, signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGQUIT})


def oom_kills() -> int | None:
    """How many processes the kernel's OOM killer has killed since boot (``/proc/vmstat``), or None if unknown."""
    try:
        with open("/proc/vmstat") as f:
            for line in f:
                if line.startswith("oom_kill "):
                    return int(line.split()[1])
    except (OSError, ValueError) as exc:
        logger.debug("cannot read the OOM killer's count: %s", exc)
    return None


def ended_from_outside(exitcode: int | None, oom_before: int | None = None) -> bool:
    """True if a worker whose exit status was ``exitcode`` was ended from outside (the one rule; see the module).

    ``exitcode`` is multiprocessing's: ``-N`` for signal N, else the exit
    code; None when it is not known (then the death counts: False).
    ``oom_before``: :func:`oom_kills` when the worker was last seen alive; a
    SIGKILL while that count rose is the OOM killer's, and counts.
    """
    if exitcode is None or exitcode >= 0 or -exitcode not in OUTSIDE_SIGNALS:
        return False
    if -exitcode == signal.SIGKILL and oom_before is not None:
        now = oom_kills()
        if now is not None and now > oom_before:
            return False
    return True


def child_exit_code(pid: int, wait: float = 0.0) -> int | None:
    """The exit status (multiprocessing's sign) of ``pid``, a child of this process that has ended, not reaping it.

    None if ``pid`` is not a child of this process, has not ended, or was
    reaped already (``waitid`` with ``WNOWAIT`` leaves it to whoever owns it)
    and was not watched (:func:`watch_child`). ``wait``: seconds to wait for a
    watched child to end (its executor may see it die, by its pipes closing,
    a moment before the kernel says how).
    """
    with _ended_now:
        _ended_now.wait_for(lambda: pid in _ended or pid not in _watched, timeout=wait)
        if pid in _ended:
            return _ended[pid]
    return _waitid(pid, os.WNOHANG) if hasattr(os, "waitid") else None


def _waitid(pid: int, flags: int) -> int | None:
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT | flags)
    except ChildProcessError:
        return None
    if info is None:
        return None
    if info.si_code == os.CLD_EXITED:
        return int(info.si_status)
    return -int(info.si_status)  # killed (or dumped core) by signal si_status


# Exit statuses of watched children, by PID, and the PIDs watched.
_lock = threading.Lock()
_ended_now = threading.Condition(_lock)
_ended: dict[int, int] = {}
_watched: set[int] = set()


def watch_child(pid: int) -> None:
    """Learn how ``pid`` ends, if it is a child of this process, even if its owner reaps it at once.

    An executor reaps its dead workers itself (multiprocessing polls its
    children whenever it starts a process), often before the death reaches
    the sweep: a thread waits here, without reaping (``WNOWAIT``), and keeps
    the status for :func:`child_exit_code`. Not a child: nothing is done.
    """
    if not hasattr(os, "waitid"):
        return
    with _lock:
        if pid in _watched:
            return
        _watched.add(pid)
        _ended.pop(pid, None)  # a process that had this PID before

    def wait() -> None:
        code = _waitid(pid, 0)
        with _ended_now:
            if code is not None:
                _ended[pid] = code
            _watched.discard(pid)
            _ended_now.notify_all()

    threading.Thread(target=wait, name=f"epyclab-exit-watch-{pid}", daemon=True).start()
