"""Clean workers stop when the Jupyter kernel they run under is asked to shut down, so the kernel exits on its own.

In a Jupyter kernel the default transport runs on clean workers (loky's
reusable executor, see :mod:`epyclab.labs.transports.cleanworkers`). Loky
starts two resource trackers (its own and multiprocessing's) as children of
the kernel, and both ignore SIGTERM. On a shutdown request ipykernel ends the
kernel's children in rounds of SIGTERM (SIGKILL only after about 14 s), while
the front end (jupyter_client) ends a kernel that has not exited after a few
seconds with SIGTERM: the kernel then dies without running its exit hooks, and
an HDF5 notebook left open keeps its last commits in its journal (folded by the
next opening, but not in the ``.h5`` alone).

So, when the kernel is asked to shut down, the warm executors stop (their
workers killed: a shutdown request ends whatever they ran) and then the two
trackers, which then have no process left to watch: the kernel has no child
left, ipykernel's rounds end at once, and the kernel exits normally, folding
its notebooks at exit (see :mod:`epyclab.notebooks.hdf5`).

The hook is public API: ipykernel's ``do_shutdown`` (the handler of every
shutdown request, restarts included) sets the IPython shell's ``exit_now``
trait, and traitlets' ``observe`` calls an observer synchronously when a trait
changes, before ipykernel ends the children. Typing ``exit`` in a cell sets it
too (the front end then shuts the kernel down); ``exit(keep_kernel=True)``
does not. Outside a kernel (a script, a terminal IPython) nothing is hooked:
there the process exits normally and loky stops its workers at exit.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import weakref
from typing import Any

from epyclab.log import logger

__all__ = ["stop_at_kernel_shutdown"]

#: Seconds the shutdown waits for each resource tracker to exit after its pipe is closed.
TRACKER_WAIT = 2.0
#: Times the shutdown stops resource trackers started again while it stopped the executors.
RESTARTS = 3

_executors: weakref.WeakSet[Any] = weakref.WeakSet()
_lock = threading.Lock()
_hooked: Any = None  # the shell observed (a weak reference), so it is hooked once


def _kernel_shell() -> Any:
    """The IPython shell of the Jupyter kernel running this process, or None outside a kernel."""
    ipython = sys.modules.get("IPython")
    if ipython is None or "ipykernel" not in sys.modules:
        return None  # importing IPython here would cost a script 0.2 s for nothing
    shell = ipython.get_ipython()
    if shell is None or getattr(shell, "kernel", None) is None or not shell.has_trait("exit_now"):
        return None
    return shell


def stop_at_kernel_shutdown(executor: Any) -> None:
    """Have ``executor`` (a ``concurrent.futures`` executor epyclab started) shut down when the kernel is asked to.

    Outside a Jupyter kernel, nothing is done. ``executor`` is held weakly: one
    stopped or dropped meanwhile is left alone. Its ``shutdown`` is called with
    ``kill_workers=True`` where it takes that argument (loky's).
    """
    global _hooked
    with _lock:
        _executors.add(executor)
        shell = _kernel_shell()
        if shell is None or (_hooked is not None and _hooked() is shell):
            return
        shell.observe(_on_exit_now, names="exit_now")
        _hooked = weakref.ref(shell)
        logger.debug("clean workers will stop when this kernel is asked to shut down")


def _on_exit_now(change: Any) -> None:
    """The kernel is shutting down: stop the executors, then the resource trackers loky started."""
    if not change.get("new"):
        return
    with _lock:
        executors = list(_executors)
        _executors.clear()
    started = time.monotonic()
    logger.debug("kernel shutdown: stopping %d clean worker pool(s)", len(executors))
    for executor in executors:
        try:
            executor.shutdown(wait=True, kill_workers=True)
        except TypeError:  # an executor without loky's kill_workers
            executor.shutdown(wait=True)
        except Exception as exc:  # the kernel is going away: say so, and stop the rest
            logger.warning("could not stop clean workers at kernel shutdown (%s: %s)", type(exc).__name__, exc)
    if executors:
        _stop_trackers()
        # Stopping the executors can start a tracker again (their last unregistering finds it gone, and loky
        # starts a new one, which ignores SIGTERM like the first): seen as a kernel killed before its exit
        # hooks, 1 run in 4. Stop any such one too, a few times at most.
        for _ in range(RESTARTS):
            if not any(getattr(t, "_pid", None) for t in _trackers()):
                break
            logger.debug("kernel shutdown: a resource tracker was started again; stopping it")
            _stop_trackers()
    logger.debug("kernel shutdown: clean workers and trackers stopped in %.2f s; threads that exit must wait for: %s",
                 time.monotonic() - started,
                 [t.name for t in threading.enumerate() if not t.daemon and t is not threading.main_thread()])


def _trackers() -> list[Any]:
    """The resource trackers of loky and multiprocessing that this process started (only those imported)."""
    found = []
    for name in ("loky.backend.resource_tracker", "multiprocessing.resource_tracker"):
        module = sys.modules.get(name)
        tracker = getattr(module, "_resource_tracker", None)
        if tracker is not None:
            found.append(tracker)
    return found


def _stop_trackers() -> None:
    """Stop the resource trackers: each exits (unlinking what it tracked) once its pipe is closed.

    ``_stop`` is the one way to close a tracker's pipe in CPython (3.8 to
    3.14) and in loky (a copy of 3.14's tracker); there is no public one. It
    waits for the tracker to exit, which takes as long as any other process
    (one the user started) holds the pipe open, so each waits in a thread for
    :data:`TRACKER_WAIT` seconds at most: ipykernel ends such processes next.
    """
    for tracker in _trackers():
        stop = getattr(tracker, "_stop", None)
        if stop is None:
            logger.debug("%s has no _stop: the kernel ends it with its other children", type(tracker).__name__)
            continue
        thread = threading.Thread(target=_stop_one, args=(stop,), name="epyclab-stop-tracker", daemon=True)
        thread.start()
        thread.join(TRACKER_WAIT)
        if thread.is_alive():
            _kill_tracker(tracker)
            thread.join(TRACKER_WAIT)


def _kill_tracker(tracker: Any) -> None:
    """SIGKILL a resource tracker that did not exit when its pipe closed (a child of this process, by its PID).

    Left running, it keeps the kernel past the front end's wait (a few
    seconds), and the kernel is then killed before its exit hooks fold the
    notebooks. What it would still have cleaned up (a leaked semaphore) costs
    less than an unfolded notebook; its stop thread then sees it exit.
    """
    pid = getattr(tracker, "_pid", None)  # the tracker keeps its process id there (CPython and loky alike)
    if not isinstance(pid, int):
        return
    logger.warning("resource tracker %d did not exit at kernel shutdown within %.0f s: killed", pid, TRACKER_WAIT)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        logger.debug("resource tracker %d had exited meanwhile", pid)


def _stop_one(stop: Any) -> None:
    try:
        stop()
    except Exception as exc:  # a tracker that died already, or a pipe closed twice: nothing left to stop
        logger.debug("resource tracker stop at kernel shutdown: %s: %s", type(exc).__name__, exc)
