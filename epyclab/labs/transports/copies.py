"""A pool of forked copies of the user's process, the engines of ParallelLab's ``"fork"`` backend.

Each copy is an :class:`~epyclab.labs.transports.forkedcopy.Interim`: forked from this
process, it already holds the experiment and every module it needs, runs one
chunk of points at a time with the engines' worker
(:func:`epyclab.labs.engine.worker.run_points`: output captured, failures as data,
a time budget), and dies with this process (even one killed by SIGKILL).
The pool keeps :attr:`CopyPool.size` of them for one sweep: a copy that dies
(a point crashed it) is replaced by a fresh fork, so the sweep keeps its
workers; the scheduler (:class:`~epyclab.labs.transports.scheduler.Sweep`) resubmits the
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
from time import monotonic
from typing import Any

from epyclab.errors import EngineDied
from epyclab.labs.transports.forkedcopy import Interim
from epyclab.log import logger

__all__ = ["CopyPool"]


class CopyPool:
    """``size`` forked copies of this process running chunks for one sweep.

    ``experiments`` maps each sweep key to its experiment, serialized or the
    object itself (see :class:`~epyclab.labs.transports.forkedcopy.Interim`); ``deliver(copy, reply)`` is called,
    from the copy's reader thread, with each reply or
    :class:`~epyclab.labs.transports.forkedcopy.InterimDied`. ``output``: the file the
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

        copy = Interim(self._experiments, deliver, self._output, workers=self.size)
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


# ---- the transport ----------------------------------------------------------------------------


class CopiesTransport:
    """Forked copies of this process as a transport (see :mod:`epyclab.labs.transports.contract`): one chunk per copy.

    ``make_pool(deliver)`` forks the :class:`CopyPool` when the sweep begins.
    A copy that dies holding a chunk fails that chunk's future with
    :class:`~epyclab.labs.transports.contract.WorkerDied` (its error
    ``death_error``'s, by default an :class:`~epyclab.errors.EngineDied`), and the pool forks a fresh one in its
    place, in the sweep's thread (:meth:`capacity`, :meth:`check`). With the
    death of every copy and no fresh fork, :meth:`check` raises.
    """

    #: Chunks in flight per copy: a copy runs one at a time, and its pipe holds no queue.
    window = 1

    def __init__(self, make_pool: Callable[[Callable[[Interim, Any], None]], CopyPool], expected: int,
                 death_error: Callable[[str], BaseException] = EngineDied) -> None:
        self._make_pool = make_pool
        # The error a point's failed row carries when copies died under it: EngineDied, or the engines' own
        # where the copies stand in for engines (coldstart), so that a backend's failed rows read one way.
        self._death_error = death_error
        self._expected = expected
        self._pool: CopyPool | None = None
        self._held: dict[Interim, Any] = {}
        self._dead: list[tuple[Interim, bool]] = []
        self._since: dict[Any, tuple[Interim, float]] = {}
        self._lock = threading.Lock()

    def begin(self, payloads: dict[str, Any]) -> None:
        """Fork the copies (the payloads are in ``make_pool``'s experiments already).

        Raises:
            OSError: not even one copy could be forked.
        """
        self._pool = self._make_pool(self._deliver)

    def _deliver(self, copy: Interim, reply: Any) -> None:
        # From a copy's reader thread.
        from epyclab.labs.transports.contract import WorkerDied
        from epyclab.labs.transports.forkedcopy import InterimDied

        with self._lock:
            future = self._held.pop(copy, None)
            self._since.pop(future, None)
            if isinstance(reply, InterimDied):
                self._dead.append((copy, not reply.lost_chunk))
        if future is None:
            return
        if isinstance(reply, InterimDied):
            future.set_exception(WorkerDied(str(reply), error=self._death_error(str(reply)), outside=reply.outside))
        else:
            future.set_result(reply)

    def _replace_dead(self) -> None:
        # In the sweep's thread: a copy dies with the thread that forked it.
        with self._lock:
            dead, self._dead = self._dead, []
        if self._pool is not None:
            for copy, idle in dead:
                self._pool.replace(copy, idle=idle)

    def submit(self, key: str, points: list[dict[str, Any]], budget: float | None, ship: bool = False,
               limit: float | None = None) -> Any:
        """Give the chunk to an idle copy (the sweep submits no more than :meth:`capacity` chunks)."""
        from epyclab.labs.transports.contract import ChunkFuture

        future = ChunkFuture("copy")
        copy = self.idle()
        if copy is None:
            raise RuntimeError("no forked copy is free to take a chunk; submit at most capacity() chunks")
        with self._lock:
            self._held[copy] = future
            self._since[future] = (copy, monotonic())
        copy.submit(key, points, budget, limit)
        return future

    def started(self, future: Any) -> float | None:
        """When the copy holding ``future``'s chunk was given it (``time.monotonic()``; a copy starts at once)."""
        with self._lock:
            held = self._since.get(future)
        return None if held is None or future.done() else held[1]

    def stop(self, future: Any) -> bool:
        """Kill the copy running ``future``'s chunk (stuck past its time limit); a fresh one replaces it.

        False if no copy holds that chunk (it has just finished).
        """
        with self._lock:
            held = self._since.pop(future, None)
        if held is None or future.done():
            return False
        held[0].kill()
        return True

    def idle(self) -> Interim | None:
        """A copy that takes a chunk now (None if every copy is busy or closed)."""
        if self._pool is None:
            return None
        with self._lock:
            return next((c for c in self._pool.copies() if c not in self._held and not c.busy()), None)

    def capacity(self) -> int:
        self._replace_dead()
        return len(self._pool.copies()) if self._pool is not None else 0

    def engines(self) -> tuple[int, int]:
        return (len(self._pool.copies()) if self._pool is not None else 0), self._expected

    def open(self) -> bool:
        """True while some copy takes chunks, or a dead one may still be replaced."""
        return self._pool is not None and self._pool.open()

    def check(self) -> None:
        from epyclab.errors import ClusterConnectionError

        self._replace_dead()
        if self._pool is not None and not self._pool.open():
            raise ClusterConnectionError(
                "every forked copy of this process running points died and none could be forked again, so "
                "the sweep cannot go on. Run the sweep again with resume=True, or use "
                "ParallelLab(backend='ipyparallel')"
            )

    def keep(self, n: int) -> None:
        """Let at most ``n`` copies take chunks: the others (idle ones first) finish the chunk they hold and exit."""
        if self._pool is None:
            return
        if n <= 0:
            self.finish()
            return
        with self._lock:
            ranked = sorted(self._pool.copies(), key=lambda c: c in self._held or c.busy())
        for copy in ranked[:max(0, len(ranked) - n)]:
            copy.close()

    def finish(self) -> None:
        """Take no more chunks: each copy finishes the one it holds, replies and exits."""
        if self._pool is not None:
            self._pool.close()

    def end(self, abandon: bool) -> None:
        # At once the copies still holding a chunk (the sweep ended with an error); the others have exited,
        # or are about to.
        if self._pool is not None:
            self._pool.stop()
        with self._lock:
            self._held.clear()

    def close(self) -> None:
        """Nothing is kept between sweeps: a sweep's copies exit with it."""

    def pids(self) -> list[int]:
        """The PIDs of every copy of the last sweep (living or not)."""
        return self._pool.pids() if self._pool is not None else []

    def forks(self) -> tuple[int, int]:
        """How many copies the last sweep forked in all, and how many of them replaced one that died."""
        return (self._pool.forked, self._pool.replaced) if self._pool is not None else (0, 0)


class ForkTransport:
    """ParallelLab's ``"fork"`` transport: every point of a sweep on ``n`` forked copies of this process.

    A copy holds the experiment object itself, as it was at the fork (a
    by-value copy would make the module functions it uses different objects,
    which multiprocessing inside do() could not pickle by reference).

    Raises:
        ValueError: forking is not allowed here (macOS, Windows, or inside a copy itself).
    """

    window = 1

    def __init__(self, settings: Any) -> None:
        from epyclab.labs.transports.contract import FORK, IPYPARALLEL
        from epyclab.labs.transports.forkedcopy import fork_allowed

        if not fork_allowed():
            raise ValueError(
                f"ParallelLab(backend={FORK!r}) needs fork, which is safe only on Linux (and not inside a "
                f"forked copy): use backend={IPYPARALLEL!r}, the default here"
            )
        self._settings = settings
        self._copies: CopiesTransport | None = None

    def begin(self, payloads: dict[str, Any]) -> None:
        """Fork the sweep's copies.

        Raises:
            ClusterConnectionError: not even one copy could be forked.
        """
        from epyclab.errors import ClusterConnectionError

        n, output = self._settings.n, copies_log(self._settings.profile_dir)
        experiments = {k: pl.experiment for k, pl in payloads.items()}

        def pool(deliver: Callable[[Interim, Any], None]) -> CopyPool:
            return CopyPool(experiments, deliver, n, output=output, replace=True)

        self._copies = CopiesTransport(pool, n)
        try:
            self._copies.begin(payloads)
        except OSError as exc:
            raise ClusterConnectionError(
                f"could not fork a copy of this process to run points: {exc}. Free memory (or raise the "
                f"process limit), or use ParallelLab(backend='ipyparallel')"
            ) from exc

    def _live(self) -> CopiesTransport:
        if self._copies is None:
            raise RuntimeError("the fork transport has no sweep: call begin() first")
        return self._copies

    def submit(self, key: str, points: list[dict[str, Any]], budget: float | None, ship: bool = False,
               limit: float | None = None) -> Any:
        return self._live().submit(key, points, budget, ship, limit)

    def capacity(self) -> int:
        return self._live().capacity()

    def started(self, future: Any) -> float | None:
        """When ``future``'s chunk started on its copy."""
        return self._live().started(future)

    def stop(self, future: Any) -> bool:
        """Kill the copy running ``future``'s chunk."""
        return self._live().stop(future)

    def engines(self) -> tuple[int, int]:
        return self._copies.engines() if self._copies is not None else (0, self._settings.n)

    def check(self) -> None:
        self._live().check()

    def end(self, abandon: bool) -> None:
        if self._copies is not None:
            self._copies.end(abandon)

    def close(self) -> None:
        """Nothing to stop: a sweep's copies exit with it."""

    def pids(self) -> list[int]:
        """The PIDs of the copies the last sweep forked."""
        return self._copies.pids() if self._copies is not None else []

    def forks(self) -> tuple[int, int]:
        """Copies the last sweep forked, and how many replaced one that died."""
        return self._copies.forks() if self._copies is not None else (0, 0)


def copies_log(profile_dir: str | None) -> str | None:
    """The file the copies' own output goes to: ``<profile_dir>/log/fork.log`` if a profile was given, else nowhere.

    Without a profile the copies need none: finding the default one would import IPython.
    """
    if profile_dir is None:
        return None
    import os

    directory = os.path.join(os.path.abspath(profile_dir), "log")
    os.makedirs(directory, mode=0o700, exist_ok=True)
    return os.path.join(directory, f"fork-{os.getpid()}.log")
