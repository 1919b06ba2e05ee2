"""ParallelLab's ``"ipyparallel"`` transport: the process's warm local cluster, and forked copies while it starts.

The cluster (see :mod:`epyclab.labs.transports.warm`) is started on the first sweep and
kept warm for the next ones. A cold sweep does not wait the second or two its
controller and engines take: until the engines have registered, ``n`` forked
copies of this process (see :mod:`epyclab.labs.transports.forkedcopy`) run chunks, unpacking
the experiment from the very bytes the engines get, so they run exactly what
the engines run. (Starting a 2-engine cluster costs its processes about 0.4
CPU-seconds over 1.1 s here, 0.8-0.9 before its fork server, and the client's import of
ipyparallel 0.2 more: a single copy left the rest of the cores idle meanwhile.)
The transport is the two together (:class:`ColdStart`): a chunk goes to a
copy while one is free, else to the engines; as each engine starts working
(its first chunk has brought the experiment, and it has unpacked it and
started a point: a quarter of a second on a busy 2-core machine), one copy
finishes its chunk and exits, so that no more processes than cores run points
for longer than one chunk, and no core idles while an engine unpacks. The
copies get their first chunks before the cluster is launched, long enough
(:attr:`ColdStart.LaunchBudget`) to keep them busy while this thread launches it
(forked before anything else of the sweep: before IPython is even imported). The copies are forked only when
forking is known to be safe (:func:`epyclab.labs.transports.cleanworkers.fork_safe`: one
thread, no OpenMP runtime); otherwise the sweep waits for the first engine.
"""

from __future__ import annotations

from collections.abc import Callable
from time import monotonic
from typing import TYPE_CHECKING, Any

from epyclab.labs.transports.contract import ChunkFuture, Settings
from epyclab.labs.transports.copies import CopiesTransport, CopyPool
from epyclab.labs.transports.forkedcopy import Interim
from epyclab.labs.transports.ipyparallelclient import ClientTransport
from epyclab.log import logger

if TYPE_CHECKING:
    import ipyparallel as ipp

    from epyclab.labs.engine.wire import Payload
    from epyclab.labs.transports.localcluster import LocalCluster

__all__ = ["ColdStart", "LocalClusterTransport"]


class ColdStart:
    """Engines that may still be registering, and (optionally) forked copies that run chunks meanwhile."""

    window = ClientTransport.window
    task_seconds = ClientTransport.task_seconds
    #: Seconds of points a copy's first chunk may start (instead of the sweep's budget): the first
    #: chunks go out before the cluster is launched, which takes this thread 0.5-1 s (more on a busy
    #: machine, where the copies' points slow down as much), and a copy that finished its chunk sooner
    #: would wait for the next one, idle, meanwhile.
    LaunchBudget = 1.5
    #: Seconds after an engine registered that a copy gives way to it even if it has not started a
    #: chunk yet (an engine the ledger cannot see), so that copies never run beside every engine for long.
    HandOverSeconds = 2.0

    def __init__(self, engines: ClientTransport, copies: CopiesTransport | None, expected: int) -> None:
        self._engines = engines
        self._copies = copies
        self._expected = expected
        # Until the first capacity(): the copies get their chunks before the cluster is launched.
        self._first = True
        # The cluster is launched by the first count of its engines.
        self._launched = False
        # When the k-th engine registered (time.monotonic()), for k = 1, 2, ...
        self._registered_at: list[float] = []

    def begin(self, payloads: dict[str, Payload]) -> None:
        self._engines.begin(payloads)
        if self._copies is not None and not self._copies.open():  # (not forked already: see LocalClusterTransport)
            try:
                self._copies.begin(payloads)
            except OSError as exc:
                # The sweep waits for the engines instead.
                logger.warning("could not fork a process to run points while the engines start: %s", exc)
                self._copies = None

    def _copies_open(self) -> bool:
        return self._copies is not None and self._copies.open()

    def _count(self) -> int:
        """The engines registered now (the first count launches the cluster)."""
        self._launched = True
        n = self._engines.count()
        now = monotonic()
        while len(self._registered_at) < n:
            self._registered_at.append(now)
        return n

    def _working(self, registered: int) -> int:
        """How many of the ``registered`` engines work: they have started a chunk, or registered a while ago."""
        now = monotonic()
        late = sum(now - t > self.HandOverSeconds for t in self._registered_at[:registered])
        if late >= registered:
            return registered
        return min(registered, max(late, self._engines.working()))

    def submit(self, key: str, points: list[dict[str, Any]], budget: float | None, ship: bool = False,
               limit: float | None = None) -> Any:
        if self._copies is not None and self._copies.open() and self._copies.idle() is not None:
            if not self._launched and budget is not None:
                budget = max(budget, self.LaunchBudget)
            future = self._copies.submit(key, points, budget, ship, limit)
            if not self._engines.connected() and self._copies.idle() is None:
                # Every copy works: launch the cluster now (counting does), not a poll interval later.
                self._count()
            return future
        return self._engines.submit(key, points, budget, ship, limit)

    def capacity(self) -> int:
        # First the copy, so that it works while this process connects (or launches the cluster).
        copies = self._copies.capacity() if self._copies_open() else 0  # type: ignore[union-attr]
        first, self._first = self._first, False
        if copies and first and not self._engines.connected():
            # Their first chunks before the engines are counted: counting launches the cluster, and that
            # (importing ipyparallel, starting its processes) takes this thread 0.5-1 s, the copies busy meanwhile.
            return copies
        engines = self._count()
        if self._copies_open():
            # As engines start working, as many copies finish their chunk and exit: no more workers than
            # cores for longer than a chunk, and no core idle while an engine unpacks the experiment.
            self._copies.keep(self._expected - self._working(engines))  # type: ignore[union-attr]
            copies = self._copies.capacity() if self._copies_open() else 0  # type: ignore[union-attr]
        if not engines and self._copies_open():
            # Nothing for the scheduler to hold yet: the points stay for the copy until an engine is here.
            return copies
        return copies + self._engines.capacity()

    def engines(self) -> tuple[int, int]:
        # Not counted (which launches the cluster) before capacity() has given the copy its first chunk.
        engines = self._engines.count() if self._engines.connected() or not self._copies_open() else 0
        now = engines + (self._copies.engines()[0] if self._copies_open() else 0)  # type: ignore[union-attr]
        return now, self._expected

    def check(self) -> None:
        self._engines.check()

    def started(self, future: Any) -> float | None:
        """When ``future``'s chunk started on its worker (the copy or an engine)."""
        at = self._copies.started(future) if self._copies is not None else None
        return at if at is not None else self._engines.started(future)

    def stop(self, future: Any) -> bool:
        """Stop the worker running ``future``'s chunk (stuck past its time limit): the copy, or an engine."""
        if self._copies is not None and self._copies.stop(future):
            return True
        return self._engines.stop(future)

    def end(self, abandon: bool) -> None:
        try:
            if self._copies is not None:
                self._copies.end(abandon)
        finally:
            self._engines.end(abandon)

    def close(self) -> None:
        """Nothing kept here (the warm cluster is the registered transport's)."""

    def pids(self) -> list[int]:
        """The PIDs of the copies forked while the engines registered."""
        return self._copies.pids() if self._copies is not None else []

    def forks(self) -> tuple[int, int]:
        """Copies forked while the engines registered (never replaced)."""
        return self._copies.forks() if self._copies is not None else (0, 0)


class LocalClusterTransport:
    """The process's warm local ipyparallel cluster of ``settings.n`` engines (see the module docstring)."""

    window = ClientTransport.window
    task_seconds = ClientTransport.task_seconds

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        #: The local cluster of the last sweep (tests read its PIDs).
        self.localCluster: "LocalCluster | None" = None
        self._sweep: ColdStart | None = None
        self._last: ColdStart | None = None

    def begin(self, payloads: dict[str, Payload]) -> None:
        from epyclab.labs.transports import warm
        from epyclab.labs.transports.cleanworkers import fork_safe

        s = self._settings
        self.localCluster = None
        copies: CopiesTransport | None = None
        forked: list[int] = []
        if s.use_interim and s.profile_dir is None and not warm.running() and fork_safe():
            # No cluster in this process yet, so none is ready; and finding the default profile directory
            # imports IPython (0.1 s): the copies are forked and given their first chunks first, and the
            # cluster is acquired when it is launched, while they work (they are recorded with it then).
            # Their own output (outside the runs' capture, which is replayed) goes nowhere, as the fork
            # backend's copies' does without a profile directory.
            copies = self._copies(payloads, None, forked.append)
        else:
            local = self._acquire()
            if s.use_interim and not local.ready() and fork_safe():
                # The engines are not all there yet: a copy of this process runs points meanwhile, from the
                # start (before the controller is even launched); only where a fork cannot hang (see
                # epyclab.labs.transports.cleanworkers), else the sweep waits for the first engine.
                copies = self._copies(payloads, local.log_file("interim"), local.adopt)

        def connect() -> "ipp.Client | None":
            local = self.localCluster
            if local is None:
                local = self._acquire()
                for pid in forked:
                    local.adopt(pid)
            local.launch()  # once: the controller and the engines start while the copies work
            local.poll()
            return local.client

        def health() -> None:
            if self.localCluster is not None:
                self.localCluster.check()

        def exit_code(pid: int) -> int | None:
            return self.localCluster.engine_exit_code(pid) if self.localCluster is not None else None

        warm_client = self.localCluster.client if self.localCluster is not None and self.localCluster.ready() else None
        engines = ClientTransport(warm_client, connect=connect, health=health, expected=s.n, exit_code=exit_code,
                                  local_engines=True)
        self._sweep = self._last = ColdStart(engines, copies, s.n)
        try:
            self._sweep.begin(payloads)
        except BaseException:
            self.end(abandon=True)
            raise

    def _acquire(self) -> "LocalCluster":
        """The process's cluster for this transport's size and profile (see :func:`warm.acquire`), kept here."""
        from epyclab.labs.transports import warm

        s = self._settings
        self.localCluster = warm.acquire(s.n, s.profile_dir, s.timeout)
        return self.localCluster

    def _copies(self, payloads: dict[str, Payload], output: str | None,
                adopt: Callable[[int], None]) -> CopiesTransport:
        """One forked copy per engine to come (forked by its ``begin``), never replaced."""
        s = self._settings
        blobs = {k: pl.blob for k, pl in payloads.items()}

        def pool(deliver: Callable[[Interim, Any], None]) -> CopyPool:
            # Unpacked as the engines unpack them: the copy runs exactly what they run.
            return CopyPool(blobs, deliver, s.n, output=output, adopt=adopt, replace=False)

        # A point that kills the copies fails as one that kills engines does: the copies stand in for them.
        return CopiesTransport(pool, s.n, death_error=_engine_error)

    def _live(self) -> ColdStart:
        if self._sweep is None:
            raise RuntimeError("the local cluster transport has no sweep: call begin() first")
        return self._sweep

    def submit(self, key: str, points: list[dict[str, Any]], budget: float | None,
               ship: bool = False, limit: float | None = None) -> ChunkFuture:
        return self._live().submit(key, points, budget, ship, limit)  # type: ignore[no-any-return]

    def capacity(self) -> int:
        return self._live().capacity()

    def engines(self) -> tuple[int, int]:
        return self._sweep.engines() if self._sweep is not None else (0, self._settings.n)

    def check(self) -> None:
        self._live().check()

    def started(self, future: Any) -> float | None:
        """When ``future``'s chunk started on its worker."""
        return self._live().started(future)

    def stop(self, future: Any) -> bool:
        """Stop the worker running ``future``'s chunk (stuck past its time limit); the cluster replaces an engine."""
        return self._live().stop(future)

    def end(self, abandon: bool) -> None:
        """End the sweep; a sweep that ended with an error may leave a point running on an engine: start afresh."""
        from epyclab.labs.transports import warm

        sweep, self._sweep = self._sweep, None
        try:
            if sweep is not None:
                sweep.end(abandon)
        finally:
            if self.localCluster is not None:
                warm.release(self.localCluster, broken=abandon)

    def close(self) -> None:
        """Stop the warm cluster this transport started."""
        local, self.localCluster = self.localCluster, None
        if local is not None:
            from epyclab.labs.transports import warm

            warm.shutdown(local)

    def pids(self) -> list[int]:
        """The PIDs of the copies the last sweep forked while its engines registered."""
        return self._last.pids() if self._last is not None else []

    def forks(self) -> tuple[int, int]:
        """Copies forked in the last sweep (none are replaced here)."""
        return self._last.forks() if self._last is not None else (0, 0)


def _engine_error(message: str) -> BaseException:
    """ipyparallel's ``EngineError``, imported as a copy dies: not before the copies fork (it imports IPython)."""
    from ipyparallel.error import EngineError

    return EngineError(message)
