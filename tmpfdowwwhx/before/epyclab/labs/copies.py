"""A pool of forked copies of the user's process, the engines of ParallelLab's ``"fork"`` backend.

Each copy is an :class:`~epyclab.labs.interim.Interim`: forked from this
process, it already holds the experiment and every module it needs, runs one
chunk of points at a time with the engines' worker
(:func:`epyclab.labs.worker.run_points`: output captured, failures as data,
a time budget), and dies with this process (even one killed by SIGKILL).
The pool keeps :attr:`CopyPool.size` of them for one sweep: a copy that dies
(a point crashed it) is replaced by a fresh fork, so the sweep keeps its
workers; the scheduler (:class:`~epyclab.labs.scheduler.Sweep`) resubmits the
dead copy's points as it does an engine's.

A copy that dies holding a chunk is always replaced (the scheduler's limit on
deaths per point bounds how often). One that dies idle before it ever
replied (it cannot even start) is replaced at most
:attr:`CopyPool.StartFailures` times in a row, so a process that cannot fork
working copies does not fork for ever; the sweep then has no worker left and
stops with a clear error.

Forks happen in the thread that creates the pool and calls :meth:`replace`
(the sweep's thread): a copy is killed when the thread that forked it ends.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from epyclab.labs.interim import Interim
from epyclab.log import logger

__all__ = ["CopyPool"]


class CopyPool:
    """``size`` forked copies of this process running chunks for one sweep.

    ``experiments`` maps each sweep key to its experiment, serialized or the
    object itself (see :class:`~epyclab.labs.interim.Interim`); ``deliver(copy, reply)`` is called,
    from the copy's reader thread, with each reply or
    :class:`~epyclab.labs.interim.InterimDied`. ``output``: the file the
    copies' own output goes to (None: nowhere). ``adopt(pid)`` is called with
    each new copy's PID (to record it with a reaper). With ``replace=False``
    a copy that dies is not replaced (the ipyparallel backend's copy, which
    only bridges the seconds its engines take to register).

    Raises:
        OSError: the first copy could not be forked (out of memory, a process limit).
    """

    #: A copy that dies idle before its first reply is replaced at most this many times in a row.
    StartFailures = 3

    def __init__(
        self,
        experiments: dict[str, Any],
        deliver: Callable[[Interim, Any], None],
        size: int,
        output: str | None = None,
        adopt: Callable[[int], None] | None = None,
        replace: bool = True,
    ) -> None:
        self.size = max(1, int(size))
        self._experiments = experiments
        self._deliver = deliver
        self._output = output
        self._adopt = adopt
        self._replace = replace
        self._copies: list[Interim] = []
        self._pids: list[int] = []
        self._replied: set[int] = set()
        self._start_failures = 0
        self._exhausted = False
        self._closed = False
        #: Copies forked in all, and forked to replace one that died.
        self.forked = 0
        self.replaced = 0
        for i in range(self.size):
            try:
                self._fork()
            except OSError:
                if i == 0:
                    raise
                logger.warning("could fork only %d copies of this process to run points", i)
                break

    def _fork(self) -> Interim:
        made: list[Interim] = []
        forked = threading.Event()

        def deliver(reply: Any) -> None:
            # From the copy's reader thread, which may start before Interim() has returned here.
            forked.wait()
            if not isinstance(reply, Exception):
                self._replied.add(made[0].pid)
            self._deliver(made[0], reply)

        copy = Interim(self._experiments, deliver, self._output)
        made.append(copy)
        forked.set()
        self.forked += 1
        self._copies.append(copy)
        self._pids.append(copy.pid)
        if self._adopt is not None:
            self._adopt(copy.pid)
        return copy

    def copies(self) -> list[Interim]:
        """The copies that take chunks now."""
        return [c for c in self._copies if c.open()]

    def pids(self) -> list[int]:
        """The PIDs of every copy this pool forked (living or not)."""
        return list(self._pids)

    def open(self) -> bool:
        """True while some copy takes chunks, or a dead one may still be replaced."""
        return not self._closed and (bool(self.copies()) or (self._replace and not self._exhausted))

    def replace(self, dead: Interim, idle: bool = False) -> Interim | None:
        """A fresh fork in place of ``dead``, which died ``idle`` or holding a chunk.

        None if this pool does not replace copies, or may not any more.
        """
        if self._closed or not self._replace or self._exhausted or dead not in self._copies:
            return None
        dead.stop()
        self._copies.remove(dead)
        if idle and dead.pid not in self._replied:
            self._start_failures += 1
            if self._start_failures > self.StartFailures:
                logger.error("the forked copies of this process die before running a point; not forking more")
                self._exhausted = True
                return None
        elif dead.pid in self._replied:
            self._start_failures = 0
        try:
            copy = self._fork()
        except OSError as exc:
            logger.warning("could not fork a copy to replace one that died: %s", exc)
            self._exhausted = True
            return None
        self.replaced += 1
        return copy

    def close(self) -> None:
        """Take no more chunks: each copy finishes the chunk it holds, replies, and exits."""
        self._closed = True
        for copy in self._copies:
            copy.close()

    def stop(self) -> None:
        """End every copy: at once (SIGKILL) those still holding a chunk; wait for the others to exit."""
        self.close()
        for copy in self._copies:
            copy.stop()
