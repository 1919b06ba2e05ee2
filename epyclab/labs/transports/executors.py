"""Any ``concurrent.futures.Executor`` as a transport: ``ParallelLab(notebook, executor=ex)``.

A ``ProcessPoolExecutor`` (any start method), a ``loky`` executor, or a Dask
cluster's client (``distributed.Client``, or ``client.get_executor()``) runs a
sweep with the scheduler every transport has (chunks, time budgets, progress,
commits, captured output, failures as data, deaths). Each task is one call of
:func:`epyclab.labs.engine.worker.run_points` with a chunk of points: the function
travels by reference (every worker has epyclab installed), the experiment as
the bytes :func:`epyclab.labs.engine.wire.package` made (cloudpickle; the user's own
modules by value), sent with every chunk and unpacked once per worker process
(kept under the sweep's key, as an engine keeps it), and the reply as the
worker's encoded results.

Deaths. The executor decides what a worker's death looks like:

- a ``ProcessPoolExecutor`` whose worker dies is *broken* (every future in
  flight fails with ``BrokenProcessPool``, and it takes no more tasks). The
  transport then continues on a fresh pool of the same size and start method
  (shut down when the sweep ends; the user's broken pool is left to them). A
  break with several chunks in flight cannot say which point caused it: those
  chunks are run again one point at a time, alone, without counting the break
  against them; a break with one chunk alone in flight is that chunk's doing.
- Who ended the worker decides what its death costs
  (:mod:`epyclab.labs.transports.deaths`): the worker that ran a chunk is
  known from the sweep's ledger (:mod:`epyclab.labs.transports.ledger`), and
  its exit status from ``waitid`` (a child of this process: a spawn pool,
  loky) or loky's exit codes; killed from outside, the chunk's points run
  again uncounted. A forkserver's workers are not this process's children:
  their end is unknown, and the rule above applies.
- Past the time limit the sweep stops the worker running a chunk
  (:meth:`ExecutorTransport.stop`): SIGKILL, so a process pool breaks and is
  replaced as above. On Dask the task is withdrawn first (cancelled, and no
  worker runs it any more), else Dask would run it again on another worker.
- Dask reschedules the tasks of a worker that died by itself (its nanny
  starts a new worker); a task that took ``allowed-failures`` workers down
  with it fails with ``KilledWorker``, and so may a task that waited on the
  same worker: as with a broken pool, such a death is the point's own only
  when its chunk was alone in flight. Tasks go through a
  :class:`~epyclab.labs.transports.daskexecutor.DaskExecutor`, whose futures
  end whatever happens to the task (distributed's own executor can leave one
  unset for ever). A cluster with no worker left runs nothing: after
  :attr:`ExecutorTransport.NoWorkersSeconds` the sweep stops with
  ``ClusterConnectionError`` (what finished is kept; ``resume=True`` runs the rest);
  after :attr:`ExecutorTransport.GoneSeconds` when the client's cluster object
  has no worker left that is running or being started (none will come).

Whatever the executor, a chunk's future always ends: an error while taking
in a task's outcome ends the chunk with that error (see :meth:`ExecutorTransport._settle`).
"""

from __future__ import annotations

import re
import signal
import threading
from concurrent.futures import Executor, Future
from concurrent.futures.process import BrokenProcessPool, ProcessPoolExecutor
from time import monotonic
from typing import Any

import psutil

from epyclab.errors import ClusterConnectionError, EngineDied
from epyclab.labs.engine import worker
from epyclab.labs.engine.wire import Payload, client_paths
from epyclab.labs.transports.contract import ChunkFuture, WorkerDied, settle_once
from epyclab.labs.transports.cores import machine_cores
from epyclab.labs.transports.daskexecutor import DaskExecutor, dask_client_of
from epyclab.labs.transports.deaths import child_exit_code, ended_from_outside, oom_kills
from epyclab.labs.transports.ledger import Ledger, kill
from epyclab.log import logger

__all__ = ["ExecutorTransport", "executor_of", "workers_of"]


def executor_of(executor: Any) -> Any:
    """The ``concurrent.futures``-style executor of ``executor``: for Dask, a :class:`DaskExecutor`, else ``executor``.

    A Dask client, or its own executor (``client.get_executor()``), becomes a
    :class:`~epyclab.labs.transports.daskexecutor.DaskExecutor` on the same
    client (with the options given to ``get_executor``): distributed's own
    executor can leave a future unset for ever (see that module).

    Raises:
        TypeError: ``executor`` has no ``submit`` (it is not an executor).
    """
    dask = dask_client_of(executor)
    if dask is not None:
        client, options = dask
        return DaskExecutor(client, **options)
    if not callable(getattr(executor, "submit", None)):
        raise TypeError(
            f"ParallelLab(executor=...) needs a concurrent.futures.Executor (or a Dask client), not "
            f"{type(executor).__name__}"
        )
    return executor


def workers_of(executor: Any) -> int:
    """How many tasks ``executor`` runs at once, as far as it says (else this machine's cores)."""
    if isinstance(executor, DaskExecutor):
        try:
            return max(1, executor.threads())
        except Exception as exc:  # a client that cannot answer now still runs tasks
            logger.debug("could not ask the Dask scheduler for its workers: %s", exc)
    n = getattr(executor, "_max_workers", None)
    if isinstance(n, int) and n > 0:
        return n
    return machine_cores()


class ExecutorTransport:
    """A ``concurrent.futures.Executor`` (or a Dask client) as a transport (see the module docstring)."""

    #: Chunks in flight per worker: one running, one queued, so a worker never waits for the next.
    window = 2
    #: Seconds to wait for the exit status of a worker whose death broke its pool.
    ExitWait = 0.5
    #: Seconds a Dask cluster may have no worker during a sweep before the sweep stops with
    #: ClusterConnectionError (None: wait for ever, for a cluster whose workers wait in a batch queue). A
    #: LocalCluster closes for good a worker still restarting ``distributed.deploy.lost-worker-timeout``
    #: (15 s) after it died, so workers killed twice in a row can leave it with none: without this the
    #: sweep would wait for ever, silently.
    NoWorkersSeconds: float | None = 120.0
    #: Seconds a Dask cluster may have no worker, and its cluster object none left running or being started
    #: (DaskExecutor.starting: closed for good, none will come), before the sweep stops with
    #: ClusterConnectionError, without waiting NoWorkersSeconds (an adaptive cluster starts one within its
    #: interval, 1 s). Not when NoWorkersSeconds is None.
    GoneSeconds = 5.0
    #: Seconds between two questions to the Dask scheduler about its workers.
    AskSeconds = 1.0
    #: Seconds a Dask task stopped past its time limit may take to be let go by the scheduler before its
    #: worker is killed anyway (see DaskExecutor.withdraw).
    WithdrawSeconds = 10.0

    def __init__(self, executor: Any) -> None:
        self._given = executor
        self._executor: Any = executor_of(executor)
        self._workers = workers_of(self._executor)
        self._ours: list[Executor] = []  # pools made here to replace a broken one
        self._payloads: dict[str, Payload] = {}
        self._paths = client_paths()
        self._lock = threading.Lock()
        self._in_flight: dict[Future, Any] = {}  # type: ignore[type-arg]
        # How many chunks each pool had in flight when it broke (by the pool's id).
        self._breaks: dict[int, int] = {}
        # After a break that could not be blamed, chunks run one at a time until this many points came back.
        self._suspects = 0
        # Which worker runs which chunk (made for each sweep), and each chunk's future on the executor.
        self._ledger: Ledger | None = None
        self._inner_of: dict[Future, Any] = {}  # type: ignore[type-arg]
        self._stopped_pools: set[int] = set()  # pools broken by stopping a worker past the time limit
        self._oom: int | None = None  # the OOM killer's count since the last death (see deaths.py)
        self._asked = -1.0  # when the Dask scheduler was last asked for its workers
        self._no_workers_since: float | None = None  # since when a Dask cluster has had no worker
        self._said_no_workers = False

    def begin(self, payloads: dict[str, Payload]) -> None:
        self._payloads = dict(payloads)
        self._asked, self._no_workers_since, self._said_no_workers = -1.0, None, False
        self._ledger = Ledger()
        self._oom = oom_kills()

    def submit(self, key: str, points: list[dict[str, Any]], budget: float | None, ship: bool = False,
               limit: float | None = None) -> ChunkFuture:
        blob = self._payloads[key].blob
        future = ChunkFuture("executor")
        if self._broken():
            self._renew()
        pool = self._executor
        ledger = self._ledger.tag(future) if self._ledger is not None else None
        try:
            inner = pool.submit(worker.run_points, key, points, blob, self._paths, budget, None, limit, ledger)
        except BrokenProcessPool:
            self._renew()
            pool = self._executor
            inner = pool.submit(worker.run_points, key, points, blob, self._paths, budget, None, limit, ledger)
        with self._lock:
            self._in_flight[inner] = pool
            self._inner_of[future] = inner
            serial = len(points) if self._suspects else 0
        inner.add_done_callback(lambda done: self._settle(done, future, pool, serial, len(points)))
        return future

    def _exit_code(self, future: Future, error: BaseException | None) -> int | None:  # type: ignore[type-arg]
        """The exit status (``-N``: signal N) of the dead worker that ran ``future``'s chunk, if it is known.

        None when the chunk's worker is not known (not on this machine), still
        runs (another worker's death broke the pool), or ended unseen (a
        forkserver's child: the forkserver reaps it).
        """
        ledger = self._ledger  # end() may drop it meanwhile, from the sweep's thread
        entry = ledger.running(future, fresh=True) if ledger is not None else None
        if entry is None:
            return None
        # A child of this process (a spawn pool, loky): its pipes closed as it died, and the pool saw that a
        # moment before the kernel says how it ended. A worker of a pool broken by another's death lives on.
        code = child_exit_code(entry.pid, wait=self.ExitWait)
        if code is None and not _alive(entry.pid):
            code = _loky_exit_code(error)
        return code

    def started(self, future: Future) -> float | None:  # type: ignore[type-arg]
        """When ``future``'s chunk started on its worker, if the worker runs on this machine (see the ledger)."""
        return self._ledger.started(future) if self._ledger is not None else None

    def stop(self, future: Future) -> bool:  # type: ignore[type-arg]
        """SIGKILL the worker process running ``future``'s chunk (stuck past its time limit); False if none is known.

        The chunk's future fails at once with an outside
        :class:`~epyclab.labs.transports.contract.WorkerDied`. The executor
        replaces its worker as it does any that died: a process pool is broken
        (the transport goes on on a fresh one, and the other chunks in flight are
        run again without counting), Dask's nanny starts a new worker (the task
        is cancelled first, so that Dask does not run it again elsewhere).
        """
        if self._ledger is None:
            return False
        with self._lock:
            inner = self._inner_of.get(future)
            pool = self._in_flight.get(inner) if inner is not None else None
            if pool is not None:
                # The break this causes in a process pool is not the other chunks' doing.
                self._stopped_pools.add(id(pool))
        entry = self._ledger.running(future)
        if entry is None:
            return False
        # First the chunk's own future (cancelling the executor's would cancel it), then the task, then the worker.
        message = f"worker process {entry.pid} was stopped: its chunk ran past the time limit"
        settle_once(future, error=WorkerDied(message, error=EngineDied(message), outside=True), late=_LATE)
        if isinstance(pool, DaskExecutor):
            # Dask runs the task of a dead worker again elsewhere unless the scheduler let it go first (a
            # cancellation is only a message on its way): there it would hang another worker, unwatched, with
            # the sweep's next chunks queued behind it.
            if not pool.withdraw(inner, self.WithdrawSeconds):
                logger.warning("the Dask scheduler at %s still ran the task of a chunk stopped past its time limit "
                               "%g s after it was cancelled; Dask may run it again on another worker",
                               pool.where(), self.WithdrawSeconds)
        elif inner is not None:
            inner.cancel()
        kill(entry.pid)
        return True

    def _settle(self, inner: Any, future: ChunkFuture, pool: Any, serial: int, size: int) -> None:
        """End ``future`` (the chunk's) with what its task on the executor gave; it always ends.

        Runs as the task's done-callback, in whatever thread the executor
        calls it from, where an exception would only be logged by
        ``concurrent.futures`` (or Dask's event loop) and the chunk would wait
        for ever: an error raised here ends the chunk with that error instead
        (its points become failed rows), and is logged.
        """
        try:
            self._settle_chunk(inner, future, pool, serial, size)
        except Exception as exc:
            logger.error("could not take in the outcome of a chunk of %d points: %s", size, exc, exc_info=True)
            settle_once(future, error=exc, late=_LATE)
        finally:
            if not future.done():
                # Interrupted by a BaseException (not an Exception): never leave the sweep waiting.
                settle_once(future, error=EngineDied("the executor's task ended without an outcome"), late=_LATE)

    def _settle_chunk(self, inner: Any, future: ChunkFuture, pool: Any, serial: int, size: int) -> None:
        error = None if inner.cancelled() else inner.exception()
        died = isinstance(error, BrokenProcessPool) or type(error).__name__ == "KilledWorker"
        # Before the ledger forgets the chunk: which process ran it, and how it ended.
        code = self._exit_code(future, error) if died else None
        with self._lock:
            if isinstance(error, BrokenProcessPool):
                # Every future of a broken pool fails at once: how many were in flight when it broke.
                at_death = self._breaks.setdefault(id(pool), sum(p is pool for p in self._in_flight.values()))
            else:
                at_death = len(self._in_flight)
            self._in_flight.pop(inner, None)
            self._inner_of.pop(future, None)
            self._suspects = max(0, self._suspects - serial)
            if died and at_death > 1 and id(pool) not in self._stopped_pools:
                # Several chunks were in flight: no telling whose point it was (see the module docstring).
                self._suspects += size
        ledger = self._ledger  # end() may drop it meanwhile, from the sweep's thread
        if ledger is not None:
            ledger.forget(future)
        if inner.cancelled():
            future.cancel()
            return
        if error is None:
            settle_once(future, result=inner.result(), late=_LATE)
        elif died:
            message = f"a worker process of the executor died ({error})"
            if code is not None:
                # Its worker died: how it ended says who ended it (the one rule of deaths.py).
                outside = ended_from_outside(code, self._oom)
                message = f"worker process of the executor died ({_how(code)})"
            else:
                # Its worker lives on (a pool broken by another's death), or its end is unknown: the chunk is
                # blamed only when it was alone in flight.
                outside = at_death > 1
            self._oom = oom_kills()
            settle_once(future, error=WorkerDied(message, error=EngineDied(message), outside=outside), late=_LATE)
        else:
            settle_once(future, error=error, late=_LATE)

    def _renew(self) -> None:
        """Continue on a fresh process pool like the broken one."""
        broken = self._executor
        fresh_one = getattr(self._given, "fresh", None)
        if callable(fresh_one):
            self._executor = fresh_one()  # an executor that knows how to renew itself (loky's reusable one)
            return
        if not isinstance(broken, ProcessPoolExecutor):
            return
        # The pool's size and start method: the standard library keeps them in attributes of its own.
        fresh = ProcessPoolExecutor(max_workers=getattr(broken, "_max_workers", None),
                                    mp_context=getattr(broken, "_mp_context", None))
        logger.warning("a worker of the process pool died; the sweep goes on on a fresh pool of %d workers",
                       self._workers)
        self._ours.append(fresh)
        self._executor = fresh

    def capacity(self) -> int:
        if self._broken():
            self._renew()
        with self._lock:
            if self._suspects:
                # Blame the next break on the one chunk running.
                return 1
        return self._workers * self.window

    def _broken(self) -> bool:
        return bool(getattr(self._executor, "_broken", False))  # ProcessPoolExecutor says so there

    def engines(self) -> tuple[int, int]:
        return self._workers, self._workers

    def check(self) -> None:
        """Raise if a Dask cluster has had no worker for :attr:`NoWorkersSeconds`, or none will come.

        A worker being started again (a LocalCluster's nanny replacing one that
        died) may come back: the sweep waits for it up to the limit. When the
        client's cluster object has no worker left, running or being started
        (see :meth:`DaskExecutor.starting`), none will: the sweep stops after
        :attr:`GoneSeconds`. Any other executor says nothing of its health until
        a task fails (a broken process pool is renewed in :meth:`capacity`).

        Raises:
            ClusterConnectionError: the Dask cluster has had no worker that long (see :attr:`NoWorkersSeconds`),
                or has none left to start (see :attr:`GoneSeconds`).
        """
        executor = self._executor
        now = monotonic()
        if not isinstance(executor, DaskExecutor) or now - self._asked < self.AskSeconds:
            return
        self._asked = now
        try:
            n = executor.workers()
        except OSError as exc:  # the scheduler cannot be reached now: as good as no worker
            logger.debug("could not ask the Dask scheduler for its workers: %s", exc)
            n = 0
        if n:
            self._no_workers_since, self._said_no_workers = None, False
            return
        if self._no_workers_since is None:
            self._no_workers_since = now
        waited = now - self._no_workers_since
        limit = self.NoWorkersSeconds
        if not self._said_no_workers and waited >= (15.0 if limit is None else min(15.0, limit / 2)):
            self._said_no_workers = True
            logger.warning("the Dask cluster at %s has no worker: the sweep waits for one%s", executor.where(),
                           f" (for {limit:g} s at most)" if limit is not None else "")
        if limit is None:
            return
        # A worker being restarted (its nanny still in the cluster) may come back: wait up to the limit. One
        # that the cluster closed for good will not: stop at once.
        gone = waited >= min(self.GoneSeconds, limit) and executor.starting() == 0
        if gone or waited >= limit:
            why = ("its cluster has none left, running or being started" if gone else
                   "a LocalCluster closes for good a worker still restarting distributed.deploy.lost-worker-timeout "
                   "after it died")
            raise ClusterConnectionError(
                f"the Dask cluster at {executor.where()} has had no worker for {waited:.0f} s, so the sweep cannot "
                f"go on ({why}). Give it workers (cluster.scale(n)) and run the sweep again with resume=True; "
                f"ExecutorTransport.NoWorkersSeconds (now {limit:g}; None: wait for ever) says how long a sweep "
                f"waits for a worker that may come back"
            )

    def end(self, abandon: bool) -> None:
        with self._lock:
            in_flight, self._in_flight = list(self._in_flight), {}
            self._suspects = 0
        for inner in in_flight:
            inner.cancel()
        for pool in self._ours:
            _stop_pool(pool)
        self._ours = []
        self._executor = executor_of(self._given)
        for key in self._payloads:
            self._forget(key)
        ledger, self._ledger = self._ledger, None
        if ledger is not None:
            ledger.close()

    def _forget(self, key: str) -> None:
        # Workers keep the experiment under the sweep's key; each drops it when told (best effort: which
        # worker runs this is the executor's choice, and a worker's memory goes with it anyway).
        try:
            self._executor.submit(worker.forget_experiment, key)
        except (RuntimeError, BrokenProcessPool) as exc:
            logger.debug("could not ask the executor's workers to drop experiment %s: %s", key, exc)

    def close(self) -> None:
        """Nothing: the executor is the user's to shut down."""


def _alive(pid: int) -> bool:
    """True while process ``pid`` runs (a zombie has ended)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


_LOKY_CODES = re.compile(r"exit codes of the workers are \{([^}]*)\}")


def _loky_exit_code(error: BaseException | None) -> int | None:
    """The exit status loky's ``TerminatedWorkerError`` gives (``{SIGKILL(-9)}``), if one worker's alone."""
    found = _LOKY_CODES.search(str(error)) if error is not None else None
    codes = {int(c) for c in re.findall(r"\((-?\d+)\)", found.group(1))} if found else set()
    return codes.pop() if len(codes) == 1 else None


def _how(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


# Stopped by the sweep, which has recorded the chunk's points already: what the worker did after is moot.
_LATE = "a chunk stopped past its time limit ended on its executor too"


def _stop_pool(pool: Any) -> None:
    """Stop a process pool this transport made, its processes by PID (a broken pool's shutdown can wait for ever)."""
    # The standard library keeps the pool's processes in an attribute of its own; killing them first means
    # shutdown() has nothing left to wait for.
    processes = list((getattr(pool, "_processes", None) or {}).values())
    for process in processes:
        if process.is_alive():
            process.kill()
    for process in processes:
        process.join(10)
    pool.shutdown(wait=False, cancel_futures=True)
