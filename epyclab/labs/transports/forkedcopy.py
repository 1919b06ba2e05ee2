"""A forked copy of the user's process that runs chunks of points as an engine does.

It is the worker of ParallelLab's ``"fork"`` backend (a pool of them, see
:mod:`epyclab.labs.transports.copies`), and, on the ``"ipyparallel"`` backend, runs
points while a new local cluster's engines register. There a cold
:class:`~epyclab.labs.parallel.ParallelLab` sweep would otherwise wait
one to two seconds, idle, for the controller and the engines to start. So the
lab forks this process (:class:`Interim`): the copy already holds the
experiment and every module it needs, so it runs points within milliseconds,
with the same worker function as the engines
(:func:`epyclab.labs.engine.worker.run_points`, output captured, failures as data),
and sends each chunk's reply back as an engine would. Running the points in a
copy rather than in the client itself keeps the user's process safe from a
point that crashes its process (``os._exit``, a segfault): that kills the copy,
and the sweep treats it as an engine that died.

The scheduler (:class:`~epyclab.labs.transports.scheduler.Sweep`) gives it one chunk at a
time; on the ipyparallel backend (one copy per engine to come) a copy stops taking chunks as each
engine registers (so that on ``n`` cores no more than ``n`` processes run points for longer than one
chunk); it then finishes its chunk and exits. Its PID is recorded with the cluster's
processes, so the cluster's reaper stops it if the user's process dies.

The copy dies with the user's process, even one killed by SIGKILL: it asks
the kernel for that at once (Linux's ``PR_SET_PDEATHSIG``, which fires when
the *thread* that forked it ends, so copies are forked by the thread that
runs the sweep) and exits if its parent is already gone.

The objects it inherited are frozen (:func:`gc.freeze`): its garbage
collections never walk the user's data, so they cost what they cost in a
fresh process, and the pages stay shared with the user's process.

The copy ignores Ctrl-C (the user's process handles it, and kills the copy),
never runs the parent's ``atexit`` hooks (multiprocessing ends a forked child
with ``os._exit``), and closes its copies of the reapers' pipes (see
:mod:`epyclab.labs.transports.localcluster`). Like an engine, it is cut off from the
user's console: the logging handlers it inherited are removed, and its file
descriptors 1 and 2 go to a log file (what a run prints or logs is captured
and replayed by the lab, as an engine's is).
"""

from __future__ import annotations

import ctypes
import gc
import logging
import multiprocessing
import os
import signal
import sys
import threading
import warnings
from collections.abc import Callable
from typing import Any

from epyclab.labs.engine import worker
from epyclab.labs.transports.cores import share_the_cores
from epyclab.labs.transports.deaths import ended_from_outside, oom_kills
from epyclab.log import logger

__all__ = ["Interim", "InterimDied", "COPY_NAME"]

#: The multiprocessing name of every copy (a copy never forks copies of its own).
COPY_NAME = "epyclab-interim"

# prctl(2): the signal a process gets when its parent (the thread that forked it) ends.
_PR_SET_PDEATHSIG = 1


class InterimDied(Exception):
    """The forked copy died: holding a chunk (its point crashed the process) if ``lost_chunk``, else idle.

    ``outside``: it was ended from outside, not by what it ran (see
    :func:`~epyclab.labs.transports.deaths.ended_from_outside`).
    """

    def __init__(self, message: str, lost_chunk: bool = True, outside: bool = False) -> None:
        super().__init__(message)
        self.lost_chunk = lost_chunk
        self.outside = outside


def _die_with(parent: int) -> None:
    """Have the kernel SIGKILL this process when ``parent`` ends; exit now if it has already."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    except (OSError, AttributeError) as exc:
        # Not Linux after all: the sweep still stops the copy, and its end of the pipe tells it when
        # the parent is gone (between chunks).
        logger.debug("a forked copy cannot ask to die with its parent: %s", exc)
    if os.getppid() != parent:
        # The parent died between the fork and the prctl: nobody would ever stop this copy.
        os._exit(1)


def _like_an_engine(output: str | None) -> None:
    """Cut the copy off from the user's console, as an engine is: its output is captured and replayed.

    The user's logging handlers (copied by the fork) go, so that a record a
    run logs reaches the console once, replayed, not also from here; and what
    is written to the file descriptors (a C library, a stray print between
    runs) goes to ``output`` (the cluster's log directory) or nowhere.
    """
    for logger_ in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
        if isinstance(logger_, logging.Logger):
            for handler in list(logger_.handlers):
                logger_.removeHandler(handler)
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(output, flags, 0o600) if output else os.open(os.devnull, os.O_WRONLY)
    except OSError:
        fd = os.open(os.devnull, os.O_WRONLY)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    # New stream objects: the inherited ones may hold the parent's unwritten output (never to be
    # written twice) or a lock another thread of the parent held at the fork.
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115 (lives as long as the copy)
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115


def _fresh_random_state() -> None:
    """Reseed numpy's global random state from the system's entropy, as a fresh engine's is.

    A fork copies it: every copy (and every later sweep's copies) would draw the
    same numbers as the others, and a Monte Carlo sweep would repeat itself.
    (Python's own :mod:`random` reseeds itself in a forked child.)
    """
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed()


def _serve(
    requests: Any, replies: Any, parents_ends: list[Any], experiments: dict[str, Any], output: str | None, parent: int,
    workers: int = 1,
) -> None:
    """The copy's loop: run each chunk asked for, reply, until told to stop (None) or the pipe closes."""
    _die_with(parent)
    # Everything the copy inherited is set aside from the garbage collector: else each full collection
    # walks every object of the user's process (its data, numpy's, pandas'), writing to their pages (copied
    # then, one by one) and costing a point that allocates many containers twice its time or more.
    gc.freeze()
    # Daemonic to the parent (stopped at its exit, never waited for), but free to start processes of
    # its own as an engine is: a do() that uses multiprocessing must work here too.
    multiprocessing.current_process().daemon = False
    _fresh_random_state()
    # Its share of the cores for native thread pools, as a clean worker's (numpy's OpenBLAS would
    # otherwise run one thread per core in each of the copies, all fighting for the same cores).
    share_the_cores(workers)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for end in parents_ends:
        # Else the copy would hold the write end of its own requests, and never see the parent go.
        end.close()
    _like_an_engine(output)
    for key, experiment in experiments.items():
        if isinstance(experiment, bytes):
            worker.load_experiment(key, experiment)  # serialized, as an engine gets it
        else:
            worker.keep_experiment(key, experiment)  # the object itself, as it was at the fork
    while True:
        try:
            request = requests.recv()
        except EOFError:
            return
        if request is None:
            return
        key, points, budget, limit = request
        replies.send(worker.run_points(key, points, None, None, budget, None, limit))


class Interim:
    """A forked copy of this process that runs chunks of points, one at a time.

    ``experiments`` maps each sweep key to its experiment: serialized (bytes,
    see :func:`epyclab.labs.engine.wire.package`), unpacked in the copy as an engine
    unpacks it, or the object itself, which the copy holds as it was at the fork. What the copy writes outside the
    runs' capture goes to the file ``output`` (None: nowhere). ``deliver`` is called, from a reader thread, with
    each reply of :func:`~epyclab.labs.engine.worker.run_points`, or with an
    :class:`InterimDied` if the copy died (holding a chunk, or idle: then
    ``lost_chunk`` is False) before it was closed. ``workers``: how many copies (or workers) share this
    machine's cores; the copy's native thread pools get its share
    (:func:`~epyclab.labs.transports.cores.share_the_cores`). Create it from the thread
    that runs the sweep: the copy dies when that thread ends.
    """

    def __init__(self, experiments: dict[str, Any], deliver: Callable[[Any], None], output: str | None = None,
                 workers: int = 1) -> None:
        ctx = multiprocessing.get_context("fork")
        child_requests, self._requests = ctx.Pipe(duplex=False)
        self._replies, child_replies = ctx.Pipe(duplex=False)
        self._process = ctx.Process(
            target=_serve,
            args=(child_requests, child_replies, [self._requests, self._replies], experiments, output, os.getpid(),
                  workers),
            name=COPY_NAME, daemon=True,
        )
        with warnings.catch_warnings():
            # Python 3.12+ warns that forking a process with threads may deadlock the child: this
            # child takes no lock the parent's threads use (see _like_an_engine) before it works.
            warnings.simplefilter("ignore", DeprecationWarning)
            self._process.start()
        # The copy's ends go here, so that the copy's death is seen as end-of-file.
        child_requests.close()
        child_replies.close()
        self._deliver = deliver
        self._busy = False
        self._closed = False
        self._oom: int | None = None
        self._reader = threading.Thread(target=self._read, name="epyclab-interim-reader", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        """The copy's process id."""
        assert self._process.pid is not None
        return self._process.pid

    def busy(self) -> bool:
        """True while the copy holds a chunk."""
        return self._busy

    def open(self) -> bool:
        """True while the copy takes chunks."""
        return not self._closed

    def submit(self, key: str, points: list[dict[str, Any]], budget: float | None, limit: float | None = None) -> None:
        """Give the copy a chunk (only when it is open and not busy); ``limit``: seconds per point."""
        if self._closed or self._busy:
            raise RuntimeError("the interim process takes one chunk at a time, and none once closed")
        self._busy = True
        self._oom = oom_kills()  # to tell the OOM killer's SIGKILL from another's
        try:
            self._requests.send((key, points, budget, limit))
        except OSError:
            # It died already: the reader reports the chunk as lost.
            self._closed = True

    def _read(self) -> None:
        while True:
            try:
                reply = self._replies.recv()
            except (EOFError, OSError):
                # Its end of the pipe closed as it died: wait for its exit status, which says how.
                self._process.join(5.0)
                code = self._process.exitcode
                if self._busy:
                    self._busy = False
                    self._closed = True
                    how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
                    self._deliver(InterimDied(f"the interim process {self.pid} died running its chunk ({how})",
                                              outside=ended_from_outside(code, self._oom)))
                elif not self._closed:
                    self._closed = True
                    self._deliver(InterimDied(f"the interim process {self.pid} died between chunks "
                                              f"(exit code {self._process.exitcode})", lost_chunk=False))
                return
            self._busy = False
            self._deliver(reply)

    def close(self) -> None:
        """Take no more chunks: the copy finishes the one it holds, replies, and exits."""
        if self._closed:
            return
        self._closed = True
        try:
            self._requests.send(None)
        except OSError:
            logger.debug("the interim process %s was gone already", self.pid)

    def stop(self, timeout: float = 5.0) -> None:
        """End the copy: at once (SIGKILL) if it still holds a chunk, else when it has exited."""
        self.close()
        process = self._process
        if process.pid is None:
            return
        if self._busy:
            # Its chunk is abandoned (the sweep ends with an error): don't let it run on.
            process.kill()
        process.join(timeout)
        if process.exitcode is None:
            process.kill()
            process.join()
        self._requests.close()
        self._reader.join(timeout)

    def kill(self) -> None:
        """SIGKILL the copy now (it is stuck); its reader reports the chunk it held as lost."""
        if self._process.pid is not None:
            try:
                os.kill(self._process.pid, signal.SIGKILL)
            except ProcessLookupError:
                logger.debug("the interim process %s was gone already", self._process.pid)
            # A stopped copy (SIGSTOP) gets the KILL too: the kernel delivers it to stopped processes.

    def alive(self) -> bool:
        """True while the copy's process runs."""
        return self._process.is_alive()


def fork_allowed() -> bool:
    """True where a copy of this process can safely be forked: Linux, and not from a copy itself.

    Not on macOS, where forking a process that used some system libraries
    crashes the child (why multiprocessing spawns there), nor Windows (no fork).
    """
    return (sys.platform.startswith("linux") and hasattr(os, "fork")
            and multiprocessing.current_process().name != COPY_NAME)
